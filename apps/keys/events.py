"""What the keys domain announces, after commit, to whoever subscribes (see inferia_runtime/events.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ApiKeyExpiringSoon:
    """A usable key expires at `expires_at`, within the notice period (`api_keys_expiring_announce`). Announced once
    per key and expiry: a key given a new expiry is announced again when that one comes near."""

    organization_id: int
    key_id: int
    name: str
    prefix: str
    expires_at: datetime
