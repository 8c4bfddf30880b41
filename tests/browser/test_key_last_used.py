"""A key used only on `/v1` shows when it was last used: the data plane records it through the usage flush (never a
database write on the hot path), where it used to read "never" on a key with dozens of requests."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.browser.conftest import SERVED_MODEL, screenshot
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


@pytest.fixture(scope="module")
def inference_key(console, django_db_blocker):
    """An inference key of the browser organisation, committed outside any test's transaction (module scope)."""
    from apps.keys.models import ApiKey
    from apps.keys.services import api_key_create
    from apps.orgs.models import Organization

    with django_db_blocker.unblock():
        issued = api_key_create(
            organization=Organization.objects.get(slug=console.org_slug), name="last used", scopes=["inference"]
        )
    yield issued
    with django_db_blocker.unblock():
        ApiKey.objects.filter(pk=issued.key.pk).delete()


def _chat(console, secret: str) -> None:
    body = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
    request = urllib.request.Request(  # noqa: S310 (the test's own server on loopback)
        console.url("/v1/chat/completions"),
        data=json.dumps(body).encode(),
        method="POST",
        headers={"authorization": f"Bearer {secret}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 200


def test_a_key_used_only_on_v1_shows_when_it_was_last_used(owner_page, console, inference_key):
    page = owner_page
    key_page = console.url(f"/console/keys/{inference_key.key.pk}/?org={console.org_slug}")
    page.goto(key_page)
    assert page.inner_text("[data-testid=key-last-used]").strip() == "never"

    for _ in range(3):
        _chat(console, inference_key.secret)

    def shown() -> str | None:
        page.goto(key_page)
        text = page.inner_text("[data-testid=key-last-used]").strip()
        return text if text != "never" else None

    last_used = eventually(shown, timeout=30, interval=1, what="the key's last use on its page")  # the flush runs
    assert last_used.endswith("ago")
    screenshot(page, "key-last-used")
