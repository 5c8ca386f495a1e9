"""Network spec validation, -P expansion and /etc/hosts, /etc/resolv.conf content (pure)."""

import pytest

from core.errors import UsageError
from runtime.network.container import (LOCALHOST_ENTRIES, NetworkAttachment, hosts_file, parse_nameservers,
                                       prepare, resolv_conf, wanted_ports)
from core.paths import HostPaths
from runtime.spec import NetworkSpec, PortMapping


@pytest.mark.parametrize("mode", ["none", "host"])
def test_ports_need_bridge(mode, tmp_path):
    spec = NetworkSpec(mode=mode, ports=(PortMapping(8080, 80),))
    with pytest.raises(UsageError) as info:
        prepare("c1", spec, HostPaths(root=tmp_path))
    assert str(info.value) == f"-p needs --network bridge (got {mode})"
    with pytest.raises(UsageError, match=r"^-P needs --network bridge \(got none\)$"):
        prepare("c1", NetworkSpec(mode="none", publish_all=True), HostPaths(root=tmp_path))
    assert not (tmp_path / "network").exists()  # nothing left behind


def test_unknown_mode():
    with pytest.raises(UsageError, match="--network overlay: expected bridge, none or host"):
        prepare("c1", NetworkSpec(mode="overlay"), HostPaths(root="/nonexistent"))  # type: ignore[arg-type]


def test_none_and_host_plans_touch_nothing(tmp_path):
    for mode in ("none", "host"):
        plan = prepare("c1", NetworkSpec(mode=mode), HostPaths(root=tmp_path))
        assert plan.mode == mode and plan.address is None
    assert not (tmp_path / "network").exists()


def test_publish_all_adds_exposed_ports_once():
    spec = NetworkSpec(ports=(PortMapping(8080, 80),), publish_all=True)
    ports = wanted_ports(spec, ("80/tcp", "53/udp", "443", "53/udp"))
    assert ports == (PortMapping(8080, 80), PortMapping(0, 53, "udp"), PortMapping(0, 443, "tcp"))
    assert wanted_ports(NetworkSpec(), ("80/tcp",)) == ()  # without -P exposure publishes nothing


def test_nameservers_drop_loopback_for_bridge():
    lines = ["# c", "nameserver 127.0.0.53", "nameserver 10.0.0.2", "nameserver bogus", "search x"]
    assert parse_nameservers(lines, allow_loopback=False) == ("10.0.0.2",)
    assert parse_nameservers(lines, allow_loopback=True) == ("127.0.0.53", "10.0.0.2")


def test_hosts_and_resolv_content():
    att = NetworkAttachment(mode="bridge", ip="10.88.0.2", prefixlen=16, gateway="10.88.0.1", ports=(),
                            nameservers=("10.0.0.2",), hosts_entries=LOCALHOST_ENTRIES)
    assert hosts_file(att, "web").splitlines() == [
        "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", "10.88.0.2\tweb"]
    assert resolv_conf(att) == "nameserver 10.0.0.2\n"
    none = NetworkAttachment("none", None, 0, None, (), (), LOCALHOST_ENTRIES)
    assert hosts_file(none, "box").splitlines()[-1] == "127.0.1.1\tbox"
