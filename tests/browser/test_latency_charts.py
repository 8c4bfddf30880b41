"""The latency charts in a real browser: a few playground requests to the simulated engine reach the rollups, then
the dashboard's and the deployment page's time-to-first-token charts draw them, each with a text alternative, and
hovering the bucket that holds them shows its values with their unit."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import screenshot
from tests.browser.test_console import playground_chat
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

# Where, in page pixels, the chart's newest bucket with a p95 value is drawn (None when it has none).
LAST_POINT_JS = """
(name) => {
  const el = document.querySelector(`[data-metric-chart="${name}"]`);
  const u = el && el.uplot;
  if (!u) return null;
  const p95 = u.data[2];
  let i = p95.length - 1;
  while (i >= 0 && p95[i] === null) i--;
  if (i < 0) return null;
  const over = u.over.getBoundingClientRect();
  return { x: over.left + u.valToPos(u.data[0][i], "x"), y: over.top + u.valToPos(p95[i], "y"), value: p95[i] };
}
"""


def _chart_with_data(page: Any, url: str, name: str) -> dict[str, Any]:
    def drawn() -> dict[str, Any] | None:
        page.goto(url)
        if page.locator(f'[data-metric-chart="{name}"]').count() == 0:
            return None  # "No data" until the usage worker has flushed the requests
        page.wait_for_selector(f'[data-metric-chart="{name}"] canvas')
        point: dict[str, Any] | None = page.evaluate(LAST_POINT_JS, name)
        return point

    return eventually(drawn, timeout=40, interval=1, what=f"the {name} chart with data")


def _hover_shows_the_value(page: Any, name: str) -> str:
    page.locator(f'[data-metric-chart="{name}"]').scroll_into_view_if_needed()
    point = page.evaluate(LAST_POINT_JS, name)  # in the viewport's coordinates, where the mouse moves
    # The newest bucket sits on the plot's right edge: a pixel or two inside it, the cursor snaps to that bucket.
    page.mouse.move(point["x"] - 2, point["y"])
    tooltip = page.locator(f'[data-testid="tooltip-{name}"]')
    tooltip.wait_for(state="visible")
    return tooltip.inner_text()


def test_requests_show_on_the_latency_charts_with_values_on_hover(owner_page, console):
    page = owner_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    for n in range(3):
        playground_chat(page, console, f"Time my first token, please ({n}).")

    dashboard = console.url(f"/console/dashboard/?org={console.org_slug}&range=24h")
    point = _chart_with_data(page, dashboard, "ttft")
    assert point["value"] > 0
    chart = page.locator('[data-metric-chart="ttft"]')
    assert chart.get_attribute("role") == "img"
    assert "milliseconds" in chart.get_attribute("aria-label")
    text = _hover_shows_the_value(page, "ttft")
    assert "p50" in text
    assert "p95" in text
    assert " ms" in text
    assert page.inner_text('[data-testid="tile-ttft-p95"]').endswith("ms")
    assert page.inner_text('[data-testid="tile-latency-p95"]') != "No data"
    screenshot(page, "dashboard-latency")

    deployment = console.url(f"/console/deployments/{console.deployment_id}/?range=24h")
    _chart_with_data(page, deployment, "latency")
    text = _hover_shows_the_value(page, "latency")
    assert "p95" in text
    assert " ms" in text or " s" in text
    screenshot(page, "deployment-latency")
    assert errors == []
