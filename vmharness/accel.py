"""Which accelerator VMs use here: KVM only when it is proven to work, else TCG — with the reason.

``/dev/kvm`` existing is not enough: on these machines it exists but nested virtualization cannot boot
a stock kernel (QEMU aborts or the guest hangs). So ``auto`` boots a tiny probe VM under KVM and
accepts KVM only when the guest reaches the init shim within a few seconds; otherwise the probe VM is
destroyed and TCG is used, with the reason recorded in every VM result. The answer is cached per host
and kernel (state dir, and /var/cache/isobench so test roots share it) because a probe costs seconds.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal

from core.errors import IsobenchError, VMError
from core.fsutil import atomic_write_json, file_lock, read_json
from core.paths import HostPaths, run_dir

Accel = Literal["kvm", "tcg"]
PROBE_BOUND_S = 6.0     # a healthy KVM microvm reaches the shim in well under a second
CACHE_VERSION = 2
DEV_KVM = Path("/dev/kvm")


@dataclass(frozen=True)
class ProbeResult:
    accel: Accel
    reason: str
    probed_at: float          # UNIX time of the probe
    host: str = ""
    kernel: str = ""
    probe_s: float = 0.0      # how long the probe took


@dataclass(frozen=True)
class BootOutcome:
    """What a probe boot saw: reached the init shim, or why not."""

    reached_init: bool
    detail: str
    elapsed_s: float


def decide(kvm_device: bool, boot: Callable[[float], BootOutcome], bound_s: float = PROBE_BOUND_S,
           kvm_device_path: str = str(DEV_KVM)) -> tuple[Accel, str]:
    """Pure decision: KVM iff the device exists and a probe boot reaches the init shim within bound_s."""
    if not kvm_device:
        return "tcg", f"{kvm_device_path} missing: no hardware virtualization, using TCG (software emulation)"
    try:
        out = boot(bound_s)
    except VMError as exc:
        return "tcg", f"KVM probe boot failed ({one_line(str(exc))}); using TCG"
    if out.reached_init:
        return "kvm", f"KVM probe boot reached the init shim in {out.elapsed_s:.2f} s"
    return "tcg", (f"{kvm_device_path} exists but a KVM probe boot did not reach the init shim within "
                   f"{bound_s:.0f} s ({one_line(out.detail)}); nested virtualization unusable, using TCG")


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _host_key() -> tuple[str, str]:
    u = platform.uname()
    return u.node, u.release


def cache_files(state_root: Path | None = None) -> list[Path]:
    files = []
    if state_root is not None:
        files.append(state_root / "accel-probe.json")
    files.append(Path(os.environ.get("ISOBENCH_CACHE", "/var/cache/isobench")) / "accel-probe.json")
    return files


def load_cached(files: list[Path]) -> ProbeResult | None:
    host, kernel = _host_key()
    for f in files:
        try:
            rec = read_json(f)
        except (OSError, ValueError):
            continue
        if rec.get("version") == CACHE_VERSION and rec.get("host") == host and rec.get("kernel") == kernel:
            rec.pop("version", None)
            rec["reason"] = one_line(str(rec.get("reason", "")))
            try:
                return ProbeResult(**rec)
            except TypeError:
                continue
    return None


def store_cached(files: list[Path], result: ProbeResult) -> None:
    for f in files:
        try:
            atomic_write_json(f, {"version": CACHE_VERSION, **asdict(result)})
        except OSError:
            continue  # a read-only cache dir only costs a re-probe


def _probe_boot(bound_s: float) -> BootOutcome:
    """Boot the busybox image under KVM with a short bound; destroy the probe VM whatever happens."""
    paths = HostPaths.from_env().ensure()
    return probe_boot(paths, bound_s)


def probe_boot(paths: HostPaths, bound_s: float, kvm_cpu_passthrough: bool = True):
    """Boot busybox under KVM for the accelerator probe; always destroys the probe VM."""
    from vmharness.vm import create, resolve_image

    image = resolve_image("busybox", paths)
    t0 = time.monotonic()
    try:
        vm = create(image, ["true"], paths=paths, accel="kvm", accel_reason="probe", memory_mib=256,
                    boot_timeout_s=bound_s, kvm_cpu_passthrough=kvm_cpu_passthrough)
    except IsobenchError as exc:
        return BootOutcome(False, f"QEMU/KVM failed to start: {exc}", time.monotonic() - t0)
    try:
        got = vm.watcher.wait_for("init_started", timeout_s=bound_s, alive=vm.alive)
        elapsed = time.monotonic() - t0
        if got == "init_started":
            return BootOutcome(True, "reached the init shim", elapsed)
        log = vm.console_text()
        detail = ("QEMU exited early" if vm._gone_at is not None else "guest hung") + \
            (f", {len(log)} console bytes" if log else ", no console output")
        return BootOutcome(False, detail, elapsed)
    finally:
        vm.close()
        shutil.rmtree(vm.dir, ignore_errors=True)


def probe(boot: Callable[[float], BootOutcome] | None = None) -> ProbeResult:
    t0 = time.monotonic()
    accel, reason = decide(DEV_KVM.exists(), boot or _probe_boot)
    host, kernel = _host_key()
    return ProbeResult(accel, reason, time.time(), host, kernel, round(time.monotonic() - t0, 3))


def probe_cached(paths=None, refresh: bool = False,
                 boot: Callable[[float], BootOutcome] | None = None) -> ProbeResult:
    """The cached probe result for this host and kernel, probing (once, under a lock) when missing."""
    if paths is None:
        paths = HostPaths.from_env()
    files = cache_files(paths.root)
    if not refresh:
        hit = load_cached(files)
        if hit is not None:
            return hit
    with file_lock(run_dir() / "accel-probe.lock"):
        if not refresh:
            hit = load_cached(files)
            if hit is not None:
                return hit
        result = probe(boot)
        store_cached(files, result)
        return result


def choose(requested: str, paths=None, probe_fn: Callable[[], ProbeResult] | None = None) -> tuple[Accel, str]:
    """``--accel auto|kvm|tcg`` -> (accelerator, reason). ``kvm`` where the probe failed is an error."""
    if requested == "tcg":
        return "tcg", "TCG requested (--accel tcg)"
    res = probe_fn() if probe_fn else probe_cached(paths)
    if requested == "kvm" and res.accel != "kvm":
        raise VMError(f"--accel kvm: KVM is not usable on this host: {res.reason}")
    if requested not in ("auto", "kvm"):
        raise VMError(f"--accel {requested!r} is not one of auto, kvm, tcg")
    return res.accel, res.reason
