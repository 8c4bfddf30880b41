"""A prompt template made in the console's editor, in headless Chromium against the running platform: message rows
added and removed in place, variables listed as placeholders are typed, the example `/v1/chat/completions` body on
the template's page, the playground opened on it with its variables prefilled, and the audit log entry that names
the template and lists what it was created with; no page breaks the Content-Security-Policy on the way."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.browser.conftest import SERVED_MODEL, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def _variables(page) -> list[str]:
    return page.eval_on_selector_all(
        "[data-testid=template-variables] [data-variable]", "items => items.map(i => i.dataset.variable)"
    )


def test_a_template_made_in_the_editor_shows_its_request_and_its_audit_entry(owner_page, console):
    page = owner_page
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(console.url(f"/console/templates/?org={console.org_slug}"))
    page.click("[data-testid=open-create-template]")
    page.fill("[data-testid=template-name]", "support-reply")
    page.fill("[data-testid=template-description]", "Replies to support tickets")

    rows = page.locator("[data-testid=template-message-row]")
    assert rows.count() == 2  # the starting system and user rows
    rows.nth(0).locator("[data-testid=template-message-content]").fill("You answer questions about {{product}}.")
    rows.nth(1).locator("[data-testid=template-message-remove]").check()
    page.click("[data-testid=template-message-add]")
    assert rows.count() == 3
    added = rows.nth(2)
    added.locator("[data-testid=template-message-role]").select_option("assistant")
    added.locator("[data-testid=template-message-content]").fill(
        "Hello {{ customer }}, how can I help with {{product}}?"
    )
    assert _variables(page) == ["product", "customer"]  # {{question}} left with the removed row
    page.fill("#var-product", "Inferia")
    screenshot(page, "template-editor")
    page.click("[data-testid=template-create]")

    page.wait_for_selector("[data-testid=template-example]")
    assert page.locator("[data-testid=template-latest] li").count() == 2
    assert page.inner_text("[data-testid=template-variables-field]") == '"template_variables"'
    example = json.loads(page.inner_text("[data-testid=template-example]"))
    assert example["template"] == "support-reply"
    assert example["template_variables"] == {"product": "Inferia", "customer": "<customer>"}
    screenshot(page, "template-detail")
    detail_url = page.url

    page.click("[data-testid=template-try]")
    page.wait_for_selector("[data-testid=playground-template]")
    assert page.input_value("[data-testid=playground-template]") == "support-reply@latest"
    prefilled = json.loads(page.input_value("[data-testid=playground-template-variables]"))
    assert prefilled == {"product": "Inferia", "customer": ""}
    page.fill("[data-testid=playground-template-variables]", json.dumps({"customer": "Ada"}))
    page.select_option("[data-testid=playground-model]", SERVED_MODEL)
    page.fill("#pg-max-tokens", "16")
    page.fill("[data-testid=playground-prompt]", "Where is my parcel?")
    page.click("[data-testid=playground-send]")
    page.wait_for_selector("[data-testid=playground-meta]")
    assert page.locator(".msg-error").count() == 0
    page.click("[data-testid=playground-copy-curl]")
    page.wait_for_function("() => document.querySelector('[data-testid=playground-copy-curl]').dataset.curl")
    curl = page.get_attribute("[data-testid=playground-copy-curl]", "data-curl")
    body = json.loads(shlex.split(curl.replace("\\\n", " "))[-1])
    assert body["template"] == "support-reply@latest"
    assert body["template_variables"] == {"customer": "Ada"}

    page.goto(console.url(f"/console/audit/?org={console.org_slug}&action=prompt_template."))
    row = page.locator("[data-testid=audit-row][data-action='prompt_template.create']").first
    target = row.locator("[data-testid=audit-target]")
    assert target.inner_text().strip() == "Prompt template \u2018support-reply\u2019"
    changes = row.locator("[data-testid=audit-change]")
    fields = changes.evaluate_all("rows => rows.map(r => r.dataset.field)")
    assert {"name", "description", "messages", "variables"} <= set(fields)
    assert "note" not in fields  # empty before and after: not a change to show
    name_change = row.locator("[data-testid=audit-change][data-field=name]").inner_text()
    assert re.fullmatch(r"Name\s+—\s+→\s+support-reply", name_change.strip()), name_change
    messages = row.locator("[data-testid=audit-change][data-field=messages]").inner_text()
    assert "system: You answer questions about {{product}}." in messages
    assert "assistant: Hello {{ customer }}, how can I help with {{product}}?" in messages
    variables = row.locator("[data-testid=audit-change][data-field=variables]").inner_text()
    assert "product = Inferia" in variables
    assert "customer (required)" in variables
    assert "owner@browser.test" in row.locator("[data-testid=audit-actor]").inner_text()
    screenshot(page, "audit-template-entry")

    target.locator("a").click()
    page.wait_for_selector("[data-testid=template-example]")
    assert page.url == detail_url
    assert violations == []  # the editor's script is a static file, as the policy requires
