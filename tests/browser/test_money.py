"""Budgets in the currency, in a real browser against the running platform: a key created with a budget of 5 is
listed with "$5.00/day" and its requests go through (5 means five dollars, not five micro-units); lowered to
0.000001, the console warns that one request costs more, and `/v1` refuses with a 429 that names the budget in
dollars."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import SERVED_MODEL, screenshot
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

# $1 per 1M prompt tokens and $2 per 1M completion tokens: a short chat costs a few hundred micro-units.
PRICES = {"price_input_per_mtok_micros": 1_000_000, "price_output_per_mtok_micros": 2_000_000}


@pytest.fixture(scope="module")
def priced(console, django_db_blocker) -> Iterator[None]:
    """The simulator deployment with prices (committed, so the server sees them; saved, so every gateway reloads
    its catalog), put back to what it was afterwards."""
    from apps.compute.models import ModelDeployment

    with django_db_blocker.unblock():
        deployment = ModelDeployment.objects.get(pk=console.deployment_id)
        before = {name: getattr(deployment, name) for name in PRICES}
        for name, value in PRICES.items():
            setattr(deployment, name, value)
        deployment.save(update_fields=list(PRICES))
    yield
    with django_db_blocker.unblock():
        for name, value in before.items():
            setattr(deployment, name, value)
        deployment.save(update_fields=list(before))


def chat(console: Any, secret: str) -> tuple[int, dict[str, Any]]:
    """One small chat completion with the key; (status, JSON answer)."""
    body = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "How much?"}], "max_tokens": 16}
    address = urlsplit(console.base_url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=15)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_a_budget_of_5_is_five_dollars_and_a_tiny_one_refuses_in_dollars(owner_page, console, priced):
    page = owner_page
    page.goto(console.url("/console/keys/"))
    if not page.is_visible("[data-testid=key-name]"):
        page.click("[data-testid=open-create-key]")
    page.fill("[data-testid=key-name]", "browser-budget")
    page.fill("[data-testid=key-allowed-models]", SERVED_MODEL)
    page.fill("[data-testid=key-requests-per-minute]", "600")
    page.fill("[data-testid=key-budget-per-day]", "5")
    page.click("[data-testid=create-key]")
    secret = page.inner_text("[data-testid=key-secret]").strip()

    page.goto(console.url("/console/policies/?level=key"))
    row = page.locator("[data-testid=policy-row]", has_text="browser-budget")
    assert "$5.00/day" in row.inner_text()
    screenshot(page, "money-policies")

    status, answer = eventually(
        lambda: (lambda result: result if result[0] != 401 else None)(chat(console, secret)),
        timeout=10,
        what="the new key to be known to the gateway",
    )
    assert status == 200, answer  # five dollars, not five micro-units: not refused at once
    assert answer["usage"]["completion_tokens"] > 0

    row.locator("[data-testid=policy-open]").click()
    page.fill("[data-testid=edit-budget_per_day]", "0.000001")
    page.click("[data-testid=policy-save]")
    notices = page.inner_text("main")
    assert "below what one request of 1,000 prompt and 500 completion tokens costs" in notices
    assert "($0.000001)" in notices
    screenshot(page, "money-policy-warning")
    page.goto(console.url("/console/policies/?level=key"))
    assert "$0.000001/day" in page.locator("[data-testid=policy-row]", has_text="browser-budget").inner_text()

    status, answer = eventually(
        lambda: (lambda result: result if result[0] == 429 else None)(chat(console, secret)),
        timeout=10,
        what="the lowered budget to reach the gateway",
    )
    error = answer["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
    assert error["message"].startswith("Budget exceeded: key budget per day $0.000001 (spent $0.")
    assert "this request alone may cost up to $0.0000" in error["message"]

    page.goto(console.url("/console/keys/?q=browser-budget"))
    page.locator("[data-testid=key-row]", has_text="browser-budget").locator("a").first.click()
    effective = page.inner_text("[data-testid=key-effective-policy]")
    assert "$0.000001" in effective
    screenshot(page, "money-key")
