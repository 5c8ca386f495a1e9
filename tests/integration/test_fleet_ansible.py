"""``isobench fleet run`` for real: Ansible over SSH to two "hosts" on this machine.

Each test host is a network namespace ``isobench-<id>`` with its own address on a veth to a test
bridge, running Debian's sshd (its own config, host key and an authorized key this test makes; started
inside the namespace by the fixture, stopped by pid) and its own project directory and ISOBENCH_ROOT.
sshd also gets its own mount namespace with a sysfs of its network namespace (as ``ip netns exec``
does) and the host's cgroup hierarchies bound back in, so a bench there sees its own links and the
real cgroups. The hosts share this machine's filesystem, apt state and pip cache; `make setup` is
idempotent, so they do not fight.

One session of three fleet runs: (1) both hosts in parallel, tiny profile (startup, native +
container, 2 values), merged report names both, compare between the hosts; (2) serial, the first host
made unreachable (its link down) while it runs its bench task: it is reported unreachable and the
second host still finishes with results; (3) a bench already holding a host's lock: that host fails
with the lock as the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.requires("root", "runc", "cgroup_v1")
REPO = Path(__file__).resolve().parents[2]
ISOBENCH = [sys.executable, "-m", "app.cli"]
TINY = ["--only", "startup", "--env", "native,container", "--values", "2"]
SSHD = "/usr/sbin/sshd"
# The test hosts' network namespaces reach nothing but the controller, so their `make setup` installs
# the Python dependencies from a wheel directory the controller fills (pip's cache makes a refill fast):
# a fresh venv per host, every package installed, none borrowed from this venv.
WHEELS = Path(os.environ.get("ISOBENCH_FLEET_TEST_WHEELS", "/var/cache/isobench/fleet-wheels"))
# sshd's own mount namespace: a sysfs of its network namespace over /sys (links as that host sees
# them), with the machine's cgroup hierarchies bound back under /sys/fs/cgroup
HOST_NS_SH = """set -e
mount --rbind /sys/fs/cgroup "$1"
mount -t sysfs isobench-sysfs /sys
mount --rbind "$1" /sys/fs/cgroup
umount -l "$1"
shift
exec "$@"
"""


@dataclass
class NetnsHost:
    name: str
    netns: str
    link: str           # the bridge-side veth (down = the host is unreachable)
    address: str
    base: Path          # project dir, state root and sshd files live below
    proc: subprocess.Popen | None = None

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def project(self) -> Path:
        return self.base / "isobench"


def _sh(*argv: str) -> str:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"{argv}: {res.stderr}"
    return res.stdout


def _free_subnet() -> str:
    """A /24 in 10.250-254.x that no route of this machine overlaps."""
    import ipaddress

    routes = [ipaddress.ip_network(ln.split()[0], strict=False)
              for ln in _sh("ip", "-4", "route", "show", "table", "all").splitlines()
              if ln.split() and ln.split()[0][0].isdigit()]
    for a in range(250, 255):
        for b in range(1, 255):
            net = ipaddress.ip_network(f"10.{a}.{b}.0/24")
            if not any(net.overlaps(r) for r in routes):
                return f"10.{a}.{b}"
    pytest.skip("no free 10.250-254.x.0/24 subnet for the test hosts")


def _wait_port(addr: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((addr, port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"sshd on {addr}:{port} did not accept connections within {timeout_s}s")


def _netns_pids(netns: str) -> list[int]:
    res = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=30)
    return [int(p) for p in res.stdout.split()]


def _wheelhouse() -> Path:
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(WHEELS), "pip", "setuptools", "wheel",
                          ".[dev]"], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert res.returncode == 0, f"pip wheel: {res.stderr[-2000:]}"
    return WHEELS


@pytest.fixture
def fleet_hosts(tmp_path_factory):
    """Two SSH-reachable test hosts and an inventory listing them; everything removed at the end."""
    from core.paths import new_id

    if not Path(SSHD).exists():
        pytest.skip("openssh-server not installed (make setup installs it)")
    base = tmp_path_factory.mktemp("fleet")
    key = base / "id_ed25519"
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "isobench-fleet-test", "-f", str(key))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    net = _free_subnet()
    bridge = f"isobench-{new_id(3)}"
    hosts = [NetnsHost(name=n, netns=f"isobench-{new_id(3)}", link=f"isobench-{new_id(3)}",
                      address=f"{net}.{i + 2}", base=base / n) for i, n in enumerate(("one", "two"))]
    made: list[str] = []
    try:
        _sh("ip", "link", "add", bridge, "type", "bridge")
        made.append(bridge)
        _sh("ip", "addr", "add", f"{net}.1/24", "dev", bridge)
        _sh("ip", "link", "set", bridge, "up")
        known = []
        for h in hosts:
            h.base.mkdir()
            _sh("ip", "netns", "add", h.netns)
            made.append(f"netns:{h.netns}")
            _sh("ip", "link", "add", h.link, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
            made.append(f"link:{h.link}")
            _sh("ip", "link", "set", h.link, "master", bridge, "up")
            _sh("ip", "-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0")
            _sh("ip", "-n", h.netns, "link", "set", "eth0", "up")
            _sh("ip", "-n", h.netns, "link", "set", "lo", "up")
            hostkey = h.base / "ssh_host_ed25519_key"
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey))
            (h.base / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
            cfg = h.base / "sshd_config"
            cfg.write_text("\n".join([
                f"ListenAddress {h.address}", "Port 22", f"HostKey {hostkey}", f"PidFile {h.base}/sshd.pid",
                f"AuthorizedKeysFile {h.base}/authorized_keys", "PermitRootLogin prohibit-password",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
                "StrictModes no", "Subsystem sftp internal-sftp", ""]))
            (h.base / "cg").mkdir()
            h.proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{h.netns}", "unshare", "--mount", "--propagation", "slave",
                 "sh", "-c", HOST_NS_SH, "host-ns", str(h.base / "cg"), SSHD, "-D", "-e", "-f", str(cfg)],
                stdout=subprocess.DEVNULL, stderr=open(h.base / "sshd.log", "w"), stdin=subprocess.DEVNULL)
            _wait_port(h.address, 22, 15)
            known.append(f"{h.address} {Path(f'{hostkey}.pub').read_text().split(' ')[0]} "
                         f"{Path(f'{hostkey}.pub').read_text().split(' ')[1]}")
        (base / "known_hosts").write_text("\n".join(known) + "\n")
        wheels = _wheelhouse()
        inv = base / "inventory.yml"  # JSON is YAML; the isobench_env mapping needs a structured format
        inv.write_text(json.dumps({"isobench_test": {
            "hosts": {h.name: {"ansible_host": h.address, "isobench_dir": str(h.project),
                               "isobench_root": str(h.root)} for h in hosts},
            "vars": {"ansible_user": "root", "ansible_ssh_private_key_file": str(key),
                     "ansible_ssh_common_args": f"-o UserKnownHostsFile={base}/known_hosts "
                                                "-o StrictHostKeyChecking=yes",
                     "isobench_env": {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}}}}, indent=1))
        yield hosts, inv, base
    finally:
        for h in hosts:
            _stop_host(h)
        # links first, synchronously: a netns' veths are otherwise destroyed later by the kernel's
        # namespace clean-up work, after `ip netns del` returned
        for name in reversed(made):
            if name.startswith("link:") or name == bridge:
                subprocess.run(["ip", "link", "del", name.removeprefix("link:")], capture_output=True, timeout=30)
        for name in reversed(made):
            if name.startswith("netns:"):
                subprocess.run(["ip", "netns", "del", name.removeprefix("netns:")], capture_output=True, timeout=30)


def _stop_host(h: NetnsHost) -> None:
    """Wait for a bench still running there (its host script holds the fleet lock), then stop
    everything the host's sshd started, by pid, and sshd itself."""
    import fcntl

    lock = h.root / "fleet.lock"
    if lock.exists():
        fd = os.open(lock, os.O_RDWR)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.5)
        os.close(fd)
    if h.proc is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [p for p in _netns_pids(h.netns) if p != os.getpid()]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            h.proc.wait(timeout=10)
            if not _netns_pids(h.netns):
                break
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)


