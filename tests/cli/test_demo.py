"""`inferia demo`'s data: created once, reused by the next run, keys kept readable only by their owner."""

from __future__ import annotations

import json
import stat

import pytest

from apps.compute.models import ModelDeployment
from apps.keys.models import ApiKey
from apps.keys.services import api_key_revoke, hash_key
from inferia_cli.bootstrap import platform_init
from inferia_cli.demo import DEMO_ADMIN_EMAIL, KEYS_FILE, demo_admin_prepare, demo_ensure
from tests.cli.test_init import row_counts


@pytest.fixture
def demo_admin(settings, tmp_path, monkeypatch):
    for name in ("INFERIA_SUPERADMIN_EMAIL", "INFERIA_SUPERADMIN_PASSWORD"):
        monkeypatch.setenv(name, "")  # recorded first, so that what demo_admin_prepare exports is undone
        monkeypatch.delenv(name)
    admin = demo_admin_prepare(data_dir=tmp_path)
    settings.INFERIA_SUPERADMIN_EMAIL = admin.email
    settings.INFERIA_SUPERADMIN_PASSWORD = admin.password
    return admin


def test_the_demo_admin_gets_a_generated_password_kept_private(demo_admin, tmp_path):
    again = demo_admin_prepare(data_dir=tmp_path)

    assert demo_admin.email == DEMO_ADMIN_EMAIL
    assert again.password == demo_admin.password
    assert len(demo_admin.password) >= 12
    assert stat.S_IMODE((tmp_path / "demo-admin-password").stat().st_mode) == 0o600


def test_the_demo_creates_an_inference_key_and_a_management_key(demo_admin, tmp_path, db):
    platform_init(verbosity=0)

    demo = demo_ensure(data_dir=tmp_path, admin_email=demo_admin.email)

    inference = ApiKey.objects.get(secret_hash=hash_key(demo.keys["inference"]))
    manage = ApiKey.objects.get(secret_hash=hash_key(demo.keys["manage"]))
    assert inference.scopes == ["inference"]
    assert manage.scopes == ["manage", "read"]
    assert inference.organization == manage.organization == demo.organization
    assert demo.deployment.served_model_name == "demo-chat"
    assert stat.S_IMODE((tmp_path / KEYS_FILE).stat().st_mode) == 0o600


def test_a_second_run_creates_nothing_and_prints_the_same_keys(demo_admin, tmp_path, db):
    platform_init(verbosity=0)
    first = demo_ensure(data_dir=tmp_path, admin_email=demo_admin.email)
    before = row_counts()

    platform_init(verbosity=0)
    second = demo_ensure(data_dir=tmp_path, admin_email=demo_admin.email)

    assert second.keys == first.keys
    assert row_counts() == before


def test_a_revoked_demo_key_is_replaced_on_the_next_run(demo_admin, tmp_path, db):
    platform_init(verbosity=0)
    first = demo_ensure(data_dir=tmp_path, admin_email=demo_admin.email)
    api_key_revoke(key=ApiKey.objects.get(secret_hash=hash_key(first.keys["inference"])), reason="test")

    second = demo_ensure(data_dir=tmp_path, admin_email=demo_admin.email)

    assert second.keys["inference"] != first.keys["inference"]
    assert second.keys["manage"] == first.keys["manage"]
    saved = json.loads((tmp_path / KEYS_FILE).read_text())
    assert saved["inference"]["secret"] == second.keys["inference"]


def test_the_demo_deployment_is_left_to_the_worker_to_provision(demo_admin, tmp_path, db):
    platform_init(verbosity=0)

    demo = demo_ensure(data_dir=tmp_path, admin_email=demo_admin.email)

    deployment = ModelDeployment.objects.get(pk=demo.deployment.pk)
    assert deployment.pool.provider.kind == "simulator"
    assert deployment.state == ModelDeployment.State.PENDING
    assert deployment.desired_replicas == 1
    assert not deployment.replicas.exists()  # no process started by hand: the worker's reconcile creates it
    # Priced, so the demo's usage records and dashboard show spend: 1M input + 1M output tokens cost $0.75.
    assert deployment.price_input_per_mtok_micros + deployment.price_output_per_mtok_micros == 750_000
