"""Dockerfile parsing and Docker-style word processing (quotes, escapes, ``$VAR`` substitution).

Parsing is pure: text in, a tuple of :class:`Instruction` out, with every problem reported as
``BuildError("<file>:<line>: <what>")``. Substitution happens later, in the builder, because values
depend on ARG/ENV state at each step; the helpers for it (:func:`expand`, :func:`split_words`,
:func:`parse_kv_pairs`) live here so the rules are tested in one place.

Supported: FROM [--platform] x [AS name], RUN, CMD, ENTRYPOINT (shell and exec/JSON forms), SHELL
(JSON), ENV (``k=v ...`` and legacy ``k v``), ARG (also before FROM), WORKDIR, USER, LABEL, EXPOSE,
VOLUME (JSON or words), COPY/ADD (``--from``, ``--chown``, ``--chmod``; JSON or words), STOPSIGNAL,
MAINTAINER; comments, line continuations, the ``# escape=`` parser directive, and substitution forms
``$V``, ``${V}``, ``${V:-w}``, ``${V-w}``, ``${V:+w}``, ``${V+w}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import BuildError

# keyword -> flags it accepts (value names); every keyword the builder implements is listed
FLAGS: dict[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "RUN": frozenset(),
    "CMD": frozenset(),
    "ENTRYPOINT": frozenset(),
    "SHELL": frozenset(),
    "ENV": frozenset(),
    "ARG": frozenset(),
    "WORKDIR": frozenset(),
    "USER": frozenset(),
    "LABEL": frozenset(),
    "EXPOSE": frozenset(),
    "VOLUME": frozenset(),
    "COPY": frozenset({"from", "chown", "chmod"}),
    "ADD": frozenset({"chown", "chmod"}),
    "STOPSIGNAL": frozenset(),
    "MAINTAINER": frozenset(),
}
UNSUPPORTED = {
    "ONBUILD": "ONBUILD triggers are not supported by isobench's builder",
    "HEALTHCHECK": "HEALTHCHECK is not supported by isobench's builder (no health monitoring)",
}
JSON_FORMS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class Instruction:
    keyword: str                      # upper case, e.g. "COPY"
    args: str                         # text after the keyword and flags, continuations joined
    lineno: int                       # line of the keyword (1-based)
    original: str                     # "COPY --from=b /x /y" as written (one line)
    flags: dict[str, str] = field(default_factory=dict)
    json_args: tuple[str, ...] | None = None  # exec/JSON form when given

    def where(self, path: Path | str) -> str:
        return f"{path}:{self.lineno}"


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    escape: str
    instructions: tuple[Instruction, ...]


def parse_file(path: Path) -> Dockerfile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BuildError(f"{path}: Dockerfile not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path}: cannot read Dockerfile: {exc}") from exc
    return parse(text, path)


def parse(text: str, path: Path | str = "Dockerfile") -> Dockerfile:
    path = Path(path)
    lines = text.splitlines()
    escape, first = _directives(lines, path)
    instructions: list[Instruction] = []
    i = first
    while i < len(lines):
        raw = lines[i]
        start = i
        i += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = [stripped]
        # continuation: the line ends with the escape char; comment and blank lines inside are dropped
        while _continues(parts[-1], escape):
            parts[-1] = parts[-1].rstrip()[:-1]
            while i < len(lines) and (not lines[i].strip() or lines[i].strip().startswith("#")):
                i += 1
            if i >= len(lines):
                break
            parts.append(lines[i].strip())
            i += 1
        logical = " ".join(p.strip() for p in parts if p.strip()).strip()
        instructions.append(_instruction(logical, start + 1, path))
    _check_from(instructions, path)
    return Dockerfile(path, escape, tuple(instructions))


def _directives(lines: list[str], path: Path) -> tuple[str, int]:
    escape = "\\"
    seen: set[str] = set()
    for n, line in enumerate(lines):
        m = _DIRECTIVE.match(line.strip())
        if not m:
            return escape, n
        key = m.group(1).lower()
        if key not in ("escape", "syntax", "check"):
            return escape, n  # an ordinary comment ends the directive block
        if key in seen:
            raise BuildError(f"{path}:{n + 1}: parser directive {key!r} given twice")
        seen.add(key)
        if key == "escape":
            if m.group(2) not in ("\\", "`"):
                raise BuildError(f"{path}:{n + 1}: invalid escape directive {m.group(2)!r} (use \\ or `)")
            escape = m.group(2)
    return escape, len(lines)


def _continues(line: str, escape: str) -> bool:
    s = line.rstrip()
    return s.endswith(escape) and not s.endswith(escape * 2)


def _instruction(logical: str, lineno: int, path: Path) -> Instruction:
    keyword, _, rest = logical.partition(" ")
    if "\t" in keyword:
        keyword, _, tail = keyword.partition("\t")
        rest = tail + " " + rest
    kw = keyword.upper()
    rest = rest.strip()
    where = f"{path}:{lineno}"
    if kw in UNSUPPORTED:
        raise BuildError(f"{where}: {UNSUPPORTED[kw]}")
    if kw not in FLAGS:
        raise BuildError(f"{where}: unknown instruction {keyword!r}")
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        token, _, after = rest.partition(" ")
        name, eq, value = token[2:].partition("=")
        if name not in FLAGS[kw]:
            raise BuildError(f"{where}: {kw} does not support the flag --{name}"
                             + (" (RUN --mount/--network are BuildKit features isobench does not implement)"
                                if kw == "RUN" else ""))
        if not eq or not value:
            raise BuildError(f"{where}: {kw} flag --{name} needs a value (--{name}=VALUE)")
        flags[name] = value
        rest = after.strip()
    json_args: tuple[str, ...] | None = None
    if kw in JSON_FORMS and rest.startswith("["):
        json_args = _json_array(rest, kw, where)
    if kw == "SHELL" and json_args is None:
        raise BuildError(f"{where}: SHELL requires the JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]")
    _check_arity(kw, rest, json_args, where, flags)
    return Instruction(kw, rest, lineno, logical, flags, json_args)


def _json_array(text: str, kw: str, where: str) -> tuple[str, ...]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BuildError(f"{where}: malformed exec-form JSON for {kw}: {exc.msg} at column {exc.colno}: {text}") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BuildError(f"{where}: exec form of {kw} must be a JSON array of strings: {text}")
    return tuple(value)


def _check_arity(kw: str, rest: str, json_args: tuple[str, ...] | None, where: str,
                 flags: dict[str, str]) -> None:
    n = len(json_args) if json_args is not None else len(rest.split())
    needs_one = {"FROM", "RUN", "ENV", "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE", "VOLUME", "SHELL",
                 "STOPSIGNAL", "MAINTAINER", "ENTRYPOINT", "CMD"}
    if kw in ("COPY", "ADD") and n < 2:
        raise BuildError(f"{where}: {kw} requires at least two arguments (source(s) and destination)")
    if kw in needs_one and n < 1 and kw not in ("CMD", "ENTRYPOINT"):
        raise BuildError(f"{where}: {kw} requires at least one argument")
    if kw in ("CMD", "ENTRYPOINT") and json_args is None and not rest:
        raise BuildError(f"{where}: {kw} requires an argument (shell form text or a JSON array)")
    if kw == "FROM":
        words = rest.split()
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
            raise BuildError(f"{where}: FROM expects 'FROM image [AS name]', got {rest!r}")
        if len(words) == 3 and not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_.-]*", words[2]):
            raise BuildError(f"{where}: invalid stage name {words[2]!r}")
    if kw == "ARG" and len(rest.split()) != 1:
        raise BuildError(f"{where}: ARG takes one NAME[=default], got {rest!r}")


def _check_from(instructions: list[Instruction], path: Path) -> None:
    if not any(ins.keyword == "FROM" for ins in instructions):
        line = instructions[0].lineno if instructions else 1
        raise BuildError(f"{path}:{line}: missing FROM (a Dockerfile must start with FROM, after optional ARGs)")
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword != "ARG":
            raise BuildError(f"{path}:{ins.lineno}: {ins.keyword} before the first FROM "
                             "(only ARG may precede FROM)")


# --------------------------------------------------------------------------- word processing

class SubstitutionError(ValueError):
    """Malformed ``${...}``; the builder adds file and line."""


def expand(text: str, env: dict[str, str], escape: str = "\\") -> str:
    """Substitute variables in ``text`` as one word (quotes removed, no splitting)."""
    words = _lex(text, env, escape, split=False)
    return words[0] if words else ""


def split_words(text: str, env: dict[str, str], escape: str = "\\") -> list[str]:
    """Docker's word processing: quotes and escapes honoured, variables substituted, split on blanks."""
    return _lex(text, env, escape, split=True)


