"""Parsing of docker-style sizes, CPU counts and rates; pure functions with one-line errors."""

from __future__ import annotations

import os
import re

from core.errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(i?b?)\s*$", re.IGNORECASE)
_MULT = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size_bytes(text: str, option: str = "size") -> int:
    """``256m`` -> 268435456 (binary units, as Docker's ``--memory``)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise UsageError(f"{option} {text!r} is not a size (examples: 512, 64k, 256m, 1g)")
    if len(m.group(1)) > 30:  # beyond any real size; float() would overflow or lose meaning
        raise UsageError(f"{option} {text!r} is too large")
    value = float(m.group(1)) * _MULT[m.group(2).lower()]
    if value < 1:
        raise UsageError(f"{option} {text!r} must be at least one byte")
    return int(value)


def host_cpu_count() -> int:
    return len(os.sched_getaffinity(0)) or os.cpu_count() or 1


def parse_cpus(text: str, option: str = "--cpus", max_cpus: int | None = None) -> float:
    """``0.5`` -> 0.5, checked against the host's CPUs."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"{option} {text!r} is not a number of CPUs") from None
    limit = host_cpu_count() if max_cpus is None else max_cpus
    if not value > 0:
        raise UsageError(f"{option} {text!r} must be greater than 0")
    if value > limit:
        raise UsageError(f"{option} {text} exceeds the {limit} CPUs of this host")
    return value


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
