"""`inferia keys create|list|rotate|revoke`: API keys, through the REST API."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from inferia_cli.remote import (
    ApiClient,
    RemoteError,
    api_client,
    duration_parse,
    json_print,
    organization_id,
    row_find,
    rows_list_print,
    when,
)

SECRET_LABEL = "secret (shown once; store it now):"  # noqa: S105 - a label, not a secret


def command_keys_create(args: argparse.Namespace) -> int:
    """Issue a key and print its secret once, labelled; everything else about it can be listed later."""
    client = api_client(args.url)
    organization = organization_id(client, args.org)
    body: dict[str, Any] = {
        "organization": organization,
        "name": args.name,
        "scopes": sorted(set(args.scope or ["inference"])),
        "service": args.service,
    }
    if args.team:
        body["team"] = _team_id(client, organization, args.team)
    if args.expires_in:
        body["expires_at"] = (datetime.now(UTC) + duration_parse(args.expires_in)).isoformat()
    if args.model:
        body["allowed_models"] = args.model
    issued = client.post("keys/", body)
    _issued_print(issued, args.json, verb="created")
    return 0


def command_keys_list(args: argparse.Namespace) -> int:
    """Every key the caller may see, newest first; never a secret (the API has none to give)."""
    return rows_list_print(args, "keys/", KEY_LIST_COLUMNS)


def command_keys_rotate(args: argparse.Namespace) -> int:
    """A successor key (its secret printed once); the old one keeps working for `--grace`."""
    client = api_client(args.url)
    key = key_find(client, args.key)
    grace = int(duration_parse(args.grace).total_seconds())
    issued = client.post(f"keys/{key['id']}/rotate/", {"grace_seconds": grace})
    _issued_print(issued, args.json, verb=f"rotated {key['prefix']} into")
    if not args.json:
        print(f"the old key {key['prefix']} keeps working for {args.grace}")
    return 0


def command_keys_revoke(args: argparse.Namespace) -> int:
    client = api_client(args.url)
    key = key_find(client, args.key)
    revoked = client.post(f"keys/{key['id']}/revoke/", {"reason": args.reason})
    if args.json:
        json_print(revoked)
    else:
        print(f"revoked {revoked['prefix']} ({revoked['name']})")
    return 0


def key_find(client: ApiClient, reference: str) -> dict[str, Any]:
    """A key by id, or by its visible prefix (`sk-inf-AbCd1234`, or just the 8 characters after `sk-inf-`)."""
    if len(reference) > 15 and reference.startswith("sk-inf-"):
        raise RemoteError("give the key's prefix (as `keys list` shows it) or id, not the whole secret")
    prefix = reference if reference.isdigit() or reference.startswith("sk-inf-") else f"sk-inf-{reference}"
    return row_find(client, "keys/", prefix, field="prefix", noun="key with prefix")


def key_state(row: dict[str, Any]) -> str:
    """active, revoked, expired, or active with the end of a rotation's grace period."""
    if not row.get("is_usable"):
        return "revoked" if row.get("revoked_at") else "expired"
    if row.get("revoked_at"):
        return f"grace until {when(row['revoked_at'])}"
    return "active"


# The key list's table. PURPOSE tells an application's key from those Inferia issued itself (`playground`, and
# `knowledge`: a vector store's own key), whatever their names say.
KEY_LIST_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("PREFIX", lambda row: row["prefix"]),
    ("NAME", lambda row: row["name"]),
    ("PURPOSE", lambda row: row.get("purpose") or "application"),
    ("SCOPES", lambda row: ",".join(row["scopes"])),
    ("LAST USED", lambda row: when(row["last_used_at"])),
    ("CREATED", lambda row: when(row["created_at"])),
    ("STATE", key_state),
]


def _team_id(client: ApiClient, organization: int, team: str) -> int:
    if team.isdigit():
        return int(team)
    rows = client.pages("teams/", {"organization": organization})
    match = [row for row in rows if team in (row.get("slug"), row.get("name"))]
    if not match:
        raise RemoteError(f"no team {team!r} in this organisation")
    return int(match[0]["id"])


def _issued_print(issued: dict[str, Any], as_json: bool, *, verb: str) -> None:
    if as_json:
        json_print(issued)
        return
    scopes = ",".join(issued["scopes"])
    print(f"{verb} key {issued['prefix']} ({issued['name']}; scopes {scopes}; expires {when(issued['expires_at'])})")
    print(SECRET_LABEL)
    print(issued["secret"])
