"""The ``isobench volume`` verbs: ls, inspect, rm, prune (named volumes made by ``run -v NAME:/x``).

Thin over :mod:`runtime.volumes`; imports stay inside the handlers (this parser is built on every
``isobench`` start)."""

from __future__ import annotations

import argparse

from app.commands.common import for_each, host_paths, print_table, verb, verb_group


def register(sub) -> None:
    verbs = verb_group(sub, "volume", "list and remove named volumes", dest="volume_command")
    p = verb(verbs, "ls", _ls, help="list volumes (name, size, containers using them)")
    p.add_argument("-q", "--quiet", action="store_true", help="only names")
    p = verb(verbs, "inspect", _inspect, help="a volume's mountpoint, size and users as JSON")
    p.add_argument("names", nargs="+", metavar="NAME")
    p = verb(verbs, "rm", _rm, help="remove volumes (refused while a container uses one)")
    p.add_argument("names", nargs="+", metavar="NAME")
    verb(verbs, "prune", _prune, help="remove every volume no container uses")


def _doc(v) -> dict:
    import time

    return {"Name": v.name, "Mountpoint": str(v.mountpoint), "Driver": "local",
            "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v.created_at_s)),
            "SizeBytes": v.size_bytes, "UsedBy": list(v.used_by)}


def _ls(args: argparse.Namespace) -> int:
    from core.units import format_bytes
    from runtime.volumes import list_volumes

    vols = list_volumes(host_paths())
    print_table(("VOLUME NAME", "SIZE", "USED BY"),
                [(v.name, format_bytes(v.size_bytes), ", ".join(v.used_by)) for v in vols], quiet=args.quiet)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    from runtime.volumes import inspect

    docs: list[dict] = []
    rc = for_each(args.names, lambda n: docs.append(_doc(inspect(host_paths(), n))))
    print(json.dumps(docs, indent=2))
    return rc


def _rm(args: argparse.Namespace) -> int:
    from runtime.volumes import remove

    def rm(name: str) -> None:
        remove(host_paths(), name)
        print(name)
    return for_each(args.names, rm)


def _prune(args: argparse.Namespace) -> int:
    from core.units import format_bytes
    from runtime.volumes import prune

    removed = prune(host_paths())
    for v in removed:
        print(f"Deleted: {v.name}")
    print(f"Total reclaimed space: {format_bytes(sum(v.size_bytes for v in removed))}")
    return 0
