"""Slugs made from names: what a person typed ("Data Science") turned into an identifier that is unique among its
siblings ("data-science", then "data-science-2", ...), so nobody has to invent one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils.text import slugify

T = TypeVar("T")
# How often a create is tried again when a concurrent one took the slug between the look-up and the insert.
SLUG_ATTEMPTS = 5


def slug_unique_in(
    siblings: QuerySet[Any], name: str, *, fallback: str, max_length: int = 64, field: str = "slug"
) -> str:
    """`name` slugified (`fallback` when nothing is left of it), cut to `max_length`, with "-2", "-3", ... when a row
    of `siblings` has it already. A concurrent insert can still take it first: see `create_with_unique_slug`."""
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


def create_with_unique_slug(
    create: Callable[[str], T], *, siblings: QuerySet[Any], name: str, fallback: str, max_length: int = 64
) -> T:
    """`create(slug)` with a slug made from `name`, in a savepoint: when the unique constraint refuses it (someone
    took it meanwhile), the next free slug is tried, a few times before giving up with the IntegrityError."""
    for attempt in range(SLUG_ATTEMPTS):
        try:
            with transaction.atomic():
                return create(slug_unique_in(siblings, name, fallback=fallback, max_length=max_length))
        except IntegrityError:
            if attempt == SLUG_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
