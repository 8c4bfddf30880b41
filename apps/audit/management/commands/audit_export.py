"""`manage.py audit_export --what events|checkpoints --format jsonl|csv`: write the audit log to stdout."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_checkpoints_jsonl, audit_events_csv, audit_events_jsonl


class Command(BaseCommand):
    help = "Export audit events or checkpoints (oldest first) to stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--what", choices=["events", "checkpoints"], default="events")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--organization", type=int, help="Only this organisation's events (its id).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["what"] == "checkpoints":
            if options["format"] != "jsonl":
                raise CommandError("checkpoints export as JSON Lines only")
            lines = audit_checkpoints_jsonl()
        else:
            events = AuditEvent.objects.all()
            if options["organization"]:
                events = events.filter(organization_id=options["organization"])
            lines = audit_events_csv(events=events) if options["format"] == "csv" else audit_events_jsonl(events=events)
        for line in lines:
            self.stdout.write(line, ending="")
