"""VM boot speed (issue 5): ``python -m bench.micro.vmboot [--rounds 5] [--json out.json]``.

Three measurements in one run, the two boot paths interleaved round by round so host noise hits both:

* **artifacts**: building the busybox image's guest artifacts cold (ext4 disk, PVH kernel, initrd) in a
  fresh state root, then what the second ``vm run`` spends on them (target ~0: reused by digest).
* **libvirt**: ``vmharness.api.run`` of ``echo hi`` under TCG: boot-to-ready (create call -> the init
  shim's READY line) and every phase (target: under 10 s).
* **bare**: ``qemu-system-x86_64`` started directly with the SAME kernel, initrd, disk (its own qcow2
  overlay of the same base) and kernel command line, to the same READY line on the same kind of
  console file read by the same watcher. Ratio libvirt/bare of median boot-to-ready (target <= 1.15x).
* **footprint**: an idle VM's QEMU PSS, the guest RAM it touched and the hypervisor overhead.

Everything lives in a private state root that is removed at the end. Exit status 1 when a target is
missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOOT_TARGET_S = 10.0
RATIO_TARGET = 1.15
COMMAND = ["echo", "hi"]
MEMORY_MIB = 256


def bare_boot(paths, arts, memory_mib: int = MEMORY_MIB, timeout_s: float = 120.0) -> dict[str, float]:
    """Boot the guest with a bare QEMU command; phases (seconds since Popen) up to READY and exit."""
    from vmharness import artifacts as art
    from vmharness import console as con
    from vmharness.domain import DomainConfig, bare_qemu_argv
    from vmharness.vm import host_tsc_khz, kernel_cmdline, plan_command, resolve_image

    img = resolve_image("busybox", paths)
    plan = plan_command(img.config, COMMAND)
    frag = art.run_fragment(list(plan.argv), list(plan.env), plan.workdir, None)
    from core.scratch import make_scratch, remove_scratch

    work = make_scratch(paths, "vmboot")  # leased: `isobench gc` removes it after a kill
    try:
        overlay = work / "disk.qcow2"
        art.create_overlay(arts.disk, overlay)
        cfg = DomainConfig(name="bare", kernel=str(arts.kernel), initrd=str(arts.initrd),
                           cmdline=kernel_cmdline(frag, "bare", tsc_khz=host_tsc_khz()), disk_path=str(overlay),
                           console_path=str(work / "console.log"), memory_mib=memory_mib)
        t0 = time.monotonic()
        watcher = con.ConsoleWatcher(Path(cfg.console_path), t0).start()
        proc = subprocess.Popen(bare_qemu_argv(cfg), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            got = watcher.wait_for("ready", timeout_s=timeout_s, alive=lambda: proc.poll() is None)
            if got != "ready":
                raise RuntimeError(f"bare QEMU did not reach READY ({got}): {con.tail(watcher.text, 5)}")
            watcher.wait_for("exited", timeout_s=timeout_s, alive=lambda: proc.poll() is None)
            proc.wait(timeout=timeout_s)
            gone = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            watcher.stop()
        ph = {"create": 0.0, **watcher.phases(), "gone": gone - t0}
        if con.workload_output(watcher.text) != "hi\n":
            raise RuntimeError("bare QEMU guest printed the wrong output")
        return ph
    finally:
        remove_scratch(work)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.micro.vmboot", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    from core.paths import HostPaths
    from vmharness import api
    from vmharness import artifacts as art
    from vmharness.vm import resolve_image

    root = Path(tempfile.mkdtemp(prefix="vmboot-", dir="/var/tmp"))
    paths = HostPaths(root=root).ensure()
    try:
        img = resolve_image("busybox", paths)
        img.rootfs()  # flatten first: that is the image store's cost, not the VM harness's
        t = time.monotonic()
        arts = art.ensure_artifacts(paths.vm_artifacts, img.digest, img.rootfs)
        cold_s = time.monotonic() - t
        t = time.monotonic()
        art.ensure_artifacts(paths.vm_artifacts, img.digest, img.rootfs)
        warm_s = time.monotonic() - t
        print(f"artifacts: cold build {cold_s:.2f} s, cached lookup {warm_s * 1000:.1f} ms "
              f"(disk {arts.disk.stat().st_size // 2**20} MiB sparse, initrd {arts.initrd.stat().st_size // 1024} KiB, "
              f"kernel {arts.kernel.name})")

        cfg = api.VMRunConfig(accel="tcg", network="none", memory_mib=MEMORY_MIB)
        lv: list[dict[str, float]] = []
        bare: list[dict[str, float]] = []
        run_artifacts: list[float] = []
        for i in range(args.rounds):
            order = ("libvirt", "bare") if i % 2 == 0 else ("bare", "libvirt")
            for kind in order:
                if kind == "libvirt":
                    res = api.run("busybox", COMMAND, cfg, paths)
                    if res.exit_code != 0 or res.output != "hi\n":
                        raise SystemExit(f"libvirt boot {i}: exit {res.exit_code}, output {res.output!r}")
                    lv.append(res.phases)
                    run_artifacts.append(res.artifacts_s)
                else:
                    bare.append(bare_boot(paths, arts))
            print(f"round {i + 1}/{args.rounds}: libvirt ready {lv[-1]['ready']:.2f} s, bare ready "
                  f"{bare[-1]['ready']:.2f} s", flush=True)
        # footprint of an idle guest (the harness's server case): QEMU PSS vs the guest RAM size
        vm = api.start("busybox", ["sleep", "600"], cfg, paths)
        try:
            vm.wait_ready()
            time.sleep(1.0)
            use = vm.usage()
        finally:
            vm.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    phases = ["qemu_up", "first_output", "initrd", "init_started", "ready", "exited", "gone"]
    print("\nboot phases under TCG, median seconds since the create call (libvirt) / since exec (bare QEMU):")
    print(f"  {'phase':<14}{'libvirt':>9}{'bare':>9}")
    for p in phases:
        a = median([r[p] for r in lv if p in r])
        b = median([r[p] for r in bare if p in r])
        print(f"  {p:<14}{a:>9.3f}{b:>9.3f}")
    lv_ready = median([r["ready"] for r in lv])
    bare_ready = median([r["ready"] for r in bare])
    ratio = lv_ready / bare_ready
    art_run = max(run_artifacts) if run_artifacts else float("nan")
    print(f"\nboot-to-ready (TCG, busybox): median {lv_ready:.2f} s "
          f"(min {min(r['ready'] for r in lv):.2f}, max {max(r['ready'] for r in lv):.2f}); "
          f"target < {BOOT_TARGET_S:.0f} s: {'OK' if lv_ready < BOOT_TARGET_S else 'MISSED'}")
    print(f"harness overhead: libvirt {lv_ready:.2f} s / bare QEMU {bare_ready:.2f} s = {ratio:.3f}x; "
          f"target <= {RATIO_TARGET}x: {'OK' if ratio <= RATIO_TARGET else 'MISSED'}")
    print(f"artifacts reused: time spent on artifacts per `vm run` at most {art_run * 1000:.1f} ms "
          f"(cold build {cold_s:.2f} s)")
    print(f"idle VM footprint: QEMU PSS {use.pss_bytes / 2**20:.1f} MiB for a {use.guest_ram_bytes // 2**20} MiB "
          f"guest (guest RAM touched {use.guest_ram_pss_bytes / 2**20:.1f} MiB, hypervisor overhead "
          f"{use.overhead_pss_bytes / 2**20:.1f} MiB), QEMU CPU {use.cpu_user_s + use.cpu_system_s:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"libvirt": lv, "bare": bare, "artifacts_cold_s": cold_s,
                                         "artifacts_warm_s": warm_s, "run_artifacts_s": run_artifacts,
                                         "ratio": ratio, "libvirt_ready_median_s": lv_ready,
                                         "bare_ready_median_s": bare_ready,
                                         "idle_usage": {k: getattr(use, k) for k in use.__dataclass_fields__}},
                                        indent=2))
    return 0 if lv_ready < BOOT_TARGET_S and ratio <= RATIO_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
