"""-p / EXPOSE parsing: every accepted form and one-line errors naming the bad part."""

import pytest

from core.errors import UsageError
from runtime.network.portspec import format_mapping, parse_exposed, parse_port_spec, short_mapping
from runtime.spec import PortMapping


@pytest.mark.parametrize("text, expected", [
    ("8080:80", PortMapping(8080, 80, "tcp", "")),
    ("18080:80/tcp", PortMapping(18080, 80, "tcp", "")),
    ("5353:53/udp", PortMapping(5353, 53, "udp", "")),
    ("127.0.0.1:8080:80", PortMapping(8080, 80, "tcp", "127.0.0.1")),
    ("0.0.0.0:8080:80", PortMapping(8080, 80, "tcp", "")),
    ("80", PortMapping(0, 80, "tcp", "")),
    ("80/UDP", PortMapping(0, 80, "udp", "")),
    ("127.0.0.1::80", PortMapping(0, 80, "tcp", "127.0.0.1")),
    (" 1:65535 ", PortMapping(1, 65535, "tcp", "")),
])
def test_accepted_forms(text, expected):
    assert parse_port_spec(text) == expected


@pytest.mark.parametrize("text, message", [
    ("99999:80", "-p 99999:80: host port 99999 is outside 1-65535"),
    ("8080:0", "-p 8080:0: container port 0 is outside 1-65535"),
    ("abc", "-p abc: container port 'abc' is not a number"),
    ("x:80", "-p x:80: host port 'x' is not a number"),
    ("8080:80/sctp", "-p 8080:80/sctp: protocol 'sctp' is not tcp or udp"),
    ("1.2.3:8080:80", "-p 1.2.3:8080:80: host address '1.2.3' is not an IP address"),
    ("::1:8080:80", "-p ::1:8080:80: expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp]"),
    ("", "-p: empty port spec (expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp])"),
])
def test_rejected_with_one_line(text, message):
    with pytest.raises(UsageError) as info:
        parse_port_spec(text)
    assert str(info.value) == message
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_exposed_entries():
    assert parse_exposed("80/tcp") == PortMapping(0, 80, "tcp")
    assert parse_exposed("53/udp") == PortMapping(0, 53, "udp")
    assert parse_exposed("8080") == PortMapping(0, 8080, "tcp")
    with pytest.raises(UsageError, match="-P: image exposes 'http'"):
        parse_exposed("http")


def test_formats_like_docker():
    m = PortMapping(18080, 80, "tcp", "")
    assert format_mapping(m) == "80/tcp -> 0.0.0.0:18080"
    assert short_mapping(PortMapping(53, 53, "udp", "127.0.0.1")) == "127.0.0.1:53->53/udp"
