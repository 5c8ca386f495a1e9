"""Fixtures of the breakout suite: the probe helper, a busybox rootfs, a runc bundle, the host context
(marker process + host-only listener), the suite's process leak check, and the per-runtime table printed
at the end of the session."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import warnings
from pathlib import Path

import pytest

from runtime.security import probes

# runtime -> probe -> blocked?  (filled by the tests, printed by pytest_terminal_summary)
RESULTS: dict[str, dict[str, bool | None]] = {}
# pid of the session's marker while host_ctx lives: started by the first test that needs it, after
# that test's leak check looked (leak_check runs first), and meant to outlive it
SESSION_MARKER: list[int] = []


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("breakout")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def helper(probe_dir: Path) -> Path:
    return probes.build_helper(probe_dir / "helper")


@pytest.fixture(scope="session")
def host_ctx(isobench_root: Path):
    """The probes' host context for the whole session: a marker process (``hostmarker-secprobe 600``, a
    child of this pytest process) and a loopback listener; ``probes.host_context`` stops both by pid on
    its way out. That way out must also be taken when the session is ended by a signal (``timeout``,
    a CI runner's SIGTERM, a closed terminal): pytest tears fixtures down on KeyboardInterrupt but not
    on an unhandled SIGTERM/SIGHUP, which would leave the marker running for its 600 s. So while the
    marker lives those signals raise KeyboardInterrupt; afterwards no marker of ours may be left."""
    stale = stale_markers()
    if stale:
        warnings.warn(f"{probes.MARKER} processes {sorted(stale)} were left running by an earlier session "
                      "(they end by themselves within 600 s)", stacklevel=1)
    with _signals_raise_keyboard_interrupt(signal.SIGTERM, signal.SIGHUP):
        with probes.host_context(state_root=str(isobench_root)) as ctx:
            SESSION_MARKER.append(int(ctx["host_pid"]))
            try:
                yield ctx
            finally:
                SESSION_MARKER.clear()
    left = marker_pids(parent=os.getpid())
    assert not left, f"the session's {probes.MARKER} process(es) {sorted(left)} outlived the host context"


@contextlib.contextmanager
def _signals_raise_keyboard_interrupt(*signums: int):
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"{signal.Signals(signum).name}: tearing the session down")

    previous = {s: signal.signal(s, interrupt) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@pytest.fixture
def leak_check(leak_check):
    """The host leak check (tests/conftest.py: ``isobench``-named objects), and for this suite also the
    processes a test starts under other names (a probe marker, a ``sleep``): a child of this pytest
    process that appeared during the test and is still running after it is a leak."""
    before = own_processes()
    yield
    left = {p for p in own_processes() - before if int(p.split()[0]) not in SESSION_MARKER}
    assert not left, f"test left processes running: {sorted(left)}"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie child only waits to be reaped)."""
    state = _status(pid).get("State", "")
    return bool(state) and not state.startswith(("Z", "X"))


def marker_pids(parent: int | None = None) -> set[int]:
    """Running processes whose argv[0] is the probe marker (of ``parent`` only, when given)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        argv = _cmdline(pid)
        if not argv or argv[0] != probes.MARKER or not _running(pid):
            continue
        if parent is None or _status(pid).get("PPid", "").strip() == str(parent):
            out.add(pid)
    return out


def own_processes() -> set[str]:
    """``pid argv`` of the running children of this pytest process (of every thread of it). Only ours:
    other sessions (unit tests take no host lock) start and stop processes at any time."""
    me = os.getpid()
    pids: set[int] = set()
    try:
        tids = os.listdir(f"/proc/{me}/task")
    except OSError:
        tids = []
    for tid in tids:
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in Path(f"/proc/{me}/task/{tid}/children").read_text().split())
    return {f"{pid} {' '.join(_cmdline(pid))[:120]}" for pid in pids if _running(pid)}


def stale_markers() -> set[int]:
    """Probe markers no test session owns any more: their parent is not a pytest process (a session
    that was killed leaves its marker to init, or to a subreaper)."""
    out = set()
    for pid in marker_pids():
        parent = _status(pid).get("PPid", "").strip()
        if not parent.isdigit() or not any("pytest" in a for a in _cmdline(int(parent))):
            out.add(pid)
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if RESULTS:
        terminalreporter.write_sep("=", "breakout probes: blocked per runtime")
        terminalreporter.write_line(probes.format_table(RESULTS))
