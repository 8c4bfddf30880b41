"""The guardrail profile form: a category list with an action each (no JSON to type), refusing unknown categories,
keeping a pattern's categories on save; the read-only built-in profile; and "test this text" on a profile."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.policies.guardrails import BUILTIN_CATEGORIES, CATEGORY_DESCRIPTIONS
from apps.policies.models import GuardrailProfile

pytestmark = pytest.mark.django_db

CARD = "4111 1111 1111 1111"


def test_the_form_lists_every_category_with_its_description(acme, owner, signed_in):
    html = signed_in(owner).get("/console/policies/profiles/new/").content.decode()
    for category in BUILTIN_CATEGORIES:
        assert f'data-testid="input-{category}"' in html
        assert f'data-testid="output-{category}"' in html
        assert CATEGORY_DESCRIPTIONS[category].replace("'", "&#x27;") in html
    assert 'name="input_actions"' not in html


def test_a_forged_unknown_category_is_refused_with_a_clear_error(acme, owner, signed_in):
    response = signed_in(owner).post(
        "/console/policies/profiles/new/", {"organization": acme.org.pk, "name": "typo", "input_emal": "block"}
    )
    assert response.status_code == 200
    assert "Unknown guardrail category &#x27;emal&#x27;." in response.content.decode()
    assert not GuardrailProfile.objects.filter(name="typo").exists()


def test_an_unknown_action_is_a_form_error(acme, owner, signed_in):
    response = signed_in(owner).post(
        "/console/policies/profiles/new/", {"organization": acme.org.pk, "name": "bad", "input_email": "explode"}
    )
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content
    assert not GuardrailProfile.objects.filter(name="bad").exists()


def test_an_edit_keeps_a_patterns_category_and_shows_the_saved_actions(acme, owner, signed_in):
    profile = acme.guardrail_profile
    profile.patterns = [{"name": "ticket", "pattern": r"TCK-\d+"}]
    profile.input_actions = {"custom:ticket": "block", "secret": "redact"}
    profile.save()
    client = signed_in(owner)
    html = client.get(f"/console/policies/profiles/{profile.pk}/").content.decode()
    assert '<option value="redact" selected>' in html.split('data-testid="input-secret"')[1].split("</select>")[0]
    assert 'data-testid="profile-kept"' in html
    posted = {"name": profile.name, "input_email": "flag", "patterns": '[{"name": "ticket", "pattern": "TCK-\\\\d+"}]'}
    assert client.post(f"/console/policies/profiles/{profile.pk}/", posted).status_code == 302
    profile.refresh_from_db()
    assert profile.input_actions == {"custom:ticket": "block", "email": "flag"}


def test_the_builtin_profile_is_listed_and_read_only(acme, owner, signed_in):
    client = signed_in(owner)
    listing = client.get("/console/policies/profiles/").content.decode()
    assert 'data-testid="profile-row-builtin"' in listing
    assert "card: redact" in listing
    page = client.get("/console/policies/profiles/builtin/").content.decode()
    assert 'data-testid="profile-builtin-note"' in page
    assert 'data-testid="profile-save"' not in page
    assert "<fieldset disabled" in page
    assert client.post("/console/policies/profiles/builtin/", {"name": "x"}).status_code == 405


def test_test_this_text_shows_findings_and_the_redacted_text_and_stores_nothing(acme, owner, signed_in):
    profile = acme.guardrail_profile
    profile.input_actions = {"email": "redact", "card": "flag"}
    profile.save()
    events = AuditEvent.objects.count()
    text = f"Mail bob@example.com, card {CARD}."
    response = signed_in(owner).post(f"/console/policies/profiles/{profile.pk}/test/", {"text": text})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('data-testid="trial-finding"') == 2
    assert "Mail [EMAIL], card 4111 1111 1111 1111." in html
    assert 'data-testid="trial-blocked"' not in html
    assert AuditEvent.objects.count() == events
    profile.refresh_from_db()
    assert profile.input_actions == {"email": "redact", "card": "flag"}


def test_a_blocking_category_says_the_prompt_would_be_refused(acme, viewer, signed_in):
    profile = acme.guardrail_profile
    profile.input_actions = {"card": "block"}
    profile.save()
    # Trying a profile changes nothing: whoever may see it may try it.
    response = signed_in(viewer).post(f"/console/policies/profiles/{profile.pk}/test/", {"text": f"pay {CARD}"})
    assert response.status_code == 200
    assert 'data-testid="trial-blocked"' in response.content.decode()


def test_the_builtin_profile_can_be_tried(owner, signed_in):
    response = signed_in(owner).post("/console/policies/profiles/builtin/test/", {"text": f"card {CARD}"})
    assert response.status_code == 200
    assert "card [CARD]" in response.content.decode()


def test_the_text_is_bounded_in_bytes_not_characters(acme, owner, signed_in):
    url = f"/console/policies/profiles/{acme.guardrail_profile.pk}/test/"
    client = signed_in(owner)
    assert client.post(url, {"text": "é" * 8192}).status_code == 200  # 16 KiB exactly
    too_long = client.post(url, {"text": "é" * 8193})
    assert too_long.status_code == 400
    assert b"At most 16 KiB of text." in too_long.content
    assert client.post(url, {"text": "a\x00b"}).status_code == 400


def test_another_organisations_profile_cannot_be_tried(acme, globex, owner, signed_in):
    response = signed_in(owner).post(f"/console/policies/profiles/{globex.guardrail_profile.pk}/test/", {"text": "x"})
    assert response.status_code == 404


def test_the_form_sets_a_bounded_toxicity_threshold(acme, owner, signed_in):
    client = signed_in(owner)
    html = client.get("/console/policies/profiles/new/").content.decode()
    assert 'data-testid="profile-toxicity-threshold"' in html
    new = {"organization": acme.org.pk, "name": "tone", "input_toxicity": "block"}
    refused = client.post("/console/policies/profiles/new/", {**new, "toxicity_threshold": "1.5"})
    assert refused.status_code == 200
    assert not GuardrailProfile.objects.filter(name="tone").exists()
    assert client.post("/console/policies/profiles/new/", {**new, "toxicity_threshold": "0.65"}).status_code == 302
    profile = GuardrailProfile.objects.get(name="tone")
    assert (profile.toxicity_threshold, profile.input_actions) == (0.65, {"toxicity": "block"})
    assert AuditEvent.objects.filter(action="guardrail_profile.create", target_id=str(profile.pk)).exists()
