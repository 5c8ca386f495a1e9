"""The cgroup driver's only contact with cgroupfs: mkdir, rmdir, read and write of control files.

Kept as four tiny functions so the drivers stay testable: unit tests point a layout at a fake tree in
``tmp_path`` and replace :func:`make_dir` (a real kernel fills a new cgroup directory with control files;
a plain directory does not) and :func:`write` (to record every write in order, as the kernel sees them).
Writes go through :mod:`core.syscalls` so each value reaches the kernel in one ``write(2)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from core import syscalls


def make_dir(path: Path) -> None:
    os.mkdir(path, 0o755)


def remove_dir(path: Path) -> None:
    os.rmdir(path)


def write(path: Path, value: str) -> None:
    syscalls.write_file(str(path), value)


def read(path: Path) -> str:
    return syscalls.read_file(str(path))
