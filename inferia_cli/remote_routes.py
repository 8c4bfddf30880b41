"""`inferia routes list|set|delete`: model routes (a served name split over deployments by weight, with fallbacks),
through the REST API. `set` creates the route, or changes the one of that name: a canary's weight is one command.
"""

from __future__ import annotations

import argparse
from typing import Any

from inferia_cli.remote import ApiClient, RemoteError, api_client, json_print, organization_id, rows_list_print


def split_parse(text: str) -> dict[str, Any]:
    """`DEPLOYMENT=WEIGHT` (the deployment's served name, a whole weight) as the API's split target."""
    name, sep, weight = text.rpartition("=")
    if not sep or not name or not weight.isdigit():
        raise RemoteError(f"--split {text!r}: write DEPLOYMENT=WEIGHT, a served model name and a whole number")
    return {"deployment": name, "weight": int(weight)}


def _targets(row: dict[str, Any]) -> str:
    return " ".join(f"{split['deployment']}={split['weight']}" for split in row["splits"])


def _fallbacks(row: dict[str, Any]) -> str:
    return ", ".join(fallback["deployment"] for fallback in row["fallbacks"]) or "-"


ROUTE_LIST_COLUMNS = (
    ("ID", lambda row: row["id"]),
    ("NAME", lambda row: row["name"]),
    ("SPLITS", _targets),
    ("FALLBACKS", _fallbacks),
)


def command_routes_list(args: argparse.Namespace) -> int:
    return rows_list_print(args, "model-routes/", ROUTE_LIST_COLUMNS)


def route_by_name(client: ApiClient, organization: int, name: str) -> dict[str, Any] | None:
    found = [
        row
        for row in client.pages("model-routes/", {"organization": organization, "name": name})
        if row["name"] == name
    ]
    return dict(found[0]) if found else None


def command_routes_set(args: argparse.Namespace) -> int:
    """Create the route `args.name`, or change its splits (and fallbacks, when given) if it exists."""
    client = api_client(args.url)
    organization = organization_id(client, args.org)
    body: dict[str, Any] = {}
    if args.split:
        body["splits"] = [split_parse(text) for text in args.split]
    if args.fallback is not None or args.no_fallbacks:
        body["fallbacks"] = [] if args.no_fallbacks else args.fallback
    existing = route_by_name(client, organization, args.name)
    if existing is None:
        if "splits" not in body:
            raise RemoteError("a new route needs at least one --split DEPLOYMENT=WEIGHT")
        route = client.post("model-routes/", {"organization": organization, "name": args.name, **body})
        verb = "created"
    else:
        if not body:
            raise RemoteError("nothing to change: give --split, --fallback or --no-fallbacks")
        route = client.patch(f"model-routes/{existing['id']}/", body)
        verb = "changed"
    if args.json:
        json_print(route)
        return 0
    print(f"route {route['name']!r} (id {route['id']}) {verb}: {_targets(route)}; fallbacks: {_fallbacks(route)}")
    return 0


def command_routes_delete(args: argparse.Namespace) -> int:
    client = api_client(args.url)
    organization = organization_id(client, args.org)
    route = route_by_name(client, organization, args.name)
    if route is None:
        raise RemoteError(f"no route {args.name!r} visible to this key")
    client.delete(f"model-routes/{route['id']}/")
    print(f"route {args.name!r} (id {route['id']}) deleted")
    return 0
