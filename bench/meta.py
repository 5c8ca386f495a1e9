"""Host metadata recorded with every run (meta.json and the pyperf suites): the conditions a number was
measured under, so two runs can be compared honestly.

CPU model and count, kernel, cgroup layout, the VM accelerator and why, versions of runc/QEMU/libvirt and
of the benchmark tools, and the digests of the images that ran.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys

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


def host_meta(accelerator: tuple[str, str], image_digests: dict[str, str], profile: str) -> dict:
    """The meta.json keys of :data:`bench.results.META_KEYS` (timestamps are added by the runner)."""
    return {
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
    if env == "vm":
        out["isobench_accelerator"] = meta.get("accelerator", "")
    for name, digest in (meta.get("image_digests") or {}).items():
        out[f"isobench_image_{name}"] = digest
    return out
