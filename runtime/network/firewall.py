"""iptables rules for the bridge and for port mappings: pure rule generation plus apply/remove by tag.

Why iptables (nf_tables backend here) through ``iptables-restore --noflush``: one process per change
applies a whole batch atomically (a container with three ports costs one exec, ~2-3 ms), rules live in
the project's own chains (``ISOBENCH-*``) so other software's rules are never touched, and every rule
carries a comment tag ``isobench-<owner id>`` so teardown and ``gc`` find rules by owner without any
state file: ``iptables-save`` lists them, each ``-A`` line turned into ``-D`` deletes exactly that rule.

Rule generation is a set of pure functions returning argv lists (unit tested without root);
:func:`apply` / :func:`remove_tagged` are the only functions touching the host.

Chains (all in ``nat`` unless noted):

* ``ISOBENCH-DNAT``: one DNAT rule per published port. Jumped to from PREROUTING (traffic arriving
  from outside and from other containers) and from OUTPUT (the host's own connections, including to
  127.0.0.1), both only for destinations of type LOCAL, i.e. addresses of this host.
* ``ISOBENCH-POSTROUTING``: MASQUERADE of the subnet leaving by another interface (outbound traffic)
  and MASQUERADE of locally-sourced traffic entering the bridge (hairpin from 127.0.0.1, see below).
* ``ISOBENCH-FORWARD`` (``filter``): accept traffic from the bridge and replies/DNATed traffic to it,
  so a host whose FORWARD policy is DROP still works.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from runtime.errors import NetworkError
from runtime.spec import PortMapping

DNAT_CHAIN = "ISOBENCH-DNAT"
POST_CHAIN = "ISOBENCH-POSTROUTING"
FORWARD_CHAIN = "ISOBENCH-FORWARD"
CHAINS: Mapping[str, tuple[str, ...]] = {"nat": (DNAT_CHAIN, POST_CHAIN), "filter": (FORWARD_CHAIN,)}
TAG_PREFIX = "isobench-"

Rule = list[str]  # an iptables argv tail: ["-A", CHAIN, ...]


@dataclass(frozen=True)
class TaggedRule:
    """One rule as ``iptables-save`` prints it, with its table and comment tag."""

    table: str
    line: str  # "-A CHAIN ..."
    tag: str


def base_tag(bridge: str) -> str:
    """Tag of the bridge-wide rules; ``gc`` never removes these (only ``network prune`` does)."""
    return f"{bridge}-base"


def owner_tag(owner_id: str) -> str:
    return owner_id if owner_id.startswith(TAG_PREFIX) else TAG_PREFIX + owner_id


def _comment(tag: str) -> Rule:
    return ["-m", "comment", "--comment", tag]


def base_rules(bridge: str, subnet: str) -> dict[str, list[Rule]]:
    """Bridge-wide rules per table: jumps into the project's chains and their static content."""
    tag = base_tag(bridge)
    local = ["-m", "addrtype", "--dst-type", "LOCAL"]
    return {
        "nat": [
            ["-A", "PREROUTING", *local, *_comment(tag), "-j", DNAT_CHAIN],
            ["-A", "OUTPUT", *local, *_comment(tag), "-j", DNAT_CHAIN],
            ["-A", "POSTROUTING", *_comment(tag), "-j", POST_CHAIN],
            # outbound: containers leave with the host's address
            ["-A", POST_CHAIN, "-s", subnet, "!", "-o", bridge, *_comment(tag), "-j", "MASQUERADE"],
            # hairpin from the host itself (127.0.0.1, host addresses): the container must answer to the
            # gateway, not to a loopback address it cannot reach
            ["-A", POST_CHAIN, "-o", bridge, "-m", "addrtype", "--src-type", "LOCAL", *_comment(tag),
             "-j", "MASQUERADE"],
            # hairpin: a container reaching its own published port via a host address would see a
            # packet from itself (dropped as martian); seen from the gateway it is answered
            ["-A", POST_CHAIN, "-s", subnet, "-d", subnet, "-o", bridge, "-m", "conntrack", "--ctstate", "DNAT",
             *_comment(tag), "-j", "MASQUERADE"],
        ],
        "filter": [
            ["-I", "FORWARD", "1", *_comment(tag), "-j", FORWARD_CHAIN],
            ["-A", FORWARD_CHAIN, "-i", bridge, *_comment(tag), "-j", "ACCEPT"],
            ["-A", FORWARD_CHAIN, "-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT",
             *_comment(tag), "-j", "ACCEPT"],
        ],
    }


def dnat_rule(tag: str, mapping: PortMapping, target_ip: str) -> Rule:
    """DNAT of one published port to ``target_ip:container_port``."""
    if mapping.host_port <= 0:
        raise NetworkError(f"port mapping {mapping} has no resolved host port")
    dest = ["-d", f"{mapping.host_ip}/32"] if mapping.host_ip else []
    return ["-A", DNAT_CHAIN, *dest, "-p", mapping.protocol, "-m", mapping.protocol,
            "--dport", str(mapping.host_port), *_comment(tag), "-j", "DNAT",
            "--to-destination", f"{target_ip}:{mapping.container_port}"]


def port_rules(tag: str, mappings: Sequence[PortMapping], target_ip: str) -> dict[str, list[Rule]]:
    return {"nat": [dnat_rule(tag, m, target_ip) for m in mappings]}


