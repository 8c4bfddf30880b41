"""The organisation switcher in a real browser: the choice made in the top bar is carried to the next pages and
through a create form that failed once, so the object lands in the organisation the page showed (it used to be
saved in the first organisation while the list said there were none)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import PASSWORD, screenshot, sign_in
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


@pytest.fixture(scope="module")
def two_org_lead(console, django_db_blocker) -> Iterator[dict[str, Any]]:
    """A lead who owns the browser fixture's organisation and a second one, "Zeta Demo" (sorted last); committed
    (module scope, outside any test's transaction) so that the server sees them."""
    from apps.orgs.models import Organization
    from apps.policies.models import GuardrailProfile
    from apps.rbac.services import roles_ensure_builtin

    with django_db_blocker.unblock():
        owner_role = roles_ensure_builtin()["owner"]
        lead = UserFactory(email="lead@browser.test", password=PASSWORD)
        zeta = OrganizationFactory(name="Zeta Demo", slug="zeta-demo")
        MembershipFactory(user=lead, organization=Organization.objects.get(slug=console.org_slug), role=owner_role)
        MembershipFactory(user=lead, organization=zeta, role=owner_role)
        GuardrailProfile.objects.create(organization=zeta, name="taken")
    try:
        yield {"email": lead.email, "zeta": zeta}
    finally:
        with django_db_blocker.unblock():
            GuardrailProfile.objects.filter(organization=zeta).delete()
            zeta.delete()
            lead.delete()


def test_the_switched_organisation_survives_a_create_form_error(
    fresh_context, console, two_org_lead, django_db_blocker
):
    from apps.policies.models import GuardrailProfile

    page = fresh_context.new_page()
    with django_db_blocker.unblock():
        sign_in(page, console, email=two_org_lead["email"])

    page.goto(console.url("/console/policies/profiles/"))
    assert page.locator("[data-testid=topbar-org] option:checked").inner_text() == "Browser Co"
    with page.expect_navigation():
        page.select_option("[data-testid=topbar-org]", "zeta-demo")  # submits on change
    assert page.locator("[data-testid=topbar-org] option:checked").inner_text() == "Zeta Demo"

    page.goto(console.url("/console/policies/profiles/new/"))  # a plain link: no ?org= to carry it
    assert "Zeta Demo" in page.inner_text("[data-testid=profile-org-fixed]")
    page.fill("#id_name", "taken")
    page.click("main form button[type=submit]")
    assert "conflicts" in page.inner_text("main")  # refused: the name is used in Zeta Demo already
    assert "Zeta Demo" in page.inner_text("[data-testid=profile-org-fixed]")
    screenshot(page, "org-context-create-error")

    page.fill("#id_name", "fixed after an error")
    page.click("main form button[type=submit]")
    page.wait_for_selector("text=created")

    with django_db_blocker.unblock():
        created = GuardrailProfile.objects.get(name="fixed after an error")
        assert created.organization_id == two_org_lead["zeta"].pk
    page.goto(console.url("/console/policies/profiles/"))
    assert "fixed after an error" in page.inner_text("main")
