"""On-disk state of containers: ``paths.containers/<id>/state.json`` and the name index.

State outlives the CLI (``run -d`` returns while the monitor keeps the container), so every verb reads
it from here. Writes are temp file + rename (a reader never sees half a file; a ``kill -9`` leaves the
old or the new one). No fsync: this is runtime state of processes that die with the machine anyway,
and an fsync would cost milliseconds on the start path. The temp file is ``.state.json.<writer pid>``
(:data:`TEMP_STATE`): a ``kill -9`` between write and rename leaves it behind, and
:func:`runtime.lifecycle.gc.gc` removes those whose writer is dead.

Names are reserved with ``O_CREAT|O_EXCL`` files in ``containers/.names/`` holding the id, so two
concurrent ``run --name x`` cannot both win, without a lock or a scan of every container.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import time
from pathlib import Path

from core.errors import ContainerError, UsageError
from core.paths import HostPaths

TYPE_CHECKING = False  # typing's import is a few ms of every `isobench-runtime` verb
if TYPE_CHECKING:
    from typing import Any, Iterator

STATE_FILE = "state.json"
TEMP_STATE = re.compile(r"^\.state\.json\.(\d+)$")  # write_state's temp name; group 1: the writer's pid


def container_dir(paths: HostPaths, cid: str) -> Path:
    return paths.containers / cid


def names_dir(paths: HostPaths) -> Path:
    return paths.containers / ".names"


ETC_FILES = ("hostname", "hosts", "resolv.conf")
LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def write_etc_files(cdir: Path, hostname: str, mode: str) -> tuple[tuple[str, str], ...]:
    """The container's /etc/hostname, /etc/hosts and /etc/resolv.conf (bound into it by the start
    helper); ``mode``: its network mode (``host`` copies the host's resolv.conf)."""
    files = {"hostname": hostname + "\n", "hosts": LOCALHOST + f"127.0.1.1\t{hostname}\n", "resolv.conf": ""}
    if mode == "host":
        with contextlib.suppress(OSError):
            files["resolv.conf"] = Path("/etc/resolv.conf").read_text()
    for fname, text in files.items():  # os-level: three io.open stacks cost ~0.1 ms of every start
        fd = os.open(f"{cdir}/{fname}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    return tuple((f"/etc/{fname}", str(cdir / fname)) for fname in files)


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def write_state(cdir: Path, state: dict[str, Any]) -> None:
    tmp = cdir / f".{STATE_FILE}.{os.getpid()}"
    text = json.dumps(state)  # compact: the C encoder (indent= falls back to the slow Python one)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, cdir / STATE_FILE)
    except BaseException:  # a full disk or an exception mid-write: leave no temp behind (free on success)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_state(cdir: Path) -> dict[str, Any] | None:
    try:
        with open(cdir / STATE_FILE, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError as exc:
        raise ContainerError(f"container state {cdir / STATE_FILE} is corrupt: {exc}") from exc


def update_state(cdir: Path, **changes: Any) -> dict[str, Any]:
    state = read_state(cdir) or {}
    state.update(changes)
    write_state(cdir, state)
    return state


def reserve_name(paths: HostPaths, name: str, cid: str) -> None:
    """Claim ``name`` for ``cid``; a name whose container is gone is taken over."""
    d = names_dir(paths)
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            owner = _name_owner(path)
            if owner and container_dir(paths, owner).is_dir():
                raise UsageError(f"container name {name!r} is already in use by container {owner}") from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            f.write(cid)
        return
    raise UsageError(f"container name {name!r} is already in use")


def _name_owner(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def release_name(paths: HostPaths, name: str | None, cid: str) -> None:
    if not name:
        return
    path = names_dir(paths) / name
    if _name_owner(path) == cid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def all_ids(paths: HostPaths) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(paths.containers) if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        return []


def iter_states(paths: HostPaths) -> Iterator[dict[str, Any]]:
    for cid in all_ids(paths):
        st = read_state(container_dir(paths, cid))
        if st is not None:
            yield st


def lookup(paths: HostPaths, ref: str) -> dict[str, Any]:
    """A container by name, full id or unique id prefix."""
    if ref and "/" not in ref and not ref.startswith("."):
        owner = _name_owner(names_dir(paths) / ref)
        if owner:
            st = read_state(container_dir(paths, owner))
            if st is not None:
                return st
        st = read_state(container_dir(paths, ref))
        if st is not None:
            return st
        hits = [cid for cid in all_ids(paths) if cid.startswith(ref)]
        if len(hits) == 1:
            st = read_state(container_dir(paths, hits[0]))
            if st is not None:
                return st
        if len(hits) > 1:
            raise UsageError(f"container id prefix {ref!r} is ambiguous ({len(hits)} containers)")
    raise ContainerError(f"no such container: {ref}")


def remove_dir(paths: HostPaths, cid: str) -> None:
    """The container's writable layer, logs and state: gone after ``rm`` (ephemeral by design)."""
    import shutil

    shutil.rmtree(container_dir(paths, cid), ignore_errors=True)


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks since boot), to tell a live process from a recycled pid.
    This process's own is read once (it records itself as the monitor of every container it makes)."""
    if pid == os.getpid():
        own = _OWN_START.get(pid)
        if own is None:
            own = _OWN_START[pid] = _read_start_time(pid)
        return own
    return _read_start_time(pid)


_OWN_START: dict[int, int | None] = {}  # keyed by pid: a forked child reads its own


def _read_start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[1].split()
    if fields[0] in (b"Z", b"X"):  # a zombie has exited; only its parent has not reaped it yet
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    return bool(pid) and start is not None and proc_start_time(int(pid)) == start


def _wait_readable(fd: int, timeout_s: float | None) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(None if timeout_s is None else max(0, int(timeout_s * 1000))))


def wait_pid_exit(pid: int, start: int | None, timeout_s: float | None) -> bool:
    """True once ``pid`` (not necessarily our child) has exited; False on timeout. No polling loop:
    a pidfd becomes readable when the process exits."""
    if not alive(pid, start):
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not alive(pid, start):
            return True
        return _wait_readable(fd, timeout_s)
    finally:
        os.close(fd)
