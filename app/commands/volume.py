"""The ``isobench volume`` verbs: ls, inspect, rm, prune (named volumes made by ``run -v NAME:/x``).

Thin over :mod:`runtime.volumes`; imports stay inside the handlers (this parser is built on every
``isobench`` start)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    vol = sub.add_parser("volume", help="list and remove named volumes")
    verbs = vol.add_subparsers(dest="volume_command", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("ls", help="list volumes (name, size, containers using them)")
    p.add_argument("-q", "--quiet", action="store_true", help="only names")
    p.set_defaults(func=_ls)

    p = verbs.add_parser("inspect", help="a volume's mountpoint, size and users as JSON")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=_inspect)

    p = verbs.add_parser("rm", help="remove volumes (refused while a container uses one)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=_rm)

    p = verbs.add_parser("prune", help="remove every volume no container uses")
    p.set_defaults(func=_prune)


def _paths():
    from core.paths import HostPaths

    return HostPaths.from_env()


def _doc(v) -> dict:
    import time

    return {"Name": v.name, "Mountpoint": str(v.mountpoint), "Driver": "local",
            "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v.created_at_s)),
            "SizeBytes": v.size_bytes, "UsedBy": list(v.used_by)}


def _ls(args: argparse.Namespace) -> int:
    from core.units import format_bytes
    from runtime.volumes import list_volumes

    vols = list_volumes(_paths())
    if args.quiet:
        for v in vols:
            print(v.name)
        return 0
    rows = [("VOLUME NAME", "SIZE", "USED BY")]
    rows += [(v.name, format_bytes(v.size_bytes), ", ".join(v.used_by)) for v in vols]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _each(names: list[str], action) -> int:
    import sys

    from core.errors import IsobenchError

    rc = 0
    for name in names:
        try:
            action(name)
        except IsobenchError as exc:
            print(f"isobench: {exc}", file=sys.stderr)
            rc = 1
    return rc


def _inspect(args: argparse.Namespace) -> int:
    import json

    from runtime.volumes import inspect

    docs: list[dict] = []
    rc = _each(args.names, lambda n: docs.append(_doc(inspect(_paths(), n))))
    print(json.dumps(docs, indent=2))
    return rc


def _rm(args: argparse.Namespace) -> int:
    from runtime.volumes import remove

    def rm(name: str) -> None:
        remove(_paths(), name)
        print(name)
    return _each(args.names, rm)


def _prune(args: argparse.Namespace) -> int:
    from core.units import format_bytes
    from runtime.volumes import prune

    removed = prune(_paths())
    for v in removed:
        print(f"Deleted: {v.name}")
    print(f"Total reclaimed space: {format_bytes(sum(v.size_bytes for v in removed))}")
    return 0
