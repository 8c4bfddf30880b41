"""`manage.py audit_checkpoint`: copy the audit chain head into a checkpoint now (beat does it periodically)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.audit.services import audit_checkpoint_take


class Command(BaseCommand):
    help = "Take a checkpoint of the audit chain head."

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoint = audit_checkpoint_take(taken_by="manage.py audit_checkpoint")
        self.stdout.write(f"checkpoint at #{checkpoint.seq} {checkpoint.hash}")
