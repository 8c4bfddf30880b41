"""Notices for the platform's staff on every console page: things that need someone, whatever page they are on."""

from __future__ import annotations

import logging

import redis
from django import template

from apps.usage.backlog import dead_letters_count
from inferia_runtime.redis_clients import sync_redis

register = template.Library()
logger = logging.getLogger(__name__)


@register.simple_tag(takes_context=True)
def usage_dead_letters(context: template.Context) -> int:
    """How many usage events the worker could not store, for the superadmin (0 for everyone else: one Redis read
    only on their pages)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_superuser:
        return 0
    try:
        return dead_letters_count(sync_redis())
    except redis.RedisError:
        logger.warning("could not read the usage dead letters", exc_info=True)
        return 0
