"""The builder's RUN executor: one command in an isolated build container over the image's layers.

Kept in its own module because the container runtime will later replace this first implementation.
Until then it does the minimum Docker's classic builder does for a RUN step:

* a child process unshares mount, UTS, IPC and PID namespaces (the network stays the host's, so
  ``apt-get install`` works), mounts overlayfs (image layers as lowerdirs, the step's ``upper``),
  then a grandchild -- PID 1 of the new PID namespace -- mounts /proc, a tmpfs /dev with the
  standard device nodes, /sys read-only and a *copy* of the host's /etc/resolv.conf, chroots,
  applies WORKDIR/USER/ENV and execs the command;
* everything is mounted inside the child's private mount namespace, so the mounts disappear with it
  even if the builder is killed; the child also unmounts explicitly;
* mountpoints missing from the image (/proc, /dev, /sys, /etc/resolv.conf in ``scratch``-based
  images) are created in ``upper`` beforehand and removed afterwards, so they never end up in the
  layer, as with Docker.

The resulting ``upper`` is what :func:`runtime.image.layers.dir_entries` turns into the step's layer.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import stat
from pathlib import Path
from typing import Callable

from runtime import syscalls
from runtime.errors import BuildError
from runtime.paths import HostPaths
from runtime.scratch import scratch_dir

_DEVICES = {  # name: (major, minor) -- the set runc gives every container
    "null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0),
}
_MOUNTPOINT_DIRS = ("proc", "dev", "sys")


def run_step(paths: HostPaths, lower_dirs: list[Path], upper: Path, work: Path, argv: list[str],
             env: list[str], workdir: str, user: str | None, log: Callable[[str], None]) -> int:
    """Run ``argv`` over ``lower_dirs`` (lowest first) writing changes into ``upper``; returns the exit
    code (128+N when killed by signal N). ``log`` receives each output line."""
    if not argv:
        raise BuildError("RUN: empty command")
    # leased scratch dir: after a kill -9 of the builder `isobench gc` removes it (runtime.scratch)
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
        from runtime import security
        from runtime.spec import SecuritySpec

        # build containers get the same defaults as `isobench run` (Docker does the same): default caps,
        # no_new_privs, default seccomp profile, masked/read-only /proc and /sys paths; compiled here
        prepared = security.prepare(SecuritySpec())
        try:
            return _fork_and_run(merged, lowers, upper, work, argv, env, workdir, user, resolv, log, prepared)
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


def _fork_and_run(merged: Path, lowers: list[str], upper: Path, work: Path, argv: list[str], env: list[str],
                  workdir: str, user: str | None, resolv: Path, log: Callable[[str], None], prepared: object) -> int:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(rfd)
        code = 125
        try:
            code = _child(merged, lowers, upper, work, argv, env, workdir, user, resolv, wfd, prepared)
        except BaseException as exc:  # noqa: BLE001 - report any setup failure through the pipe, then exit
            with contextlib.suppress(OSError):
                os.write(wfd, f"isobench build container: {exc}\n".encode())
        finally:
            os._exit(code)
    os.close(wfd)
    buf = b""
    try:
        while True:
            select.select([rfd], [], [])
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                log(line.decode(errors="replace"))
        if buf:
            log(buf.decode(errors="replace"))
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _child(merged: Path, lowers: list[str], upper: Path, work: Path, argv: list[str], env: list[str],
           workdir: str, user: str | None, resolv: Path, wfd: int, prepared: object) -> int:
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWPID)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    syscalls.sethostname("isobench-build")
    # metacopy/redirect_dir off: the layer is a plain diff of ``upper``, so every changed file must be
    # there with its data and renamed dirs must show up as copies (not as overlay-private xattrs)
    opts = (f"lowerdir={':'.join(reversed(lowers))},upperdir={upper},workdir={work},"
            "index=off,redirect_dir=off,metacopy=off")
    syscalls.mount("overlay", str(merged), "overlay", 0, opts)
    try:
        pid = os.fork()
        if pid == 0:
            code = 126
            try:
                _grandchild(merged, argv, env, workdir, user, resolv, wfd, prepared)
            except BaseException as exc:  # noqa: BLE001 - exec failed: report and exit like a shell
                msg = f"{argv[0]}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
                with contextlib.suppress(OSError):
                    os.write(wfd, f"isobench build container: {msg}\n".encode())
                code = 127 if isinstance(exc, FileNotFoundError) else 126
            finally:
                os._exit(code)
        os.close(wfd)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    finally:
        with contextlib.suppress(OSError):
            syscalls.umount(str(merged), syscalls.MNT_DETACH)


def _grandchild(merged: Path, argv: list[str], env: list[str], workdir: str, user: str | None,
                resolv: Path, wfd: int, prepared: object) -> None:
    """PID 1 of the build container: mounts, chroot, identity, exec."""
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    m = str(merged)
    syscalls.mount("proc", f"{m}/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    syscalls.mount("tmpfs", f"{m}/dev", "tmpfs", syscalls.MS_NOSUID, "mode=755,size=65536k")
    for name, (major, minor) in _DEVICES.items():
        syscalls.mknod(f"{m}/dev/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(f"{m}/dev/{name}", 0o666)
    for name, target in {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                         "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}.items():
        os.symlink(target, f"{m}/dev/{name}")
    os.mkdir(f"{m}/dev/pts")
    syscalls.mount("devpts", f"{m}/dev/pts", "devpts", syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620")
    os.mkdir(f"{m}/dev/shm")
    syscalls.mount("shm", f"{m}/dev/shm", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=1777,size=65536k")
    # a fresh read-only sysfs, not a recursive bind of the host's /sys: that would carry the host's
    # cgroup hierarchies (read-write submounts) into the build container
    syscalls.mount("sysfs", f"{m}/sys", "sysfs",
                   syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    resolv_target = f"{m}/etc/resolv.conf"
    if os.path.islink(resolv_target) or not os.path.exists(resolv_target):
        resolv_target = ""  # a dangling symlink (systemd-resolved style): leave it alone
    if resolv_target:
        syscalls.mount(str(resolv), resolv_target, None, syscalls.MS_BIND)
    os.chroot(m)
    from runtime import security

    security.prepare_mounts_in_child(prepared)  # paths are absolute: after chroot they are the container's
    os.makedirs(workdir or "/", exist_ok=True)
    os.chdir(workdir or "/")
    envmap = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    envmap.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    uid, gid, home = resolve_user(user or "root", "/")
    envmap.setdefault("HOME", home)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(wfd, 1)
    os.dup2(wfd, 2)
    security.enter(prepared, uid, gid, (gid,) if uid else ())
    os.execvpe(argv[0], argv, envmap)


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
