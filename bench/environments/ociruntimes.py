"""Which OCI runtimes the bench runs: runc, the others found on the host, and ``--runtime NAME=PATH``.

Why: an OCI runtime is a command line (``create``/``start``/``run``/``kill``/``delete`` on a bundle), so
any runtime that speaks it can run the bench's bundles beside runc. Each becomes an environment (a
column of the report) named after it. A runtime that cannot run a container on this host (crun 1.8
on this machine's hybrid cgroup layout, runsc without its platform) still gets its column: the
environment's start-up probe fails with the runtime's own one-line reason, which the runner records in
failures.json and the report shows.

Pure parts (name/path checks) are unit tested; the probe runs the real runtime.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

from core.errors import UsageError

# Runtimes looked for on PATH (in this order, after runc): what docker/podman users install.
KNOWN = ("runc", "crun", "youki", "runsc")
RESERVED = ("native", "container", "vm", "vm-container", "vm-container-runc")   # the other environments' names
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class OciRuntime:
    """An OCI runtime command: ``name`` (the environment and report column), ``path`` (its binary)."""

    name: str
    path: str


def parse_runtime(text: str) -> OciRuntime:
    """``--runtime NAME=PATH`` -> OciRuntime; one-line UsageError naming the bad part."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"--runtime {text!r}: expected NAME=PATH (e.g. crun=/usr/bin/crun)")
    if not _NAME.match(name):
        raise UsageError(f"--runtime {text!r}: NAME must be lower-case letters, digits, '-' or '_' (<= 32)")
    if name in RESERVED:
        raise UsageError(f"--runtime {text!r}: {name!r} is the name of another environment")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise UsageError(f"--runtime {text!r}: {path} is not an executable file")
    return OciRuntime(name, os.path.abspath(path))


def found_on_host() -> tuple[OciRuntime, ...]:
    """The known runtimes installed here (runc first)."""
    return tuple(OciRuntime(n, p) for n in KNOWN if (p := shutil.which(n)))


_REGISTERED: dict[str, OciRuntime] = {}


def register(runtimes: tuple[OciRuntime, ...]) -> None:
    """The runtimes of this bench run (the runner's environments look their path up here)."""
    for rt in runtimes:
        _REGISTERED[rt.name] = rt


def registered(name: str) -> OciRuntime | None:
    if name in _REGISTERED:
        return _REGISTERED[name]
    path = shutil.which(name) if name in KNOWN else None
    return OciRuntime(name, path) if path else None


def registered_names() -> tuple[str, ...]:
    """The names of the extra OCI runtimes (not runc) this run knows."""
    return tuple(n for n in _REGISTERED if n != "runc")


def environments(extra: tuple[str, ...] = ()) -> tuple[OciRuntime, ...]:
    """runc, the other known runtimes on PATH, then each ``--runtime NAME=PATH`` (a name given twice
    is an error; a --runtime named like a found one replaces it)."""
    chosen = {rt.name: rt for rt in found_on_host()}
    seen: set[str] = set()
    for text in extra:
        rt = parse_runtime(text)
        if rt.name in seen:
            raise UsageError(f"--runtime {text!r}: {rt.name!r} given twice")
        seen.add(rt.name)
        chosen[rt.name] = rt
    return tuple(chosen.values())
