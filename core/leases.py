"""Host-wide leases: which ``isobench-<id>`` objects have a live owner.

Host objects (cgroups, veths, netns, firewall rules, libvirt domains, mounts) are global, but state
roots are not: tests and users may run several roots at once. ``gc`` must remove only *orphans*, so
every creator takes a lease ``/run/isobench/leases/<id>.json`` naming the owner process (pid plus its
start time, so a recycled pid is not mistaken for the owner) and the state root. An object is an
orphan exactly when its id has no lease whose owner is alive. /run is a tmpfs: leases vanish at reboot
together with the objects they guard.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from core.paths import run_dir



def lease_dir() -> Path:
    return run_dir() / "leases"


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime), counted after the ")" that ends the command name
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited; a zombie nobody reaps (orphans of a non-reaping init) is no owner
        return None
    return int(fields[19])


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a running (not zombie) process; gc asks this of temp-file writers."""
    return _start_time(pid) is not None


def take(obj_id: str, pid: int | None = None, kind: str = "", root: str = "") -> None:
    """Record that ``pid`` (default: this process) owns ``obj_id``. Re-taking moves the lease."""
    owner = os.getpid() if pid is None else pid
    rec = {"id": obj_id, "pid": owner, "start": _start_time(owner), "kind": kind, "root": root}
    # temp + rename without fsync: a lease only matters while its owner lives (it is void after a
    # reboot by the start-time check), and an fsync costs milliseconds on every container start
    # where /run is not a tmpfs.
    # one os.write of json.dumps: the io stack and json.dump's chunked writes cost ~0.1 ms here
    d = lease_dir()
    tmp = f"{d}/.{obj_id}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    try:
        os.write(fd, json.dumps(rec).encode())
    finally:
        os.close(fd)
    os.replace(tmp, f"{d}/{obj_id}.json")


def release(obj_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (lease_dir() / f"{obj_id}.json").unlink()


def is_live(obj_id: str) -> bool:
    try:
        rec = json.loads((lease_dir() / f"{obj_id}.json").read_text())
    except (OSError, ValueError):
        return False
    return rec.get("start") is not None and _start_time(int(rec["pid"])) == rec["start"]


def live_ids() -> set[str]:
    d = lease_dir()
    if not d.is_dir():
        return set()
    return {p.stem for p in d.glob("*.json") if is_live(p.stem)}


def owner_alive(name: str) -> bool:
    """True when a host object named ``isobench-<...>`` belongs to a live lease. Matches by prefix so
    length-limited names (15-char interface names) still find their owner's full id."""
    key = name.removeprefix("isobench-")
    if not key:
        return False
    return any(i.startswith(key) or key.startswith(i) for i in live_ids())


def gc(paths: object = None) -> list[str]:
    """``isobench gc``'s last area: lease files whose owner is dead, and lease temp files of dead
    writers (``.<id>.<pid>.tmp``). A dead owner's lease guards nothing (every area already treats its
    objects as orphans), but killed runs leave them, and :func:`live_ids` reads every lease file."""
    d = lease_dir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return removed
    for e in entries:
        name = e.name
        if name.endswith(".json") and not name.startswith("."):
            stale = not is_live(name[:-5])
        elif name.startswith(".") and name.endswith(".tmp"):
            writer = name[:-4].rsplit(".", 1)[-1]
            stale = writer.isdigit() and not pid_alive(int(writer))
        else:
            continue
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)
                removed.append(f"stale lease {name}")
    return removed
