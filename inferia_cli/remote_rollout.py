"""`inferia rollout`: change what a deployment's replicas run (model, engine arguments, image) and steer the rolling
update that follows, through the REST API; the worker replaces the replicas a few at a time."""

from __future__ import annotations

import argparse
import json
from typing import Any

from inferia_cli.remote import ApiClient, RemoteError, api_client, json_print, organization_id


def deployment_find(client: ApiClient, organization: int, reference: str) -> dict[str, Any]:
    """A deployment by id, or by the served model name clients ask for."""
    if reference.isdigit():
        return dict(client.get(f"deployments/{reference}/"))
    rows = list(client.pages("deployments/", {"organization": organization, "served_model_name": reference}))
    if not rows:
        raise RemoteError(f"no deployment serves {reference!r}")
    return dict(rows[0])


def _progress_print(deployment: dict[str, Any], progress: dict[str, Any]) -> None:
    def counts(states: dict[str, int]) -> str:
        return ", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "none"

    print(f"deployment {deployment['served_model_name']!r} (id {deployment['id']}): {deployment['state']}")
    print(f"rollout: {progress['state'] or 'none'} to {progress['spec_hash']}" + (
        f" from {progress['previous_spec_hash']}" if progress["previous_spec_hash"] else ""
    ) + (f" ({progress['reason']})" if progress["reason"] else ""))  # fmt: skip
    print(f"  new spec replicas: {counts(progress['new_replicas'])}")
    print(f"  old spec replicas: {counts(progress['old_replicas'])}")


def command_rollout(args: argparse.Namespace) -> int:
    client = api_client(args.url)
    deployment = deployment_find(client, organization_id(client, args.org), args.deployment)
    base = f"deployments/{deployment['id']}/"
    if args.action == "start":
        changes: dict[str, Any] = {}
        if args.model_id is not None:
            changes["model_id"] = args.model_id
        if args.image is not None:
            changes["image"] = args.image
        if args.engine_args is not None:
            try:
                changes["engine_args"] = json.loads(args.engine_args)
            except ValueError as error:
                raise RemoteError(f"--engine-args is not JSON: {error}") from None
        if not changes:
            raise RemoteError("give what changes: --model-id, --image or --engine-args")
        deployment = client.patch(base, changes)
    elif args.action in ("pause", "resume", "rollback"):
        deployment = client.post(f"{base}rollout/{args.action}/", {"reason": args.reason} if args.reason else {})
    progress = client.get(f"{base}rollout/")
    if args.json:
        json_print({"deployment": deployment, "rollout": progress})
    else:
        _progress_print(deployment, progress)
    return 0
