"""Subnet validation and the overlap check against host routes (pure)."""

import ipaddress

import pytest

from core.errors import NetworkError, UsageError
from runtime.network.bridge import NetworkConfig, check_overlap, load_config, parse_subnet
from runtime.network.veth import veth_name
from core.paths import HostPaths

ROUTES = [("0.0.0.0/0", "eth0"), ("192.0.2.0/24", "eth0"), ("10.88.0.0/16", "isobench0"),
          ("172.17.0.0/16", "docker0")]


def test_overlap_names_both_networks():
    with pytest.raises(NetworkError) as info:
        check_overlap(ipaddress.IPv4Network("192.0.0.0/16"), ROUTES, "isobench0")
    assert str(info.value) == "subnet 192.0.0.0/16 overlaps host route 192.0.2.0/24 dev eth0"
    with pytest.raises(NetworkError, match="overlaps host route 172.17.0.0/16 dev docker0"):
        check_overlap(ipaddress.IPv4Network("172.17.5.0/24"), ROUTES, "isobench0")


def test_default_route_and_own_bridge_route_do_not_count():
    check_overlap(ipaddress.IPv4Network("10.88.0.0/16"), ROUTES, "isobench0")
    check_overlap(ipaddress.IPv4Network("10.89.0.0/16"), ROUTES, "isobench0")


@pytest.mark.parametrize("text, match", [
    ("10.88.0.1/16", "not an IPv4 network"),
    ("banana", "not an IPv4 network"),
    ("10.88.0.0/30", "too small"),
    ("127.0.0.0/8", "loopback"),
])
def test_bad_subnets(text, match):
    with pytest.raises(UsageError, match=match):
        parse_subnet(text)


def test_config_defaults_and_gateway(tmp_path):
    cfg = load_config(HostPaths(root=tmp_path))
    assert cfg == NetworkConfig("isobench0", "10.88.0.0/16")
    assert str(cfg.gateway) == "10.88.0.1/16"


def test_veth_names_fit_ifnamsiz_and_carry_the_project_name():
    for owner in ("0123456789abcdef", "isobench-0123456789", "ab"):
        name = veth_name(owner)
        assert len(name) <= 15 and name.startswith("isobench-")
    assert veth_name("0123456789abcdef") == "isobench-012345"
