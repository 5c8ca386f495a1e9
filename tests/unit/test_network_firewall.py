"""nftables rule generation as pure functions: base script, DNAT rules, tag parsing, deletion."""

import json

import pytest

from core.errors import NetworkError
from runtime.network import firewall
from runtime.spec import PortMapping

LISTING = json.dumps({"nftables": [
    {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
    {"table": {"family": "ip", "name": "isobench", "handle": 7}},
    {"chain": {"family": "ip", "table": "isobench", "name": "ISOBENCH-DNAT", "handle": 1}},
    {"rule": {"family": "ip", "table": "isobench", "chain": "ISOBENCH-PREROUTING", "handle": 9,
              "comment": "isobench0-base", "expr": []}},
    {"rule": {"family": "ip", "table": "isobench", "chain": "ISOBENCH-DNAT", "handle": 12,
              "comment": "isobench-abc123", "expr": []}},
    {"rule": {"family": "ip", "table": "isobench", "chain": "ISOBENCH-DNAT", "handle": 13, "expr": []}},
]})


def test_dnat_rule_text():
    m = PortMapping(18080, 80, "tcp", "")
    assert firewall.dnat_rule("isobench-abc", m, "10.88.0.2") == \
        'tcp dport 18080 dnat to 10.88.0.2:80 comment "isobench-abc"'
    bound = firewall.dnat_rule("isobench-abc", PortMapping(53, 53, "udp", "127.0.0.1"), "10.88.0.3")
    assert bound == 'ip daddr 127.0.0.1 udp dport 53 dnat to 10.88.0.3:53 comment "isobench-abc"'


def test_publish_script_one_transaction_in_own_table():
    text = firewall.publish_script("isobench-a", [PortMapping(1, 2), PortMapping(3, 4, "udp")], "10.88.0.9")
    assert text.splitlines() == [
        'add rule ip isobench ISOBENCH-DNAT tcp dport 1 dnat to 10.88.0.9:2 comment "isobench-a"',
        'add rule ip isobench ISOBENCH-DNAT udp dport 3 dnat to 10.88.0.9:4 comment "isobench-a"']
    assert firewall.publish_script("isobench-a", [], "10.88.0.9") == ""


def test_unresolved_port_refused():
    with pytest.raises(NetworkError, match="no resolved host port"):
        firewall.dnat_rule("isobench-x", PortMapping(0, 80), "10.88.0.2")


def test_base_rules_all_tagged_and_cover_hairpin_and_outbound():
    rules = firewall.base_rules("isobench0", "10.88.0.0/16")
    assert set(rules) == set(firewall.BASE_CHAINS)
    flat = [r for rs in rules.values() for r in rs]
    assert all(r.endswith('comment "isobench0-base"') for r in flat)
    assert rules["ISOBENCH-OUTPUT"] == ['fib daddr type local jump ISOBENCH-DNAT comment "isobench0-base"']
    post = " | ".join(rules["ISOBENCH-POSTROUTING"])
    assert 'ip saddr 10.88.0.0/16 oifname != "isobench0" masquerade' in post      # outbound
    assert 'oifname "isobench0" fib saddr type local masquerade' in post           # from 127.0.0.1
    assert "ct status dnat masquerade" in post                                     # container hairpin


def test_base_script_is_idempotent_and_atomic():
    text = firewall.base_script("isobench0", "10.88.0.0/16").splitlines()
    assert text[0] == "add table ip isobench"
    assert "add chain ip isobench ISOBENCH-DNAT" in text  # never flushed: holds the owners' rules
    assert "flush chain ip isobench ISOBENCH-DNAT" not in text
    for chain in firewall.BASE_CHAINS:
        flush = text.index(f"flush chain ip isobench {chain}")
        assert text[flush + 1].startswith(f"add rule ip isobench {chain} ")
    assert 'add chain ip isobench ISOBENCH-PREROUTING { type nat hook prerouting priority dstnat; policy accept; }' in text


def test_parse_rules_finds_tags_and_handles():
    rules = firewall.parse_rules(LISTING)
    assert rules == [firewall.TaggedRule("ISOBENCH-PREROUTING", 9, "isobench0-base"),
                     firewall.TaggedRule("ISOBENCH-DNAT", 12, "isobench-abc123")]
    assert firewall.parse_rules("") == []


def test_delete_script_by_handle():
    doomed = [r for r in firewall.parse_rules(LISTING) if r.tag == "isobench-abc123"]
    assert firewall.delete_script(doomed) == "delete rule ip isobench ISOBENCH-DNAT handle 12\n"


def test_owner_and_base_tags():
    assert firewall.owner_tag("abc") == "isobench-abc"
    assert firewall.owner_tag("isobench-abc") == "isobench-abc"
    assert firewall.base_tag("isobench0") == "isobench0-base"


SAVED = """*nat
:ISOBENCH-DNAT - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment isobench0-base -j ISOBENCH-DNAT
-A ISOBENCH-DNAT -p tcp -m tcp --dport 18080 -m comment --comment "isobench-abc123" -j DNAT --to-destination 10.88.0.2:80
-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE
COMMIT
"""


def test_legacy_iptables_lines_parsed_with_tags():
    got = firewall.legacy_tagged(SAVED)
    assert [(t, tag) for t, _, tag in got] == [("nat", "isobench0-base"), ("nat", "isobench-abc123")]