def _lex(text: str, env: dict[str, str], escape: str, split: bool) -> list[str]:
    words: list[str] = []
    cur: list[str] = []
    have = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if split and c in " \t\r\n":
            if have:
                words.append("".join(cur))
                cur, have = [], False
            i += 1
            continue
        if c == escape:
            if i + 1 < n:
                cur.append(text[i + 1])
                i += 2
            else:
                cur.append(c)
                i += 1
            have = True
            continue
        if c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise SubstitutionError(f"unterminated single quote in {text!r}")
            cur.append(text[i + 1:j])
            i, have = j + 1, True
            continue
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == escape and i + 1 < n and text[i + 1] in ('"', "$", escape):
                    cur.append(text[i + 1])
                    i += 2
                elif text[i] == "$":
                    val, i = _substitute(text, i, env, escape)
                    cur.append(val)
                else:
                    cur.append(text[i])
                    i += 1
            if i >= n:
                raise SubstitutionError(f"unterminated double quote in {text!r}")
            i, have = i + 1, True
            continue
        if c == "$":
            val, i = _substitute(text, i, env, escape)
            cur.append(val)
            have = have or bool(val)
            continue
        cur.append(c)
        i, have = i + 1, True
    if have or (not split and cur):
        words.append("".join(cur))
    return words


