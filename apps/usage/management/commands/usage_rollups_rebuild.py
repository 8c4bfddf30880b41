"""`manage.py usage_rollups_rebuild --since YYYY-MM-DD [--until YYYY-MM-DD]`: recompute the per-model hourly and
daily and the per-key daily usage rollups of those days (UTC) from the hourly ones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.usage.rollups import usage_rollups_rebuild


class Command(BaseCommand):
    help = "Recompute the per-model and per-key usage rollups of a range of days (UTC) from the hourly rollups."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=date.fromisoformat, required=True, help="First day (YYYY-MM-DD).")
        parser.add_argument("--until", type=date.fromisoformat, help="Last day, included (default: today).")

    def handle(self, *args: Any, **options: Any) -> None:
        since = datetime.combine(options["since"], time.min, tzinfo=UTC)
        last = options["until"] or datetime.now(UTC).date()
        until = datetime.combine(last, time.min, tzinfo=UTC) + timedelta(days=1)
        usage_rollups_rebuild(since=since, until=until)
        self.stdout.write(f"rebuilt the usage rollups of {since:%Y-%m-%d} to {last:%Y-%m-%d}")
