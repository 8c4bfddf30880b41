"""The organisation tab: an owner changes the current organisation's settings through the audited service (request
capture opt-in and retention above all); a viewer sees them read-only and a forged change is refused; another
tenant's organisation cannot be reached."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent

URL = "/console/members/organisation/"


def _settings(**overrides):
    return {"name": "Acme", "capture_retention_days": 7, **overrides}


def test_an_owner_opts_in_to_capture_with_a_retention(signed_in, owner, org):
    response = signed_in(owner).post(URL, _settings(capture_prompts="on", capture_retention_days=14))

    assert response.status_code == 302
    org.refresh_from_db()
    assert org.capture_prompts is True
    assert org.capture_retention_days == 14
    event = AuditEvent.objects.get(action="org.update", target_id=str(org.pk))
    assert set(event.changes) >= {"capture_prompts", "capture_retention_days"}


def test_capture_is_off_until_chosen(signed_in, owner, org):
    html = signed_in(owner).get(URL).content.decode()
    assert 'name="capture_prompts"' in html
    assert 'name="capture_prompts" checked' not in html
    assert not org.capture_prompts


@pytest.mark.parametrize("days", [0, 91, -1])
def test_a_retention_out_of_bounds_is_refused_with_nothing_saved(signed_in, owner, org, days):
    response = signed_in(owner).post(URL, _settings(capture_prompts="on", capture_retention_days=days))

    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()
    org.refresh_from_db()
    assert org.capture_prompts is False


def test_a_viewer_sees_the_settings_but_cannot_change_them(signed_in, viewer, org):
    client = signed_in(viewer)
    assert 'data-testid="settings-read-only"' in client.get(URL).content.decode()
    assert client.post(URL, _settings(capture_prompts="on")).status_code == 403
    org.refresh_from_db()
    assert org.capture_prompts is False


def test_another_tenants_organisation_is_a_404(signed_in, owner, org, other_org):
    assert signed_in(owner).get(f"{URL}?org={other_org.slug}").status_code == 404
    other_org.refresh_from_db()
    assert other_org.capture_prompts is False