def _substitute(text: str, i: int, env: dict[str, str], escape: str) -> tuple[str, int]:
    """``text[i] == '$'``: returns (value, index after the reference)."""
    n = len(text)
    if i + 1 < n and text[i + 1] == "{":
        depth, j = 1, i + 2
        while j < n and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        if depth:
            raise SubstitutionError(f"missing '}}' in {text[i:]!r}")
        body = text[i + 2:j - 1]
        m = _NAME.match(body)
        if not m:
            raise SubstitutionError(f"bad substitution ${{{body}}}")
        name, rest = m.group(0), body[m.end():]
        if not rest:
            return env.get(name, ""), j
        for op in (":-", ":+", "-", "+"):
            if rest.startswith(op):
                word = expand(rest[len(op):], env, escape)
                val = env.get(name)
                if op == ":-":
                    return (val if val else word), j
                if op == "-":
                    return (val if val is not None else word), j
                if op == ":+":
                    return (word if val else ""), j
                return (word if val is not None else ""), j
        raise SubstitutionError(f"unsupported substitution ${{{body}}} (supported: :- - :+ +)")
    m = _NAME.match(text, i + 1)
    if m:
        return env.get(m.group(0), ""), m.end()
    return "$", i + 1


def parse_kv_pairs(text: str, env: dict[str, str], escape: str, what: str) -> list[tuple[str, str]]:
    """ENV/LABEL arguments: ``k=v k2="v 2"`` or the legacy single ``k value with spaces``."""
    words = split_words(text, env, escape)
    if not words or not text.strip():
        raise SubstitutionError(f"{what} requires KEY=VALUE")
    first_raw = text.strip().split(None, 1)[0]
    if "=" not in first_raw:
        # legacy form: first word is the key, the rest (unsplit) is the value
        key, _, value = text.strip().partition(" ")
        if not value.strip():
            raise SubstitutionError(f"{what} {key} needs a value ({what} KEY=VALUE)")
        return [(expand(key, env, escape), expand(value.strip(), env, escape))]
    pairs = []
    for w in words:
        if "=" not in w:
            raise SubstitutionError(f"{what}: {w!r} is not KEY=VALUE (mixing forms is not allowed)")
        k, _, v = w.partition("=")
        if not k:
            raise SubstitutionError(f"{what}: empty key in {w!r}")
        pairs.append((k, v))
    return pairs


def parse_port(text: str) -> str:
    """EXPOSE word -> ``80/tcp``; ranges and protocols checked."""
    port, _, proto = text.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise SubstitutionError(f"EXPOSE {text!r}: protocol must be tcp, udp or sctp")
    lo, _, hi = port.partition("-")
    for p in (lo, hi) if hi else (lo,):
        if not p.isdigit() or not 1 <= int(p) <= 65535:
            raise SubstitutionError(f"EXPOSE {text!r}: port must be 1-65535")
    return f"{port}/{proto}"
