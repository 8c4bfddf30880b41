"""The `inferia` verbs beyond running the platform: remote ones over the REST API (`keys`, `usage`, `audit`,
`deploy`, `routes`, `chat`) and local admin ones on the database (`audit verify`, `usage dead-letters`,
`secrets rotate`).

Each parser names its handler as `module:function` under `inferia_cli`, imported only when that verb runs,
so building the parser imports nothing beyond argparse.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

SCOPES = ("inference", "read", "manage")


def verbs_add(commands: Any) -> None:
    """Register every verb of this module on the `inferia` subparsers."""
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", help="where Inferia answers (default: INFERIA_URL or http://127.0.0.1:8000)")
    remote.add_argument("--org", metavar="SLUG", help="the organisation (default: the only one the key sees)")
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _keys_add(commands, [remote, listing])
    _kb_add(commands, [remote, listing])
    _reports_add(commands, [remote, listing])
    _deploy_add(commands, [remote, listing])
    _routes_add(commands, [remote, listing])
    _rollout_add(commands, [remote, listing])

    chat = commands.add_parser("chat", help="interactive streaming chat against /v1 (key: INFERIA_API_KEY)")
    chat.add_argument("--url", help="where Inferia answers (default: INFERIA_URL or http://127.0.0.1:8000)")
    chat.add_argument("--model", help="the model to talk to (default: the first the key may use)")
    chat.add_argument("--system", help="a system prompt for the whole conversation")
    chat.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each answer")
    chat.add_argument("-v", "--verbose", action="store_true", help="after each answer, say what was sent (stderr)")
    chat.set_defaults(handler="chat:command_chat")

    secrets = commands.add_parser("secrets", help="local: provider credentials encrypted at rest")
    secrets_verbs = secrets.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    rotate = secrets_verbs.add_parser("rotate", help="re-encrypt all credentials under INFERIA_FERNET_KEYS' first key")
    rotate.set_defaults(handler="admin_verbs:command_secrets_rotate")


def _keys_add(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="API keys: create, list, rotate, revoke (remote)")
    verbs = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = verbs.add_parser("create", parents=parents, help="issue a key; its secret is printed once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", choices=SCOPES, help="repeat for several (default: inference)")
    create.add_argument("--team", help="team slug, name or id")
    create.add_argument("--expires-in", metavar="DURATION", help="e.g. 30d, 12h (default: never)")
    create.add_argument("--model", action="append", help="a model the key may use (repeat; default: all)")
    create.add_argument("--service", action="store_true", help="a service key: no owner, only its scopes")
    create.set_defaults(handler="remote_keys:command_keys_create")
    verbs.add_parser("list", parents=parents, help="prefix, name, scopes, last use, state").set_defaults(
        handler="remote_keys:command_keys_list"
    )
    rotate = verbs.add_parser("rotate", parents=parents, help="a new secret; the old one works for --grace")
    rotate.add_argument("key", metavar="PREFIX_OR_ID")
    rotate.add_argument("--grace", default="1h", metavar="DURATION", help="how long the old secret works (1h)")
    rotate.set_defaults(handler="remote_keys:command_keys_rotate")
    revoke = verbs.add_parser("revoke", parents=parents, help="revoke now, on every web process within a second")
    revoke.add_argument("key", metavar="PREFIX_OR_ID")
    revoke.add_argument("--reason", default="", help="recorded in the audit log")
    revoke.set_defaults(handler="remote_keys:command_keys_revoke")


def _kb_add(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    kb = commands.add_parser("kb", help="knowledge bases: stores, create, upload, search, reembed, delete (remote)")
    verbs = kb.add_subparsers(dest="kb_command", required=True, metavar="ACTION")
    verbs.add_parser("stores", parents=parents, help="the vector stores the key sees").set_defaults(
        handler="remote_kb:command_kb_stores"
    )
    create = verbs.add_parser("create", parents=parents, help="create a vector store")
    create.add_argument("name")
    create.add_argument("--embedding-model", metavar="MODEL", help="the model that embeds it (default: the platform's)")
    create.set_defaults(handler="remote_kb:command_kb_create")
    upload = verbs.add_parser("upload", parents=parents, help="upload a file and attach it to a store")
    upload.add_argument("store", metavar="STORE_ID")
    upload.add_argument("path", metavar="PATH")
    upload.set_defaults(handler="remote_kb:command_kb_upload")
    search = verbs.add_parser("search", parents=parents, help="a store's best chunks for a query")
    search.add_argument("store", metavar="STORE_ID")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-n", type=int, default=5, choices=range(1, 51), metavar="N", help="results (1-50, 5)")
    search.set_defaults(handler="remote_kb:command_kb_search")
    reembed = verbs.add_parser("reembed", parents=parents, help="change a store's embedding model, or show the change")
    reembed.add_argument("store", metavar="STORE_ID")
    reembed.add_argument("--model", metavar="MODEL", help="the new embedding model (without it: show how it goes)")
    reembed.set_defaults(handler="remote_kb:command_kb_reembed")
    delete = verbs.add_parser("delete", parents=parents, help="delete a store and its chunks (its files stay)")
    delete.add_argument("store", metavar="STORE_ID")
    delete.set_defaults(handler="remote_kb:command_kb_delete")


def _reports_add(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser("usage", parents=parents, help="requests, tokens and cost per day, model or key")
    usage.add_argument("--since", default="7d", help="a duration back from now (7d) or an ISO date (default: 7d)")
    usage.add_argument("--by", action="append", choices=["day", "model", "key"], help="group by (repeatable)")
    usage.add_argument("--model", help="only this model")
    usage.set_defaults(handler="remote_reports:command_usage")
    usage_verbs = usage.add_subparsers(dest="usage_command", metavar="dead-letters")
    dead = usage_verbs.add_parser("dead-letters", help="local: usage events the worker could not store")
    dead.add_argument("--replay", action="store_true", help="store them again, their strings repaired (audited)")
    dead.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    dead.set_defaults(handler="admin_verbs:command_usage_dead_letters")

    audit = commands.add_parser(
        "audit", parents=parents, help="audit events (remote); `audit verify` checks the chain (local)"
    )
    audit.add_argument("--action", help="actions starting with this, e.g. key. or key.revoke")
    audit.add_argument("--actor", help="actor name contains this")
    audit.add_argument("--since", help="a duration back from now (1d) or an ISO date/time")
    audit.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    audit.add_argument("--limit", type=int, default=50, help="newest events shown as a table or --json (50)")
    audit.set_defaults(handler="remote_reports:command_audit")
    audit_verbs = audit.add_subparsers(dest="audit_command", metavar="verify")
    verify = audit_verbs.add_parser("verify", help="local: walk the hash chain; exit 1 at the first break")
    verify.add_argument("--checkpoints", metavar="FILE", help="checkpoints exported earlier (JSON Lines)")
    verify.set_defaults(handler="admin_verbs:command_audit_verify")


def _routes_add(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    routes = commands.add_parser("routes", help="model routes: traffic splits and fallbacks (remote)")
    verbs = routes.add_subparsers(dest="routes_command", required=True, metavar="ACTION")
    verbs.add_parser("list", parents=parents, help="each route's splits and fallbacks").set_defaults(
        handler="remote_routes:command_routes_list"
    )
    put = verbs.add_parser("set", parents=parents, help="create a route, or change its weights and fallbacks")
    put.add_argument("name", metavar="NAME", help="the model name clients ask for")
    put.add_argument("--split", action="append", metavar="DEPLOYMENT=WEIGHT", help="a target and its weight (repeat)")
    put.add_argument("--fallback", action="append", metavar="DEPLOYMENT", help="tried in order when it fails (repeat)")
    put.add_argument("--no-fallbacks", action="store_true", help="remove the route's fallbacks")
    put.set_defaults(handler="remote_routes:command_routes_set")
    delete = verbs.add_parser("delete", parents=parents, help="stop serving the route's name (deployments stay)")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(handler="remote_routes:command_routes_delete")


def _deploy_add(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    deploy = commands.add_parser("deploy", parents=parents, help="create a model deployment (remote)")
    deploy.add_argument("--model", required=True, metavar="NAME", help="the served model name clients ask for")
    deploy.add_argument("--model-id", metavar="HF_ID", help="what the engine loads (default: NAME)")
    deploy.add_argument("--name", help="a display name (default: NAME)")
    deploy.add_argument("--replicas", type=int, help="replicas (default: 1, or one per --external URL)")
    deploy.add_argument("--max-replicas", type=int, help="autoscaling ceiling (default: --replicas)")
    deploy.add_argument("--pool", help="pool name or id (default: the organisation's only pool)")
    deploy.add_argument("--external", action="append", metavar="URL", help="adopt a running OpenAI-compatible server")
    deploy.add_argument("--upstream-key-env", metavar="VAR", help="env variable holding the --external server's key")
    deploy.set_defaults(handler="remote_deploy:command_deploy")


def _rollout_add(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    rollout = commands.add_parser("rollout", help="rolling updates of a deployment: start, status, pause, ... (remote)")
    verbs = rollout.add_subparsers(dest="action", required=True)
    helps = {
        "status": "the rollout's state and the replicas on the new and old specs",
        "start": "change the model, engine arguments or image; the replicas roll over to it",
        "pause": "hold the rollout where it is",
        "resume": "carry on with a paused rollout",
        "rollback": "roll back to the spec before the last rollout",
    }
    for action, text in helps.items():
        verb = verbs.add_parser(action, parents=parents, help=text)
        verb.add_argument("deployment", help="deployment id or served model name")
        if action == "start":
            verb.add_argument("--model-id", metavar="HF_ID", help="what the engine loads")
            verb.add_argument("--image", help="the engine's container image, pinned by tag or digest")
            verb.add_argument("--engine-args", metavar="JSON", help="the engine arguments, as a JSON object")
        elif action != "status":
            verb.add_argument("--reason", default="", help="why, for the audit log")
        verb.set_defaults(handler="remote_rollout:command_rollout")


def verb_run(args: argparse.Namespace) -> int:
    """Run the verb's handler; a RemoteError is a message for the user and exit status 1, never a traceback."""
    from inferia_cli.remote import RemoteError

    module, function = str(args.handler).split(":")
    handler = getattr(importlib.import_module(f"inferia_cli.{module}"), function)
    try:
        return int(handler(args))
    except RemoteError as error:
        print(f"inferia: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `inferia audit --format csv | head`
        return 0
