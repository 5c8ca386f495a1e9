"""The `isobench` console script: one argparse tree, subcommands registered by each area's CLI module.

Each area owns a module with ``register(subparsers)``; handlers set ``func``. Parser modules import
nothing heavy at module level (start-up of ``isobench run`` is measured against ``runc run``): heavy
imports live inside the handlers. Errors derived from :class:`IsobenchError` print one line and exit
with their ``exit_code``; nothing else is caught here, so bugs still show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from runtime.errors import IsobenchError

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "runtime.cli.image",       # image build/ls/inspect/rm/save/load/import
    "runtime.cli.container",   # run/ps/stop/kill/rm/logs/exec/inspect/stats/wait
    "runtime.network.cli",     # network ls/prune, port
    "vmharness.cli",           # vm run/ps/stop/rm/logs/inspect, doctor
    "bench.cli_bench",         # bench
    "bench.cli_report",        # report, compare, check
    "bench.cli_gc",            # gc (every area)
    "runtime.cli.server",      # server start/stop/status (the fork server behind the C client)
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like docker
        self.exit(2, f"isobench: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="isobench", description="Containers vs VMs, measured.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command. ``parser``: a tree built earlier by :func:`build_parser` (the isobench server
    builds it once and reuses it in every worker it forks)."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except IsobenchError as exc:
        print(f"isobench: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("isobench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `isobench ... | head`: the reader left; quietly stop writing, as coreutils do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return int(rc or 0)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
