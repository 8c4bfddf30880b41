"""The Content-Security-Policy in a real browser: Chromium reports every violation in the page's console, and no
console or admin page, with its scripts running (charts, the live deployment panel over a WebSocket, a streamed
playground chat, the admin's widgets), triggers one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import PASSWORD, _new_context, sign_in
from tests.browser.test_console import PAGES, playground_chat

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

ROOT_EMAIL = "root@browser.test"


def _watch(page: Any) -> list[str]:
    violations: list[str] = []

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            violations.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    return violations


def _visit(page: Any, url: str) -> None:
    response = page.goto(url)
    assert response is not None, url
    assert response.status == 200, (url, response.status)
    assert response.headers.get("content-security-policy"), url
    page.wait_for_load_state("networkidle")


def test_console_pages_run_without_a_policy_violation(owner_page, console):
    page = owner_page
    violations = _watch(page)
    paths = [
        "/console/",
        "/console/dashboard/",
        "/console/deployments/",
        f"/console/deployments/{console.deployment_id}/",
        "/console/keys/",
        "/console/security/",
        "/console/members/invitations/",
        *PAGES.values(),
    ]
    for path in paths:
        _visit(page, console.url(f"{path}?org={console.org_slug}"))
    page.goto(console.url(f"/console/deployments/{console.deployment_id}/"))
    page.wait_for_selector("[data-testid=deployment-logs] .log-line")  # the WebSocket panel ran
    assert playground_chat(page, console, "Say hello")
    assert violations == []


@pytest.fixture(scope="package")
def root_page(browser, console, django_db_blocker) -> Iterator[Any]:
    """The superadmin, committed (package scope: outside any test's transaction, which would hold the audit chain's
    lock the server's sign-in needs) and signed in with a TOTP code."""
    import pyotp

    from apps.orgs.models import User
    from apps.rbac.twofactor_services import totp_enrolment_confirm, totp_enrolment_start

    with django_db_blocker.unblock():
        root = User.objects.create_superuser(ROOT_EMAIL, PASSWORD)
        secret = totp_enrolment_start(user=root, actor=root).secret  # the superadmin must use a second factor
        totp_enrolment_confirm(user=root, code=pyotp.TOTP(secret).now(), actor=root)
    context = _new_context(browser, console)
    page = context.new_page()
    try:
        with django_db_blocker.unblock():
            sign_in(page, console, email=ROOT_EMAIL, totp_secret=secret)
        yield page
    finally:
        context.close()
        with django_db_blocker.unblock():
            root.delete()


def test_admin_pages_run_without_a_policy_violation(root_page, console):
    page = root_page
    violations = _watch(page)
    for path in [
        "/admin/",
        "/admin/orgs/user/",
        "/admin/orgs/team/add/",  # people are not added in admin (they sign up or are invited); teams are
        "/admin/orgs/organization/",
        "/admin/orgs/membership/",
        "/admin/compute/modeldeployment/",
        f"/admin/compute/modeldeployment/{console.deployment_id}/change/",
        "/admin/audit/auditevent/",
    ]:
        _visit(page, console.url(path))
    for changelist in ("/admin/orgs/organization/", "/admin/orgs/user/"):
        page.goto(console.url(changelist))
        page.click("#result_list tbody tr a")  # a change form with its inlines, prepopulated fields and widgets
        page.wait_for_load_state("networkidle")
    assert violations == []


def test_a_deployments_state_is_not_editable_in_admin(root_page, console):
    """The worker owns a deployment's state: the admin change form shows it but has no field a careless save could
    write it back through."""
    page = root_page
    page.goto(console.url(f"/admin/compute/modeldeployment/{console.deployment_id}/change/"))
    page.wait_for_selector("#content-main form")
    assert page.locator("[name=state], [name=state_changed_at]").count() == 0
    assert page.locator(".field-state .readonly").count() == 1
