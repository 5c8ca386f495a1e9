"""The `isobench` console script: one argparse tree, subcommands registered by each area's CLI module.

Each area owns a module with ``register(subparsers)``; handlers set ``func``. Parser modules import
nothing heavy at module level (start-up of ``isobench run`` is measured against ``runc run``): heavy
imports live inside the handlers. Errors derived from :class:`IsobenchError` print one line and exit
with their ``exit_code``; nothing else is caught here, so bugs still show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from core.errors import IsobenchError

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "app.commands.image",       # image build/ls/inspect/rm/save/load/import
    "app.commands.container",   # run/ps/stop/kill/rm/logs/exec/inspect/stats/wait
    "app.commands.network",     # network ls/prune, port
    "app.commands.volume",      # volume ls/inspect/rm/prune
    "app.commands.vm",           # vm run/ps/stop/rm/logs/inspect, doctor
    "app.commands.bench",         # bench
    "app.commands.fleet",         # fleet run (many hosts through Ansible)
    "app.commands.report",        # report, compare, check
    "app.commands.gc",            # gc (every area)
    "app.commands.server",    # server start/stop/status (the fork server behind the C client)
)


# Preloaded by the isobench server (app.server): everything `run` and the other verbs import, so a
# worker imports nothing.
PRELOAD = (
    "app.cli", "runtime.api", "core.paths", "runtime.spec", "core.units", "core.errors",
    "runtime.monitor", "runtime.lifecycle.state", "runtime.lifecycle.process", "runtime.lifecycle.gc",
    "runtime.exec", "core.cbin", "runtime.image.store", "runtime.security",
    "runtime.cgroups", "runtime.namespaces", "core.leases", "core.fsutil", "app.commands.container",
    "app.commands.image", "runtime.network", "runtime.network.container", "runtime.network.bridge",
    "runtime.network.veth", "runtime.network.portmap", "runtime.network.portspec",
    "runtime.network.firewall", "runtime.network.ipam", "runtime.network.nftlib", "app.commands.network",
    "app.commands.gc", "traceback", "selectors", "socket", "resource", "signal", "io", "atexit", "time",
    "calendar", "json", "shlex", "app.oci_cli", "app.oci_verbs", "runtime.oci.bundle",
)


def preload() -> argparse.ArgumentParser:
    """For the isobench server: import every verb's modules, build the parser, warm pure caches.

    Only caches that depend on nothing but their arguments are warmed (the default security profile):
    anything derived from a state root, the cgroup mounts or the environment is computed per worker,
    exactly as a fresh CLI would."""
    for name in PRELOAD:
        importlib.import_module(name)
    from app.commands.container import config_from_args
    from runtime import api

    parser = build_parser()
    api.warm_security()  # caps + the default seccomp profile resolved and compiled
    # one sample parse: argparse and the re module compile and cache their patterns on first use
    # (~1 ms a worker would otherwise pay); config_from_args is pure (no env, no paths)
    config_from_args(parser.parse_args(["run", "--rm", "--network", "none", "busybox", "true"]))
    return parser


# "argument COMMAND: invalid choice: 'x' (choose from 'image', 'run', ...)": argparse's wording for
# an unknown verb lists every choice; a verb's metavar (COMMAND, VERB, ACTION) is upper case.
_UNKNOWN_VERB = re.compile(r"argument [A-Z]+: invalid choice: '([^']*)' \(choose from .*\)$", re.S)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like docker
        """``isobench: message`` or ``isobench run: message``: argparse's prog already is "isobench
        run", so it is the prefix (not "isobench: isobench run: ..."); an unknown verb is one line
        pointing at --help instead of the list of every verb."""
        unknown = _UNKNOWN_VERB.match(message)
        if unknown:
            message = f"unknown command {unknown.group(1)!r} (see `{self.prog} --help`)"
        prefix = "isobench:" if self.prog == "isobench" else f"{self.prog}:"
        self.exit(2, f"{prefix} {message}\n")


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked (importlib.metadata
    costs milliseconds that every other command would pay)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib import metadata

        try:
            version = metadata.version("isobench")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed; run make setup)"
        print(f"isobench {version}")  # stdout, as `docker --version`; parser.exit would use stderr
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="isobench", description="Containers vs VMs, measured.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    # the `server start` verb hands this module to the server it starts (app.server sits below the CLI)
    parser.set_defaults(cli_app=sys.modules[__name__])
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


def serve(argv: list[str], session, parser: argparse.ArgumentParser | None = None) -> int:
    """A server worker's command for a client: ``argv[0]`` names the client's program, ``isobench``
    (this CLI) or ``isobench-runtime`` (the OCI runtime CLI, :mod:`app.oci_cli`). ``session``
    (app.server.worker.ClientSession, or None) lets the OCI CLI have the client spawn the container's
    process, or run a verb itself that must be the caller's own process."""
    import os

    if os.path.basename(argv[0]) == "isobench-runtime":
        from app import oci_cli

        return oci_cli.main(argv[1:], session=session)
    return main(argv[1:], parser=parser)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
