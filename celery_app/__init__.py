"""Celery application: queues `provisioning`, `health` and `usage`, and the beat schedule."""

from __future__ import annotations

from celery_app.app import app

__all__ = ["app"]
