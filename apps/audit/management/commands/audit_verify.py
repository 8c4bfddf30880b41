"""`manage.py audit_verify [--checkpoints FILE]`: walk the audit chain; exit 1 at the first broken link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.verify import audit_verify, checkpoints_from_jsonl


class Command(BaseCommand):
    help = "Verify the audit log's hash chain against its head and checkpoints; exit 1 if it was tampered with."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--checkpoints", type=Path, help="A checkpoint export (JSON Lines) kept outside the database."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        extra = []
        if options["checkpoints"]:
            with options["checkpoints"].open() as lines:
                extra = checkpoints_from_jsonl(lines, source=str(options["checkpoints"]))
        report = audit_verify(extra_checkpoints=extra)
        self.stdout.write(report.as_text())
        if not report.ok:
            raise CommandError("the audit chain is broken", returncode=1)
