"""The helpers the command modules share (app.commands.common): parsers, tables, per-reference errors."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from app.commands.common import for_each, print_table, verb, verb_group
from core.errors import IsobenchError


def test_verb_group_requires_a_verb_and_runs_its_handler(capsys):
    parser = argparse.ArgumentParser(prog="isobench")
    sub = parser.add_subparsers(dest="command")
    verbs = verb_group(sub, "thing", "things", dest="thing_cmd", description="All the things.")
    p = verb(verbs, "ls", lambda args: 7, help="list things")
    p.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(["thing", "ls", "-q"])
    assert (args.thing_cmd, args.quiet, args.func(args)) == ("ls", True, 7)
    with pytest.raises(SystemExit):
        parser.parse_args(["thing"])
    assert "the following arguments are required: VERB" in capsys.readouterr().err


def test_print_table_aligns_columns_and_strips_trailing_blanks(capsys):
    print_table(("ID", "NAME", "N"), [("a1", "web", 3), ("b22", "", 10)], gap="   ")
    assert capsys.readouterr().out.splitlines() == [
        "ID    NAME   N",
        "a1    web    3",
        "b22          10",
    ]


def test_print_table_without_rows_is_the_header(capsys):
    print_table(("VOLUME NAME", "SIZE"), [])
    assert capsys.readouterr().out == "VOLUME NAME  SIZE\n"


def test_print_table_quiet_is_the_first_column_only(capsys):
    print_table(("ID", "NAME"), [("a1", "web"), ("b2", "db")], quiet=True)
    assert capsys.readouterr().out == "a1\nb2\n"


def test_for_each_goes_on_after_a_failure_and_exits_1(capsys):
    def action(ref):
        if ref == "bad":
            raise IsobenchError(f"no such container: {ref}")
        return None if ref == "quiet" else ref.upper()

    assert for_each(["a", "bad", "quiet", "b"], action) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("A\nB\n", "isobench: no such container: bad\n")
    assert for_each(["a"], action) == 0


def test_common_imports_nothing_heavy():
    """Every parser module imports it, and the parser is built on every `isobench` start."""
    code = ("import sys; before=set(sys.modules); import app.commands.common; "
            "print(sorted(m for m in set(sys.modules)-before if not m.startswith(('app',))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) <= {"__future__"}, out
