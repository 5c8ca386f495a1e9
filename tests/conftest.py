"""Test tiers: ``@pytest.mark.requires("root", "libvirt", ...)`` skips with the probe's reason where a
feature is missing; integration and security tests get a private state root and a leak check."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import hostprobe  # noqa: E402

# The `isobench` client starts a server on first use (csrc/client.c). Tests run the client against
# private sockets and must own every server they leave running, so it is off for the whole session;
# the test of the start-on-first-use itself turns it on for its own private socket.
os.environ["ISOBENCH_SERVER_AUTOSTART"] = "0"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(name="requires"):
        for feat in mark.args:
            ok, reason = hostprobe.feature(feat)
            if not ok:
                pytest.skip(f"requires {feat}: {reason}")


@pytest.fixture(scope="session")
def isobench_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private state root for the whole test session (images built once, shared by tests)."""
    root = Path(os.environ.get("ISOBENCH_TEST_ROOT") or tmp_path_factory.mktemp("isobench-root"))
    os.environ["ISOBENCH_ROOT"] = str(root)
    return root


@pytest.fixture
def paths(isobench_root: Path):
    from core.paths import HostPaths

    return HostPaths(root=isobench_root).ensure()


@pytest.fixture
def leak_check():
    """Fails the test if it left any ``isobench``-named host object behind."""
    before = hostprobe.host_objects()
    yield
    left = hostprobe.leaks(before, hostprobe.host_objects())
    assert not left, f"test leaked host objects: {left}"


@pytest.fixture(scope="session", autouse=True)
def _prune_bridge_made_by_the_session():
    """The bridge ``isobench0`` outlives containers by design (like docker0); a test session that
    created it removes it again at the end so the host is left as found."""
    existed = Path("/sys/class/net/isobench0").exists()
    yield
    if existed or os.geteuid() != 0 or not Path("/sys/class/net/isobench0").exists():
        return
    from core.paths import HostPaths
    from runtime.network.gc import prune

    _, users = prune(HostPaths.from_env())
    # the leak check of the whole session: a bridge this session made and nothing live still uses
    assert users or not Path("/sys/class/net/isobench0").exists(), "the session left bridge isobench0 behind"


HOST_TEST_LOCK = hostprobe.HOST_TEST_LOCK


def pytest_collection_finish(session: pytest.Session) -> None:
    """Integration and security tests own the host while they run: their leak checks diff every
    ``isobench``-named object on the machine, so a second session (another clone, a developer's run)
    would see the first one's objects as leaks. Such sessions take one host-wide lock, in turn."""
    if os.geteuid() != 0 or not any(i.path.parent.name in ("integration", "security") for i in session.items):
        return
    if os.environ.get("ISOBENCH_HOST_TEST_LOCK_HELD"):
        return  # a pytest run by a test of a session that holds the lock: waiting would deadlock
    import fcntl

    fd = os.open(HOST_TEST_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"\nwaiting for another isobench test session ({HOST_TEST_LOCK})", file=sys.stderr)
        fcntl.flock(fd, fcntl.LOCK_EX)
    session.config._isobench_host_lock = fd  # held until the process exits
    os.environ["ISOBENCH_HOST_TEST_LOCK_HELD"] = "1"  # inherited by nested runs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``leak_check`` is set up before (so torn down after) every other function fixture of a test,
    whatever the argument order: its snapshot must be taken after the factories have cleaned up."""
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names and "leak_check" in names:
            names.remove("leak_check")
            names.insert(0, "leak_check")
