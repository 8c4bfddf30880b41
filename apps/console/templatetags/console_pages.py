"""Template filters of the management pages: numbers with thousands separators, money from micro-units (the one
`money` filter of the console: every page that shows an amount loads it from here), and unified-diff lines
classified for colouring."""

from __future__ import annotations

from typing import Any

from django import template

from inferia_runtime.money import money_format

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
    """Micro-units as an amount in the currency (`INFERIA_CURRENCY`), every digit shown, exactly:
    5_000_000 -> "$5.00", 1_234_500 -> "$1.2345", 1 -> "$0.000001"; empty and None read as 0."""
    try:
        return money_format(int(micros or 0))
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


@register.simple_tag(takes_context=True)
def org_field_choice(context: template.Context, create_orgs: list[Any]) -> dict[str, Any]:
    """Where a create form creates: `fixed`, the organisation the page shows, when the user may create there and
    nothing else was posted; otherwise `selected`, the posted organisation's id (kept after a validation error) or
    the page's, for a choice among `create_orgs`."""
    request = context.get("request")
    shown = getattr(context.get("console_org"), "organization", None)
    posted = request.POST.get("organization", "") if request is not None and request.method == "POST" else ""
    shown_id = str(shown.pk) if shown is not None else ""
    may_shown = any(str(o.pk) == shown_id for o in create_orgs)
    if may_shown and posted in ("", shown_id):
        return {"fixed": shown, "selected": shown_id}
    if len(create_orgs) == 1 and posted in ("", str(create_orgs[0].pk)):
        return {"fixed": create_orgs[0], "selected": str(create_orgs[0].pk)}
    return {"fixed": None, "selected": posted or shown_id}
