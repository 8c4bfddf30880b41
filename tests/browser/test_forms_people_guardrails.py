"""Forms in place of raw JSON and internal names, in headless Chromium against the running platform: a guardrail
profile made by picking an action per category, "test this text" on it and on the built-in profile, a role composed
by capability, and a member added to a new team (whose slug comes from its name)."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def test_a_guardrail_profile_is_made_by_picking_categories_and_tried_on_a_text(owner_page, console):
    from apps.policies.models import GuardrailProfile

    page = owner_page
    page.goto(console.url("/console/policies/profiles/"))
    assert page.locator("[data-testid=profile-row-builtin]").count() == 1
    page.click("[data-testid=profile-new]")
    page.fill("[data-testid=profile-name]", "browser-strict")
    page.select_option("[data-testid=input-email]", "redact")
    page.select_option("[data-testid=input-card]", "block")
    page.select_option("[data-testid=output-secret]", "redact")
    assert "E-mail addresses." in page.inner_text("[data-testid=category-row-email]")
    screenshot(page, "guardrail-profile-form")
    page.click("[data-testid=profile-save]")
    page.wait_for_url(re.compile(r"/console/policies/profiles/\d+/$"))
    assert page.input_value("[data-testid=input-email]") == "redact"
    profile = GuardrailProfile.objects.get(organization__slug=console.org_slug, name="browser-strict")
    assert profile.input_actions == {"email": "redact", "card": "block"}
    assert profile.output_actions == {"secret": "redact"}

    page.fill("[data-testid=trial-text]", "Write to bob@example.com about the launch.")
    page.click("[data-testid=trial-run]")
    page.wait_for_selector("[data-testid=trial-result]")
    assert page.inner_text("[data-testid=trial-redacted]") == "Write to [EMAIL] about the launch."
    assert page.locator("[data-testid=trial-finding]").count() == 1
    screenshot(page, "guardrail-profile-trial")

    page.fill("[data-testid=trial-text]", "Charge 4111 1111 1111 1111 please")
    page.click("[data-testid=trial-run]")
    page.wait_for_selector("[data-testid=trial-blocked]")
    assert "card" in page.inner_text("[data-testid=trial-blocked]")


def test_the_builtin_profile_is_read_only_and_can_be_tried(owner_page, console):
    page = owner_page
    page.goto(console.url("/console/policies/profiles/"))
    page.click("[data-testid=profile-row-builtin] a")
    page.wait_for_selector("[data-testid=profile-builtin-note]")
    assert page.locator("[data-testid=profile-save]").count() == 0
    assert page.is_disabled("[data-testid=input-card]")
    page.fill("[data-testid=trial-text]", "my card is 4111 1111 1111 1111")
    page.click("[data-testid=trial-run]")
    page.wait_for_selector("[data-testid=trial-result]")
    assert page.inner_text("[data-testid=trial-redacted]") == "my card is [CARD]"


def test_a_role_is_created_by_capability(owner_page, console):
    from apps.rbac.models import Role

    page = owner_page
    page.goto(console.url("/console/members/roles/"))
    page.fill("[data-testid=role-name]", "Browser deployers")
    page.check("[data-testid=cap-deploy_models]")
    page.check("[data-testid=cap-read_usage]")
    screenshot(page, "role-capabilities-form")
    page.click("[data-testid=role-create]")
    row = page.locator("[data-testid=role-row]", has_text="Browser deployers")
    row.wait_for()
    capabilities = row.locator("[data-testid=role-capabilities]").inner_text()
    assert "Deploy models" in capabilities
    assert "See deployments" in capabilities  # required by deploying, added on save
    assert "Read usage" in capabilities
    role = Role.objects.get(organization__slug=console.org_slug, slug="browser-deployers")
    assert role.permissions.filter(codename="add_modeldeployment").exists()
    assert not role.permissions.filter(codename="add_apikey").exists()


def test_a_member_is_added_to_a_new_team_and_removed(owner_page, console):
    from apps.orgs.models import Membership

    page = owner_page
    page.goto(console.url("/console/members/teams/"))
    page.fill("[data-testid=team-name]", "Browser Research")
    page.click("[data-testid=team-create]")
    page.wait_for_url(re.compile(r"/console/members/teams/\d+/$"))
    assert "browser-research" in page.inner_text("#team-title")
    page.select_option("[data-testid=team-member-select]", label=console.viewer_email)
    page.click("[data-testid=team-member-add]")
    row = page.locator("[data-testid=team-member-row]", has_text=console.viewer_email)
    row.wait_for()
    screenshot(page, "team-members")
    membership = Membership.objects.get(user__email=console.viewer_email, organization__slug=console.org_slug)
    assert list(membership.teams.values_list("slug", flat=True)) == ["browser-research"]

    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("[data-testid=team-member-remove]").click()
    page.wait_for_selector("[data-testid=team-member-row]", state="detached")
    assert not membership.teams.exists()