def restore_text(rules: Mapping[str, Sequence[Rule]], new_chains: Mapping[str, Iterable[str]] = {}) -> str:
    """``iptables-restore --noflush`` input: per table, chain declarations then rules, then COMMIT.
    Only chains that do not exist yet may be declared (with --noflush a declaration flushes a chain)."""
    out: list[str] = []
    for table in sorted(set(rules) | set(new_chains)):
        body = [f":{c} - [0:0]" for c in new_chains.get(table, ())]
        body += [" ".join(_quote(a) for a in r) for r in rules.get(table, ())]
        if body:
            out += [f"*{table}", *body, "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def _quote(arg: str) -> str:
    return f'"{arg}"' if (not arg or " " in arg) else arg


def _tag_of(tokens: Sequence[str]) -> str | None:
    for i, tok in enumerate(tokens[:-1]):
        if tok == "--comment":
            return tokens[i + 1].strip('"')
    return None


def parse_save(text: str) -> tuple[dict[str, set[str]], list[TaggedRule]]:
    """From ``iptables-save`` output: chains per table, and every rule with a comment tag."""
    chains: dict[str, set[str]] = {}
    rules: list[TaggedRule] = []
    table = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
            chains.setdefault(table, set())
        elif line.startswith(":"):
            chains.setdefault(table, set()).add(line[1:].split()[0])
        elif line.startswith("-A "):
            tag = _tag_of(line.split())
            if tag:
                rules.append(TaggedRule(table, line, tag))
    return chains, rules


def delete_text(rules: Iterable[TaggedRule]) -> str:
    """``iptables-restore --noflush`` input deleting exactly these saved rules."""
    by_table: dict[str, list[str]] = {}
    for r in rules:
        by_table.setdefault(r.table, []).append("-D" + r.line[2:])
    out: list[str] = []
    for table in sorted(by_table):
        out += [f"*{table}", *by_table[table], "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def missing_base(saved: str, bridge: str, subnet: str) -> str:
    """Restore text that adds what is missing of the bridge-wide chains and rules (idempotent)."""
    chains, tagged = parse_save(saved)
    have = {_norm(r.line) for r in tagged if r.tag == base_tag(bridge)}
    new_chains = {t: [c for c in cs if c not in chains.get(t, set())] for t, cs in CHAINS.items()}
    wanted: dict[str, list[Rule]] = {}
    for table, rules in base_rules(bridge, subnet).items():
        wanted[table] = [r for r in rules if _norm_rule(r) not in have]
    return restore_text(wanted, new_chains)


def _norm_rule(rule: Rule) -> tuple[str, frozenset[str]]:
    """Chain plus the set of significant tokens: iptables-save adds ``-m tcp``, reorders matches and
    writes ``/32``; comparing token sets of chain+targets is enough to recognise our own base rules."""
    chain = rule[1]
    tokens = [t for t in rule[2:] if not t.isdigit()]  # drop "-I FORWARD 1" position
    return chain, frozenset(t.removesuffix("/32") for t in tokens)


def _norm(line: str) -> tuple[str, frozenset[str]]:
    return _norm_rule(line.split())


def dnat_ports(saved: str) -> list[tuple[str, int, str, str]]:
    """(protocol, host port, host ip or "", tag) of every DNAT rule in the project's chain."""
    out = []
    for r in parse_save(saved)[1]:
        tok = r.line.split()
        if r.table != "nat" or tok[1] != DNAT_CHAIN or "--dport" not in tok:
            continue
        proto = tok[tok.index("-p") + 1] if "-p" in tok else "tcp"
        dest = tok[tok.index("-d") + 1].removesuffix("/32") if "-d" in tok else ""
        out.append((proto, int(tok[tok.index("--dport") + 1]), dest, r.tag))
    return out


# --- host effects -------------------------------------------------------------------------------

def save(*tables: str) -> str:
    from runtime import syscalls

    text = ""
    for table in tables or ("nat", "filter"):
        try:
            text += syscalls.run(["iptables-save", "-t", table], timeout_s=30).stdout.decode()
        except (OSError, subprocess.SubprocessError) as exc:
            raise NetworkError(f"iptables-save -t {table} failed: {_why(exc)}") from exc
    return text


def apply(text: str, what: str) -> None:
    """Feed ``iptables-restore --noflush -w`` (waits for the xtables lock instead of failing)."""
    if not text:
        return
    from runtime import syscalls

    try:
        syscalls.run(["iptables-restore", "--noflush", "-w", "30"], input_bytes=text.encode(), timeout_s=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NetworkError(f"iptables-restore failed for {what}: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    err = getattr(exc, "stderr", None)
    if isinstance(err, bytes) and err.strip():
        return err.decode(errors="replace").strip().splitlines()[-1]
    return str(exc)


def remove_tagged(tags: set[str], saved: str | None = None) -> list[TaggedRule]:
    """Delete every rule whose comment tag is in ``tags``; return what was deleted."""
    text = saved if saved is not None else save("nat", "filter")
    doomed = [r for r in parse_save(text)[1] if r.tag in tags]
    apply(delete_text(doomed), f"removing rules tagged {', '.join(sorted(tags))}")
    return doomed


def remove_chains(bridge: str) -> None:
    """Remove the bridge-wide rules and the project's chains (``network prune``)."""
    text = save("nat", "filter")
    chains, _ = parse_save(text)
    remove_tagged({base_tag(bridge)}, text)
    out: list[str] = []
    for table, names in CHAINS.items():
        present = [c for c in names if c in chains.get(table, set())]
        if present:
            out += [f"*{table}", *[f"-F {c}" for c in present], *[f"-X {c}" for c in present], "COMMIT"]
    apply("\n".join(out) + "\n" if out else "", f"removing chains of {bridge}")
