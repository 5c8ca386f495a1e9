"""Small JSON state files of the network area, written atomically but without fsync.

IPAM allocations and port records describe kernel objects (veths, DNAT rules, namespaces) that do not
survive a reboot, so making them durable across a power loss buys nothing, while an fsync on the
container start path costs milliseconds on a busy disk. Write-to-temp + rename still guarantees that
a ``kill -9`` leaves the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
