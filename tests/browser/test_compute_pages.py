"""The compute pages in headless Chromium against the running platform: a provider made with credentials typed into
a password input that the saved page never shows again, a pool on it priced per GPU-hour, and the delete buttons
(confirmed through the static script) refused while something uses the row, then done."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

SECRET = "sk-browserProviderSecret-e4b2"


def test_a_provider_and_its_pool_are_made_and_deleted_and_the_credentials_never_come_back(owner_page, console):
    from apps.compute.credentials import provider_credentials
    from apps.compute.models import ComputePool, Provider

    page = owner_page
    page.goto(console.url("/console/compute/providers/"))
    page.click("[data-testid=provider-new]")
    page.fill("#provider-name", "browser-hosted")
    page.select_option("#provider-kind", "external")
    page.fill("#provider-config", '{"base_urls": ["http://93.184.215.14:8000"]}')
    assert page.get_attribute("[data-testid=provider-credentials]", "type") == "password"
    page.fill("[data-testid=provider-credentials]", '{"api_key": "%s"}' % SECRET)  # noqa: UP031
    page.click("[data-testid=provider-save]")
    page.wait_for_url(re.compile(r"/console/compute/providers/\d+/$"))
    screenshot(page, "compute-provider-saved")
    assert SECRET not in page.content()
    assert page.input_value("[data-testid=provider-credentials]") == ""
    provider = Provider.objects.get(organization__slug=console.org_slug, name="browser-hosted")
    assert provider_credentials(provider)["api_key"] == SECRET

    page.goto(console.url("/console/compute/pools/new/"))
    page.fill("#pool-name", "browser-pool")
    page.select_option("#pool-provider", str(provider.pk))
    page.fill("#pool-gpu", "L4")
    page.fill("#pool-nodes", "3")
    page.fill("[data-testid=pool-cost-input]", "0.85")
    page.click("[data-testid=pool-save]")
    page.wait_for_url(re.compile(r"/console/compute/pools/\d+/$"))
    pool = ComputePool.objects.get(name="browser-pool")
    assert (pool.provider_id, pool.max_nodes, pool.cost_per_gpu_hour_micros) == (provider.pk, 3, 850_000)

    page.goto(console.url(f"/console/compute/providers/{provider.pk}/"))
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=provider-delete]")
    page.wait_for_selector("text=Pools still use this provider: browser-pool")
    assert Provider.objects.filter(pk=provider.pk).exists()

    page.goto(console.url(f"/console/compute/pools/{pool.pk}/"))
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=pool-delete]")
    page.wait_for_url(re.compile(r"/console/compute/pools/$"))
    page.goto(console.url(f"/console/compute/providers/{provider.pk}/"))
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=provider-delete]")
    page.wait_for_url(re.compile(r"/console/compute/providers/$"))
    assert not Provider.objects.filter(pk=provider.pk).exists()
