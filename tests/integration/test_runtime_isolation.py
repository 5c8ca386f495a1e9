"""The container runtime for real (library API): namespaces isolate, exit codes propagate, the rootfs is
ephemeral and volumes persist. Every test ends with the leak check; containers are always deleted."""

from __future__ import annotations

import ctypes
import os
import signal
import time
import warnings
from pathlib import Path

import pytest

from core.errors import IsobenchError
from core.paths import run_dir
from runtime import api
from runtime.lifecycle import state as S
from runtime.spec import ContainerConfig, MountSpec, NetworkSpec, Resources

pytestmark = [pytest.mark.requires("root", "busybox"), pytest.mark.timeout(120)]


@pytest.fixture
def image(paths):
    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    return "busybox"


_MADE: list[str] = []


@pytest.fixture(autouse=True)
def own_objects_removed():
    """Strict per-container check (the host-wide leak check also sees other suites' concurrent objects):
    nothing named after a container this test made survives it."""
    _MADE.clear()
    yield
    left = [str(p) for cid in _MADE for p in Path("/sys/fs/cgroup").glob(f"*/isobench-{cid}")]
    left += [cid for cid in _MADE if (run_dir() / "leases" / f"{cid}.json").exists()]
    assert not left, f"left behind: {left}"


@pytest.fixture
def containers(paths, image):
    """Factory: ``containers(cmd..., **config)`` -> created Container; all deleted afterwards."""
    made: list[api.Container] = []

    def make(*cmd: str, **kw) -> api.Container:
        kw.setdefault("network", NetworkSpec(mode="none"))
        c = api.create(ContainerConfig(image=image, command=cmd, **kw), paths)
        made.append(c)
        _MADE.append(c.id)
        return c

    yield make
    for c in made:
        api.delete(c, force=True)


def run(paths, *cmd: str, **kw) -> api.RunResult:
    kw.setdefault("network", NetworkSpec(mode="none"))
    r = api.run(ContainerConfig(image="busybox", command=cmd, **kw), paths, timeout_s=60)
    _MADE.append(r.container_id)
    return r


def out(r: api.RunResult) -> str:
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr)
    return r.stdout.decode()


# ----------------------------------------------------------------------------- isolation

def test_pid1_is_workload_and_no_host_pids(paths, image, leak_check):
    text = out(run(paths, "sh", "-c", "echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '"))
    first, pids = text.splitlines()
    assert first == "1"
    assert set(pids.split()) <= {"1", "2", "3", "4", "5", "6"}, pids
    assert str(os.getpid()) not in pids.split() or os.getpid() <= 6


def test_hostname_is_the_containers(paths, image, leak_check):
    assert out(run(paths, "hostname", hostname="box-1")).strip() == "box-1"
    assert os.uname().nodename != "box-1"
    assert out(run(paths, "cat", "/etc/hostname", hostname="box-1")).strip() == "box-1"


def test_only_loopback_with_network_none(paths, image, leak_check):
    text = out(run(paths, "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags"))
    lines = text.split()
    assert lines[0] == "lo" and len(lines) == 3, text
    assert int(lines[2], 16) & 1, "lo is not up"


def _ended(helper) -> str:
    """'' while a prespawned helper lives, else its wait status and what it reported."""
    pid, status = os.waitpid(helper.pid, os.WNOHANG)
    if not pid:
        return ""
    os.set_blocking(helper.r_ready, False)
    try:
        said = os.read(helper.r_ready, 4096)
    except BlockingIOError:
        said = b""
    return f"wait status {status:#x}, said {said!r}"


