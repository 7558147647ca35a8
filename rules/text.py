"""How the product's messages list and count what they name: ``a, b, c and 2 more``, ``1 pod``, ``3 pods``."""

from __future__ import annotations

from collections.abc import Sequence

LIMIT = 5  # a message names at most this many, and counts the rest


def listed(names: Sequence[str], limit: int = LIMIT) -> str:
    """``a, b, c`` — or the first ``limit`` and how many more."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def counted(count: int, noun: str) -> str:
    """``1 pod``, ``2 pods``: a count and its noun."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def noun(count: int, singular: str) -> str:
    """``key`` for one, ``keys`` for more (or none)."""
    return singular if count == 1 else singular + "s"
