"""The flush moves a key's `last_used_at` to its newest request: the same instant as that request's record."""

from __future__ import annotations

import uuid

import pytest

from apps.keys.models import ApiKey
from apps.usage.models import UsageRecord
from apps.usage.services import usage_records_store
from tests.factories import OrganizationFactory, api_key_issue

# POSIX times whose microsecond PostgreSQL's to_timestamp() rounds one way and Python's datetime the other.
TIMES = (1796421224.1041346, 1796421224.1044455, 1796421224.1045566)


@pytest.mark.django_db
@pytest.mark.parametrize("started_at", TIMES)
def test_a_keys_last_use_is_its_newest_records_start_to_the_microsecond(started_at):
    organization = OrganizationFactory()
    key = api_key_issue(organization=organization).key
    event = {
        "request_id": uuid.uuid4().hex, "started_at": started_at, "endpoint": "chat.completions",
        "api_key_id": key.pk, "organization_id": organization.pk, "team_id": None, "model": "m-1",
        "deployment_id": None, "replica_id": None, "prompt_tokens": 1, "completion_tokens": 1, "cost_micros": 0,
        "ttft_ms": 1.0, "latency_ms": 2.0, "status_code": 200, "outcome": "ok", "error_code": "", "estimated": False,
        "streamed": True, "guardrails": [],
    }  # fmt: skip

    usage_records_store([event])

    record = UsageRecord.objects.get(request_id=event["request_id"])
    assert ApiKey.objects.get(pk=key.pk).last_used_at == record.started_at
