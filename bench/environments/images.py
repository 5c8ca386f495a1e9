"""The benchmark images, built from ``bench/images/*/Dockerfile`` by the project's own builder.

``isobench bench`` calls :func:`ensure` first: the builder's layer cache makes a rebuild of an unchanged
Dockerfile a cache hit (seconds), so images are always current and always built the same way, and the
run records their manifest digests. The tools image's ``FROM debian:bookworm`` comes from the cached
debootstrap tarball (minutes once per machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from core.paths import HostPaths

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
# short name -> tag in the image store
TAGS: dict[str, str] = {"busybox": "isobench-busybox:latest", "tools": "isobench-tools:latest"}


def ensure(paths: HostPaths, names: tuple[str, ...] = ("busybox", "tools"),
           log: Callable[[str], None] = lambda s: None) -> dict[str, object]:
    """Build (or take from cache) each named image; returns short name -> ImageRecord."""
    from runtime.image.builder import BuildOptions, build
    from runtime.image.store import ImageStore

    store = ImageStore(paths.ensure())
    out = {}
    for name in names:
        ctx = IMAGES_DIR / name
        opts = BuildOptions(context_dir=ctx, dockerfile=ctx / "Dockerfile", tag=TAGS[name])
        out[name] = build(store, opts, log=log)
    return out


def flat_rootfs(paths: HostPaths, ref: str):
    """(ImageRecord, flat rootfs dir) of an image reference."""
    from runtime.image.store import ImageStore

    store = ImageStore(paths.ensure())
    rec = store.resolve(ref)
    return rec, store.flat_rootfs(rec)
