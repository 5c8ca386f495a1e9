"""The project's small C programs, compiled once by ``make setup`` into one directory.

Some parts cannot be Python: the container init and the monitor shim must be static (they run inside
arbitrary images or idle beside every detached container), the security probe helper and the guest's
USER helper run inside images too, and the ``isobench`` client must start in a millisecond. Their
sources live in ``csrc/``; ``make setup`` runs ``python -m core.cbin build`` which compiles every entry
of :data:`HELPERS` into :func:`libexec_dir` and fails loudly when a compile fails. At run time
:func:`helper` only looks the binary up: a missing helper is an error naming the fix, never a silent
fallback to a Python stand-in that would change what is measured.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core.errors import IsobenchError

SOURCE_DIR = Path(__file__).resolve().parent.parent / "csrc"


@dataclass(frozen=True)
class Helper:
    """One C program: its source file in ``csrc/`` and the compiler flags it needs."""

    source: str
    flags: tuple[str, ...]


# name -> how to build it. Static where the binary runs inside a container or guest rootfs.
HELPERS: dict[str, Helper] = {
    "isobench-init": Helper("init_shim.c", ("-static", "-Os")),
    # a container's first process up to execve (static: exec'd ~0.2 ms faster than a dynamic binary)
    "isobench-nsexec": Helper("nsexec.c", ("-static", "-O2", "-Wall")),
    "isobench-monitor": Helper("monitor_shim.c", ("-static", "-Os")),
    "isoprobe": Helper("probe_helper.c", ("-static", "-O2")),
    "guest-setuid": Helper("guest_setuid.c", ("-static", "-Os", "-s")),
    "isobench-client": Helper("client.c", ("-O2", "-Wall")),
    # the same client as `isobench-runtime`, the OCI runtime CLI (its fallback: isobench-runtime-py)
    "isobench-runtime-client": Helper("client.c", ("-O2", "-Wall", "-DOCI_RUNTIME")),
}


def libexec_dir() -> Path:
    """Where ``make setup`` puts the binaries: ``<venv>/libexec/isobench`` (``ISOBENCH_LIBEXEC`` overrides)."""
    env = os.environ.get("ISOBENCH_LIBEXEC")
    return Path(env) if env else Path(sys.prefix) / "libexec" / "isobench"


def _stamp(h: Helper) -> str:
    data = (SOURCE_DIR / h.source).read_bytes() + " ".join(h.flags).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def helper(name: str) -> Path:
    """The compiled helper ``name``; raises when ``make setup`` did not build it (or built an older source)."""
    h = HELPERS[name]
    path = libexec_dir() / name
    stamp = path.with_name(f".{name}.stamp")
    try:
        current = stamp.read_text().strip() == _stamp(h)
    except OSError:
        current = False
    if not path.is_file() or not current:
        raise IsobenchError(f"C helper {name} is not built (or is older than csrc/{h.source}) in "
                            f"{libexec_dir()}: run `make setup`")
    return path


def build(out_dir: Path | None = None, cc: str | None = None) -> list[str]:
    """Compile every helper whose source or flags changed; returns the names compiled. Raises
    IsobenchError naming the helper and the compiler's first error when one fails."""
    out_dir = out_dir or libexec_dir()
    cc = cc or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise IsobenchError("no C compiler (gcc) to build the helpers in csrc/: apt-get install gcc libc6-dev")
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for name, h in HELPERS.items():
        out, stamp = out_dir / name, out_dir / f".{name}.stamp"
        want = _stamp(h)
        if out.is_file() and stamp.is_file() and stamp.read_text().strip() == want:
            continue
        tmp = out.with_name(f".{name}.tmp-pid{os.getpid()}")
        proc = subprocess.run([cc, *h.flags, "-o", str(tmp), str(SOURCE_DIR / h.source)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            errors = [ln for ln in proc.stderr.splitlines() if "error" in ln] or proc.stderr.splitlines() or ["?"]
            raise IsobenchError(f"compiling csrc/{h.source} ({name}) with {cc} {' '.join(h.flags)} failed: {errors[0]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)  # atomic: a command running right now keeps the old inode
        stamp.write_text(want + "\n")
        built.append(name)
    return built


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"]:
        print("usage: python -m core.cbin build", file=sys.stderr)
        return 2
    try:
        built = build()
    except IsobenchError as exc:
        print(f"isobench setup: {exc}", file=sys.stderr)
        return 1
    print(f"isobench setup: C helpers in {libexec_dir()}" + (f" (built {', '.join(built)})" if built else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
