"""Container networking against the real kernel, without the runtime: a "container" is a process in its
own network namespace (``unshare -n sleep``), attached with the public API exactly as the runtime does.

Traffic goes only to loopback, to the host's own address and to these containers on the project's
bridge. The module creates the bridge before the leak checks start (the bridge and its bridge-wide
rules are meant to outlive containers) and prunes it at the end if it was not there before.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core import leases
from core.errors import NetworkError
from core.fsutil import atomic_write_json
from core.paths import HostPaths, new_id
from runtime.spec import NetworkSpec

pytestmark = pytest.mark.requires("root", "iptables", "busybox")

BUSYBOX = "/bin/busybox"


def _stable(objs: dict[str, set[str]]) -> dict[str, set[str]]:
    """``nft list ruleset`` prints packet counters of rules that have them (iptables-nft rules always
    do), so a rule that merely saw traffic would look new; compare rules without counters
    (hostprobe could use ``nft -s`` instead)."""
    import re

    out = dict(objs)
    out["rules"] = {re.sub(r"counter packets \d+ bytes \d+", "counter", r) for r in objs.get("rules", set())}
    return out


@pytest.fixture
def leak_check():
    """The shared leak check (tests/conftest.py), with rule counters ignored."""
    from tests import hostprobe

    before = _stable(hostprobe.host_objects())
    yield
    left = hostprobe.leaks(before, _stable(hostprobe.host_objects()))
    assert not left, f"test leaked host objects: {left}"


@pytest.fixture(scope="module")
def bridge(isobench_root):
    from runtime import network
    from runtime.network import bridge as br
    from runtime.network.gc import prune

    paths = HostPaths(root=isobench_root).ensure()
    existed = br.bridge_exists()
    info = network.ensure_bridge(paths)
    yield info
    if not existed:
        prune(paths)  # keeps the bridge if another live owner (another helper's test) uses it


def host_address() -> str:
    """The host's own non-loopback address (of the default-route device)."""
    route = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout.split()
    dev = route[route.index("dev") + 1]
    addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", dev], capture_output=True, text=True).stdout
    return addr.split("inet ")[1].split("/")[0]


