"""Atomic state files and file locks shared by every store (images, containers, IPAM, VMs, results).

State files are written with write-to-temp + fsync + rename so a ``kill -9`` at any point leaves
either the old or the new file, never half of one; ``flock`` locks serialize concurrent CLIs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644, prefix: str | None = None,
                       fsync: bool = True) -> None:
    """``fsync=False`` for state that describes kernel objects which do not survive a reboot anyway
    (IPAM, port records): rename alone still gives old-or-new after a ``kill -9``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name lets `isobench gc` (core.scratch) delete it after a kill -9
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".tmp-pid{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
