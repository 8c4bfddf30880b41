"""The usage event's one field list: what the gateway encodes is what the worker decodes and stores, column for
column of UsageRecord."""

from __future__ import annotations

import json

import pytest

from apps.usage.events import USAGE_EXPORT_COLUMNS, USAGE_RECORD_COLUMNS, UsageEvent, usage_event_decode
from apps.usage.models import UsageRecord


def test_the_event_fills_every_column_of_a_record():
    columns = [field.attname for field in UsageRecord._meta.concrete_fields if not field.primary_key]
    assert sorted(USAGE_RECORD_COLUMNS) == sorted(columns)


def test_the_capture_travels_on_the_event_but_is_no_record_column():
    raw = json.loads(UsageEvent(request_id="r1", started_at=1.0, endpoint="embeddings").encoded())
    assert "cap" not in raw  # nothing captured unless the organisation opted in
    event = UsageEvent(request_id="r1", started_at=1.0, endpoint="embeddings", capture={"p": "hi", "a": "ho"})
    assert usage_event_decode(event.encoded())["capture"] == {"p": "hi", "a": "ho"}
    assert "capture" not in USAGE_RECORD_COLUMNS


def test_an_event_encodes_what_json_allows_beyond_the_fast_encoder():
    # A lone surrogate (a caller's text) and an integer past 64 bits: compact JSON all the same, read back as sent.
    event = UsageEvent(
        request_id="r1", started_at=1.5, endpoint="chat.completions", model="gw\ud800", cost_micros=2**70
    )
    decoded = usage_event_decode(event.encoded())
    assert (decoded["model"], decoded["cost_micros"], decoded["started_at"]) == ("gw\ud800", 2**70, 1.5)
    assert b" " not in event.encoded()


def test_the_export_shows_the_events_fields_but_the_internal_ones():
    assert set(USAGE_RECORD_COLUMNS) - set(USAGE_EXPORT_COLUMNS) == {"replica_id", "estimated", "guardrails"}
    assert USAGE_EXPORT_COLUMNS[:3] == ("request_id", "client_request_id", "started_at")


def test_an_encoded_event_decodes_to_its_record_columns():
    event = UsageEvent(
        request_id="r1",
        started_at=1_800_000_000.5,
        endpoint="chat.completions",
        key_id=3,
        organization_id=1,
        status=429,
        outcome="denied",
        guardrails=[{"category": "pii", "action": "block", "count": 1}],
    )
    decoded = usage_event_decode(event.encoded())
    assert list(decoded) == [*USAGE_RECORD_COLUMNS, "capture"]
    assert decoded["api_key_id"] == 3
    assert decoded["status_code"] == 429
    assert decoded["guardrails"] == [{"category": "pii", "action": "block", "count": 1}]
    # The stream stays as compact as it was: short keys only.
    assert {"rid", "k", "st", "g"} <= set(json.loads(event.encoded()))


def test_events_of_earlier_releases_decode_with_their_optional_fields_empty():
    raw = json.loads(UsageEvent(request_id="r1", started_at=1.0, endpoint="embeddings").encoded())
    del raw["crid"], raw["g"]
    first, second = usage_event_decode(json.dumps(raw)), usage_event_decode(json.dumps(raw))
    assert (first["client_request_id"], first["guardrails"]) == ("", [])
    first["guardrails"].append("changed")
    assert second["guardrails"] == []


def test_an_event_without_a_required_field_does_not_decode():
    raw = json.loads(UsageEvent(request_id="r1", started_at=1.0, endpoint="embeddings").encoded())
    del raw["k"]
    with pytest.raises(KeyError):
        usage_event_decode(json.dumps(raw))
