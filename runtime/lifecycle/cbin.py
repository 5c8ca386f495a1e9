"""The runtime's two tiny C programs (monitor shim, container init), compiled once per state root.

Both must be static (the init runs inside arbitrary images) and small (the shim idles beside every
detached container), which rules out shipping Python for them. Built with ``gcc -static`` on first
use into ``paths.root/bin/<name>-<source hash>``; ``None`` when no compiler is present (callers then
fall back to their Python versions).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from runtime.paths import HostPaths

HERE = Path(__file__).resolve().parent
MONITOR_SOURCE = HERE / "monitor_shim.c"
INIT_SOURCE = HERE / "init_shim.c"


def static_binary(paths: HostPaths, source: Path, name: str) -> Path | None:
    data = source.read_bytes()
    out = paths.root / "bin" / f"{name}-{hashlib.sha256(data).hexdigest()[:12]}"
    if out.exists():
        return out
    import shutil
    import subprocess

    from runtime.fsutil import file_lock

    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(paths.locks / f"{name}.lock"):
        if not out.exists():
            tmp = out.with_name(out.name + ".tmp")
            proc = subprocess.run([gcc, "-static", "-Os", "-o", str(tmp), str(source)], capture_output=True)
            if proc.returncode != 0:
                return None
            os.replace(tmp, out)
    return out
