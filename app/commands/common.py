"""What the command modules share: a verb group's parser, a verb with its handler, the state root,
a docker-style table and "each of these references" error handling.

One copy, so ``isobench network``, ``volume``, ``vm``, ``image`` ... build their parsers and print their
tables the same way. Imports nothing heavy at module level: every parser module imports it, and the
parser is built on every ``isobench`` start (whose latency is measured).
"""

from __future__ import annotations


def verb_group(sub, name: str, help: str, dest: str, metavar: str = "VERB", **kwargs):
    """``isobench NAME VERB ...``: the ``NAME`` parser's subparsers; a verb is required."""
    verbs = sub.add_parser(name, help=help, **kwargs).add_subparsers(dest=dest, metavar=metavar)
    verbs.required = True
    return verbs


def verb(verbs, name: str, func, **kwargs):
    """A verb's parser, run by ``func(args) -> exit code``; the caller adds its arguments."""
    p = verbs.add_parser(name, **kwargs)
    p.set_defaults(func=func)
    return p


def host_paths():
    """The state root of this command (``ISOBENCH_ROOT``, else the default), not created here."""
    from core.paths import HostPaths

    return HostPaths.from_env()


def print_table(header: tuple[str, ...], rows: list[tuple], gap: str = "  ", quiet: bool = False) -> None:
    """Columns left-aligned to their widest cell, ``gap`` between, no trailing blanks (as ``docker ps``).
    ``quiet`` (``-q``): only the first column, no header."""
    if quiet:
        for r in rows:
            print(r[0])
        return
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in (header, *rows):
        print(gap.join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())


def for_each(refs: list[str], action) -> int:
    """Apply ``action`` to each reference; print what it returns (unless None), report a failure one
    line each and go on; exit 1 if any failed (``docker rm a b``: b is removed even when a is not)."""
    import sys

    from core.errors import IsobenchError

    rc = 0
    for ref in refs:
        try:
            out = action(ref)
        except IsobenchError as exc:
            print(f"isobench: {exc}", file=sys.stderr)
            rc = 1
            continue
        if out is not None:
            print(out)
    return rc
