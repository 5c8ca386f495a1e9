"""Host metadata recorded with every run (meta.json and the pyperf suites): the conditions a number was
measured under, so two runs can be compared honestly.

CPU model and count, kernel, cgroup layout, the VM accelerator and why, versions of runc/QEMU/libvirt and
of the benchmark tools, the digests of the images that ran, and the system conditions pyperf records
for its own benchmarks (CPU frequency and idle/governor configuration, load average, ASLR, boot time),
collected by pyperf itself, plus the CPU governor, the kernel command line and the isobench commit.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

# tool -> argv printing its version (first line kept)
VERSION_COMMANDS: dict[str, list[str]] = {
    "runc": ["runc", "--version"],
    "qemu": ["qemu-system-x86_64", "--version"],
    "libvirt": ["libvirtd", "--version"],
    "sysbench": ["sysbench", "--version"],
    "fio": ["fio", "--version"],
    "iperf3": ["iperf3", "--version"],
    "wrk": ["wrk", "-v"],
    "stress-ng": ["stress-ng", "--version"],
}


def cpu_model(cpuinfo: str | None = None) -> str:
    text = cpuinfo
    if text is None:
        try:
            with open("/proc/cpuinfo") as f:
                text = f.read()
        except OSError:
            return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else (platform.processor() or "unknown")


def tool_version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (res.stdout or res.stderr).strip()
    return text.splitlines()[0].strip() if text else "unknown"


def cgroup_version() -> str:
    try:
        from runtime.cgroups.layout import detect

        return detect().version
    except (ImportError, OSError) as exc:
        return f"unknown ({exc})"


def versions() -> dict[str, str]:
    out = {k: tool_version(v) for k, v in VERSION_COMMANDS.items()}
    try:
        import pyperf

        out["pyperf"] = pyperf.__version__
    except ImportError:
        pass
    return out


REPO = Path(__file__).resolve().parents[1]
PYPERF_KEYS = ("cpu_freq", "cpu_config", "load_avg_1min", "runnable_threads", "aslr", "boot_time", "uptime",
               "cpu_model_name", "cpu_count", "cpu_affinity", "platform", "perf_version", "timer", "date")


def pyperf_metadata() -> dict:
    """pyperf's own collection of system metadata (the keys it stores with every pyperf run)."""
    try:
        from pyperf._collect_metadata import collect_metadata
    except ImportError as exc:  # pyperf moved its private collector: say so rather than guess
        return {"error": f"pyperf metadata collector unavailable: {exc}"}
    md = collect_metadata(process=False)
    return {k: md[k] for k in PYPERF_KEYS if k in md}


def cpu_governors(sysfs: Path = Path("/sys/devices/system/cpu")) -> str:
    """``cpu0-1=performance`` style summary of scaling governors, or why there is none."""
    found: dict[str, list[str]] = {}
    for gov in sorted(sysfs.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        try:
            found.setdefault(gov.read_text().strip(), []).append(gov.parent.parent.name.removeprefix("cpu"))
        except OSError:
            continue
    if not found:
        return "not exposed (no cpufreq driver: frequency set by the hypervisor or firmware)"
    return "; ".join(f"cpu{','.join(cpus)}={name}" for name, cpus in found.items())


def kernel_cmdline() -> str:
    try:
        return Path("/proc/cmdline").read_text().strip()
    except OSError as exc:
        return f"unknown ({exc})"


def isobench_commit(repo: Path = REPO) -> str:
    """HEAD of the checkout the harness runs from, ``+dirty`` when tracked files differ."""
    if shutil.which("git") is None:
        return "unknown (git not installed)"
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def host_meta(accelerator: tuple[str, str], image_digests: dict[str, str], profile: str) -> dict:
    """The meta.json keys of :data:`bench.results.META_KEYS` (timestamps are added by the runner)."""
    return {
        "isobench_commit": isobench_commit(),
        "kernel_cmdline": kernel_cmdline(),
        "cpu_governor": cpu_governors(),
        "system": pyperf_metadata(),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "kernel": platform.release(),
        "cgroup_version": cgroup_version(),
        "accelerator": accelerator[0],
        "accelerator_reason": accelerator[1],
        "versions": versions(),
        "image_digests": image_digests,
        "profile": profile,
        "python": sys.version.split()[0],
    }


def suite_meta(meta: dict, env: str) -> dict[str, object]:
    """The flat subset stored as pyperf metadata on every value."""
    out: dict[str, object] = {"hostname": meta.get("hostname", ""), "cpu_model_name": meta.get("cpu_model", ""),
                              "cpu_count": int(meta.get("cpu_count", 0) or 0), "platform": meta.get("kernel", ""),
                              "isobench_environment": env, "isobench_profile": meta.get("profile", ""),
                              "isobench_cgroup": meta.get("cgroup_version", "")}
    if env in ("vm", "vm-container", "vm-container-runc"):
        out["isobench_accelerator"] = meta.get("accelerator", "")
        out["isobench_vm_machine"] = meta.get("vm_machine", "")
    out["isobench_commit"] = meta.get("isobench_commit", "")
    system = meta.get("system") or {}
    for key in ("cpu_freq", "cpu_config", "aslr", "boot_time"):
        if system.get(key):
            out[key] = system[key]
    for name, digest in (meta.get("image_digests") or {}).items():
        out[f"isobench_image_{name}"] = digest
    return out