def _open_fds() -> dict[str, str]:
    """This process's open fds and what they point at (the listing's own fd is gone when read)."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            pass
    return out


def test_spares_are_fresh_per_container_and_leave_nothing(paths, image, leak_check):
    """keep_spares: each start makes the next container's network namespace and directory; every
    container still gets its own namespace (only lo, up) and its own options' /etc files; the spare dir
    is not a container (ps does not list it) and turning spares off removes it and its lease."""
    from runtime.lifecycle import spares

    host_ns = os.stat("/proc/self/ns/net").st_ino
    out(run(paths, "true"))  # this process's lasting fds (its own PID namespace's) exist from now on
    fds = _open_fds()
    api.keep_spares()
    try:
        api.make_spares(paths)
        spare_id = spares._spare.container_id
        assert spare_id not in [st["id"] for st in S.iter_states(paths)]
        seen = []
        for i in range(3):
            kw = {"hostname": "named-box"} if i == 2 else {}
            r = run(paths, "sh", "-c", "stat -L -c %i /proc/self/ns/net; ls /sys/class/net; "
                                       "cat /sys/class/net/lo/flags /etc/hostname", **kw)
            ino, names, flags, hostname = out(r).split()
            assert names == "lo" and int(flags, 16) & 1, out(r)
            assert hostname == kw.get("hostname", r.container_id[:12])
            if i == 0:
                assert r.container_id == spare_id  # the prepared directory was used
            seen.append(int(ino))
        assert len(set(seen)) == 3 and host_ns not in seen, seen
        assert os.stat("/proc/self/ns/net").st_ino == host_ns  # the harness's thread came back
        spare = spares._spare
        spare_id, helper_pid = spare.container_id, spare.helper.pid
        assert S.container_dir(paths, spare_id).is_dir() and (run_dir() / "leases" / f"{spare_id}.json").exists()
        assert Path(f"/sys/fs/cgroup/pids/isobench-{spare_id}").is_dir()  # made without limits
        ended = _ended(spare.helper)
        if ended:  # seen once in a full CI session, cause unknown: say why, and a fresh spare must live
            warnings.warn(f"spare helper {helper_pid} ended before use: {ended}")
            api.keep_spares(False)
            api.keep_spares()
            api.make_spares(paths)
            spare = spares._spare
            spare_id, helper_pid = spare.container_id, spare.helper.pid
            assert not _ended(spare.helper), _ended(spare.helper)
        cmdline = Path(f"/proc/{helper_pid}/cmdline")
        deadline = time.monotonic() + 5
        while not cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)  # posix_spawn returns before execve has set the new image's arguments
        assert cmdline.read_bytes().split(b"\0")[0] == f"isobench-{spare_id}".encode()
        tasks = Path(f"/sys/fs/cgroup/pids/isobench-{spare_id}/tasks")
        deadline = time.monotonic() + 5
        while str(helper_pid) not in tasks.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.01)  # the helper joins its cgroup itself, right after its spawn
        assert str(helper_pid) in tasks.read_text().split()

        # a container with limits, or one whose create fails, uses none of the spare or leaves nothing
        limited = api.create(ContainerConfig(image=image, command=("sleep", "5"), network=NetworkSpec(mode="none"),
                                             resources=Resources(pids_max=17)), paths)
        _MADE.append(limited.id)
        try:
            api.start(limited)
            assert limited.id == spare_id
            assert Path(f"/sys/fs/cgroup/pids/isobench-{spare_id}/pids.max").read_text().strip() == "17"
        finally:
            api.delete(limited, force=True)
        spare = spares._spare
        with pytest.raises(IsobenchError):
            api.create(ContainerConfig(image="no-such-image-here", command=("true",)), paths)
        assert not S.container_dir(paths, spare.container_id).exists()
        assert not Path(f"/sys/fs/cgroup/pids/isobench-{spare.container_id}").exists()
        assert not (run_dir() / "leases" / f"{spare.container_id}.json").exists()
        api.make_spares(paths)
        spare = spares._spare
        os.kill(spare.helper.pid, signal.SIGKILL)  # a spare helper gone before use: started as usual
        os.waitid(os.P_PID, spare.helper.pid, os.WEXITED | os.WNOWAIT)  # gone (not reaped: that is discard's)
        r = run(paths, "cat", "/proc/self/cgroup")
        assert r.container_id == spare.container_id and f"isobench-{spare.container_id}" in out(r)
        spare = spares._spare
        spare_id, helper_pid = spare.container_id, spare.helper.pid
    finally:
        api.keep_spares(False)
    assert not S.container_dir(paths, spare_id).exists()
    assert not (run_dir() / "leases" / f"{spare_id}.json").exists()
    assert not Path(f"/sys/fs/cgroup/pids/isobench-{spare_id}").exists()
    assert not Path(f"/proc/{helper_pid}").exists()  # ended and reaped
    assert _open_fds() == fds


def test_root_is_held_until_delete_and_records_written_by_start(paths, image, leak_check):
    """The runtime holds the container's root (its overlay) from the child's R until delete, so the
    unmount and its sync happen at delete, not inside the exit; create(starting=True) leaves
    config.json and state.json to start()."""
    c = api.create(ContainerConfig(image=image, command=("sh", "-c", "echo kept > /marker"),
                                   network=NetworkSpec(mode="none")), paths, starting=True)
    _MADE.append(c.id)
    try:
        assert not (c.dir / "config.json").exists() and not (c.dir / "state.json").exists()
        api.start(c)
        assert (c.dir / "config.json").is_file() and S.read_state(c.dir)["status"] in ("running", "exited")
        assert api.wait(c) == 0
        fd = c._root_fd
        assert fd >= 0
        held = f"/proc/self/fd/{fd}"
        assert open(f"{held}/marker").read() == "kept\n" and os.path.isdir(f"{held}/bin")  # after the exit
        fds_before_delete = set(os.listdir("/proc/self/fd"))
    finally:
        api.delete(c, force=True)
    assert c._root_fd == -1 and str(fd) in fds_before_delete - set(os.listdir("/proc/self/fd"))
    assert not c.dir.exists()


def test_ipc_objects_invisible(paths, image, containers, leak_check):
    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(0, 4096, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT
    assert shmid >= 0
    try:
        text = out(run(paths, "cat", "/proc/sysvipc/shm"))
        assert not [ln for ln in text.splitlines()[1:] if ln.split() and ln.split()[1] == str(shmid)]
        assert len(text.splitlines()) <= 1, text
    finally:
        libc.shmctl(shmid, 0, None)  # IPC_RMID
    # POSIX shm: one container's /dev/shm object is not another's
    a = containers("sh", "-c", "echo secret > /dev/shm/obj; sleep 30")
    api.start(a)
    time.sleep(0.3)
    assert "missing" in out(run(paths, "sh", "-c", "cat /dev/shm/obj 2>/dev/null || echo missing"))


def test_host_mounts_invisible(paths, image, leak_check):
    text = out(run(paths, "cat", "/proc/self/mountinfo"))
    points = {ln.split()[4] for ln in text.splitlines()}
    allowed = ("/proc", "/dev", "/sys", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf")
    assert "/" in points
    assert all(p == "/" or p.startswith(allowed) for p in points), points
    host_only = {ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                 if not ln.split()[4].startswith(allowed) and ln.split()[4] != "/"}
    assert host_only and not points & host_only


def test_userns_remap_maps_root_to_unprivileged_range(paths, image, containers, leak_check):
    text = out(run(paths, "sh", "-c", "cat /proc/self/uid_map; id -u", userns="remap"))
    first = text.split()
    assert first[:3] == ["0", "100000", "65536"] and first[3] == "0"
    c = containers("sleep", "30", userns="remap")
    api.start(c)
    status = Path(f"/proc/{api.init_pid(c)}/status").read_text()
    uid_line = next(ln for ln in status.splitlines() if ln.startswith("Uid:"))
    assert uid_line.split()[1] == "100000"


def test_read_only_rootfs_and_tmpfs(paths, image, leak_check):
    text = out(run(paths, "sh", "-c", "touch /x 2>/dev/null && echo wrote || echo ro; touch /t/y && echo tmpfs-ok",
                   read_only_rootfs=True, mounts=(MountSpec(destination="/t", type="tmpfs"),)))
    assert text.split() == ["ro", "tmpfs-ok"]


def test_dev_has_the_standard_nodes(paths, image, leak_check):
    text = out(run(paths, "sh", "-c", "ls /dev | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c"))
    names = set(text.splitlines()[0].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "console", "pts", "shm", "fd", "stdin",
            "stdout", "stderr", "ptmx"} <= names
    assert text.splitlines()[1].strip() == "4"


# ----------------------------------------------------------------------------- exit codes and signals

def test_exit_code_propagates(paths, image, leak_check):
    assert run(paths, "sh", "-c", "exit 3").exit_code == 3


def test_missing_command_is_127_with_message(paths, image, leak_check):
    r = run(paths, "no-such-command")
    assert r.exit_code == 127
    assert b"no-such-command" in r.stderr and b"not found" in r.stderr


def test_killed_by_signal_is_128_plus_n(paths, image, containers, leak_check):
    c = containers("sleep", "30")
    api.start(c)
    api.kill(c, signal.SIGKILL)
    assert api.wait(c, timeout_s=10) == 137


def test_init_forwards_signals_and_reaps(paths, image, containers, leak_check):
    c = containers("sh", "-c", "sleep 0 & sleep 0 & sleep 30", init=True)
    api.start(c)
    time.sleep(0.3)
    api.kill(c, signal.SIGTERM)  # PID 1 is the init: it forwards TERM to sh
    assert api.wait(c, timeout_s=10) == 143
    r = run(paths, "sh", "-c", "sleep 0 & sleep 0.2; ps -o stat | grep -c Z || true", init=True)
    assert r.stdout.decode().strip() == "0"


def test_timings_cover_every_phase(paths, image, leak_check):
    r = run(paths, "true")
    t = r.timings_ns
    for phase in ("call", "created", "forked", "cgroup", "namespaces", "rootfs", "network", "exec", "exited"):
        assert phase in t, phase
    assert t["call"] <= t["created"] <= t["forked"] <= t["exec"] <= t["exited"]


# ----------------------------------------------------------------------------- ephemerality and volumes

def test_writable_layer_is_ephemeral(paths, image, leak_check):
    r = run(paths, "sh", "-c", "echo x > /etc/marker")
    assert r.exit_code == 0
    assert not S.container_dir(paths, r.container_id).exists()
    assert "gone" in out(run(paths, "sh", "-c", "cat /etc/marker 2>/dev/null || echo gone"))


def test_named_volume_and_bind_mount_persist(paths, image, tmp_path, leak_check):
    vol = MountSpec(destination="/data", source="runtime-test-vol", type="volume")
    assert run(paths, "sh", "-c", "echo kept > /data/f", mounts=(vol,)).exit_code == 0
    assert out(run(paths, "cat", "/data/f", mounts=(vol,))).strip() == "kept"
    assert (paths.volumes / "runtime-test-vol" / "_data" / "f").read_text().strip() == "kept"
    (tmp_path / "in.txt").write_text("from host\n")
    bind = MountSpec(destination="/mnt/h", source=str(tmp_path))
    assert out(run(paths, "sh", "-c", "cat /mnt/h/in.txt; echo out > /mnt/h/out.txt", mounts=(bind,))) == "from host\n"
    assert (tmp_path / "out.txt").read_text() == "out\n"
    ro = MountSpec(destination="/mnt/h", source=str(tmp_path), read_only=True)
    assert "denied" in out(run(paths, "sh", "-c", "touch /mnt/h/x 2>/dev/null && echo wrote || echo denied",
                               mounts=(ro,)))


def test_image_env_workdir_user_apply(paths, image, leak_check):
    text = out(run(paths, "sh", "-c", "pwd; id -u; echo $FOO", workdir="/tmp", user="1000:1000", env=("FOO=bar",)))
    assert text.split() == ["/tmp", "1000", "bar"]


def test_oom_kill_is_137_and_recorded(paths, image, leak_check):
    from runtime.spec import Resources

    r = run(paths, "sh", "-c", "a=$(head -c 200m /dev/zero | tr '\\000' x); echo survived",
            resources=Resources(memory_bytes=32 << 20, memory_swap_bytes=32 << 20))
    assert r.exit_code == 137 and r.oom_killed and b"survived" not in r.stdout
