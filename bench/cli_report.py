"""CLI verbs of this area (placeholder until the area lands): ``register(subparsers)`` adds them."""

from __future__ import annotations


def register(sub) -> None:
    """Add this area's subcommands to the `isobench` parser."""
