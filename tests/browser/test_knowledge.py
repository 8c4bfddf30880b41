"""A knowledge base made in headless Chromium against the running platform (web, worker and a simulated engine): a
vector store created from the console, a text file dropped onto the store's upload area, its ingestion followed
live until it completes with chunks (no reload: the WebSocket pushes it), and a search that ranks the right chunk
first. Static scripts only: the console's CSP refuses inline ones."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import SERVED_MODEL, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

HANDBOOK = "\n\n".join(
    [
        "The GPU nodes have 4.8 TB/s of HBM3e memory bandwidth and 141 GB of memory each.",
        "Simmer the tomato sauce for twenty minutes and season it with fresh basil.",
        "Income tax returns are due in April, and deductions lower the taxable amount.",
    ]
    * 12
)

# A file dropped onto the upload area, as the browser builds one from a drag out of the desktop.
DROP = """([name, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, {type: "text/plain"}));
  return data;
}"""


def test_a_store_is_created_filled_by_a_drop_ingested_live_and_searched(owner_page, console):
    from apps.knowledge.models import VectorStore

    page = owner_page
    page.goto(console.url(f"/console/knowledge/?org={console.org_slug}"))
    page.fill("[data-testid=store-name]", "Browser handbook")
    page.select_option("[data-testid=store-model]", SERVED_MODEL)
    page.fill("[data-testid=store-chunk]", "100")
    page.fill("[data-testid=store-overlap]", "0")
    page.click("[data-testid=create-store]")
    page.wait_for_url(re.compile(r"/console/knowledge/\d+/$"))
    store = VectorStore.objects.get(organization__slug=console.org_slug, name="Browser handbook")
    assert store.dimensions > 0
    assert store.embedding_model == SERVED_MODEL

    try:
        # The page's script puts the dropped file into the form and posts it; the page comes back with the file.
        page.wait_for_function("() => document.getElementById('live-status') !== null")
        transfer = page.evaluate_handle(DROP, ["handbook.txt", HANDBOOK])
        with page.expect_navigation():
            page.dispatch_event("[data-testid=upload-form]", "drop", {"dataTransfer": transfer})
        row = page.locator("[data-testid=store-file-row]")
        assert row.count() == 1
        assert "handbook.txt" in row.inner_text()

        # Ingestion happens in the worker; the WebSocket brings it to the page without a reload (the mark stays).
        page.evaluate("() => { window.sameDocument = true; }")
        page.wait_for_selector("[data-testid=store-file-row][data-status=completed]", timeout=60_000)
        assert page.evaluate("() => window.sameDocument === true")
        chunks = page.inner_text("[data-testid=store-file-chunk-count]")
        done, total = (int(part) for part in chunks.split("/"))
        assert done == total > 3
        assert page.inner_text("[data-testid=store-file-status]") == "completed"
        screenshot(page, "knowledge-store-ingested")

        page.fill("[data-testid=store-q]", "How much GPU memory bandwidth?")
        page.click("[data-testid=store-search]")
        page.wait_for_selector("[data-testid=search-hit]")
        first = page.locator("[data-testid=search-hit]").first
        assert "bandwidth" in first.locator("[data-testid=search-hit-text]").inner_text()
        assert first.locator("[data-testid=search-hit-file]").inner_text() == "handbook.txt"
        scores = [float(s) for s in page.locator("[data-testid=search-hit-score]").all_inner_texts()]
        assert scores == sorted(scores, reverse=True)
        screenshot(page, "knowledge-search")

        page.click("[data-testid=store-file-chunks]")
        page.wait_for_selector("[data-testid=chunk-list]")
        indexes = [
            int(i) for i in page.locator("[data-testid=chunk]").evaluate_all("els => els.map(e => e.dataset.index)")
        ]
        assert indexes == list(range(total))
    finally:
        page.goto(console.url(f"/console/knowledge/{store.pk}/"))
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("[data-testid=store-delete]")
        page.wait_for_url(re.compile(r"/console/knowledge/$"))
    assert not VectorStore.objects.filter(pk=store.pk).exists()
