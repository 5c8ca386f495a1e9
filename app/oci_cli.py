"""``isobench-runtime``: the runtime behind runc's command line, so podman, conmon and other OCI tools
can drive it (``podman --runtime .venv/bin/isobench-runtime run ...``).

Verbs and options follow runc's (global ``--root --log --log-format --debug --systemd-cgroup``;
``create --bundle --pid-file --console-socket ID``, ``start``, ``state``, ``kill ID [SIGNAL] [--all]``,
``delete [--force]``, ``exec --process FILE [--detach --pid-file --console-socket --tty]``, ``run``,
``list``, ``features``); options conmon passes that change nothing here (``--no-pivot``,
``--no-new-keyring``, ``--systemd-cgroup``) are accepted. State lives under ``--root`` (default
/run/isobench-runtime), one directory per container; the process of a created container waits on an
exec fifo until ``start`` reads it, and belongs to whoever reaps orphans (conmon is a subreaper).
A failure is one line on stderr (and in ``--log``, as runc writes it: text or JSON lines) and exit 1.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

DEFAULT_ROOT = "/run/isobench-runtime"
OCI_VERSION = "1.0.2"


def build_parser():  # -> argparse.ArgumentParser (imported here: fast_parse needs none of it)
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # usage errors: one line, exit 2 (argparse's, minus usage)
            sys.stderr.write(f"isobench-runtime: {message}\n")
            sys.exit(2)

    p = _Parser(prog="isobench-runtime", description="OCI runtime (runc-compatible command line) of isobench.")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"state directory (default {DEFAULT_ROOT})")
    p.add_argument("--log", default="", help="also write errors to this file")
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.add_argument("--debug", action="store_true",
                   help="say on stderr whether an isobench server served the verb")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help="accepted; systemd cgroup paths (slice:prefix:name) are refused with a message")
    p.add_argument("--rootless", default="false", help="accepted (root only)")
    p.add_argument("-v", "--version", action="store_true", help="print the version")
    sub = p.add_subparsers(dest="verb", parser_class=_Parser)

    c = sub.add_parser("create", help="create a container from a bundle (its process waits for start)")
    _bundle_opts(c)
    c.add_argument("id")

    r = sub.add_parser("run", help="create and start a container, wait for it, delete it")
    _bundle_opts(r)
    r.add_argument("-d", "--detach", action="store_true", help="create and start, then return")
    r.add_argument("--keep", action="store_true", help="do not delete the container after it exits")
    r.add_argument("id")

    s = sub.add_parser("start", help="start a created container")
    s.add_argument("id")
    s = sub.add_parser("state", help="print a container's runtime-spec state as JSON")
    s.add_argument("id")

    k = sub.add_parser("kill", help="send a signal (default SIGTERM) to a container's init")
    k.add_argument("-a", "--all", action="store_true", help="to every process of the container")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="SIGTERM")

    d = sub.add_parser("delete", help="delete a stopped (or, with --force, any) container")
    d.add_argument("-f", "--force", action="store_true", help="kill it first if it runs")
    d.add_argument("id")

    e = sub.add_parser("exec", help="run a process in a running container")
    e.add_argument("-p", "--process", help="runtime-spec process JSON file")
    e.add_argument("-d", "--detach", action="store_true")
    e.add_argument("--pid-file")
    e.add_argument("--console-socket")
    e.add_argument("-t", "--tty", action="store_true")
    e.add_argument("--cwd")
    e.add_argument("-e", "--env", action="append", default=[])
    e.add_argument("-u", "--user")
    e.add_argument("--preserve-fds", type=int, default=0)
    e.add_argument("--no-new-privs", action="store_true")
    e.add_argument("--cap", action="append", default=[])
    e.add_argument("--process-label", default="")
    e.add_argument("--apparmor", default="")
    e.add_argument("--no-subreaper", action="store_true")
    e.add_argument("id")
    e.add_argument("command", nargs=argparse.REMAINDER)

    ls = sub.add_parser("list", help="list containers")
    ls.add_argument("-f", "--format", default="table", choices=("table", "json"))
    ls.add_argument("-q", "--quiet", action="store_true")

    sub.add_parser("features", help="print the runtime-spec features JSON")
    return p


def _bundle_opts(p) -> None:
    p.add_argument("-b", "--bundle", default=".", help="bundle directory (default: the current one)")
    p.add_argument("--pid-file", help="write the container's pid here")
    p.add_argument("--console-socket", help="unix socket to send the terminal's master to")
    p.add_argument("--no-pivot", action="store_true", help="accepted (pivot_root is always used)")
    p.add_argument("--no-new-keyring", action="store_true", help="accepted")
    p.add_argument("--preserve-fds", type=int, default=0, help="accepted; extra fds are not passed")


def entry() -> None:
    sys.exit(main(sys.argv[1:]))


# What fast_parse knows: options taking a value, and flags (store_true), by name -> dest; everything
# else (abbreviations, help, "--", bundled short flags, errors) goes through argparse.
_GLOBAL_VALUES = {"--root": "root", "--log": "log", "--log-format": "log_format", "--rootless": "rootless"}
_GLOBAL_FLAGS = {"--debug": "debug", "--systemd-cgroup": "systemd_cgroup", "-v": "version", "--version": "version"}
_BUNDLE_VALUES = {"-b": "bundle", "--bundle": "bundle", "--pid-file": "pid_file", "--console-socket": "console_socket",
                  "--preserve-fds": "preserve_fds"}
_BUNDLE_FLAGS = {"--no-pivot": "no_pivot", "--no-new-keyring": "no_new_keyring"}
_BUNDLE_DEFAULTS = {"bundle": ".", "pid_file": None, "console_socket": None, "no_pivot": False,
                    "no_new_keyring": False, "preserve_fds": 0}
# verb -> (value options, flag options, defaults, positionals (name, required))
_FAST_VERBS: dict[str, tuple[dict[str, str], dict[str, str], dict[str, object], tuple[tuple[str, bool], ...]]] = {
    "create": (_BUNDLE_VALUES, _BUNDLE_FLAGS, _BUNDLE_DEFAULTS, (("id", True),)),
    "run": (_BUNDLE_VALUES, {**_BUNDLE_FLAGS, "-d": "detach", "--detach": "detach", "--keep": "keep"},
            {**_BUNDLE_DEFAULTS, "detach": False, "keep": False}, (("id", True),)),
    "start": ({}, {}, {}, (("id", True),)),
    "state": ({}, {}, {}, (("id", True),)),
    "kill": ({}, {"-a": "all", "--all": "all"}, {"all": False}, (("id", True), ("signal", False))),
    "delete": ({}, {"-f": "force", "--force": "force"}, {"force": False}, (("id", True),)),
}


def fast_parse(argv: list[str]) -> SimpleNamespace | None:
    """The command lines conmon and podman pass, parsed without building the argparse parser (its
    construction is ~1/3 of a verb's start-up); None for anything else, which argparse then parses
    (and reports). Gives the same namespace as ``build_parser().parse_args(argv)``."""
    ns: dict[str, object] = {"root": DEFAULT_ROOT, "log": "", "log_format": "text", "debug": False,
                             "systemd_cgroup": False, "rootless": "false", "version": False, "verb": None}
    i, n = 0, len(argv)
    while i < n and argv[i].startswith("-"):
        name, eq, value = argv[i].partition("=")
        if name in _GLOBAL_VALUES:
            if not eq:
                if i + 1 >= n or argv[i + 1].startswith("-"):
                    return None
                i += 1
                value = argv[i]
            ns[_GLOBAL_VALUES[name]] = value
        elif name in _GLOBAL_FLAGS and not eq:
            ns[_GLOBAL_FLAGS[name]] = True
        else:
            return None
        i += 1
    if ns["log_format"] not in ("text", "json") or i >= n or argv[i] not in _FAST_VERBS:
        return None
    verb = argv[i]
    values, flags, defaults, positionals = _FAST_VERBS[verb]
    ns.update(verb=verb, **defaults)
    got: list[str] = []
    run = False  # the previous token was a positional
    i += 1
    while i < n:
        arg = argv[i]
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=")
            if name in values:
                if not eq:
                    if i + 1 >= n or argv[i + 1].startswith("-"):
                        return None
                    i += 1
                    value = argv[i]
                if values[name] == "preserve_fds":
                    if not value.isdigit():
                        return None
                    ns["preserve_fds"] = int(value)
                else:
                    ns[values[name]] = value
            elif name in flags and not eq:
                ns[flags[name]] = True
            else:
                return None
        else:
            if got and not run:  # positionals in two runs: argparse takes only the first
                return None
            got.append(arg)
        run = not arg.startswith("-") or arg == "-"
        i += 1
    if len(got) > len(positionals) or any(req and k >= len(got) for k, (_, req) in enumerate(positionals)):
        return None
    for k, (dest, _) in enumerate(positionals):
        ns[dest] = got[k] if k < len(got) else "SIGTERM"  # the only optional positional: kill's signal
    return SimpleNamespace(**ns)


# Verbs whose processes must be the caller's own children to be waited for (``run`` waits for the
# container, ``exec`` for its process or, detached, leaves it to conmon); a terminal's console socket
# needs the Python child. The isobench server's worker leaves these to the client's own Python CLI.
CALLER_VERBS = ("run", "exec")


def main(argv: list[str], session=None) -> int:
    """One verb. ``session``: set when an isobench server's worker runs it for the C client
    (app.server.worker.ClientSession): the container's process is then spawned by the client, so it
    is the caller's child as with runc, and a verb that cannot be served so is handed back to it."""
    args = fast_parse(argv) or build_parser().parse_args(argv)
    if args.version:
        from runtime.oci import RUNTIME_VERSION

        print(f"isobench-runtime version {RUNTIME_VERSION}\nspec: {OCI_VERSION}")
        return 0
    if not args.verb:
        build_parser().print_usage(sys.stderr)
        return 2
    from core.errors import IsobenchError

    caller_must_run: type[Exception] | tuple = ()  # nothing to hand back without a server
    command = f"`isobench-runtime {args.verb}`"
    if session is not None:
        if args.verb in CALLER_VERBS or getattr(args, "console_socket", None):
            _debug(args, f"{args.verb} handed back to the client's own process (it must be the caller's)")
            session.decline(f"{command} runs in the caller's own process")
        import os

        _debug(args, f"{args.verb} served by an isobench server's worker (pid {os.getpid()})")
        from runtime.lifecycle import process

        process.spawn_helpers_through(session.spawn)
        caller_must_run = process.CallerMustRun
    try:
        from app import oci_verbs

        return oci_verbs.VERBS[args.verb](args)
    except caller_must_run as exc:  # the container was removed on the way out (oci_verbs._create)
        _debug(args, f"{args.verb} handed back to the client's own process: {exc}")
        session.decline(f"{command}: {exc}")
        return 1  # not reached: decline exits
    except IsobenchError as exc:
        _log_error(args, str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def _debug(args, msg: str) -> None:
    """``--debug``: a line on stderr (runc's debug messages go there too)."""
    if args.debug:
        sys.stderr.write(f"isobench-runtime: debug: {msg}\n")
        sys.stderr.flush()


def _log_error(args, msg: str) -> None:
    sys.stderr.write(f"isobench-runtime: {msg}\n")
    if not args.log:
        return
    import json
    import time

    t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = json.dumps({"level": "error", "msg": msg, "time": t}) if args.log_format == "json" \
        else f'time="{t}" level=error msg="{msg}"'
    try:
        with open(args.log, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        pass


if __name__ == "__main__":
    entry()
