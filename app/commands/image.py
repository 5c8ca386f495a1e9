"""The ``isobench image`` verbs: build, pull, push, ls, inspect, rm, save, load, import.

Thin wrappers over :mod:`runtime.image`; nothing heavy is imported at module level because this parser
is built on every ``isobench`` start (container start latency is measured through the same CLI).
"""

from __future__ import annotations

import argparse
import json
import sys

from app.commands.common import print_table, verb, verb_group


def register(sub) -> None:
    """Add ``image ...`` to the `isobench` parser."""
    verbs = verb_group(sub, "image", "build and manage images (OCI layout store)", dest="image_cmd")

    b = verb(verbs, "build", _build, help="build an image from a Dockerfile")
    b.add_argument("-t", "--tag", required=True, metavar="NAME[:TAG]")
    b.add_argument("-f", "--file", metavar="DOCKERFILE", help="default: CONTEXT/Dockerfile")
    b.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    b.add_argument("--no-cache", action="store_true", help="do not reuse cached layers")
    b.add_argument("-q", "--quiet", action="store_true", help="print only the image digest")
    _registry_options(b)
    b.add_argument("context", metavar="CONTEXT")

    pl = verb(verbs, "pull", _pull, help="copy an image from a registry (skopeo) into the store")
    _registry_options(pl)
    pl.add_argument("ref", metavar="[HOST[:PORT]/]NAME[:TAG]")

    ps = verb(verbs, "push", _push, help="copy an image to a registry (skopeo), digest unchanged")
    _registry_options(ps)
    ps.add_argument("name", metavar="NAME")
    ps.add_argument("ref", metavar="HOST[:PORT]/NAME[:TAG]")

    ls = verb(verbs, "ls", _ls, help="list images")
    ls.add_argument("-q", "--quiet", action="store_true", help="only names")

    ins = verb(verbs, "inspect", _inspect, help="show an image's manifest digest, config and layers as JSON")
    ins.add_argument("name")

    rm = verb(verbs, "rm", _rm, help="remove images")
    rm.add_argument("-f", "--force", action="store_true",
                    help="untag an image containers use (their layers stay until they are removed)")
    rm.add_argument("names", nargs="+", metavar="NAME")

    sv = verb(verbs, "save", _save, help="write an image as an OCI archive (tar of an OCI layout)")
    sv.add_argument("name")
    sv.add_argument("-o", "--output", required=True, metavar="FILE.tar")

    ld = verb(verbs, "load", _load, help="load images from an OCI archive (validated)")
    ld.add_argument("-i", "--input", required=True, metavar="FILE.tar")

    im = verb(verbs, "import", _import, help="make a one-layer image from a rootfs directory or tar")
    im.add_argument("source", metavar="ROOTFS_DIR_OR_TAR")
    im.add_argument("name", metavar="NAME[:TAG]")


def _tls(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"--tls-verify {text!r} is not true or false")


def _registry_options(p) -> None:
    p.add_argument("--authfile", metavar="FILE",
                   help="registry credentials (default: ${XDG_RUNTIME_DIR}/containers/auth.json, ~/.docker/config.json)")
    p.add_argument("--tls-verify", type=_tls, default=None, metavar="true|false",
                   help="verify the registry's TLS certificate (default: yes, except for loopback registries)")


def _access(args: argparse.Namespace):
    from runtime.image.registry import Access

    return Access(authfile=args.authfile, tls_verify=args.tls_verify)


def _pull(args: argparse.Namespace) -> int:
    from runtime.image.registry import pull

    rec = pull(_store(), args.ref, _access(args), log=lambda s: print(s, flush=True))
    print(f"Pulled {rec.name} ({rec.manifest_digest})")
    return 0


def _push(args: argparse.Namespace) -> int:
    from runtime.image.registry import parse_ref, push

    digest = push(_store(), args.name, args.ref, _access(args))
    print(f"Pushed {args.name} to {parse_ref(args.ref).remote} ({digest})")
    return 0


def _store():
    from runtime.image.store import ImageStore
    from core.paths import HostPaths

    return ImageStore(HostPaths.from_env().ensure())


def _build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.image.builder import BuildOptions, build
    from core.errors import UsageError

    build_args: dict[str, str] = {}
    for kv in args.build_arg:
        if "=" not in kv:
            raise UsageError(f"--build-arg {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        build_args[k] = v
    ctx = Path(args.context)
    opts = BuildOptions(context_dir=ctx, dockerfile=Path(args.file) if args.file else ctx / "Dockerfile",
                        tag=args.tag, build_args=build_args, no_cache=args.no_cache,
                        authfile=args.authfile, tls_verify=args.tls_verify)
    out = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    rec = build(_store(), opts, log=out)
    if args.quiet:
        print(rec.manifest_digest)
    return 0


def _ls(args: argparse.Namespace) -> int:
    from core.units import format_bytes

    images = _store().list()
    rows = [(rec.name, rec.short_id, str(len(rec.layers)), format_bytes(sum(lr.size_bytes for lr in rec.layers)))
            for rec in images]
    print_table(("NAME", "IMAGE ID", "LAYERS", "SIZE"), rows, quiet=args.quiet)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    store = _store()
    rec = store.resolve(args.name)
    out = {
        "Name": rec.name,
        "Id": rec.manifest_digest,
        "ConfigDigest": rec.config_digest,
        "Layers": [{"Digest": lr.digest, "DiffID": lr.diff_id, "Size": lr.size_bytes} for lr in rec.layers],
        "Config": rec.config,
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


def _rm(args: argparse.Namespace) -> int:
    from core.errors import IsobenchError

    store, rc = _store(), 0
    for name in args.names:
        try:
            store.remove(name, force=args.force)
        except IsobenchError as exc:  # one line per refused name; the others are still removed
            print(f"isobench: {exc}", file=sys.stderr)
            rc = 1
            continue
        print(f"Deleted: {name}")
    return rc


def _save(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.image.transfer import save

    store = _store()
    rec = store.resolve(args.name)
    save(store, rec, Path(args.output))
    print(f"Saved {rec.name} ({rec.manifest_digest}) to {args.output}")
    return 0


def _load(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.image.transfer import load

    for rec in load(_store(), Path(args.input)):
        print(f"Loaded image: {rec.name} ({rec.manifest_digest})")
    return 0


def _import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.image.transfer import import_rootfs

    rec = import_rootfs(_store(), Path(args.source), args.name)
    print(f"Imported {rec.name} ({rec.manifest_digest})")
    return 0
