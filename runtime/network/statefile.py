"""Small JSON state files of the network area, written atomically but without fsync.

IPAM allocations and port records describe kernel objects (veths, DNAT rules, namespaces) that do not
survive a reboot, so making them durable across a power loss buys nothing, while an fsync on the
container start path costs milliseconds on a busy disk. Write-to-temp + rename still guarantees that
a ``kill -9`` leaves the old or the new file, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.fsutil import atomic_write_bytes


def write_json(path: Path, obj: Any) -> None:
    # pid-tagged temp name (fsutil's default): `isobench gc` removes it when the writer was killed
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), fsync=False)