class Fake:
    """A fake container: a netns process with a lease, optionally serving files with busybox httpd."""

    def __init__(self, paths: HostPaths, www: Path):
        self.paths, self.www = paths, www
        self.id = new_id()
        self.proc = subprocess.Popen(["unshare", "-n", "sleep", "300"])
        self.pid = self.proc.pid
        leases.take(self.id, pid=self.pid)
        self.httpd: subprocess.Popen | None = None
        self.attachment = None
        _wait_for(lambda: os.readlink(f"/proc/{self.pid}/ns/net") != os.readlink("/proc/self/ns/net"))

    def nsenter(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net=/proc/{self.pid}/ns/net", *argv], capture_output=True,
                              text=True, timeout=20, **kw)

    def serve(self, port: int = 80) -> None:
        self.httpd = subprocess.Popen(["nsenter", f"--net=/proc/{self.pid}/ns/net", BUSYBOX, "httpd", "-f",
                                       "-p", str(port), "-h", str(self.www)])

    def close(self) -> None:
        from runtime import network

        for p in (self.httpd, self.proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        try:
            network.detach(self.id, self.paths)
        finally:
            leases.release(self.id)


@pytest.fixture
def fake(paths, tmp_path, bridge):
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from the container\n")
    made: list[Fake] = []

    def make() -> Fake:
        f = Fake(paths, www)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(cond, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def fetch(url: str, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _no_traces(owner: str, paths: HostPaths) -> None:
    from runtime.network import firewall, ipam, portmap, veth

    assert not Path(f"/sys/class/net/{veth.veth_name(owner)}").exists()
    assert not [r for r in firewall.tagged_rules() if r.tag == firewall.owner_tag(owner)]
    assert owner not in ipam.allocations(paths)
    assert owner not in ipam.all_claims().values()
    assert owner not in portmap.all_port_claims().values()
    assert not portmap.record_path(owner, paths).exists()


def test_httpd_served_through_port_mapping(leak_check, fake, paths):
    from runtime import network

    c = fake()
    spec = NetworkSpec(ports=(network.parse_port_spec("18080:80"),))
    att = network.attach(network.prepare(c.id, spec, paths), c.pid)
    assert att.mode == "bridge" and ipaddress.IPv4Address(att.ip) in ipaddress.IPv4Network("10.88.0.0/16")
    assert att.gateway == "10.88.0.1" and att.prefixlen == 16
    assert [(m.host_port, m.container_port) for m in att.ports] == [(18080, 80)]
    assert network.list_mappings(c.id, paths) == att.ports
    c.serve()
    assert fetch("http://127.0.0.1:18080/") == "hello from the container\n"
    assert fetch(f"http://{host_address()}:18080/") == "hello from the container\n"
    assert fetch(f"http://{att.ip}/") == "hello from the container\n"
    # inside: eth0 with the address, lo up, default route via the bridge
    assert "default via 10.88.0.1 dev eth0" in c.nsenter("ip", "route").stdout
    assert "inet 127.0.0.1/8" in c.nsenter("ip", "-4", "addr", "show", "lo").stdout
    c.close()
    _no_traces(c.id, paths)
    network.detach(c.id, paths)  # idempotent


def test_two_containers_reach_each_other(leak_check, fake, paths):
    from runtime import network

    a, b = fake(), fake()
    att_a = network.attach(network.prepare(a.id, NetworkSpec(), paths), a.pid)
    att_b = network.attach(network.prepare(b.id, NetworkSpec(), paths), b.pid)
    assert att_a.ip != att_b.ip
    a.serve()
    # (this busybox's wget segfaults with -T, so the timeout comes from `timeout`)
    _wait_for(lambda: "hello" in b.nsenter("timeout", "3", BUSYBOX, "wget", "-q", "-O", "-",
                                           f"http://{att_a.ip}/").stdout)
    assert a.nsenter(BUSYBOX, "ping", "-c", "1", "-W", "2", att_b.ip).returncode == 0


def test_published_ports_reachable_from_containers_via_host_address(leak_check, fake, paths):
    """Hairpin: a container reaches another's and its own published port through the host address."""
    from runtime import network

    a, b = fake(), fake()
    pa, pb = free_port(), free_port()
    network.attach(network.prepare(a.id, NetworkSpec(ports=(network.parse_port_spec(f"{pa}:80"),)), paths), a.pid)
    network.attach(network.prepare(b.id, NetworkSpec(ports=(network.parse_port_spec(f"{pb}:80"),)), paths), b.pid)
    a.serve()
    b.serve()
    host = host_address()
    for port in (pb, pa):  # the other container's port, then its own
        _wait_for(lambda: "hello" in a.nsenter("timeout", "3", BUSYBOX, "wget", "-q", "-O", "-",
                                               f"http://{host}:{port}/").stdout)


def test_network_none_has_only_loopback(leak_check, fake, paths):
    from runtime import network

    c = fake()
    att = network.attach(network.prepare(c.id, NetworkSpec(mode="none"), paths), c.pid)
    assert att.mode == "none" and att.ip is None and att.ports == ()
    assert c.nsenter("ip", "-4", "route").stdout.strip() == ""
    links = c.nsenter("ip", "-o", "link").stdout
    assert "lo:" in links and "UP" in links and "eth0" not in links
    out = c.nsenter("timeout", "3", BUSYBOX, "wget", "-q", "-O", "-", "http://10.88.0.1/")
    assert out.returncode != 0 and "unreachable" in out.stderr.lower()
    assert not (paths.network / "ports" / f"{c.id}.json").exists()


def test_publish_all_maps_exposed_ports_to_free_host_ports(leak_check, fake, paths):
    from runtime import network

    c = fake()
    plan = network.prepare(c.id, NetworkSpec(publish_all=True), paths, exposed_ports=("80/tcp",))
    att = network.attach(plan, c.pid)
    (m,) = att.ports
    assert m.container_port == 80 and 1024 < m.host_port <= 65535
    c.serve()
    assert fetch(f"http://127.0.0.1:{m.host_port}/") == "hello from the container\n"


def test_host_port_in_use_refused_before_start(leak_check, fake, paths):
    from runtime import network

    c = fake()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        spec = NetworkSpec(ports=(network.parse_port_spec(f"{port}:80"),))
        with pytest.raises(NetworkError) as info:
            network.prepare(c.id, spec, paths)
    assert str(info.value) == f"host port {port}/tcp is already in use"
    _no_traces(c.id, paths)


def test_port_published_by_another_container_refused(leak_check, fake, paths):
    from runtime import network

    a, b = fake(), fake()
    port = free_port()
    spec = NetworkSpec(ports=(network.parse_port_spec(f"{port}:80"),))
    network.attach(network.prepare(a.id, spec, paths), a.pid)
    with pytest.raises(NetworkError, match=rf"^host port {port}/tcp is already in use by isobench-{a.id}$"):
        network.prepare(b.id, spec, paths)
    _no_traces(b.id, paths)


def test_subnet_overlapping_a_host_route_refused(leak_check, tmp_path):
    from runtime import network
    from runtime.network import bridge as br
    from runtime.network import ipam

    root = HostPaths(root=tmp_path / "overlap").ensure()
    net = ipaddress.IPv4Interface(host_address() + "/24").network
    sub = ipaddress.IPv4Network(f"{net.network_address}/25")
    atomic_write_json(br.config_path(root), {"bridge": "isobench9", "subnet": str(sub)})
    with pytest.raises(NetworkError) as info:
        network.prepare("ovl" + new_id(), NetworkSpec(), root)
    assert str(info.value).startswith(f"subnet {sub} overlaps host route ")
    assert not br.bridge_exists("isobench9")
    assert ipam.allocations(root) == {}
    with pytest.raises(NetworkError, match=f"subnet {sub} overlaps host route"):
        br.set_subnet(HostPaths(root=tmp_path / "other"), str(sub))


GHOST = r"""
import os, subprocess, sys, time
from pathlib import Path
from runtime import network
from core import leases
from core.paths import HostPaths
from runtime.spec import NetworkSpec
paths = HostPaths(root=Path(sys.argv[1]))
cid, pid = sys.argv[2], int(sys.argv[3])
leases.take(cid)  # this CLI process owns the network objects
plan = network.prepare(cid, NetworkSpec(ports=(network.parse_port_spec(sys.argv[4] + ":80"),)), paths)
network.attach(plan, pid)
print("ready", flush=True)
time.sleep(300)
"""


def test_gc_after_killed_owner_removes_rules_links_and_address(leak_check, fake, paths):
    from runtime.network import firewall, veth
    from runtime.network.gc import gc

    ns = fake()  # only its netns is used; the owner is the "CLI" below
    cid = new_id()
    cli = subprocess.Popen([sys.executable, "-c", GHOST, str(paths.root), cid, str(ns.pid), str(free_port())],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert cli.stdout.readline().strip() == "ready"
        assert Path(f"/sys/class/net/{veth.veth_name(cid)}").exists()
        assert gc(paths) == [] or all(cid not in item for item in gc(paths))  # live owner: untouched
        cli.kill()
        cli.wait()
        removed = gc(paths)
        assert any(item.startswith(f"link {veth.veth_name(cid)}") for item in removed)
        assert any(f"isobench-{cid}" in item for item in removed if item.startswith("rule"))
        assert any(cid in item for item in removed if item.startswith("address"))
        _no_traces(cid, paths)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        with contextlib.suppress(NetworkError):
            gc(paths)
        leases.release(cid)
