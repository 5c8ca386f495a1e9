"""Orphan removal for the VM harness, called by `isobench gc`.

Removes only what no live owner holds (``leases.owner_alive``), because other state roots (tests,
other users) may have running VMs on the same host: ``isobench-*`` libvirt domains, per-VM overlays,
ports and addresses of VMs whose creator died, leftover ``isobench-*`` tap devices, half-written
artifacts and cached disks of images that are no longer in the store.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from pathlib import Path

from core import leases
from core.paths import CGROUP_ROOT, PREFIX
from core.errors import IsobenchError

LOG_MAX_AGE_S = 7 * 24 * 3600
TMP_MAX_AGE_S = 3600


def _orphan_domains() -> list[str]:
    from vmharness import hypervisor as hv
    from vmharness.vm import qemu_pid, wait_pid_exit

    removed = []
    for name in hv.domain_names():  # empty without libvirtd: then no domains can exist
        if not name.startswith(PREFIX) or leases.owner_alive(name):
            continue
        pid = qemu_pid(name)
        if hv.destroy(name):
            removed.append(f"domain {name}")
        wait_pid_exit(pid)
    return removed


def _orphan_records(paths) -> list[str]:
    from vmharness.vm import domain_active, list_records, release_record

    removed = []
    for rec in list_records(paths):
        if rec.get("cleaned") or leases.is_live(rec["id"]) or domain_active(rec["name"]):
            continue
        removed += release_record(paths, rec)
    return removed


def _orphan_taps() -> list[str]:
    removed = []
    for dev in Path("/sys/class/net").glob(f"{PREFIX}*"):
        if not (dev / "tun_flags").exists() or leases.owner_alive(dev.name):
            continue
        res = subprocess.run(["ip", "link", "del", dev.name], capture_output=True, text=True)
        if res.returncode == 0:
            removed.append(f"tap {dev.name}")
    return removed


def _stale_artifacts(paths) -> list[str]:
    removed = []
    cache = paths.vm_artifacts
    now = time.time()
    if cache.is_dir():
        for tmp in cache.rglob(".tmp-*"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > TMP_MAX_AGE_S:
                    tmp.unlink() if tmp.is_file() else shutil.rmtree(tmp)
                    removed.append(f"partial artifact {tmp}")
        disks = cache / "disks"
        if disks.is_dir():
            try:
                from runtime.image.store import ImageStore

                live = {r.manifest_digest.split(":", 1)[1] for r in ImageStore(paths).list()}
            except (ImportError, IsobenchError, OSError):
                live = None
            if live is not None:
                for d in disks.iterdir():
                    if d.is_dir() and d.name not in live:
                        shutil.rmtree(d, ignore_errors=True)
                        removed.append(f"VM disk of removed image {d.name[:12]}")
    logs = paths.vms / "logs"
    if logs.is_dir():
        for log in logs.glob("*.log"):
            with contextlib.suppress(OSError):
                if now - log.stat().st_mtime > LOG_MAX_AGE_S:
                    log.unlink()
                    removed.append(f"old console log {log.name}")
    return removed


_MACHINE_CGROUP = re.compile(r"^qemu-\d+-(isobench-[0-9a-f]+)\.libvirt-qemu$")


def _orphan_machine_cgroups(cgroup_root: Path = CGROUP_ROOT) -> list[str]:
    """Empty ``machine/qemu-N-isobench-<id>.libvirt-qemu`` cgroups that libvirt left behind when
    libvirtd itself died mid-shutdown. libvirt removes them on a normal shutdown; here the domain is
    gone, nobody holds the lease and no process is inside, so nothing can still need them."""
    from vmharness import hypervisor as hv

    live_domains = set(hv.domain_names())
    removed = []
    for machine in sorted(cgroup_root.glob("*/machine")):
        for cg in sorted(machine.iterdir()):
            m = _MACHINE_CGROUP.match(cg.name)
            if not m or not cg.is_dir() or m.group(1) in live_domains or leases.owner_alive(m.group(1)):
                continue
            dirs = sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            try:
                if any(_members(d) for d in [*dirs, cg]):
                    continue  # a process is still inside: not ours to judge
                for d in [*dirs, cg]:
                    d.rmdir()
            except OSError:
                continue
            removed.append(f"libvirt cgroup {cg}")
    return removed


def _members(cg: Path) -> str:
    """Pids in a cgroup; threaded v2 cgroups (libvirt's vcpu/emulator dirs) refuse cgroup.procs."""
    try:
        return (cg / "cgroup.procs").read_text().strip()
    except OSError:
        return (cg / "cgroup.threads").read_text().strip()


def gc(paths) -> list[str]:
    """Remove this area's orphans of crashed runs by their ``isobench-`` names; return what was removed."""
    removed = _orphan_domains()
    removed += _orphan_records(paths)
    removed += _orphan_taps()
    removed += _stale_artifacts(paths)
    removed += _orphan_machine_cgroups()
    return removed
