"""Audit trail of API writes (diff, masked secrets, IP, user agent), the audit viewer's filters and exports,
checkpoints, and usage sums."""

from __future__ import annotations

import csv
import io
import json

from django.utils import timezone

from apps.audit.models import AuditCheckpoint, AuditEvent
from apps.audit.verify import audit_verify
from apps.orgs.models import User
from apps.usage.models import UsageRecord, UsageRollup


def test_a_write_records_who_what_where_with_a_diff_and_masked_secrets(acme, owner, as_user):
    response = as_user(owner).post(
        "/api/providers/",
        {"organization": acme.org.pk, "name": "k8s", "kind": "kubernetes", "credentials": {"token": "s3cr3t"}},
        format="json",
        HTTP_USER_AGENT="inferia-cli/1",
        REMOTE_ADDR="203.0.113.7",
    )
    assert response.status_code == 201, response.data
    assert "s3cr3t" not in json.dumps(response.data)
    assert response.data["has_credentials"] is True
    patched = as_user(owner).patch(
        f"/api/providers/{response.data['id']}/",
        {"name": "k8s-eu", "credentials": {"token": "n3w"}},
        format="json",
    )
    assert patched.status_code == 200
    update = AuditEvent.objects.get(action="provider.update", target_id=str(response.data["id"]))
    assert update.changes == {"name": {"before": "k8s", "after": "k8s-eu"}}
    create = AuditEvent.objects.get(action="provider.create")
    assert (create.ip_address, create.user_agent, create.actor_user_id) == ("203.0.113.7", "inferia-cli/1", owner.pk)
    assert create.organization_id == acme.org.pk
    dumped = json.dumps(list(AuditEvent.objects.values("changes")))
    assert "s3cr3t" not in dumped
    assert "n3w" not in dumped
    assert audit_verify().ok


def test_a_write_with_a_key_names_the_key_as_actor(acme, as_key):
    response = as_key(acme.key.secret).post(
        "/api/teams/", {"organization": acme.org.pk, "name": "Ops", "slug": "ops"}, format="json"
    )
    assert response.status_code == 201
    event = AuditEvent.objects.get(action="team.create")
    assert (event.actor_key_id, event.actor_label) == (acme.key.key.pk, f"key:{acme.key.key.prefix}")


def test_the_viewer_filters_by_actor_action_object_and_date(acme, owner, as_user):
    client = as_user(owner)
    client.post("/api/teams/", {"organization": acme.org.pk, "name": "Ops", "slug": "ops"}, format="json")
    by_action = client.get("/api/audit-events/", {"action": "team."}).data["results"]
    assert [e["action"] for e in by_action] == ["team.create"]
    by_actor = client.get("/api/audit-events/", {"actor": "owner@acme"}).data["results"]
    assert by_actor
    assert {e["actor_label"] for e in by_actor} == {owner.email}
    team_id = by_action[0]["target_id"]
    by_object = client.get("/api/audit-events/", {"target_type": "orgs.team", "target_id": team_id}).data
    assert by_object["count"] == 1
    later = (timezone.now() + timezone.timedelta(hours=1)).isoformat()
    assert client.get("/api/audit-events/", {"since": later}).data["count"] == 0


def test_exports_are_csv_and_json_lines_oldest_first(acme, owner, as_user):
    client = as_user(owner)
    jsonl = client.get("/api/audit-events/export/", {"type": "jsonl"})
    rows = [json.loads(line) for line in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert rows
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert {r["organization_id"] for r in rows} == {acme.org.pk}
    exported = b"".join(client.get("/api/audit-events/export/", {"type": "csv"}).streaming_content).decode()
    table = list(csv.DictReader(io.StringIO(exported)))
    assert [int(r["seq"]) for r in table] == [r["seq"] for r in rows]


def test_checkpoints_are_the_superadmins(acme, owner, as_user):
    assert as_user(owner).post("/api/audit-checkpoints/").status_code == 403
    refused = as_user(owner).get("/api/audit-checkpoints/")
    assert refused.status_code == 403
    assert "superadmin" in refused.data["detail"]
    assert "scope" not in refused.data["detail"]
    root = User.objects.create_superuser("root@inferia.test", "correct horse battery")
    created = as_user(root).post("/api/audit-checkpoints/")
    assert created.status_code == 201
    assert created.data["seq"] == AuditEvent.objects.order_by("-seq").first().seq
    assert AuditCheckpoint.objects.count() == 1


def test_usage_sums_per_day_model_and_key_with_filters(acme, owner, as_user):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    UsageRollup.objects.filter(organization=acme.org).delete()
    UsageRollup.objects.create(
        hour=hour,
        organization=acme.org,
        api_key=acme.key.key,
        model="acme-model",
        requests=3,
        prompt_tokens=12,
        completion_tokens=24,
        cost_micros=15,
    )
    UsageRollup.objects.create(
        hour=hour,
        organization=acme.org,
        api_key=acme.key.key,
        model="other-model",
        requests=1,
        prompt_tokens=1,
        completion_tokens=2,
        cost_micros=5,
        errors=1,
    )
    UsageRecord.objects.create(
        request_id="extra",
        started_at=timezone.now(),
        organization=acme.org,
        api_key=acme.key.key,
        endpoint="chat.completions",
        model="other-model",
        latency_ms=1,
        status_code=500,
        outcome="error",
    )
    client = as_user(owner)
    by_model = client.get("/api/usage/summary/", {"group_by": "model"}).data
    assert {row["model"]: (row["requests"], row["prompt_tokens"], row["errors"]) for row in by_model} == {
        "acme-model": (3, 12, 0),
        "other-model": (1, 1, 1),
    }
    by_day_and_key = client.get("/api/usage/summary/", [("group_by", "day"), ("group_by", "key")]).data
    assert len(by_day_and_key) == 1
    assert by_day_and_key[0]["api_key"] == acme.key.key.pk
    assert by_day_and_key[0]["requests"] == 4
    filtered = client.get("/api/usage/summary/", {"group_by": "model", "model": "other-model"}).data
    assert [row["model"] for row in filtered] == ["other-model"]
    assert client.get("/api/usage/", {"model": "other-model"}).data["count"] == 1
