"""The token a replica's node pushes heartbeats with (POST /api/nodes/heartbeat): derived, never stored in clear."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings

from apps.compute.models import Replica
from inferia_runtime.node_agent import ENGINE_ENV, SERVER_ENV, TOKEN_ENV

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


@dataclass(frozen=True)
class NodeAgentHandover:
    """What a provisioned node's `inferia agent` needs: the token (a secret: adapters pass it only through an
    environment the provider keeps private, never a public job definition) and where to push and read from."""

    token: str
    server_url: str
    engine_url: str

    def public_environment(self) -> dict[str, str]:
        """The agent's environment without the token."""
        return {SERVER_ENV: self.server_url, ENGINE_ENV: self.engine_url}

    def environment(self) -> dict[str, str]:
        """The agent's whole environment, token included."""
        return {**self.public_environment(), TOKEN_ENV: self.token}


def node_agent_handover(replica: Replica, *, engine_url: str) -> NodeAgentHandover | None:
    """The agent's hand-over for `replica`, whose engine answers at `engine_url` on its node; None when
    INFERIA_NODE_SERVER_URL is not set (nodes are only polled)."""
    if not settings.INFERIA_NODE_SERVER_URL:
        return None
    return NodeAgentHandover(
        token=node_token(replica), server_url=settings.INFERIA_NODE_SERVER_URL, engine_url=engine_url
    )
