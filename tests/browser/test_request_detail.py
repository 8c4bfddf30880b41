"""A request's detail page in headless Chromium against the running platform: a chat request sent to `/v1` with an
inference key of the browser organisation, found in the usage list by the caller's own request id, clicked, and read
on its detail page: its ids, tokens, latency and cost."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid

import pytest

from tests.browser.conftest import SERVED_MODEL, screenshot
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


@pytest.fixture(scope="module")
def inference_secret(console, django_db_blocker):
    """An inference key of the browser organisation, committed (the platform runs in other processes): made outside
    any test's transaction, hence module-scoped."""
    from apps.keys.models import ApiKey
    from apps.keys.services import api_key_create
    from apps.orgs.models import Organization

    with django_db_blocker.unblock():
        issued = api_key_create(
            organization=Organization.objects.get(slug=console.org_slug), name="request detail", scopes=["inference"]
        )
    yield issued.secret
    with django_db_blocker.unblock():
        ApiKey.objects.filter(pk=issued.key.pk).delete()


def _chat(console, secret: str, client_request_id: str) -> tuple[str, dict]:
    body = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "Show me on the detail page."}]}
    request = urllib.request.Request(  # noqa: S310 (the test's own server on loopback)
        console.url("/v1/chat/completions"),
        data=json.dumps({**body, "max_tokens": 12}).encode(),
        method="POST",
        headers={
            "authorization": f"Bearer {secret}",
            "content-type": "application/json",
            "x-request-id": client_request_id,
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.headers["x-request-id"], json.loads(response.read())


def test_a_request_sent_to_v1_opens_on_its_detail_page_from_the_usage_list(owner_page, console, inference_secret):
    page = owner_page
    client_request_id = f"browser-{uuid.uuid4().hex[:12]}"
    request_id, answer = _chat(console, inference_secret, client_request_id)
    usage = answer["usage"]
    listed = console.url(f"/console/usage/?org={console.org_slug}&request_id={client_request_id}")

    def row_listed() -> bool:
        page.goto(listed)
        return page.locator("[data-testid=usage-row]").count() == 1

    eventually(row_listed, timeout=30, interval=1, what="the request in the usage list")  # the worker flushes
    screenshot(page, "usage-request-row")
    page.click("[data-testid=usage-row-link]")
    page.wait_for_selector("[data-testid=request-id]")

    assert page.url.endswith(f"/console/usage/requests/{request_id}/")
    assert page.inner_text("[data-testid=request-id]").strip() == request_id
    assert page.inner_text("[data-testid=request-client-id]").strip() == client_request_id
    assert page.inner_text("[data-testid=request-outcome]").strip() == "Completed"
    assert page.inner_text("[data-testid=request-prompt-tokens]").strip() == str(usage["prompt_tokens"])
    assert page.inner_text("[data-testid=request-completion-tokens]").strip() == str(usage["completion_tokens"])
    assert re.fullmatch(r"\d+ ms", page.inner_text("[data-testid=request-latency]").strip())
    assert re.fullmatch(r"\d+ ms", page.inner_text("[data-testid=request-ttft]").strip())
    assert page.inner_text("[data-testid=request-cost]").strip().startswith("$")
    assert page.locator("[data-testid=request-facts]", has_text="request detail").count() == 1  # the key's name
    assert page.locator("[data-testid=request-no-capture]").count() == 1  # the organisation did not opt in
    screenshot(page, "usage-request-detail")
