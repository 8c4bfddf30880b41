"""Local admin verbs that work on the database directly: `inferia audit verify` and `inferia secrets rotate`.

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
    """Re-encrypt every provider's credentials under the first of INFERIA_FERNET_KEYS."""
    _django_setup()
    from apps.compute.credentials import CredentialsError, credentials_rotate

    try:
        count = credentials_rotate()
    except CredentialsError as error:
        print(f"inferia: {error}; nothing further was re-encrypted", file=sys.stderr)
        return 1
    print(f"re-encrypted the credentials of {count} provider(s) under the first key of INFERIA_FERNET_KEYS")
    return 0
