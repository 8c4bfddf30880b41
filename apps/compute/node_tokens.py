"""The token a replica's node pushes heartbeats with (POST /api/nodes/heartbeat): derived, never stored in clear."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

from apps.compute.models import Replica

NODE_TOKEN_PREFIX = "inf-node-"  # noqa: S105 - a prefix, not a secret


def node_token(replica: Replica) -> str:
    """Derived from SECRET_KEY and the replica's identity, so a provisioning run that restarts the engine hands it
    the same token; only its sha256 is stored (`Replica.node_token_hash`)."""
    identity = f"replica:{replica.pk}:{replica.created_at.timestamp():.6f}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), identity, hashlib.sha256).hexdigest()
    return NODE_TOKEN_PREFIX + digest


def node_token_hash(token: str) -> str:
    """How a node token is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()
