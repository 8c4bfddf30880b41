"""The latency, throughput, failure and engine-load charts and tiles that the dashboard and a deployment's page
share: from the usage app's latency series and the compute app's load series to what the template and
`static/console/metric_charts.js` draw. Every tile and chart carries its unit; a figure with nothing behind it
reads "No data" (a range without requests has no latency and no error rate, not a zero one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apps.compute.load_selectors import LoadSeries
from apps.usage.latency_selectors import LatencySeries

NO_DATA = "No data"
COLOURS = {
    "p50": "#0f766e",
    "p95": "#4338ca",
    "4xx": "#b45309",
    "5xx": "#b91c1c",
    "running": "#4338ca",
    "waiting": "#b45309",
    "kv": "#0f766e",
    "tps": "#0f766e",
}


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    testid: str
    hint: str = ""


@dataclass(frozen=True)
class Series:
    label: str
    key: str  # its colour in COLOURS (and the legend's `swatch-<key>` class in console.css)
    values: list[Any]

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "colour": COLOURS[self.key], "values": self.values}


@dataclass(frozen=True)
class Chart:
    """One chart: its element name, title, unit (the y axis' and the tooltip's), text alternative, time axis and
    series. `empty` when nothing was recorded in the range: the page then says "No data" instead of drawing."""

    name: str
    title: str
    unit: str
    description: str
    x: list[int]
    series: list[Series]
    empty_when: bool | None = None  # overrides "every value is missing" (counts are 0, not missing, when idle)

    @property
    def empty(self) -> bool:
        if self.empty_when is not None:
            return self.empty_when
        return all(value is None for series in self.series for value in series.values)

    def as_json(self) -> dict[str, Any]:
        return {"x": self.x, "unit": self.unit, "series": [series.as_json() for series in self.series]}


def _ms(value: float | None) -> str:
    if value is None:
        return NO_DATA
    return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.0f} ms"


def _count(value: int, requests: int) -> str:
    if not requests:
        return NO_DATA
    return f"{value:,} request" if value == 1 else f"{value:,} requests"


def _rate(value: float) -> str:
    # Three significant figures below 10 (a quiet day's 0.00144 tokens/s is not "0.0"), one decimal above.
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    return f"{seconds // 60} minutes" if seconds >= 120 else f"{seconds} seconds"


def _peak(values: list[float | None]) -> str:
    return f"{max((v for v in values if v is not None), default=0):g}"


def metric_panels(*, latency: LatencySeries, load: LoadSeries, bucket: str, range_name: str) -> dict[str, Any]:
    """Tiles, charts and the JSON the charts draw from (`data`, for the page's JSON island), for a page's context."""
    totals = latency.totals
    requests = totals.requests
    tokens_per_second = NO_DATA if totals.tokens_per_second is None else f"{_rate(totals.tokens_per_second)} tokens/s"

    def share(count: int) -> str:
        return f"{100 * count / requests:.1f}% of requests" if requests else ""

    tiles = [
        Tile("TTFT p50", _ms(totals.ttft_p50_ms), "tile-ttft-p50", "time to first token"),
        Tile("TTFT p95", _ms(totals.ttft_p95_ms), "tile-ttft-p95", "time to first token"),
        Tile("Latency p50", _ms(totals.latency_p50_ms), "tile-latency-p50", "end to end"),
        Tile("Latency p95", _ms(totals.latency_p95_ms), "tile-latency-p95", "end to end"),
        Tile("Output", tokens_per_second, "tile-tokens-per-second", "completion tokens per second, range average"),
        Tile("Client errors (4xx)", _count(totals.client_errors, requests), "tile-client-errors",
             share(totals.client_errors)),
        Tile("Server errors (5xx)", _count(totals.server_errors, requests), "tile-server-errors",
             share(totals.server_errors)),
    ]  # fmt: skip
    per = f"per {bucket} over the last {range_name}"
    load_per = f"per {_duration(load.step_seconds)} over the last {range_name}"
    x, load_x = latency.buckets, load.buckets
    charts = [
        Chart("ttft", "Time to first token", "ms",
              f"Time to first token, p50 and p95 in milliseconds {per}; over the range p50 "
              f"{_ms(totals.ttft_p50_ms)}, p95 {_ms(totals.ttft_p95_ms)}.",
              x, [Series("p50", "p50", latency.ttft_p50_ms),
                  Series("p95", "p95", latency.ttft_p95_ms)]),
        Chart("latency", "End-to-end latency", "ms",
              f"End-to-end latency, p50 and p95 in milliseconds {per}; over the range p50 "
              f"{_ms(totals.latency_p50_ms)}, p95 {_ms(totals.latency_p95_ms)}.",
              x, [Series("p50", "p50", latency.latency_p50_ms),
                  Series("p95", "p95", latency.latency_p95_ms)]),
        Chart("throughput", "Output tokens per second", "tokens/s",
              f"Completion tokens per second {per}; over the range {tokens_per_second}.",
              x, [Series("Output", "tps", latency.tokens_per_second)]),
        Chart("failures", "Failed requests", "requests",
              f"Client errors (4xx) and server or upstream errors (5xx), in requests {per}; over the range "
              f"{totals.client_errors} and {totals.server_errors}.",
              x, [Series("4xx client", "4xx", latency.client_errors),
                  Series("5xx server", "5xx", latency.server_errors)], empty_when=requests == 0),
        Chart("load", "Requests running and waiting", "requests",
              f"Highest requests running and waiting on the engines {load_per}; peak {_peak(load.running)} running, "
              f"{_peak(load.waiting)} waiting.",
              load_x, [Series("Running", "running", load.running),
                       Series("Waiting", "waiting", load.waiting)]),
        Chart("kv_cache", "KV-cache use", "%",
              f"Highest KV-cache use of any replica, in percent, {load_per}; peak {_peak(load.kv_cache_percent)}%.",
              load_x, [Series("KV cache", "kv", load.kv_cache_percent)]),
    ]  # fmt: skip
    return {"tiles": tiles, "charts": charts, "data": {chart.name: chart.as_json() for chart in charts}}


__all__ = ["NO_DATA", "Chart", "Series", "Tile", "metric_panels"]
