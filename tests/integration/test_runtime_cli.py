"""`isobench run` and the container verbs end to end, as a user runs them: exit codes, bad input (one
line, nothing left behind), the detached lifecycle through the monitor, and gc after crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.lifecycle import state as S

pytestmark = [pytest.mark.requires("root", "busybox"), pytest.mark.timeout(180)]

ISOBENCH = str(Path(sys.executable).with_name("isobench"))


@pytest.fixture
def cli(paths):
    """``cli(*argv)`` -> CompletedProcess with ISOBENCH_ROOT set; containers it made are removed after."""
    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    before = set(S.all_ids(paths))
    env = {**os.environ, "ISOBENCH_ROOT": str(paths.root)}

    def run(*argv: str, timeout_s: float = 60, check_rc: int | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([ISOBENCH, *argv], env=env, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
        if check_rc is not None:
            assert proc.returncode == check_rc, (argv, proc.returncode, proc.stdout, proc.stderr)
        return proc

    run.env = env  # type: ignore[attr-defined]
    yield run
    made = set(S.all_ids(paths)) - before
    if made:
        run("rm", "-f", *sorted(made))
    for cid in made:
        assert not list(Path("/sys/fs/cgroup").glob(f"*/isobench-{cid}")), f"cgroup of {cid} left behind"


def _new_ids(paths, before: set[str]) -> set[str]:
    return set(S.all_ids(paths)) - before


def test_run_exit_codes_and_output(cli, paths, leak_check):
    p = cli("run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    p = cli("run", "--rm", "--network", "none", "busybox", "nosuchcmd")
    assert p.returncode == 127 and "nosuchcmd" in p.stderr
    p = cli("run", "--rm", "--network", "none", "--init", "busybox", "sh", "-c", "kill -KILL $$")
    assert p.returncode == 137
    assert S.all_ids(paths) == [] or all(S.read_state(S.container_dir(paths, c)) for c in S.all_ids(paths))


@pytest.mark.parametrize("argv,needle", [
    (("--memory", "1x"), "--memory"),
    (("--cpus", "-1"), "--cpus"),
    (("--cpus", "64"), "exceeds"),
    (("-v", "/no/such/source/dir:/data"), "does not exist"),
    (("-v", "/tmp:data"), "absolute container path"),
    (("--network", "nonsense"), "--network"),
])
def test_bad_input_one_line_nothing_left(cli, paths, argv, needle, leak_check):
    before = set(S.all_ids(paths))
    p = cli("run", "--rm", "--network", "none", *argv, "busybox", "true")
    assert p.returncode != 0
    assert needle in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert not _new_ids(paths, before)


def test_unknown_image_and_name_in_use(cli, paths, leak_check):
    before = set(S.all_ids(paths))
    p = cli("run", "--rm", "--network", "none", "no-such-image:1", "true")
    assert p.returncode != 0 and "no-such-image" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    cli("run", "-d", "--name", "dup", "--network", "none", "busybox", "sleep", "30", check_rc=0)
    p = cli("run", "--rm", "--name", "dup", "--network", "none", "busybox", "true")
    assert p.returncode != 0 and "already in use" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert len(_new_ids(paths, before)) == 1
    cli("rm", "-f", "dup", check_rc=0)
    assert not _new_ids(paths, before)


def test_detached_lifecycle(cli, paths, leak_check):
    script = 'echo started; trap "echo bye; exit 7" TERM; while true; do sleep 0.1; done'
    cid = cli("run", "-d", "--name", "svc", "--network", "none", "busybox", "sh", "-c", script,
              check_rc=0).stdout.strip()
    assert len(cid) == 12
    ps = cli("ps", check_rc=0).stdout
    assert "svc" in ps and "Up" in ps
    # the monitor is named after the container, for ps
    st = S.read_state(S.container_dir(paths, cid))
    assert Path(f"/proc/{st['monitor_pid']}/comm").read_text().strip() == f"isobench-{cid}"[:15]
    deadline = time.monotonic() + 10
    while "started" not in cli("logs", "svc").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cli("logs", "svc", check_rc=0).stdout.startswith("started")
    p = cli("exec", "svc", "sh", "-c", "hostname; echo $$", check_rc=0)
    assert p.stdout.split()[0] == cid[:12]
    # the exec'd process is in the container's cgroup (it joins itself before setns and fork)
    groups = {ln.split(":")[1]: ln.split(":", 2)[2] for ln in cli("exec", "svc", "cat", "/proc/self/cgroup",
                                                                  check_rc=0).stdout.splitlines()}
    assert groups["memory"] == groups["pids"] == f"/isobench-{cid}", groups
    stats = cli("stats", "--no-stream", "svc", check_rc=0).stdout
    assert "svc" in stats and "PIDS" in stats
    cli("stop", "-t", "5", "svc", check_rc=0)
    assert cli("wait", "svc", check_rc=0).stdout.strip() == "7"
    assert "Exited (7)" in cli("ps", "-a", check_rc=0).stdout
    doc = json.loads(cli("inspect", "svc", check_rc=0).stdout)[0]
    assert doc["State"]["ExitCode"] == 7 and doc["State"]["OOMKilled"] is False and not doc["State"]["Running"]
    assert "bye" in cli("logs", "svc").stdout
    cli("rm", "svc", check_rc=0)
    assert "svc" not in cli("ps", "-a", check_rc=0).stdout
    assert not S.container_dir(paths, cid).exists()


def test_kill_and_rm_force(cli, paths, leak_check):
    cli("run", "-d", "--name", "k", "--network", "none", "busybox", "sleep", "30", check_rc=0)
    p = cli("rm", "k")
    assert p.returncode != 0 and "running" in p.stderr
    cli("kill", "-s", "KILL", "k", check_rc=0)
    assert cli("wait", "k", check_rc=0).stdout.strip() == "137"
    cli("rm", "k", check_rc=0)
    cli("run", "-d", "--name", "k2", "--network", "none", "busybox", "sleep", "30", check_rc=0)
    cli("rm", "-f", "k2", check_rc=0)


def test_cli_killed_monitor_carries_on_and_rm_cleans(cli, paths, leak_check):
    """kill -9 of a foreground `isobench run`: the setsid'd monitor keeps the container and, with
    --rm, still removes it when it exits."""
    before = set(S.all_ids(paths))
    proc = subprocess.Popen([ISOBENCH, "run", "--rm", "--network", "none", "busybox", "sleep", "2"],
                            env=cli.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not _new_ids(paths, before) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    while _new_ids(paths, before) and time.monotonic() < deadline + 10:
        time.sleep(0.1)
    assert not _new_ids(paths, before)


def test_gc_after_monitor_and_cli_killed(cli, paths, leak_check):
    from runtime.lifecycle.gc import gc

    cid = cli("run", "-d", "--network", "none", "busybox", "sleep", "60", check_rc=0).stdout.strip()
    st = S.read_state(S.container_dir(paths, cid))
    mon, pid = st["monitor_pid"], st["pid"]
    assert gc(paths) == []  # a live container is not an orphan
    os.kill(mon, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while S.alive(mon, st["monitor_start"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert S.alive(pid, st["pid_start"])
    assert any(cid in r for r in gc(paths))
    assert not S.alive(pid, st["pid_start"])
    assert not S.container_dir(paths, cid).exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/isobench-{cid}"))


def test_gc_after_in_process_owner_killed(paths, leak_check):
    """The harness is the owner in-process: a harness killed mid-run leaves an orphan gc removes."""
    from runtime.lifecycle.gc import gc
    from tests.imagefixtures import ensure_busybox

    ensure_busybox(paths)
    code = (
        "import os,sys,time\n"
        "from runtime import api\nfrom core.paths import HostPaths\n"
        "from runtime.spec import ContainerConfig, NetworkSpec\n"
        f"p=HostPaths(root=__import__('pathlib').Path({str(paths.root)!r}))\n"
        "c=api.create(ContainerConfig(image='busybox', command=('sleep','60'), network=NetworkSpec(mode='none')), p)\n"
        "api.start(c)\nprint(c.id, flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    cid = proc.stdout.readline().strip()
    assert cid
    proc.kill()
    proc.wait()
    proc.stdout.close()
    deadline = time.monotonic() + 10
    removed: list[str] = []
    while not removed and time.monotonic() < deadline:  # until the killed harness is reaped
        removed = gc(paths)
        time.sleep(0.05)
    assert any(cid in r for r in removed)
    assert not S.container_dir(paths, cid).exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"*/isobench-{cid}"))


def test_exec_joins_remapped_container(cli, paths, leak_check):
    cli("run", "-d", "--name", "remapped", "--userns", "remap", "--network", "none", "busybox", "sleep", "30",
        check_rc=0)
    p = cli("exec", "remapped", "cat", "/proc/self/uid_map", check_rc=0)
    assert p.stdout.split() == ["0", "100000", "65536"]
    cli("rm", "-f", "remapped", check_rc=0)


@pytest.mark.requires("iptables", "cgroup_v1")
def test_ps_shows_published_ports(cli, paths, leak_check):
    """Issue 4: ``ps`` lists a running container's port mappings docker-style (PORTS column)."""
    cli("run", "-d", "--name", "pub", "-p", "18093:80", "-p", "127.0.0.1:18094:81/udp", "busybox",
        "sleep", "30", check_rc=0)
    try:
        lines = cli("ps", check_rc=0).stdout.splitlines()
        assert "PORTS" in lines[0]
        row = next(ln for ln in lines if ln.rstrip().endswith("pub"))
        assert "0.0.0.0:18093->80/tcp, 127.0.0.1:18094->81/udp" in row, row
    finally:
        cli("rm", "-f", "pub", check_rc=0)
