"""The fleet pages in headless Chromium against the running platform: the deploy form's pool select stays inside its
column, the deployment page's "Copy curl" and "Open in playground", and the playground's Stop, finish reason, cost
and "Copy as curl". Static scripts only: the console's CSP refuses inline ones, so these prove the buttons work
under it."""

from __future__ import annotations

import shlex
import time
from typing import Any

import pytest

from tests.browser.conftest import SERVED_MODEL, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

BOXES = """() => {
  const select = document.querySelector('[data-testid=deployment-create-pool]');
  const field = select.closest('.field');
  const next = field.nextElementSibling;
  const box = (el) => { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top}; };
  return {select: box(select), field: box(field), next: next ? box(next) : null};
}"""


def test_the_pool_select_stays_inside_its_column(owner_page, console):
    page = owner_page
    page.set_viewport_size({"width": 900, "height": 900})  # narrow columns: where the long options overflowed
    page.goto(console.url("/console/deployments/"))
    boxes = page.evaluate(BOXES)
    screenshot(page, "deployments-create-narrow")
    assert boxes["select"]["right"] <= boxes["field"]["right"] + 0.5
    if boxes["next"] is not None and boxes["next"]["top"] == boxes["field"]["top"]:  # the next field on the same row
        assert boxes["select"]["right"] <= boxes["next"]["left"]


def test_the_deployment_page_copies_a_curl_command_and_opens_the_playground(owner_page, console):
    page = owner_page
    page.goto(console.url(f"/console/deployments/{console.deployment_id}/"))
    page.click("[data-testid=deployment-copy-curl]")
    page.wait_for_function("() => document.getElementById('curl-status').textContent.trim() !== ''")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    words = shlex.split(copied.replace("\\\n", " "))
    assert words[:2] == ["curl", console.url("/v1/chat/completions")]
    assert "Authorization: Bearer $INFERIA_API_KEY" in words
    assert f'"model": "{SERVED_MODEL}"' in words[-1]

    page.click("[data-testid=deployment-open-playground]")
    page.wait_for_selector("[data-testid=playground-model]")
    assert page.input_value("[data-testid=playground-model]") == SERVED_MODEL
    screenshot(page, "playground-from-deployment")


def test_an_answer_shows_its_finish_reason_and_cost(owner_page, console):
    page = owner_page
    page.goto(console.url(f"/console/playground/?org={console.org_slug}&model={SERVED_MODEL}"))
    page.fill("#pg-max-tokens", "8")
    page.fill("[data-testid=playground-prompt]", "Say something short.")
    page.click("[data-testid=playground-send]")
    page.wait_for_selector("[data-testid=playground-meta][data-recorded=true]", timeout=30_000)
    meta = page.inner_text("[data-testid=playground-meta]")
    assert "finish: " in meta
    assert page.get_attribute("[data-testid=playground-meta]", "data-finish-reason") in ("length", "stop")
    assert "cost " in meta
    screenshot(page, "playground-finish-and-cost")


def test_stop_ends_a_long_answer(owner_page, console):
    page = owner_page
    page.goto(console.url(f"/console/playground/?org={console.org_slug}&model={SERVED_MODEL}"))
    page.fill("#pg-max-tokens", "4000")  # about a minute of tokens at the simulator's pace
    page.fill("[data-testid=playground-prompt]", "Tell me a very long story.")
    page.click("[data-testid=playground-send]")
    answer = page.locator("[data-testid=playground-message-assistant] .msg-text")
    page.wait_for_function(
        "() => (document.querySelector('[data-testid=playground-message-assistant] .msg-text') || {}).textContent"
        "?.length > 20"
    )
    assert page.is_visible("[data-testid=playground-stop]")
    page.click("[data-testid=playground-stop]")
    page.wait_for_selector("[data-testid=playground-meta][data-finish-reason=stopped]")
    assert not page.is_visible("[data-testid=playground-stop]")
    assert page.is_enabled("[data-testid=playground-send]")
    stopped_at = len(answer.inner_text())
    time.sleep(1.0)
    assert len(answer.inner_text()) == stopped_at  # nothing more arrives
    screenshot(page, "playground-stopped")


def test_the_playground_copies_the_conversation_as_curl(owner_page, console):
    page: Any = owner_page
    page.goto(console.url(f"/console/playground/?org={console.org_slug}&model={SERVED_MODEL}"))
    page.fill("#pg-system", "It's a test.")
    page.fill("[data-testid=playground-prompt]", "Hello there")
    page.click("[data-testid=playground-copy-curl]")
    page.wait_for_function("() => document.getElementById('pg-status').textContent.includes('copied')")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    words = shlex.split(copied.replace("\\\n", " "))
    assert words[:2] == ["curl", console.url("/v1/chat/completions")]
    assert "Authorization: Bearer $INFERIA_API_KEY" in words
    import json

    body = json.loads(words[-1])
    assert body["model"] == SERVED_MODEL
    assert body["messages"] == [
        {"role": "system", "content": "It's a test."},
        {"role": "user", "content": "Hello there"},
    ]