def fleet(args: list[str], timeout_s: float = 600, on_line=None) -> tuple[int, str, str]:
    """``isobench fleet run`` as a user runs it; ``on_line(line)`` sees stderr lines as they come."""
    proc = subprocess.Popen(ISOBENCH + ["fleet", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, stdin=subprocess.DEVNULL)
    err_lines = []
    deadline = time.monotonic() + timeout_s
    assert proc.stderr is not None
    for line in proc.stderr:
        err_lines.append(line)
        if on_line:
            on_line(line)
        assert time.monotonic() < deadline, "".join(err_lines[-30:])
    out = proc.stdout.read() if proc.stdout else ""
    return proc.wait(timeout=60), out, "".join(err_lines)


def _hosts(fleet_dir: Path) -> dict[str, dict]:
    return {h["name"]: h for h in json.loads((fleet_dir / "fleet.json").read_text())["hosts"]}


def test_fleet_two_hosts_report_unreachable_and_lock(fleet_hosts, tmp_path, leak_check):
    import pandas as pd
    import pyperf

    hosts, inv, base = fleet_hosts
    one, two = hosts

    # (1) both hosts in parallel: copy, make setup (fresh venvs), tiny bench, fetch, merge
    out1 = tmp_path / "fleet1"
    rc, stdout, stderr = fleet(["-i", str(inv), *TINY, "--parallel", "--out", str(out1)])
    assert rc == 0, stderr[-3000:]
    assert stdout.strip() == str(out1)
    status = _hosts(out1)
    assert {n: h["status"] for n, h in status.items()} == {"one": "ok", "two": "ok"}, status
    for h in hosts:
        run = out1 / h.name
        for env in ("native", "container"):
            suite = pyperf.BenchmarkSuite.load(str(run / f"{env}.json"))
            assert len(suite.get_benchmark("startup.create_to_exit_s").get_values()) == 2
        assert json.loads((run / "failures.json").read_text()) == []
        assert not (h.root / "fleet" / json.loads((out1 / "fleet.json").read_text())["run_id"]).exists()
    merged = pd.read_csv(out1 / "samples.csv")
    assert list(merged.columns[:2]) == ["host", "benchmark"]
    assert set(merged["host"]) == {"one", "two"}
    assert set(merged["environment"]) == {"native", "container"}

    res = subprocess.run(ISOBENCH + ["report", str(out1)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    page = Path(res.stdout.strip()).read_text()
    assert "Running across systems" in page
    for h in hosts:
        assert f">{h.name}<" in page
        assert (out1 / h.name / "report.html").is_file()
    res = subprocess.run(ISOBENCH + ["compare", str(out1 / "one"), str(out1 / "two")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode in (0, 1), res.stderr  # 1: host two significantly slower somewhere
    assert "create_to_exit_s" in res.stdout and "compare: " in res.stdout

    # (2) serial; host one goes unreachable (link down) while it runs its bench task; two still finishes
    out2 = tmp_path / "fleet2"
    cut = []

    def cut_one(line: str) -> None:
        if not cut and "one: set up and bench" in line:
            _sh("ip", "link", "set", one.link, "down")
            cut.append(time.monotonic())

    rc, stdout, stderr = fleet(["-i", str(inv), *TINY, "--serial", "--out", str(out2)], on_line=cut_one)
    assert cut, stderr[-3000:]
    assert rc == 1, stderr[-3000:]
    status = _hosts(out2)
    assert status["one"]["status"] == "unreachable", status
    assert status["one"]["task"] == "set up and bench under the host's fleet lock"
    assert status["one"]["reason"]
    assert status["two"]["status"] == "ok", status
    assert f"host one ({one.address}:22) unreachable" in stderr
    assert not (out2 / "one").exists()
    merged = pd.read_csv(out2 / "samples.csv")
    assert set(merged["host"]) == {"two"}
    res = subprocess.run(ISOBENCH + ["report", str(out2)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    page = Path(res.stdout.strip()).read_text()
    assert "UNREACHABLE in " in page and ">one<" in page and ">two<" in page
    _sh("ip", "link", "set", one.link, "up")

    # (3) a bench already running on host two (its lock held): two fails with that reason, nothing half-made
    import fcntl

    out3 = tmp_path / "fleet3"
    fd = os.open(two.root / "fleet.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, stdout, stderr = fleet(["-i", str(inv), *TINY, "--limit", "two", "--out", str(out3)])
    finally:
        os.close(fd)
    assert rc == 1, stderr[-3000:]
    status = _hosts(out3)
    assert list(status) == ["two"]
    assert status["two"]["status"] == "failed"
    assert "holds" in status["two"]["reason"] and "fleet.lock" in status["two"]["reason"], status
