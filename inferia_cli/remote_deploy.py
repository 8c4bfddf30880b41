"""`inferia deploy`: a model deployment, created through the REST API; the worker then brings it up.

`--external URL` adopts OpenAI-compatible servers the user already runs, in one call to
`POST /api/deployments/external/` (an `external` provider holding the URLs and the upstream key, a pool on it and
the deployment, made in one transaction). Running it again with the same URLs and model changes nothing and says so;
the same served name with other URLs is the server's 409, naming the deployment that has it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from inferia_cli.remote import ApiClient, RemoteError, api_client, json_print, organization_id


def command_deploy(args: argparse.Namespace) -> int:
    client = api_client(args.url)
    organization = organization_id(client, args.org)
    existed: set[int] = set()
    if args.external:
        if args.pool:
            raise RemoteError("--pool and --external exclude each other: an external deployment gets its own pool")
        # Only to tell the user whether the answer is a deployment that was there already (the server decides).
        existed = {
            int(row["id"])
            for row in client.pages("deployments/", {"organization": organization, "served_model_name": args.model})
        }
        deployment = _deploy_external(client, organization, args)
    else:
        pool = pool_find(client, organization, args.pool)
        deployment = client.post("deployments/", _deployment_body(organization, pool["id"], args, replicas=1))
    if args.json:
        json_print(deployment)
        return 0
    if deployment["id"] in existed:
        print(
            f"{args.model!r} is already registered as deployment {deployment['name']!r} (id {deployment['id']}) with "
            f"these URLs and model: nothing changed ({deployment['state']})"
        )
        return 0
    count = deployment["desired_replicas"]
    print(
        f"deployment {deployment['served_model_name']!r} (id {deployment['id']}, model {deployment['model_id']}) "
        f"created: {deployment['state']}; the worker brings up {count} replica(s)"
    )
    return 0


def pool_find(client: ApiClient, organization: int, reference: str | None) -> dict[str, Any]:
    """`--pool` by id or name, or the organisation's only pool."""
    if reference and reference.isdigit():
        return dict(client.get(f"pools/{reference}/"))
    pools = list(client.pages("pools/", {"organization": organization}))
    if reference:
        match = [pool for pool in pools if pool["name"] == reference]
        if not match:
            raise RemoteError(f"no pool {reference!r} in this organisation")
        return dict(match[0])
    if len(pools) != 1:
        names = ", ".join(repr(pool["name"]) for pool in pools) or "none"
        raise RemoteError(f"the organisation has {len(pools)} pools ({names}); choose one with --pool")
    return dict(pools[0])


def _deployment_body(organization: int, pool: int, args: argparse.Namespace, *, replicas: int) -> dict[str, Any]:
    count = replicas if args.replicas is None else args.replicas
    return {
        "organization": organization,
        "pool": pool,
        "name": args.name or args.model,
        "model_id": args.model_id or args.model,
        "served_model_name": args.model,
        "min_replicas": count,
        "desired_replicas": count,
        "max_replicas": max(count, args.max_replicas or count),
    }


def _deploy_external(client: ApiClient, organization: int, args: argparse.Namespace) -> dict[str, Any]:
    """One call: the server creates the external provider (URLs, encrypted upstream key), its pool and the
    deployment in one transaction, so a refusal leaves nothing behind."""
    body: dict[str, Any] = {
        "organization": organization,
        "served_model_name": args.model,
        "base_urls": args.external,
        "model_id": args.model_id or args.model,
        "name": args.name or args.model,
    }
    if args.replicas is not None:
        body["replicas"] = args.replicas
    if args.upstream_key_env:
        upstream_key = os.environ.get(args.upstream_key_env, "")
        if not upstream_key:
            raise RemoteError(f"--upstream-key-env names {args.upstream_key_env}, which is not set")
        body["api_key"] = upstream_key
    return dict(client.post("deployments/external/", body))
