"""The console's main journeys in headless Chromium against the running platform: sign-in with TOTP, a key created
and copied, a streamed playground chat, a simulator deployment going READY live with its engine's output in the log
panel, the request on the dashboard, and a viewer who can neither press nor forge a change. Each page it passes is
saved as a screenshot."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import SERVED_MODEL, screenshot
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

# Samples the answer's length whenever the page changes it: the proof that it grows token by token.
RECORD_GROWTH = """() => {
  window.__answerLengths = [];
  const log = document.querySelector('[data-testid=playground-output]');
  new MutationObserver(() => {
    const answer = log.querySelector('[data-testid=playground-message-assistant] .msg-text');
    if (answer) window.__answerLengths.push(answer.textContent.length);
  }).observe(log, { childList: true, subtree: true, characterData: true });
}"""


def playground_chat(page: Any, console: Any, prompt: str) -> str:
    """Send one prompt in the playground and wait for the streamed answer and its recorded usage; returns it."""
    page.goto(console.url(f"/console/playground/?org={console.org_slug}"))
    page.select_option("[data-testid=playground-model]", SERVED_MODEL)
    page.fill("#pg-max-tokens", "48")
    page.evaluate(RECORD_GROWTH)
    page.fill("[data-testid=playground-prompt]", prompt)
    page.click("[data-testid=playground-send]")
    page.wait_for_selector("[data-testid=playground-meta]")
    page.wait_for_selector("#pg-send:not([disabled])")
    return page.inner_text("[data-testid=playground-message-assistant] .msg-text")


def test_the_owner_signs_in_with_a_password_then_a_totp_code(owner_signin, fresh_context, console):
    assert owner_signin.steps == ["/console/login/verify/", "/console/"]
    assert any(c["name"] == "sessionid" for c in owner_signin.state["cookies"])

    page = fresh_context.new_page()
    page.goto(console.url("/console/login/"))
    screenshot(page, "login")
    page.fill("#id_email", console.owner_email)
    page.fill("#id_password", "correct horse battery staple")
    page.click("[data-testid=login-form] button[type=submit]")
    page.fill("#id_code", "000000")
    page.click("[data-testid=login-verify-form] button[type=submit]")
    assert "not valid" in page.inner_text("main")
    page.goto(console.url("/console/dashboard/"))
    assert "/console/login/" in page.url  # no session without the second factor


def test_a_new_keys_secret_is_shown_once_and_the_button_copies_it(owner_page, console):
    page = owner_page
    page.goto(console.url("/console/keys/"))
    if not page.is_visible("[data-testid=key-name]"):
        page.click("[data-testid=open-create-key]")
    page.fill("[data-testid=key-name]", "browser-checkout")
    page.click("[data-testid=create-key]")
    secret = page.inner_text("[data-testid=key-secret]").strip()
    assert len(secret) > 20
    screenshot(page, "key-secret")

    page.click("[data-testid=copy-key]")
    page.wait_for_function("() => document.getElementById('copy-status').textContent.trim() !== ''")
    assert page.evaluate("() => navigator.clipboard.readText()") == secret

    page.click("[data-testid=key-secret-done]")
    page.wait_for_selector("[data-testid=key-state]")
    assert secret not in page.content()
    page.goto(console.url("/console/keys/secret/"))
    assert secret not in page.content()  # shown once: the session forgot it
    page.goto(console.url("/console/keys/"))
    assert page.locator("[data-testid=key-row]", has_text="browser-checkout").count() == 1
    screenshot(page, "keys")


def test_the_playground_streams_the_answer_token_by_token(owner_page, console):
    page = owner_page
    answer = playground_chat(page, console, "Tell me about streaming.")
    lengths = page.evaluate("() => window.__answerLengths")
    growth = sorted(set(n for n in lengths if n > 0))
    assert answer.strip()
    assert len(growth) >= 5, lengths  # many partial answers, not one final paint
    assert growth[-1] == len(answer)
    page.wait_for_selector("[data-testid=playground-meta][data-recorded=true]", timeout=20_000)
    meta = page.inner_text("[data-testid=playground-meta]")
    assert re.search(r"\d+ prompt \+ \d+ completion tokens", meta), meta
    assert "guardrails:" in meta
    screenshot(page, "playground")


def test_a_simulator_deployment_turns_ready_live_without_a_reload(owner_page, console):
    page = owner_page
    page.goto(console.url("/console/deployments/"))
    screenshot(page, "deployments")
    page.select_option("[data-testid=deployment-create-pool]", "simulator")
    page.fill("[data-testid=deployment-create-name]", "browser-live")
    page.fill("[data-testid=deployment-create-model]", "inferia/sim-model")
    page.click("[data-testid=deployment-create-submit]")
    badge = page.locator("[data-testid=deployment-state-badge]")
    badge.wait_for()
    first_state = badge.get_attribute("data-state")
    assert first_state != "ready"
    page.evaluate("() => { window.__sameDocument = true; }")  # lost if the page reloads

    page.wait_for_selector("[data-testid=deployment-state-badge][data-state=ready]", timeout=60_000)
    assert page.evaluate("() => window.__sameDocument === true")
    assert badge.inner_text().strip().lower() == "ready"
    page.wait_for_selector("#replica-rows .badge-ready")
    # The engine's output, read by the worker while the replica started, arrived in the log panel over the socket.
    logs = page.locator("[data-testid=deployment-logs]")
    assert (logs.get_attribute("role"), logs.get_attribute("aria-live")) == ("log", "polite")
    started = logs.locator(".log-line", has_text="listening on")
    started.first.wait_for(timeout=20_000)
    assert "browser-live" in started.first.inner_text()
    assert page.evaluate("() => window.__sameDocument === true")
    screenshot(page, "deployment-detail")


def test_a_playground_request_appears_on_the_dashboard(owner_page, console):
    page = owner_page
    dashboard = console.url(f"/console/dashboard/?org={console.org_slug}&range=24h")
    page.goto(dashboard)
    before = int(page.inner_text("[data-testid=stat-requests]").strip() or 0)
    playground_chat(page, console, "Count me on the dashboard.")

    def requests_counted() -> int:
        page.goto(dashboard)
        return int(page.inner_text("[data-testid=stat-requests]").strip() or 0)

    # The usage worker flushes every couple of seconds.
    eventually(lambda: requests_counted() > before, timeout=30, interval=1, what="the request on the dashboard")
    assert page.locator("[data-testid=top-models]", has_text=SERVED_MODEL).count() == 1
    page.wait_for_selector("[data-chart=requests] canvas")
    screenshot(page, "dashboard")


def test_a_viewer_has_no_buttons_to_press_and_a_forged_post_is_refused(viewer_page, console):
    page = viewer_page
    page.goto(console.url(f"/console/deployments/{console.deployment_id}/"))
    assert page.locator("[data-testid=read-only-note]").is_visible()
    assert page.locator("[data-testid=deployment-stop]").count() == 0
    assert page.locator("[data-testid=deployment-scale]").count() == 0

    page.goto(console.url(f"/console/playground/?org={console.org_slug}"))
    assert page.locator("[data-testid=playground-read-only]").is_visible()
    assert page.locator("[data-testid=playground-send]").count() == 0

    page.goto(console.url("/console/keys/"))
    assert page.locator("[data-testid=create-key]").count() == 0

    # The same POST the owner's Stop button sends, forged from the viewer's page with a valid CSRF token.
    page.goto(console.url(f"/console/deployments/{console.deployment_id}/"))
    status = page.evaluate(
        """async (path) => {
            const token = document.querySelector('input[name=csrfmiddlewaretoken]').value;  // the sign-out form's
            const response = await fetch(path, {
              method: 'POST', credentials: 'same-origin', redirect: 'manual',
              headers: { 'X-CSRFToken': token, 'Content-Type': 'application/x-www-form-urlencoded' },
              body: 'csrfmiddlewaretoken=' + encodeURIComponent(token),
            });
            return response.status;
        }""",
        f"/console/deployments/{console.deployment_id}/stop/",
    )
    assert status == 403
    page.reload()
    assert page.get_attribute("[data-testid=deployment-state-badge]", "data-state") == "ready"


PAGES = {
    "policies": "/console/policies/",
    "templates": "/console/templates/",
    "usage": "/console/usage/",
    "audit": "/console/audit/",
    "members": "/console/members/",
}


def test_every_main_page_renders_for_the_owner(owner_page, console):
    page = owner_page
    for name, path in PAGES.items():
        response = page.goto(console.url(f"{path}?org={console.org_slug}"))
        assert response is not None, name
        assert response.status == 200, (name, response.status)
        assert page.locator("main h1").count() >= 1, name
        screenshot(page, name)


def test_a_live_deployment_page_keeps_one_connection(owner_page, console):
    """The live panel used to reconnect every 5-6 s (Redis read timeouts in the channel layer, with tracebacks in
    the web log): over 15 s it keeps the one WebSocket it opened, and the log stays clean."""
    page = owner_page
    sockets: list[Any] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    log_before = len(console.process.output)
    page.goto(console.url(f"/console/deployments/{console.deployment_id}/"))
    page.wait_for_selector("[data-testid=deployment-logs] .log-line")
    page.wait_for_timeout(15_000)
    assert len(sockets) == 1
    assert not sockets[0].is_closed()
    assert "TimeoutError" not in console.process.output[log_before:]
