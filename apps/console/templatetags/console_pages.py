"""Template filters of the management pages: numbers with thousands separators, money from micro-units, and
unified-diff lines classified for colouring."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def thousands(value: Any) -> str:
    """1234567 -> "1,234,567" (empty and None read as 0)."""
    try:
        return f"{int(value or 0):,}"
    except (TypeError, ValueError):
        return str(value)


@register.filter
def money(micros: Any) -> str:
    """Micro-units of the currency as an amount with 4 decimals: 1234500 -> "1.2345"."""
    try:
        return f"{int(micros or 0) / 1_000_000:,.4f}"
    except (TypeError, ValueError):
        return str(micros)


@register.filter
def diff_lines(diff: str) -> list[tuple[str, str]]:
    """A unified diff as (kind, line) pairs, kind one of add, del, hunk, ctx."""
    lines = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        elif line.startswith("@@"):
            kind = "hunk"
        else:
            kind = "ctx"
        lines.append((kind, line))
    return lines
