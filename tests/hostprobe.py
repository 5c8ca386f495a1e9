"""Probes for the ``requires`` marker and the leak check every integration test ends with.

``host_objects()`` lists what carries the project's name on the host: mounts, cgroups, links, network
namespaces, firewall rules, libvirt domains, processes, runc state dirs and port claims. Integration tests snapshot it before and
after (tests run serially in CI, so the difference is what the test left behind).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from core.paths import run_dir

NAME = "isobench"
# The shared bridge and its base rules outlive containers by design (removed by `network prune`); the
# session fixture in conftest.py prunes them at the end when the session created them.
BRIDGE = "isobench0"
# nft prints packet/byte counters inside rules; a rule whose counters moved is still the same rule.
_COUNTERS = re.compile(r"counter packets \d+ bytes \d+|\[\d+:\d+\]")


def _out(argv: list[str], timeout_s: float = 10) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


@functools.cache
def feature(name: str) -> tuple[bool, str]:
    """(available, reason) for a host feature named in ``@pytest.mark.requires``."""
    root = os.geteuid() == 0
    checks = {
        "root": (root, "needs root"),
        "cgroup_v1": (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
                      and Path("/sys/fs/cgroup/cpu").exists(), "host has no cgroup v1 cpu/memory hierarchies"),
        "cgroup_v2": (_v2_controllers(), "host has no cgroup v2 hierarchy with cpu and memory controllers"),
        "runc": (shutil.which("runc") is not None, "runc not installed"),
        "qemu": (shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 not installed"),
        "busybox": (Path("/bin/busybox").exists(), "busybox-static not installed"),
        "iptables": (shutil.which("iptables") is not None, "iptables not installed"),
        "wrk": (shutil.which("wrk") is not None, "wrk not installed"),
        "skopeo": (shutil.which("skopeo") is not None, "skopeo not installed"),
        "libvirt": (_libvirt_ok(), "libvirt-python or libvirtd unavailable"),
        "kvm": _kvm_ok(),
        "chromium": (shutil.which("chromium") is not None, "chromium not installed"),
    }
    if name not in checks:
        return False, f"unknown feature {name!r}"
    return checks[name]


def _v2_controllers() -> bool:
    for cand in ("/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/unified/cgroup.controllers"):
        try:
            ctl = Path(cand).read_text().split()
        except OSError:
            continue
        if "cpu" in ctl and "memory" in ctl:
            return True
    return False


def _libvirt_ok() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        from vmharness import daemons  # type: ignore[attr-defined]
    except ImportError:
        return shutil.which("libvirtd") is not None
    try:
        daemons.ensure_libvirtd()
        return True
    except Exception:  # noqa: BLE001 - a probe: any failure means "not available"
        return False


def _kvm_ok() -> tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm missing"
    try:
        from vmharness import accel  # type: ignore[attr-defined]
    except ImportError:
        return False, "accelerator probe not available"
    try:
        result = accel.probe_cached()
    except Exception as exc:  # noqa: BLE001 - a probe
        return False, f"KVM probe failed: {exc}"
    return result.accel == "kvm", f"KVM probe chose {result.accel}: {result.reason}"


HOST_TEST_LOCK = "/run/lock/isobench-host-tests.lock"  # tests/conftest.py takes it for a session


def _waits_for_the_host_lock(cmd: str) -> bool:
    """``flock /run/lock/isobench-host-tests.lock CMD``: a bench or experiment of another session that
    queues for the host as test sessions do (flock(1) stays its parent while CMD runs, but the lock
    makes that impossible during this session)."""
    head = cmd.split()[:6]  # also behind a wrapper: `timeout 1200 flock LOCK CMD`
    return HOST_TEST_LOCK in head and any(os.path.basename(t) == "flock" for t in head[:head.index(HOST_TEST_LOCK)])


def host_objects() -> dict[str, set[str]]:
    """Everything named after the project that exists on the host right now."""
    objs: dict[str, set[str]] = {}
    try:
        mi = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        mi = []
    objs["mounts"] = {ln.split()[4] for ln in mi if NAME in ln}
    cg: set[str] = set()
    base = Path("/sys/fs/cgroup")
    if base.exists():
        for top in base.iterdir():
            try:
                for p in top.rglob(f"*{NAME}*"):
                    if p.is_dir():
                        cg.add(str(p))
            except OSError:
                pass
    objs["cgroups"] = cg
    objs["links"] = {ln.split(": ")[1].split("@")[0] for ln in _out(["ip", "-o", "link", "show"]).splitlines()
                     if NAME in ln and ": " in ln} - {BRIDGE}
    objs["netns"] = {ln.split()[0] for ln in _out(["ip", "netns", "list"]).splitlines() if NAME in ln}
    objs["rules"] = {_COUNTERS.sub("", ln.strip()) for ln in (_out(["iptables-save"]) + _out(["nft", "-s", "list", "ruleset"])).splitlines()
                     if NAME in ln and not ln.strip().startswith(("table", "chain", ":", "*", "#"))
                     and "-N " not in ln and "-X " not in ln and BRIDGE not in ln}
    if shutil.which("virsh") and os.geteuid() == 0 and _libvirtd_running():
        objs["domains"] = {d for d in _out(["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).split()
                           if NAME in d}
    else:
        objs["domains"] = set()
    procs = set()
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if _waits_for_the_host_lock(cmd):
            continue  # another session's `flock LOCK cmd`, queued behind this one: it has made nothing yet
        if f"{NAME}-" in cmd and "pytest" not in cmd and not _idle_spare(pid):
            procs.add(f"{pid} {cmd.strip()[:120]}")
    objs["processes"] = procs
    # runc's own state dirs (a runc killed mid-create leaves one with only exec.fifo) and port claims
    objs["runc_state"] = {str(p) for p in Path("/run/runc").glob(f"{NAME}*")} if Path("/run/runc").is_dir() else set()
    claims = run_dir() / "ports"  # runtime.network.portmap
    objs["port_claims"] = {p.name for p in claims.iterdir()} if claims.is_dir() else set()
    return objs


def _idle_spare(pid: str) -> bool:
    """An isobench server's pre-forked idle worker: replaced after every command a running server
    serves (so its pid changes under a test) and gone with its server, which the check does count."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "isobench-spare"
    except OSError:
        return False


def _libvirtd_running() -> bool:
    return Path("/var/run/libvirt/libvirt-sock").exists()


def leaks(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, set[str]]:
    return {k: after[k] - before.get(k, set()) for k in after if after[k] - before.get(k, set())}
