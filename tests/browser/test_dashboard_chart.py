"""The dashboard's charts in a real browser: at every range the time axis has a few readable labels that do not
overlap (measured on the chart's own canvas, with its font). Each range is saved as a screenshot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.browser.conftest import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

# For every chart of the page: its x-axis labels, and the narrowest gap in pixels between two neighbouring labels
# (negative when they overlap), from uPlot's ticks and the width of each label in the axis font.
AXIS_LABELS_JS = """
() => Array.from(document.querySelectorAll("[data-chart]")).map((el) => {
  const u = el.uplot, axis = u.axes[0], ctx = u.ctx;
  ctx.save();
  ctx.font = axis.font[0];
  const boxes = axis._splits.map((split, i) => {
    const centre = u.valToPos(split, "x", true), width = ctx.measureText(axis._values[i]).width;
    return [centre - width / 2, centre + width / 2];
  });
  ctx.restore();
  let gap = Infinity;
  for (let i = 1; i < boxes.length; i++) gap = Math.min(gap, boxes[i][0] - boxes[i - 1][1]);
  return { chart: el.dataset.chart, labels: axis._values, gap: gap };
})
"""


@pytest.fixture(scope="module")
def month_of_usage(console, django_db_blocker) -> Iterator[None]:
    """Hourly usage over the last 30 days for the console's organisation, at every grain, committed (module scope:
    before any test's transaction) so that the server sees it."""
    with django_db_blocker.unblock():
        from apps.orgs.models import Organization
        from apps.usage.models import UsageRollup
        from apps.usage.rollups import usage_rollups_rebuild

        organization = Organization.objects.get(slug=console.org_slug)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        rows = [
            UsageRollup(
                hour=now - timedelta(hours=h), organization=organization, model="chart-model",
                requests=10 + (h * 7) % 23, errors=h % 3, prompt_tokens=1000, completion_tokens=400, cost_micros=5_000,
            )
            for h in range(30 * 24)
        ]  # fmt: skip
        UsageRollup.objects.bulk_create(rows)
        usage_rollups_rebuild(since=now - timedelta(days=31), until=now + timedelta(days=1))
    yield
    with django_db_blocker.unblock():
        UsageRollup.objects.filter(model="chart-model").delete()
        usage_rollups_rebuild(since=now - timedelta(days=31), until=now + timedelta(days=1))


@pytest.mark.parametrize("range_name", ["24h", "7d", "30d"])
def test_the_time_axis_labels_are_few_and_never_overlap(owner_page, console, month_of_usage, range_name):
    page = owner_page
    page.goto(console.url(f"/console/dashboard/?org={console.org_slug}&range={range_name}"))
    page.wait_for_selector("[data-chart=requests] canvas")
    axes: list[dict[str, Any]] = page.evaluate(AXIS_LABELS_JS)
    screenshot(page, f"dashboard-{range_name}")
    assert page.inner_text("[data-testid=stat-requests]").strip() not in ("", "0")
    assert len(axes) == 4
    for axis in axes:
        assert 3 <= len(axis["labels"]) <= 16, axis
        assert all(axis["labels"]), axis
        assert axis["gap"] >= 8, axis  # at least a few pixels of air between two labels
