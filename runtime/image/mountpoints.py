"""The mountpoints layer: the runtime's mountpoints an image lacks, made once, as its topmost lowerdir.

Why: every container gets /proc, /dev and /sys mounted and /etc/hostname, /etc/hosts and
/etc/resolv.conf bound from its state dir. Where the image lacks one of them the start helper had to
create it inside the container's overlay on every start: an overlayfs copy-up of the parent directory
and a file creation on the host filesystem (~0.2 ms of each busybox start, which has no
/etc/resolv.conf). Docker pre-creates the same mountpoints in an "init" layer per container; here one
read-only layer per distinct set of missing entries is shared by every container of every image that
needs it.

Only entries *absent* from the image are made (an entry the image has, even as a symlink, is left to
the image), and a parent directory the layer must carry gets the image's own mode, owner and mtime,
because overlayfs shows a merged directory with the attributes of its topmost layer. So the merged
view is the one the helper's ``ensure()`` produced before, without writing to the container's layer.
An entry whose parent the image lacks or holds as a non-directory is left to the helper as before.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

# (path in the root, is a directory): what the default mounts and the /etc binds mount onto
MOUNTPOINTS: tuple[tuple[str, bool], ...] = (
    ("proc", True), ("dev", True), ("sys", True),
    ("etc/hostname", False), ("etc/hosts", False), ("etc/resolv.conf", False))
DIR_MODE = 0o755    # as the helper's ensure() made them (mkdir 0755, open 0644, under umask 022)
FILE_MODE = 0o644


def layer_for(lowerdirs: tuple[str, ...], store_root: Path) -> str | None:
    """The mountpoints layer for an image of ``lowerdirs`` (lowest first): a directory under
    ``store_root``/mountpoints, made on first use; None when the image has every mountpoint."""
    entries = missing_entries(lowerdirs)
    if not entries:
        return None
    made = _known.get((entries, store_root))
    if made is None or not os.path.isdir(made):
        made = _known[(entries, store_root)] = str(_made(entries, store_root))
    return made


_known: dict[tuple[tuple, Path], str] = {}  # (entries, store root) -> the layer made (this process)


@functools.lru_cache(maxsize=64)
def missing_entries(lowerdirs: tuple[str, ...]) -> tuple[tuple[str, bool, int, int, int, int], ...]:
    """``(path, is_dir, parent mode, parent uid, parent gid, parent mtime_ns)`` for each mountpoint the
    union of ``lowerdirs`` lacks while holding its parent as a directory (top-level: the root's)."""
    from runtime.image.builder import LayerView

    view = LayerView([Path(d) for d in lowerdirs])
    out = []
    for rel, is_dir in MOUNTPOINTS:
        if view.find(rel) is not None:
            continue
        parent = view.find(os.path.dirname(rel))  # "" -> the top layer's root
        if parent is None:
            continue
        st = os.lstat(parent)
        if not stat.S_ISDIR(st.st_mode):
            continue
        out.append((rel, is_dir, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns))
    return tuple(out)


def _made(entries: tuple[tuple[str, bool, int, int, int, int], ...], store_root: Path) -> Path:
    """The layer holding ``entries``, named by their digest; made atomically (temp dir + rename), so
    concurrent creators agree and a reader never sees half a layer."""
    key = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
    base = store_root / "mountpoints"
    final = base / key
    if final.is_dir():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        parents: dict[str, tuple[int, int, int, int]] = {}
        for rel, is_dir, mode, uid, gid, mtime_ns in entries:
            parent = os.path.dirname(rel)
            parents[parent] = (mode, uid, gid, mtime_ns)
            if parent:
                (tmp / parent).mkdir(parents=True, exist_ok=True)
            p = tmp / rel
            if is_dir:
                p.mkdir()
                os.chmod(p, DIR_MODE)
            else:
                p.touch()
                os.chmod(p, FILE_MODE)
        for parent, (mode, uid, gid, mtime_ns) in parents.items():  # after the children: keeps the mtime
            p = tmp / parent if parent else tmp
            os.chown(p, uid, gid)
            os.chmod(p, mode)
            os.utime(p, ns=(mtime_ns, mtime_ns))
        try:
            os.rename(tmp, final)
        except OSError:  # another creator won: its layer is the same
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
