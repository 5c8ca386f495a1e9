"""Image helpers other areas' tests use to get a busybox image quickly (no Dockerfile build needed).

``ensure_busybox(paths)`` returns the ``busybox:latest`` base image of that state root, creating it on
first use (a fraction of a second: one layer from the host's busybox-static). Layers and the flat
rootfs are unpacked on demand by ``ImageStore.layer_dirs`` / ``flat_rootfs``.
"""

from __future__ import annotations

from runtime.image.store import ImageRecord, ImageStore
from core.paths import HostPaths


def ensure_busybox(paths: HostPaths) -> ImageRecord:
    """The busybox base image in ``paths``' store, with its layers already unpacked."""
    store = ImageStore(paths.ensure())
    rec = store.resolve("busybox")
    store.layer_dirs(rec)
    return rec
