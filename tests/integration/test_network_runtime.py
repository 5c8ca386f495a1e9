"""Container networking through the real runtime and the ``isobench`` CLI: ``run -p``, ``port``, ``rm``,
``--network none``, 50 parallel ``run --rm``, bad input, and ``gc`` after a ``kill -9``-ed CLI.

Traffic goes only to loopback, to the host's own address and to the project's containers on its bridge.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.paths import HostPaths
from tests.integration.test_network_attach import (_no_traces, _stable, bridge, fetch, free_port,  # noqa: F401
                                                   host_address, leak_check)

pytestmark = pytest.mark.requires("root", "iptables", "busybox", "cgroup_v1")

ISOBENCH = str(Path(sys.executable).with_name("isobench"))


@pytest.fixture(scope="module")
def image(isobench_root, bridge):  # noqa: F811 - the bridge fixture imported above
    from tests.imagefixtures import ensure_busybox

    return ensure_busybox(HostPaths(root=isobench_root).ensure())


@pytest.fixture
def cli(paths, image):
    """``isobench`` in the test's state root; every container started through it is removed at the end."""
    made: list[str] = []

    def run(*argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
        env = dict(os.environ, ISOBENCH_ROOT=str(paths.root))
        r = subprocess.run([ISOBENCH, *argv], capture_output=True, text=True, timeout=timeout_s, env=env)
        if argv[0] == "run" and "-d" in argv and r.returncode == 0:
            made.append(r.stdout.strip())
        return r

    yield run
    for cid in made:
        run("rm", "-f", cid)


def _state(paths: HostPaths, ref: str) -> dict:
    from runtime.lifecycle import state

    return state.lookup(paths, ref)


def test_run_publish_serves_over_loopback_and_host_address(leak_check, cli, paths, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("served by isobench\n")
    r = cli("run", "-d", "--name", "web", "-p", "18080:80", "-v", f"{www}:/www:ro", "busybox",
            "httpd", "-f", "-p", "80", "-h", "/www")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert fetch("http://127.0.0.1:18080/") == "served by isobench\n"
    assert fetch(f"http://{host_address()}:18080/") == "served by isobench\n"
    assert cli("port", "web").stdout == "80/tcp -> 0.0.0.0:18080\n"
    st = _state(paths, "web")
    assert st["ip"].startswith("10.88.") and st["ports"] == [["", 18080, 80, "tcp"]]
    assert cli("rm", "-f", "web").returncode == 0
    _no_traces(cid, paths)


def test_two_containers_reach_each_other(leak_check, cli, paths):
    r = cli("run", "-d", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    assert r.returncode == 0, r.stderr
    ip = _state(paths, r.stdout.strip())["ip"]
    deadline = time.monotonic() + 10
    while True:
        got = cli("run", "--rm", "busybox", "wget", "-q", "-O", "-", f"http://{ip}/hostname")
        if got.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == _state(paths, r.stdout.strip())["hostname"]


def test_network_none_has_no_route(leak_check, cli):
    r = cli("run", "--rm", "--network", "none", "busybox", "sh", "-c",
            "ip -4 route; echo ---; ip -o link; echo ---; wget -q -O - http://10.88.0.1/ 2>&1; true")
    assert r.returncode == 0, r.stderr
    routes, links, wget = r.stdout.split("---\n")
    assert routes.strip() == ""
    assert "lo:" in links and "UP" in links and "eth0" not in links
    assert "unreachable" in wget.lower()


def test_fifty_parallel_runs_get_fifty_addresses(leak_check, cli, paths):
    from runtime.network import ipam

    def one(_: int) -> subprocess.CompletedProcess:
        return cli("run", "--rm", "busybox", "ip", "-4", "-o", "addr", "show", "dev", "eth0", timeout_s=240)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    failed = [r.stderr for r in results if r.returncode != 0]
    assert not failed, failed[:3]
    addrs = [r.stdout.split("inet ")[1].split("/")[0] for r in results]
    assert len(set(addrs)) == 50
    assert ipam.allocations(paths) == {}  # every --rm released its address (links: the leak check)


def test_bad_input_one_line_nothing_left(leak_check, cli, paths):
    from runtime.network import ipam

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("run", "-d", "-p", f"{port}:80", "busybox", "sleep", "5")
    assert r.returncode == 1 and r.stderr == f"isobench: host port {port}/tcp is already in use\n"
    r = cli("run", "--rm", "-p", "99999:80", "busybox", "true")
    assert r.returncode == 2 and r.stderr == "isobench: -p 99999:80: host port 99999 is outside 1-65535\n"
    r = cli("run", "--rm", "-p", "abc", "busybox", "true")
    assert r.returncode == 2 and r.stderr == "isobench: -p abc: container port 'abc' is not a number\n"
    assert cli("ps", "-a", "-q").stdout.strip() == ""
    assert ipam.allocations(paths) == {}


def test_publish_with_network_none_refused(leak_check, cli):
    r = cli("run", "--rm", "--network", "none", "-p", "8080:80", "busybox", "true")
    assert r.returncode == 2 and r.stderr == "isobench: -p needs --network bridge (got none)\n"


def test_gc_after_killed_cli_removes_rules_and_links(leak_check, cli, paths):
    from runtime.network import veth

    port = free_port()
    env = dict(os.environ, ISOBENCH_ROOT=str(paths.root))
    proc = subprocess.Popen([ISOBENCH, "run", "--name", "victim", "-p", f"{port}:80", "busybox", "sleep", "60"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        cid = None
        while time.monotonic() < deadline:
            try:
                st = _state(paths, "victim")
            except Exception:  # noqa: BLE001 - not created yet
                st = {}
            if st.get("status") == "running":
                cid = st["id"]
                break
            time.sleep(0.05)
        assert cid, "container did not start"
        assert Path(f"/sys/class/net/{veth.veth_name(cid)}").exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # the monitor may be a separate process: kill it too, like a crashed host session would
        mon = _state(paths, cid).get("monitor_pid")
        if mon and mon != proc.pid:
            try:
                os.kill(int(mon), signal.SIGKILL)
            except ProcessLookupError:
                pass
        # a killed monitor stays a zombie until reaped, and its lease looks alive until then: retry
        deadline = time.monotonic() + 15
        while True:
            r = cli("gc")
            assert r.returncode == 0, r.stderr
            try:
                _no_traces(cid, paths)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        assert cli("ps", "-a", "-q").stdout.strip() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
