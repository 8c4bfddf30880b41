"""What the remote verbs make of their arguments and of the API's rows, before and after the HTTP call."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from inferia_cli import build_parser
from inferia_cli.remote import RemoteError, api_client, duration_parse, since_parse, table_print
from inferia_cli.remote_keys import key_state


@pytest.mark.parametrize(
    ("text", "seconds"), [("45s", 45), ("90m", 5400), ("1h", 3600), ("7d", 604800), ("2w", 1209600), ("30", 30)]
)
def test_durations_read_as_people_write_them(text, seconds):
    assert duration_parse(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["soon", "1y", "-1h", ""])
def test_a_bad_duration_is_a_user_error(text):
    with pytest.raises(RemoteError):
        duration_parse(text)


def test_since_takes_a_duration_back_from_now_or_a_date():
    back = datetime.fromisoformat(since_parse("1d"))

    assert abs((datetime.now(UTC) - back) - timedelta(days=1)) < timedelta(seconds=5)
    assert since_parse("2025-01-02") == "2025-01-02T00:00:00+00:00"


def test_the_client_never_shows_the_key_in_its_repr(monkeypatch):
    monkeypatch.setenv("INFERIA_API_KEY", "sk-inf-secret-secret")

    client = api_client("http://example.test:8000/")

    assert client.base_url == "http://example.test:8000"
    assert "secret" not in repr(client)


def test_only_http_urls_are_accepted(monkeypatch):
    monkeypatch.setenv("INFERIA_API_KEY", "sk-inf-x")

    with pytest.raises(RemoteError, match="http"):
        api_client("file:///etc/passwd")


@pytest.mark.parametrize(
    ("row", "state"),
    [
        ({"is_usable": True, "revoked_at": None}, "active"),
        ({"is_usable": False, "revoked_at": "2025-01-01T00:00:00Z"}, "revoked"),
        ({"is_usable": False, "revoked_at": None}, "expired"),
        ({"is_usable": True, "revoked_at": "2030-01-01T10:00:00Z"}, "grace until 2030-01-01 10:00"),
    ],
)
def test_key_states(row, state):
    assert key_state(row) == state


def test_tables_align_columns_and_say_when_empty():
    out, empty = io.StringIO(), io.StringIO()

    table_print(["A", "LONGER"], [["xx", None], ["y", 3]], out=out)
    table_print(["A"], [], out=empty)

    assert out.getvalue().splitlines() == ["A   LONGER", "xx  -", "y   3"]
    assert empty.getvalue().splitlines() == ["A", "(none)"]


@pytest.mark.parametrize(
    ("argv", "handler"),
    [
        (["keys", "create", "--name", "n"], "remote_keys:command_keys_create"),
        (["keys", "list", "--json"], "remote_keys:command_keys_list"),
        (["keys", "rotate", "sk-inf-AbCd1234", "--grace", "1h"], "remote_keys:command_keys_rotate"),
        (["keys", "revoke", "12"], "remote_keys:command_keys_revoke"),
        (["kb", "stores", "--json"], "remote_kb:command_kb_stores"),
        (["kb", "create", "docs", "--embedding-model", "m"], "remote_kb:command_kb_create"),
        (["kb", "upload", "vs_abc", "notes.txt"], "remote_kb:command_kb_upload"),
        (["kb", "search", "vs_abc", "what is HBM", "-n", "3"], "remote_kb:command_kb_search"),
        (["kb", "delete", "vs_abc"], "remote_kb:command_kb_delete"),
        (["usage", "--since", "7d", "--by", "model"], "remote_reports:command_usage"),
        (["audit", "--action", "key.", "--format", "csv"], "remote_reports:command_audit"),
        (["audit", "verify", "--checkpoints", "f.jsonl"], "admin_verbs:command_audit_verify"),
        (["deploy", "--model", "m", "--replicas", "2"], "remote_deploy:command_deploy"),
        (["deploy", "--external", "https://x.test", "--model", "m"], "remote_deploy:command_deploy"),
        (["chat", "--model", "m", "--system", "be brief"], "chat:command_chat"),
        (["secrets", "rotate"], "admin_verbs:command_secrets_rotate"),
    ],
)
def test_every_verb_parses_to_its_handler(argv, handler):
    assert build_parser().parse_args(argv).handler == handler


def test_the_running_commands_have_no_verb_handler():
    assert getattr(build_parser().parse_args(["start", "web"]), "handler", None) is None
