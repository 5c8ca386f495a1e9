"""The builder's RUN executor: one command in a build container over the image's layers.

A RUN step runs through the container runtime (:mod:`runtime.lifecycle.build`): the same fork /
namespaces / overlayfs / pivot_root / security path as ``isobench run`` (default caps, no_new_privs,
seccomp, masked paths, a fresh read-only sysfs), with the host's network (so ``apt-get install``
works, as in Docker's classic builder), a cgroup, hostname ``isobench-build``, a copy of the host's
/etc/resolv.conf, and the output streamed to the build log. What stays here is specific to building:

* mountpoints missing from the image (/proc, /dev, /sys, /etc/resolv.conf in ``scratch``-based
  images) are created in ``upper`` beforehand and removed afterwards, so they never end up in the
  layer, as with Docker;
* USER is resolved against the image's /etc/passwd and /etc/group (also used by COPY --chown).

The resulting ``upper`` is what :func:`runtime.image.layers.dir_entries` turns into the step's layer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable

from core.errors import BuildError, IsobenchError
from core.paths import HostPaths
from core.scratch import scratch_dir

_MOUNTPOINT_DIRS = ("proc", "dev", "sys")


def run_step(paths: HostPaths, lower_dirs: list[Path], upper: Path, work: Path, argv: list[str],
             env: list[str], workdir: str, user: str | None, log: Callable[[str], None]) -> int:
    """Run ``argv`` over ``lower_dirs`` (lowest first) writing changes into ``upper``; returns the exit
    code (128+N when killed by signal N). ``log`` receives each output line."""
    if not argv:
        raise BuildError("RUN: empty command")
    # leased scratch dir: after a kill -9 of the builder `isobench gc` removes it (core.scratch)
    with scratch_dir(paths, "run") as scratch:
        merged = scratch / "merged"
        merged.mkdir()
        lowers = [str(d) for d in lower_dirs]
        if not lowers:
            empty = scratch / "empty"
            empty.mkdir()
            lowers = [str(empty)]
        resolv = scratch / "resolv.conf"
        try:
            shutil.copyfile("/etc/resolv.conf", resolv)
        except OSError:
            resolv.write_text("")
        created = _make_mountpoints(lower_dirs, upper)
        try:
            uid, gid, home = resolve_user_in(user or "root", _top(lower_dirs, upper, "etc/passwd"),
                                             _top(lower_dirs, upper, "etc/group"))
            from runtime.lifecycle.build import run_build_step

            try:
                return run_build_step(paths, [Path(d) for d in lowers], upper, work, merged, argv, env,
                                      workdir or "/", uid, gid, home, log,
                                      etc_files=(("/etc/resolv.conf", str(resolv)),))
            except BuildError:
                raise
            except IsobenchError as exc:
                raise BuildError(f"RUN {argv[0]}: the build container failed to start: {exc}") from exc
        finally:
            _remove_mountpoints(upper, created)


def _exists_in_lowers(lower_dirs: list[Path], rel: str) -> bool:
    return any(os.path.lexists(d / rel) for d in lower_dirs)


def _make_mountpoints(lower_dirs: list[Path], upper: Path) -> list[Path]:
    """Create in ``upper`` the mountpoints the image lacks; returns them, deepest last."""
    created: list[Path] = []
    for name in _MOUNTPOINT_DIRS:
        if not _exists_in_lowers(lower_dirs, name) and not (upper / name).exists():
            (upper / name).mkdir()
            created.append(upper / name)
    if not _exists_in_lowers(lower_dirs, "etc/resolv.conf") and not (upper / "etc/resolv.conf").exists():
        if not (upper / "etc").exists():
            (upper / "etc").mkdir()
            created.append(upper / "etc")  # removed again unless the command wrote into /etc
        (upper / "etc/resolv.conf").touch()
        created.append(upper / "etc/resolv.conf")
    return created


def _remove_mountpoints(upper: Path, created: list[Path]) -> None:
    for p in reversed(created):
        with contextlib.suppress(OSError):  # kept when the command put something there (e.g. /etc)
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            elif p.is_file() and p.stat().st_size == 0:
                p.unlink()


def _top(lower_dirs: list[Path], upper: Path, rel: str) -> Path | None:
    """The file as the step will see it: ``upper`` over the layers, topmost first."""
    for d in [upper, *reversed(lower_dirs)]:
        if os.path.lexists(d / rel):
            return d / rel
    return None


def resolve_user(spec: str, root: str) -> tuple[int, int, str]:
    """``user[:group]`` (names or numbers) to (uid, gid, home) using the image's /etc/passwd and group."""
    return resolve_user_in(spec, Path(root, "etc/passwd"), Path(root, "etc/group"))


def resolve_user_in(spec: str, passwd_file: Path | None, group_file: Path | None,
                    *, gid_defaults_to_uid: bool = False) -> tuple[int, int, str]:
    """Like :func:`resolve_user` with explicit database files (``None``: the image has none).
    ``gid_defaults_to_uid``: COPY --chown semantics (``--chown=10`` means 10:10)."""
    name, _, group = spec.partition(":")
    if not name:
        raise BuildError(f"user {spec!r}: empty user name")
    passwd = _read_db(str(passwd_file)) if passwd_file else []
    uid = gid = -1
    home = "/"
    for f in passwd:
        if len(f) >= 6 and (f[0] == name or (name.isdigit() and f[2] == name)):
            uid, gid, home = int(f[2]), int(f[3]), f[5] or "/"
            break
    if uid < 0:
        if not name.isdigit():
            raise BuildError(f"user {spec!r}: no user {name!r} in the image's /etc/passwd")
        uid, gid, home = int(name), 0, "/root" if name == "0" else "/"
    if gid_defaults_to_uid and not group:
        gid = uid
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            hits = [int(f[2]) for f in (_read_db(str(group_file)) if group_file else [])
                    if len(f) >= 3 and f[0] == group]
            if not hits:
                raise BuildError(f"user {spec!r}: no group {group!r} in the image's /etc/group")
            gid = hits[0]
    return uid, gid, home


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []
