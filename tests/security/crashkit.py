"""Tools for the crash-safety and load tests: run the real CLI, kill it with SIGKILL at a chosen moment,
and audit a state root afterwards (image store digests, leftover temp files, mounts, processes).

The CLI runs as ``python -m app.cli`` with ``ISOBENCH_ROOT`` pointing at a private state root, so the
audit only looks at what these tests made.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli_env(root: Path) -> dict[str, str]:
    return {**os.environ, "ISOBENCH_ROOT": str(root), "PYTHONPATH": str(REPO)}


def isobench(argv: list[str], root: Path, timeout_s: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=REPO, env=cli_env(root),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"isobench {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc


@dataclass(frozen=True)
class Trial:
    verb: str
    argv: tuple[str, ...]
    delay_s: float
    killed: bool        # False: the command had already finished when the kill was due
    exit_code: int | None


def kill_at(verb: str, argv: list[str], root: Path, delay_s: float, timeout_s: float = 60) -> Trial:
    """Start ``isobench argv``, SIGKILL the CLI process after ``delay_s`` (only that pid: what its
    children do next is exactly what crash safety is about), and reap it."""
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", *argv], cwd=REPO, env=cli_env(root),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + delay_s
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)  # not reaped yet: the pid is still this process
        code = proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:  # interrupted before the kill was due: the CLI must not outlive the test
            proc.kill()
            proc.wait(timeout=timeout_s)
    return Trial(verb, tuple(argv), delay_s, killed, None if killed else code)


def timed(argv: list[str], root: Path) -> float:
    t0 = time.monotonic()
    isobench(argv, root)
    return time.monotonic() - t0


def store_problems(root: Path) -> list[str]:
    """Every way the OCI store under ``root`` is not valid: index.json must parse and point at present
    manifests; every blob's content must hash to its name."""
    problems: list[str] = []
    images = root / "images"
    if not images.exists():
        return problems
    try:
        index = json.loads((images / "index.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"index.json unreadable: {exc}"]
    blobs = images / "blobs" / "sha256"
    for m in index.get("manifests", []):
        digest = m.get("digest", "")
        if not (blobs / digest.removeprefix("sha256:")).exists():
            problems.append(f"index names {digest} but the blob is missing")
    if blobs.exists():
        for b in blobs.iterdir():
            if b.name.startswith("."):
                continue
            h = hashlib.sha256()
            with open(b, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != b.name:
                problems.append(f"blob {b.name} has content digest {h.hexdigest()}")
    return problems


def leftovers(root: Path) -> dict[str, list[str]]:
    """What a crash left under ``root`` that gc should have removed: temp files/dirs, mounts below the
    root, processes whose command line mentions the root."""
    out: dict[str, list[str]] = {"tmp": [], "partial_files": [], "mounts": [], "processes": []}
    tmp = root / "tmp"
    if tmp.exists():
        out["tmp"] = sorted(str(p) for p in tmp.iterdir())
    for dirpath, dirnames, filenames in os.walk(root):
        # unpacked layers and rootfs trees are content, not state files: do not descend into them
        dirnames[:] = [d for d in dirnames if d not in ("rootfs", "diff", "merged", "upper", "work")
                       and not Path(dirpath, d).is_mount()]
        out["partial_files"] += [str(Path(dirpath, f)) for f in filenames if f.startswith(".tmp-")]
    mi = Path("/proc/self/mountinfo").read_text().splitlines()
    out["mounts"] = [ln.split()[4] for ln in mi if str(root) in ln.split()[4]]
    out["processes"] = leftovers_processes(root)
    return {k: v for k, v in out.items() if v}


def leftovers_processes(root: Path, by_command_line: bool = True) -> list[str]:
    """``PID CMDLINE`` of live processes whose ISOBENCH_ROOT is ``root`` or (``by_command_line``) whose
    command line mentions it (qemu's does: its disks are under the root, but libvirtd started it)."""
    out = []
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = Path(f"/proc/{pid}/environ").read_bytes()
            zombie = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        except (OSError, IndexError):
            continue
        if not zombie and ((by_command_line and str(root) in cmd) or f"ISOBENCH_ROOT={root}".encode() in env):
            out.append(f"{pid} {cmd[:100]}")
    return out


def cleanup_root(root: Path) -> list[str]:
    """Last-resort cleanup after a crash test, whatever gc missed: SIGKILL processes started for this
    state root (matched by their ISOBENCH_ROOT, so nothing of other roots is touched) and lazily
    unmount mounts below it. Returns what it had to do (the test reports it as a leak)."""
    done = []
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"ISOBENCH_ROOT={root}".encode() in env:
            try:
                os.kill(int(pid), signal.SIGKILL)
                done.append(f"killed {pid}")
            except ProcessLookupError:
                pass
    mounts = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if ln.split()[4].startswith(str(root))]
    for m in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", "-l", m], capture_output=True).returncode == 0:
            done.append(f"unmounted {m}")
    return done


def live_leases(root: Path) -> list[str]:
    """Leases of this state root whose owner process is still alive (objects gc must keep)."""
    from core import leases

    d = leases.lease_dir()
    out = []
    for f in d.glob("*.json") if d.is_dir() else ():
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("root") == str(root) and leases.is_live(f.stem):
            out.append(f"{f.stem} ({rec.get('kind')}, pid {rec.get('pid')})")
    return out


def wait_owners_gone(root: Path, timeout_s: float) -> list[str]:
    """After a crash, owners of this root's objects that outlive the killed CLI (a container monitor, a
    qemu) should finish on their own; wait up to ``timeout_s`` and return those still alive.

    Why processes too: a monitor the CLI forked just before it was killed holds no lease yet (it takes
    one early in create); under load it may still be importing or creating when the leases are all
    gone, and gc then runs before it and it is counted as left behind (seen on a loaded CI host). Only
    processes started with this ISOBENCH_ROOT: a VM's qemu (libvirtd's child) is gc's to stop."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = live_leases(root) + [f"process {p}" for p in leftovers_processes(root, by_command_line=False)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)

