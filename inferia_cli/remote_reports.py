"""`inferia usage` and `inferia audit`: what the platform recorded, through the REST API."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from inferia_cli.remote import api_client, json_print, organization_id, since_parse, table_print, when

USAGE_GROUPS = {"day": "DAY", "model": "MODEL", "key": "KEY"}


def command_usage(args: argparse.Namespace) -> int:
    """Requests, tokens, cost and errors summed per day, model or key (the usage summary endpoint)."""
    client = api_client(args.url)
    group_by = args.by or ["day"]
    params: dict[str, Any] = {"group_by": group_by, "since": since_parse(args.since)}
    if args.org:
        params["organization"] = organization_id(client, args.org)
    if args.model:
        params["model"] = args.model
    rows = client.get("usage/summary/", params)
    if args.json:
        json_print(rows)
        return 0
    groups = [name for name in USAGE_GROUPS if name in group_by]
    keys = _key_prefixes(client) if "key" in groups else {}
    table_print(
        [*(USAGE_GROUPS[name] for name in groups), "REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS", "COST", "ERRORS"],
        [
            [
                *(keys.get(row.get(name), row.get(name)) if name == "key" else row.get(name) for name in groups),
                row["requests"],
                row["prompt_tokens"],
                row["completion_tokens"],
                cost_text(row["cost_micros"]),
                row["errors"],
            ]
            for row in rows
        ],
    )
    return 0


def command_audit(args: argparse.Namespace) -> int:
    """Audit events: the newest `--limit` as a table or JSON, or every match exported as JSON Lines or CSV."""
    client = api_client(args.url)
    params: dict[str, Any] = {"action": args.action, "actor": args.actor, "since": since_parse(args.since)}
    if args.org:
        params["organization"] = organization_id(client, args.org)
    if args.format in ("jsonl", "csv"):
        out = sys.stdout.buffer
        for chunk in client.stream("audit-events/export/", {**params, "type": args.format}):
            out.write(chunk)
        out.flush()
        return 0
    page = client.get("audit-events/", {**params, "ordering": "-seq", "limit": args.limit})
    rows = page["results"] if isinstance(page, dict) else page
    if args.json:
        json_print(rows)
        return 0
    table_print(
        ["SEQ", "WHEN", "ACTOR", "ACTION", "TARGET", "OUTCOME"],
        [
            [
                row["seq"],
                when(row["occurred_at"]),
                row["actor_label"],
                row["action"],
                row["target_repr"],
                row["outcome"],
            ]
            for row in rows
        ],
    )
    if isinstance(page, dict) and page.get("count", 0) > len(rows):
        print(f"({len(rows)} of {page['count']}; --limit shows more, --format jsonl exports all)", file=sys.stderr)
    return 0


def cost_text(micros: int | None) -> str:
    """Micro-dollars as dollars with enough places for the cost of a single small request."""
    return f"${(micros or 0) / 1_000_000:.4f}"


def _key_prefixes(client: Any) -> dict[Any, str]:
    """Key ids as the prefixes people recognise, for the per-key usage table."""
    return {row["id"]: row["prefix"] for row in client.pages("keys/")}
