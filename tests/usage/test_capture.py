"""Captured prompts and answers, as the usage worker stores them: only for an organisation that opts in (still, when
the batch is stored), masked with its guardrail redactions and personal data always, never with a NUL, kept for the
organisation's retention and pruned after it; the opt-in is changed through an audited service."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.orgs.services import organization_update
from apps.policies.models import GuardrailProfile, Policy
from apps.usage.capture import request_captures_prune
from apps.usage.events import CAPTURE_TEXT_MAX, UsageEvent, usage_event_decode
from apps.usage.models import RequestCapture, UsageRecord
from apps.usage.services import usage_records_store
from inferia_runtime.errors import DomainRefusal

pytestmark = pytest.mark.django_db

PROMPT = "user: mail jane.doe@example.com, card 4111 1111 1111 1111, about project-xenon"
ANSWER = "Call +1 415 555 0100 about project-xenon."


def _event(org, *, capture=True, started_at=None, **fields):
    event = UsageEvent(
        request_id=uuid.uuid4().hex,
        started_at=started_at or timezone.now().timestamp(),
        endpoint="chat.completions",
        organization_id=org.pk,
        model="m",
        capture={"p": PROMPT, "a": ANSWER} if capture else None,
        **fields,
    )
    return usage_event_decode(event.encoded())


def _opt_in(org, days=7):
    return organization_update(
        organization=org, changes={"capture_prompts": True, "capture_retention_days": days}, actor=None
    )


def test_an_opted_in_organisations_capture_is_stored_masked(org):
    _opt_in(org, days=3)
    event = _event(org)
    assert usage_records_store([event]) == 1
    capture = RequestCapture.objects.get(usage_record__request_id=event["request_id"])
    assert "jane.doe@example.com" not in capture.prompt
    assert "[EMAIL]" in capture.prompt
    assert "4111" not in capture.prompt
    assert "[CARD]" in capture.prompt
    assert "555 0100" not in capture.answer
    assert "[PHONE]" in capture.answer
    assert "project-xenon" in capture.prompt  # the built-in profile knows nothing of it
    assert capture.organization_id == org.pk
    started = UsageRecord.objects.get(request_id=event["request_id"]).started_at
    assert capture.expires_at == started + timedelta(days=3)


def test_the_organisations_own_redactions_mask_its_captures(org):
    _opt_in(org)
    profile = GuardrailProfile.objects.create(
        organization=org,
        name="codenames",
        input_actions={"email": "off"},
        patterns=[{"name": "codename", "pattern": r"project-\w+", "input": "redact"}],
    )
    Policy.objects.create(organization=org, guardrail_profile=profile)
    event = _event(org)
    usage_records_store([event])
    capture = RequestCapture.objects.get(usage_record__request_id=event["request_id"])
    assert "project-xenon" not in capture.prompt + capture.answer
    assert "[CODENAME]" in capture.prompt
    assert "[CODENAME]" in capture.answer
    assert "[EMAIL]" in capture.prompt  # personal data is masked even where the profile lets it through


def test_nothing_is_captured_for_an_organisation_that_did_not_opt_in(org):
    event = _event(org)
    assert usage_records_store([event]) == 1
    assert UsageRecord.objects.filter(request_id=event["request_id"]).exists()
    assert not RequestCapture.objects.exists()


def test_an_organisation_that_opted_out_since_the_request_gets_nothing_kept(org):
    _opt_in(org)
    event = _event(org)
    organization_update(organization=org, changes={"capture_prompts": False}, actor=None)
    usage_records_store([event])
    assert UsageRecord.objects.filter(request_id=event["request_id"]).exists()
    assert not RequestCapture.objects.exists()


def test_an_event_without_a_capture_stores_none(org):
    _opt_in(org)
    usage_records_store([_event(org, capture=False)])
    assert not RequestCapture.objects.exists()


def test_stored_texts_have_no_nul_and_stay_bounded(org):
    _opt_in(org)
    event = _event(org, error_message="bad \x00 model")
    event["capture"] = {"p": "a\x00b" + "é" * CAPTURE_TEXT_MAX, "a": 42}
    usage_records_store([event])
    record = UsageRecord.objects.get(request_id=event["request_id"])
    assert record.error_message == "bad  model"
    capture = RequestCapture.objects.get(usage_record=record)
    assert capture.prompt.startswith("ab")
    assert len(capture.prompt.encode()) <= CAPTURE_TEXT_MAX
    assert capture.answer == ""


def test_storing_a_batch_again_keeps_one_capture(org):
    _opt_in(org)
    event = _event(org)
    usage_records_store([event])
    usage_records_store([event])
    assert RequestCapture.objects.count() == 1


def test_captures_past_retention_are_pruned_and_go_with_their_record(org):
    _opt_in(org, days=1)
    old, recent = _event(org, started_at=(timezone.now() - timedelta(days=2)).timestamp()), _event(org)
    usage_records_store([old, recent])
    assert request_captures_prune() == 1
    assert list(RequestCapture.objects.values_list("usage_record__request_id", flat=True)) == [recent["request_id"]]
    UsageRecord.objects.filter(request_id=recent["request_id"]).delete()
    assert not RequestCapture.objects.exists()


def test_the_prune_runs_on_the_beat_schedule():
    from celery_app.app import app

    entries = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "apps.usage.tasks.usage_captures_prune" in entries


def test_the_opt_in_is_audited_and_its_retention_bounded(org):
    _opt_in(org, days=30)
    event = AuditEvent.objects.filter(action="org.update").latest("pk")
    assert event.changes["capture_prompts"] == {"before": False, "after": True}
    assert event.changes["capture_retention_days"] == {"before": 7, "after": 30}
    for days in (0, 91, "7"):
        with pytest.raises(DomainRefusal):
            organization_update(organization=org, changes={"capture_retention_days": days}, actor=None)
    org.refresh_from_db()
    assert (org.capture_prompts, org.capture_retention_days) == (True, 30)


def test_capture_is_off_by_default(org):
    assert org.capture_prompts is False


def test_an_owner_opts_in_through_the_rest_api_within_bounds(org, owner, outsider, other_org, as_user):
    client = as_user(owner)
    url = f"/api/organizations/{org.pk}/"
    assert client.patch(url, {"capture_retention_days": 0}, format="json").status_code == 400
    assert client.patch(url, {"capture_retention_days": 91}, format="json").status_code == 400
    answer = client.patch(url, {"capture_prompts": True, "capture_retention_days": 14}, format="json")
    assert answer.status_code == 200
    assert (answer.json()["capture_prompts"], answer.json()["capture_retention_days"]) == (True, 14)
    assert as_user(outsider).patch(url, {"capture_prompts": False}, format="json").status_code == 404
    org.refresh_from_db()
    assert org.capture_prompts is True
