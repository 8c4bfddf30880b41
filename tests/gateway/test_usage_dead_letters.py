"""No usage event blocks another: a batch that PostgreSQL refuses is stored event by event, and what still fails is
kept as a dead letter (visible, counted, replayable), never dropped."""

from __future__ import annotations

import asyncio
import json

from django.conf import settings

from apps.audit.models import AuditEvent
from apps.usage.backlog import dead_letters_list, usage_backlog
from apps.usage.events import EVENT_FIELD, UsageEvent
from apps.usage.models import UsageRecord
from apps.usage.services import usage_dead_letters_replay
from apps.usage.stream import usage_stream_drain
from tests.factories import MembershipFactory, UserFactory
from tests.gateway.test_metering import _many_streams


def _poisoned_event(tenant, request_id: str) -> str:
    """What an older gateway (before the edge refused it) appended for a model name holding a NUL."""
    return UsageEvent(
        request_id=request_id,
        started_at=1_800_000_000.0,
        endpoint="chat.completions",
        key_id=tenant.key.pk,
        organization_id=tenant.organization.pk,
        model="gw\u0000chat",
        status=404,
        outcome="error",
        error_code="model_not_found",
    ).encoded()


def test_one_poisoned_event_does_not_hold_back_the_batch(tenant, gateway, redis_cache):
    asyncio.run(_many_streams(gateway.url, tenant.secret, 3))
    redis_cache.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: _poisoned_event(tenant, "poisoned-1")})
    asyncio.run(_many_streams(gateway.url, tenant.secret, 3))
    redis_cache.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: "{not json"})

    assert usage_stream_drain() == 8

    assert UsageRecord.objects.filter(organization_id=tenant.organization.pk).count() == 6
    malformed, refused = sorted(
        dead_letters_list(redis_cache), key=lambda letter: letter.event == "{not json", reverse=True
    )
    assert "NUL" in refused.reason
    assert json.loads(refused.event)["rid"] == "poisoned-1"
    assert malformed.reason.startswith("malformed event")
    assert malformed.event == "{not json"
    backlog = usage_backlog(redis_cache)
    assert (backlog.waiting, backlog.dead_letters) == (0, 2)
    assert usage_stream_drain() == 0  # nothing left pending: the batch was acknowledged


def test_a_replay_stores_the_repaired_event_once_and_is_audited(tenant, gateway, redis_cache):
    redis_cache.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: _poisoned_event(tenant, "poisoned-2")})
    redis_cache.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: "{not json"})
    usage_stream_drain()

    replayed = usage_dead_letters_replay(actor=None)

    assert (replayed.stored, replayed.kept) == (1, 1)
    record = UsageRecord.objects.get(request_id="poisoned-2")
    assert record.model == "gwchat"
    assert [letter.reason[:15] for letter in dead_letters_list(redis_cache)] == ["malformed event"]
    audit = AuditEvent.objects.get(action="usage.dead_letters.replay")
    assert audit.changes == {"stored": 1, "kept": 1}
    assert usage_dead_letters_replay(actor=None).stored == 0


def test_the_backlog_reports_how_old_the_oldest_waiting_event_is(redis_cache):
    redis_cache.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: "{}"}, id="1000-0")
    redis_cache.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: "{}"}, id="5000-0")

    backlog = usage_backlog(redis_cache, now=11.5)

    assert backlog.waiting == 2
    assert backlog.lag_seconds == 10.5
    assert usage_backlog(redis_cache.__class__(connection_pool=redis_cache.connection_pool)).dead_letters == 0


def _one_dead_letter(tenant, redis_cache) -> None:
    redis_cache.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: _poisoned_event(tenant, "poisoned-3")})
    usage_stream_drain()


def test_the_superadmin_sees_and_replays_dead_letters_over_rest_and_no_one_else(tenant, redis_cache, as_user, roles):
    from apps.orgs.models import User

    _one_dead_letter(tenant, redis_cache)
    admin = User.objects.create_superuser("root@inferia.test", "correct horse battery")
    owner = UserFactory(email="owner@acme.test", password="correct horse battery")
    MembershipFactory(user=owner, organization=tenant.organization, role=roles["owner"])

    assert as_user(owner).get("/api/usage/dead-letters/").status_code == 403
    assert as_user(owner).post("/api/usage/dead-letters/replay/").status_code == 403
    listed = as_user(admin).get("/api/usage/dead-letters/")
    assert listed.status_code == 200
    assert listed.json()["count"] == 1
    assert json.loads(listed.json()["results"][0]["event"])["rid"] == "poisoned-3"
    replayed = as_user(admin).post("/api/usage/dead-letters/replay/")
    assert replayed.json() == {"stored": 1, "kept": 0}
    assert as_user(admin).get("/api/usage/dead-letters/").json()["count"] == 0
    assert AuditEvent.objects.get(action="usage.dead_letters.replay").actor_user_id == admin.pk


def test_inferia_usage_dead_letters_lists_them_and_exits_1_until_replayed(tenant, redis_cache):
    from tests.cli.test_remote_admin_verbs import inferia

    _one_dead_letter(tenant, redis_cache)

    listed = inferia("usage", "dead-letters")
    replayed = inferia("usage", "dead-letters", "--replay")
    after = inferia("usage", "dead-letters", "--json")

    assert listed.returncode == 1, listed.stderr
    assert "1 dead letter(s)" in listed.stdout
    assert "NUL" in listed.stdout
    assert replayed.returncode == 0, replayed.stderr
    assert "stored 1, still refused 0" in replayed.stdout
    assert (after.returncode, json.loads(after.stdout)["count"]) == (0, 0)
    assert UsageRecord.objects.filter(request_id="poisoned-3").exists()


def test_the_scrape_reports_waiting_events_the_flush_lag_and_dead_letters(tenant, gateway, redis_cache):
    from tests.gateway.test_metrics import scrape, value

    _one_dead_letter(tenant, redis_cache)
    redis_cache.delete(settings.INFERIA_USAGE_STREAM)
    redis_cache.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: "{}"}, id="1000-0")  # appended in 1970

    samples = scrape(gateway.url)

    assert value(samples, "inferia_usage_dead_letters") == 1
    assert value(samples, "inferia_usage_events_waiting") == 1
    assert value(samples, "inferia_usage_flush_lag_seconds") > 1_000_000_000


def test_the_console_tells_the_superadmin_and_only_them(tenant, redis_cache, roles):
    from django.test import Client

    from apps.orgs.models import User

    _one_dead_letter(tenant, redis_cache)
    admin = User.objects.create_superuser("root@inferia.test", "correct horse battery")
    owner = UserFactory(email="owner@acme.test", password="correct horse battery")
    MembershipFactory(user=owner, organization=tenant.organization, role=roles["owner"])
    pages = {}
    for user in (admin, owner):
        client = Client()
        client.force_login(user)
        pages[user] = client.get("/console/usage/").content.decode()

    assert 'data-testid="dead-letters-notice"' in pages[admin]
    assert "1 usage event could not be stored" in pages[admin]
    assert 'data-testid="dead-letters-notice"' not in pages[owner]
