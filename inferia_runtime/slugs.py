"""Slugs made from names: what a person typed ("Data Science") turned into an identifier that is unique among its
siblings ("data-science", then "data-science-2", ...), so nobody has to invent one."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils.text import slugify


def slug_unique_in(siblings: QuerySet, name: str, *, fallback: str, max_length: int = 64, field: str = "slug") -> str:
    """`name` slugified (`fallback` when nothing is left of it), cut to `max_length`, with "-2", "-3", ... when a row
    of `siblings` has it already. A concurrent insert can still take it first: callers retry on the unique error."""
    base = slugify(name)[:max_length].strip("-_") or fallback
    taken = set(siblings.filter(**{f"{field}__startswith": base}).values_list(field, flat=True))
    if base not in taken:
        return base
    number = 2
    while True:
        suffix = f"-{number}"
        candidate = base[: max_length - len(suffix)].rstrip("-_") + suffix
        if candidate not in taken:
            return candidate
        number += 1
