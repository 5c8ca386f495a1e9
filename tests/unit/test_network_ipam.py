"""IPAM: the pure address choice, and persistence/claims against a temp state root and run dir
(no host effects beyond temp files): round robin, release, idempotence, 50 concurrent allocators."""

import ipaddress
import multiprocessing
import os
from pathlib import Path

import pytest

from core.errors import NetworkError
from runtime.network import ipam
from runtime.network.bridge import config_path
from core.fsutil import atomic_write_json
from core.paths import HostPaths

NET = ipaddress.IPv4Network("10.88.0.0/29")  # .2 .. .6 usable


def A(s: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(s)


def test_pick_skips_network_gateway_and_broadcast():
    assert ipam.usable(NET) == (int(A("10.88.0.2")), int(A("10.88.0.6")))
    assert pick_all(NET) == ["10.88.0.2", "10.88.0.3", "10.88.0.4", "10.88.0.5", "10.88.0.6"]


def pick_all(net):
    taken, last, out = set(), None, []
    while (a := ipam.pick(net, taken, last)) is not None:
        out.append(str(a))
        taken.add(a)
        last = str(a)
    return out


def test_pick_is_round_robin_and_wraps():
    assert ipam.pick(NET, set(), "10.88.0.3") == A("10.88.0.4")
    assert ipam.pick(NET, {A("10.88.0.2")}, "10.88.0.6") == A("10.88.0.3")
    assert ipam.pick(NET, set(), "192.168.1.1") == A("10.88.0.2")  # stale "last" from another subnet


def test_pick_returns_none_when_full():
    full = {A(f"10.88.0.{i}") for i in range(2, 7)}
    assert ipam.pick(NET, full, None) is None


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_RUN_DIR", str(tmp_path / "run"))
    paths = HostPaths(root=tmp_path / "state").ensure()
    return paths


def _small_subnet(paths, subnet="10.88.0.0/29"):
    atomic_write_json(config_path(paths), {"bridge": "isobench0", "subnet": subnet})


def test_allocate_release_persist(root):
    a = ipam.allocate_address("c1", root)
    b = ipam.allocate_address("c2", root)
    assert a == ipaddress.IPv4Interface("10.88.0.2/16") and b.ip == A("10.88.0.3")
    assert ipam.allocate_address("c1", root) == a  # idempotent per owner
    assert ipam.allocations(root) == {"c1": "10.88.0.2/16", "c2": "10.88.0.3/16"}
    ipam.release_address("c1", root)
    ipam.release_address("c1", root)  # idempotent
    assert ipam.address_of("c1", root) is None
    assert ipam.allocate_address("c3", root).ip == A("10.88.0.4")  # not the just-released .2
    assert set(ipam.all_claims()) == {"10.88.0.3", "10.88.0.4"}


def test_full_subnet_is_a_one_line_error(root):
    _small_subnet(root)
    for i in range(5):
        ipam.allocate_address(f"c{i}", root)
    with pytest.raises(NetworkError, match=r"subnet 10.88.0.0/29 has no free address left for c9"):
        ipam.allocate_address("c9", root)


def test_two_state_roots_never_share_an_address(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_RUN_DIR", str(tmp_path / "run"))
    r1 = HostPaths(root=tmp_path / "r1").ensure()
    r2 = HostPaths(root=tmp_path / "r2").ensure()
    got = {ipam.allocate_address(f"a{i}", r1).ip for i in range(3)}
    got |= {ipam.allocate_address(f"b{i}", r2).ip for i in range(3)}
    assert len(got) == 6


def test_orphan_claims_dropped(root):
    ipam.allocate_address("dead", root)
    ipam.allocate_address("live", root)
    assert ipam.drop_orphan_claims(lambda owner: owner == "live") == ["10.88.0.2"]
    assert set(ipam.all_claims().values()) == {"live"}


def _alloc(args):
    root, run_dir, owner = args
    os.environ["ISOBENCH_RUN_DIR"] = run_dir  # a forkserver child has the environment of its server
    return str(ipam.allocate_address(owner, HostPaths(root=Path(root))).ip)


def test_fifty_concurrent_processes_get_distinct_addresses(root):
    # forkserver, not fork: pytest's process has threads by now (earlier tests' pumps and watchers),
    # and a child forked while one of them holds a lock hangs on it (seen: a worker stuck for 900 s)
    ctx = multiprocessing.get_context("forkserver")
    run_dir = os.environ["ISOBENCH_RUN_DIR"]
    with ctx.Pool(50) as pool:
        got = pool.map(_alloc, [(str(root.root), run_dir, f"c{i:02d}") for i in range(50)])
    assert len(set(got)) == 50
    assert len(ipam.allocations(root)) == 50
    assert len(ipam.all_claims()) == 50


def test_release_claims_of_drops_unpublished_claims(tmp_path, monkeypatch):
    """A plan prepared but never published (interrupted before attach) has claims and no record:
    detach must still find and drop them, and only the owner's."""
    from runtime.network import portmap

    monkeypatch.setenv("ISOBENCH_RUN_DIR", str(tmp_path / "run"))
    assert portmap.claim_port("isobench-aaa", "tcp", 40001)
    assert portmap.claim_port("isobench-aaa", "udp", 40002)
    assert portmap.claim_port("isobench-bbb", "tcp", 40003)
    portmap.release_claims_of("isobench-aaa")
    assert portmap.all_port_claims() == {"tcp-40003": "isobench-bbb"}
