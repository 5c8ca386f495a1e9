"""``gc(paths)`` for the image area: leftovers of crashed unpacks, flattens, builds and loads.

Unpacking and flattening write into ``.tmp-*`` dirs renamed into place when complete; a ``kill -9``
leaves the temp dir. Such a dir is an orphan when its per-digest lock is free (nobody is unpacking it).
Build/RUN/load scratch dirs in ``paths.tmp`` and pid-tagged blob temp files are leased/owned and
collected by :mod:`core.scratch` as soon as their owner is dead; the day-old rule below only catches
names made before that (no lease, no pid). Published layers, flat rootfs dirs and blobs are never touched here (``image rm``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

from core.paths import HostPaths

_SCRATCH_PREFIXES = ("isobench-run-", "isobench-build-", "isobench-from-", "isobench-load-")
_SCRATCH_MAX_AGE_S = 24 * 3600


def _lock_free(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def gc(paths: HostPaths) -> list[str]:
    removed: list[str] = []
    for area, prefix in ((paths.layers, "layer-"), (paths.flat, "flat-")):
        if not area.is_dir():
            continue
        for tmp in area.glob(".tmp-*"):
            key = tmp.name.split("-")[1] if prefix == "layer-" else ""
            locks = list(paths.locks.glob(f"{prefix}{key}*.lock")) if key else list(paths.locks.glob("flat-*.lock"))
            if all(_lock_free(lock) for lock in locks):
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(f"image temp dir {tmp}")
    if paths.images.is_dir():
        for tmp in (paths.images / "blobs" / "sha256").glob(".tmp-*"):
            if time.time() - tmp.stat().st_mtime > _SCRATCH_MAX_AGE_S:
                tmp.unlink(missing_ok=True)
                removed.append(f"partial blob {tmp}")
    if paths.tmp.is_dir():
        for d in paths.tmp.iterdir():
            if d.name.startswith(_SCRATCH_PREFIXES) and time.time() - d.stat().st_mtime > _SCRATCH_MAX_AGE_S:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"build scratch dir {d}")
    return removed
