"""Template filters of the dashboard, deployments and playground: short amounts of money, large counts, percentages."""

from __future__ import annotations

from typing import Any

from django import template

from inferia_runtime.money import money_short

register = template.Library()


@register.filter
def spend(micros: Any) -> str:
    """Micro-units of the currency as a short amount for tiles and bars, in the currency: 1_234_500 -> "$1.23"
    (small amounts keep four decimals; the management pages' `money` shows every digit)."""
    try:
        return money_short(int(micros or 0))
    except (TypeError, ValueError):
        return "—"


@register.filter
def compact(value: Any) -> str:
    """A count short enough for a stat tile: 1234 -> "1.2k", 2_500_000 -> "2.5M"."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return "—"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{number / size:.1f}{suffix}"
    return f"{number:.0f}" if number == int(number) else f"{number:.1f}"


@register.filter
def percent(fraction: Any, digits: int = 1) -> str:
    """A fraction (0.031) as a percentage ("3.1%")."""
    try:
        return f"{100 * float(fraction or 0):.{int(digits)}f}%"
    except (TypeError, ValueError):
        return "—"
