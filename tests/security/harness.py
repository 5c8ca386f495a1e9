"""Ways to run one probe command in a container, for the breakout suite.

* ``runc``: runc 1.1 with the config.json ``runc spec`` writes (its defaults: 3 capabilities, masked and
  read-only paths, pid/net/ipc/uts/mount namespaces, no seccomp), only ``process.args``, ``terminal``
  and ``root.readonly=false`` changed (a writable root keeps the probes honest: a failed ``mkdir`` must
  not count as a blocked ``mount``).
* ``hooks``: a minimal container made here from namespaces + pivot_root that applies exactly the
  security area's hooks (``prepare_mounts_in_child`` and ``enter``), so the hooks are verified on
  their own, independent of the runtime's other layers.
* ``isobench``: the project's runtime through its CLI (``isobench run --rm``), when it is available.

Each returns ``(exit_code, combined_output)``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from core import leases
from core import syscalls
from core.paths import new_id
from runtime.security import probes

REPO = Path(__file__).resolve().parents[2]


def busybox_rootfs(root: Path, helper: Path | None) -> Path:
    """A busybox rootfs with every applet linked and the probe helper at probes.HELPER."""
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", probes.HELPER_DIR.lstrip("/")):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        link = root / "bin" / a
        if a != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/hostname").write_text("probe\n")
    if helper is not None:
        shutil.copy2(helper, root / probes.HELPER.lstrip("/"))
    return root


# ------------------------------------------------------------------------------------------------ runc

def runc_bundle(bundle: Path, helper: Path) -> Path:
    busybox_rootfs(bundle / "rootfs", helper)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True, capture_output=True)
    return bundle


def run_runc(bundle: Path, argv: list[str], state_root: Path, timeout_s: float = 30) -> tuple[int, str]:
    cfg_path = bundle / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["process"]["args"] = argv
    cfg["process"]["terminal"] = False
    cfg["root"]["readonly"] = False
    cfg_path.write_text(json.dumps(cfg, indent=1))
    cid = f"isobench-sec-{new_id(4)}"
    leases.take(cid, kind="runc-probe", root=str(state_root))
    try:
        proc = subprocess.run(["runc", "--root", str(state_root / "runc"), "run", "--bundle", str(bundle), cid],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
        return proc.returncode, proc.stdout + proc.stderr
    finally:
        subprocess.run(["runc", "--root", str(state_root / "runc"), "delete", "--force", cid],
                       capture_output=True)
        leases.release(cid)


# ----------------------------------------------------------------------------------------------- hooks

_HOOKS_CHILD = r'''
import os, sys, json
from core import syscalls as s
from runtime import security
from runtime.spec import SecuritySpec
rootfs, argv, opts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
uid = opts.pop("uid")
spec = SecuritySpec(**opts)
prepared = security.prepare(spec)       # in the parent, as the runtime does
s.unshare(s.CLONE_NEWNS | s.CLONE_NEWPID | s.CLONE_NEWUTS | s.CLONE_NEWIPC | s.CLONE_NEWNET)
pid = os.fork()
if pid:
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
# PID 1 of the new namespaces dies with this parent (killed by run_hooks' timeout): the kernel then
# kills every process of the namespace, so a hanging probe is not left running on the host (kept
# across exec; a change of uid, as for uid 1000, clears it)
s.prctl(s.PR_SET_PDEATHSIG, 9)
s.mount(None, "/", None, s.MS_REC | s.MS_PRIVATE)
s.mount(rootfs, rootfs, None, s.MS_BIND | s.MS_REC)
s.mount("proc", rootfs + "/proc", "proc", s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC)
s.mount("sysfs", rootfs + "/sys", "sysfs", s.MS_NOSUID | s.MS_NODEV | s.MS_NOEXEC | s.MS_RDONLY)
s.mount("tmpfs", rootfs + "/dev", "tmpfs", s.MS_NOSUID, "mode=755,size=65536k")
for name, minor in (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)):
    os.mknod(f"{rootfs}/dev/{name}", 0o20666, os.makedev(1, minor))
    os.chmod(f"{rootfs}/dev/{name}", 0o666)
os.makedirs(rootfs + "/.oldroot", exist_ok=True)
s.pivot_root(rootfs, rootfs + "/.oldroot")
os.chdir("/")
s.umount("/.oldroot", s.MNT_DETACH)
os.rmdir("/.oldroot")
s.sethostname("probe")
security.prepare_mounts_in_child(prepared)
env = {"PATH": "/bin", "HOME": "/root"}
security.enter(prepared, uid, uid)
os.execve(argv[0], argv, env)
'''


def run_hooks(rootfs: Path, argv: list[str], cap_drop: tuple[str, ...] = (), seccomp: str = "default",
              privileged: bool = False, uid: int = 0, no_new_privileges: bool = True,
              timeout_s: float = 30) -> tuple[int, str]:
    spec = {"cap_drop": list(cap_drop), "seccomp": seccomp, "privileged": privileged, "uid": uid,
            "no_new_privileges": no_new_privileges}
    proc = subprocess.run([sys.executable, "-c", _HOOKS_CHILD, str(rootfs), json.dumps(argv), json.dumps(spec)],
                          cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc.returncode, proc.stdout + proc.stderr


# -------------------------------------------------------------------------------------------- isobench

def _cli_has_run() -> bool:
    try:
        from app.cli import build_parser

        build_parser().parse_args(["run", "--rm", "--cap-drop", "NET_RAW", "busybox", "true"])
    except (ImportError, SystemExit):
        return False
    return True


def isobench_available() -> tuple[bool, str]:
    """The runtime is usable through its CLI (``isobench run`` with the security options) or, until
    that lands, through its library API (``runtime.api.run``)."""
    if _cli_has_run():
        return True, ""
    try:
        from runtime import api  # noqa: F401
    except ImportError as exc:
        return False, f"neither `isobench run --cap-drop` nor runtime.api is available yet ({exc})"
    return True, ""


def run_isobench(argv: list[str], helper_dir: Path, cap_drop: tuple[str, ...] = (), extra: tuple[str, ...] = (),
                 timeout_s: float = 60, with_helper: bool = True, root: Path | None = None) -> tuple[int, str]:
    if not _cli_has_run():
        return _run_isobench_api(argv, helper_dir, cap_drop, extra, with_helper, root)
    cmd = [sys.executable, "-m", "app.cli", "run", "--rm", "--network", "none"]
    if with_helper:
        cmd += ["-v", f"{helper_dir}:{probes.HELPER_DIR}:ro"]
    for c in cap_drop:
        cmd += ["--cap-drop", c]
    cmd += list(extra) + ["busybox", *argv]
    env = dict(os.environ) if root is None else {**os.environ, "ISOBENCH_ROOT": str(root)}
    proc = subprocess.run(cmd, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout_s, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def _run_isobench_api(argv: list[str], helper_dir: Path, cap_drop: tuple[str, ...], extra: tuple[str, ...],
                      with_helper: bool, root: Path | None) -> tuple[int, str]:
    """The same container through runtime.api (what the benchmark harness calls in-process)."""
    from runtime import api
    from core.paths import HostPaths
    from runtime.spec import ContainerConfig, MountSpec, NetworkSpec, SecuritySpec

    paths = HostPaths(root=root).ensure() if root is not None else HostPaths.from_env().ensure()
    mounts = (MountSpec(destination=probes.HELPER_DIR, source=str(helper_dir), type="bind", read_only=True),) \
        if with_helper else ()
    unknown = set(extra) - {"--init"}
    if unknown:
        raise AssertionError(f"the API fallback does not translate {sorted(unknown)}")
    cfg = ContainerConfig(image="busybox", command=tuple(argv), network=NetworkSpec(mode="none"), mounts=mounts,
                          init="--init" in extra, security=SecuritySpec(cap_drop=tuple(cap_drop)))
    r = api.run(cfg, paths)
    return r.exit_code, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


__all__ = ["busybox_rootfs", "runc_bundle", "run_runc", "run_hooks", "run_isobench", "isobench_available",
           "syscalls"]
