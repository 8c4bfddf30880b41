"""Prompt templates on `/v1/chat/completions`: a request that names `"template": "name@version"` (with
`"template_variables": {...}`) gets the template's messages before its own, and the template's model and parameters
wherever the request gives none. Requests that name no template pay one substring test."""

from __future__ import annotations

import json
from typing import Any

from apps.gateway import errors
from apps.gateway.exchange import Exchange
from apps.policies.errors import PolicyDenied
from apps.policies.prompts.cache import TemplateCache, template_render_async

_MARKER = b'"template"'


async def template_apply(exchange: Exchange, *, organization_id: int, cache: TemplateCache | None, chat: bool) -> str:
    """Render the request's template into its body (in place); the template's `name@version`, or "" for none.

    Malformed JSON is left for the request's own validation to report."""
    if _MARKER not in exchange.body:
        return ""
    try:
        document: Any = json.loads(exchange.body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(document, dict) or "template" not in document:
        return ""  # the word was inside a message, not a field
    ref = document.pop("template")
    variables = document.pop("template_variables", None)
    if not chat:
        raise errors.invalid_request("templates apply to chat completions only", param="template")
    if not isinstance(ref, str) or not ref:
        raise errors.invalid_request("`template` must be a string such as `name` or `name@3`", param="template")
    if variables is not None and not isinstance(variables, dict):
        raise errors.invalid_request("`template_variables` must be an object", param="template_variables")
    try:
        rendered = await template_render_async(
            organization_id=organization_id, ref=ref, variables=variables, cache=cache
        )
    except PolicyDenied as denial:
        raise errors.policy_denied(denial) from None
    own_messages = document.get("messages") or []
    if not isinstance(own_messages, list):
        raise errors.invalid_request("`messages` must be an array", param="messages")
    document["messages"] = [*rendered.messages, *own_messages]
    if rendered.model and not document.get("model"):
        document["model"] = rendered.model
    for name, value in rendered.params.items():
        document.setdefault(name, value)
    exchange.body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return rendered.ref
