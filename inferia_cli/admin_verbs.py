"""Local admin verbs that work on the database directly: `inferia audit verify`, `inferia usage dead-letters` and
`inferia secrets rotate`.

They run where the platform's settings are (DATABASE_URL, INFERIA_FERNET_KEYS), so Django is set up here, lazily:
the remote verbs never pay for it.
"""

from __future__ import annotations

import argparse
import sys


def _django_setup() -> None:
    import django

    django.setup()


def command_audit_verify(args: argparse.Namespace) -> int:
    """Walk the audit chain (and checkpoints kept elsewhere, from `--checkpoints FILE`); exit 1 on a break."""
    _django_setup()
    from apps.audit.verify import audit_verify, checkpoints_from_jsonl

    extra = []
    if args.checkpoints:
        try:
            with open(args.checkpoints, encoding="utf-8") as lines:
                extra = checkpoints_from_jsonl(lines, source=args.checkpoints)
        except (OSError, ValueError, KeyError) as error:
            print(f"inferia: cannot read checkpoints from {args.checkpoints}: {error}", file=sys.stderr)
            return 2
    report = audit_verify(extra_checkpoints=extra)
    print(report.as_text())
    return 0 if report.ok else 1


def command_secrets_rotate(args: argparse.Namespace) -> int:
    """Re-encrypt every provider's credentials and every webhook signing secret under the first of
    INFERIA_FERNET_KEYS."""
    _django_setup()
    from apps.compute.credentials import CredentialsError, credentials_rotate
    from apps.notifications.services import channel_secrets_rotate

    try:
        count = credentials_rotate()
        channels = channel_secrets_rotate()
    except CredentialsError as error:
        print(f"inferia: {error}; nothing further was re-encrypted", file=sys.stderr)
        return 1
    print(
        f"re-encrypted the credentials of {count} provider(s) and the signing secrets of {channels} notification "
        "channel(s) under the first key of INFERIA_FERNET_KEYS"
    )
    return 0


def command_usage_dead_letters(args: argparse.Namespace) -> int:
    """Usage events the flush could not store, and its lag; `--replay` stores them again. Exit 1 while any are
    left, so that a monitoring script can run it."""
    _django_setup()
    import json
    from datetime import UTC, datetime

    from apps.audit.services import AuditContext
    from apps.usage.backlog import dead_letters_list, usage_backlog
    from apps.usage.services import usage_dead_letters_replay
    from inferia_runtime.redis_clients import sync_redis

    if args.replay:
        replayed = usage_dead_letters_replay(actor=None, context=AuditContext(user_agent="inferia usage dead-letters"))
        print(f"stored {replayed.stored}, still refused {replayed.kept}")
        return 1 if replayed.kept else 0
    client = sync_redis()
    backlog = usage_backlog(client)
    letters = dead_letters_list(client, limit=100)
    if getattr(args, "json", False):
        document = {
            "count": backlog.dead_letters,
            "waiting": backlog.waiting,
            "lag_seconds": backlog.lag_seconds,
            "results": [letter.as_dict() for letter in letters],
        }
        print(json.dumps(document, indent=2))
        return 1 if backlog.dead_letters else 0
    print(
        f"{backlog.dead_letters} dead letter(s); {backlog.waiting} usage event(s) waiting, "
        f"the oldest {backlog.lag_seconds:.1f} s old"
    )
    for letter in letters:
        failed = datetime.fromtimestamp(letter.failed_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{letter.id}  {failed}  {letter.reason[:120]}")
    return 1 if backlog.dead_letters else 0
