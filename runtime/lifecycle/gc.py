"""Orphan removal for this area, called by `isobench gc` (placeholder until the area lands)."""

from __future__ import annotations


def gc(paths) -> list[str]:
    """Remove this area's orphans of crashed runs by their ``isobench-`` names; return what was removed."""
    return []
