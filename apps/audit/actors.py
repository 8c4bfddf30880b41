"""Who makes a change: the `Actor` every write service takes and `audit_record` names in the chain."""

from __future__ import annotations

from typing import Protocol, TypeAlias


class UserOrKey(Protocol):
    """A signed-in user (`orgs.User`) or the API key a client authenticated with (`keys.ApiKey`). Audit sits
    below both apps, so it names them by the shape it records: a primary key, and `str()` for the label."""

    @property
    def pk(self) -> int: ...


Actor: TypeAlias = UserOrKey | None
"""`None` is the platform itself: the CLI, beat, a worker, the autoscaler."""
