"""Named volumes (``-v NAME:/path``): list, inspect, remove, prune.

Why: ``isobench run -v data:/data`` makes ``<state root>/volumes/data/_data`` on first use and keeps it
after the container is gone (that is the point of a volume), so something must show and remove them,
as ``docker volume`` does. A volume is *in use* while a container of this state root that mounts it
exists, running or stopped (its state records the mounts it was created with): ``rm`` refuses such a
volume naming the container, ``prune`` skips it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.errors import ContainerError, UsageError
from core.paths import HostPaths

# Docker's volume-name rule; it also keeps a name from reaching outside the volumes dir (no "/", "..").
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: Path        # what containers bind-mount (``_data``)
    created_at_s: float     # mtime of the volume's directory: when it was first used
    size_bytes: int         # apparent size of the files in it
    used_by: tuple[str, ...]  # containers (name, else short id) that mount it


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"volume name {name!r} is not valid (letters, digits, then also _ . -)")
    return name


def _users(paths: HostPaths) -> dict[str, list[str]]:
    from runtime.lifecycle.state import iter_states

    out: dict[str, list[str]] = {}
    for st in iter_states(paths):
        for m in (st.get("config") or {}).get("mounts") or ():
            if isinstance(m, dict) and m.get("type") == "volume" and m.get("source"):
                out.setdefault(m["source"], []).append(st.get("name") or str(st.get("id", ""))[:12])
    return out


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                continue  # removed while we walked
    return total


def _volume(paths: HostPaths, name: str, users: dict[str, list[str]]) -> Volume:
    d = paths.volumes / name
    return Volume(name=name, mountpoint=d / "_data", created_at_s=d.stat().st_mtime,
                  size_bytes=_size(d / "_data"), used_by=tuple(users.get(name, ())))


def list_volumes(paths: HostPaths) -> list[Volume]:
    if not paths.volumes.is_dir():
        return []
    users = _users(paths)
    names = sorted(p.name for p in paths.volumes.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name))
    return [_volume(paths, n, users) for n in names]


def inspect(paths: HostPaths, name: str) -> Volume:
    check_name(name)
    if not (paths.volumes / name).is_dir():
        raise UsageError(f"no such volume {name!r} (try: isobench volume ls)")
    return _volume(paths, name, _users(paths))


def remove(paths: HostPaths, name: str) -> None:
    """Delete the volume and its data; refused while a container mounts it."""
    vol = inspect(paths, name)
    if vol.used_by:
        more = f" and {len(vol.used_by) - 1} more" if len(vol.used_by) > 1 else ""
        raise ContainerError(f"volume {name} is in use by container {vol.used_by[0]}{more}: "
                             "remove the container first (isobench rm)")
    shutil.rmtree(paths.volumes / name)


def prune(paths: HostPaths) -> list[Volume]:
    """Remove every volume no container uses; returns what was removed."""
    removed = [v for v in list_volumes(paths) if not v.used_by]
    for v in removed:
        shutil.rmtree(paths.volumes / v.name)
    return removed
