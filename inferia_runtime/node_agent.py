"""The environment `inferia agent` reads on a GPU node: named once, for the agent and for the adapters that start it."""

from __future__ import annotations

TOKEN_ENV = "INFERIA_NODE_TOKEN"  # noqa: S105 - the variable's name, not a secret
SERVER_ENV = "INFERIA_SERVER_URL"
ENGINE_ENV = "INFERIA_AGENT_ENGINE_URL"
INTERVAL_ENV = "INFERIA_AGENT_INTERVAL_SECONDS"
