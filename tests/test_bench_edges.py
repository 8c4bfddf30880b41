"""`make bench`'s comparison of the other protocols with chat completions (`tests/bench/run.py --endpoint a,b`)."""

from __future__ import annotations

import argparse

import pytest

from tests.bench.run import edge_measured, endpoints_parsed


def test_each_run_is_compared_with_the_lead_endpoints_run_beside_it():
    lead = [{"cpu_ms_per_request": cpu, "requests_per_s": 100.0, "errors": 0} for cpu in (0.40, 0.90, 0.41)]
    runs = [
        {"cpu_ms_per_request": cpu, "requests_per_s": 90.0, "errors": err}
        for cpu, err in ((0.55, 0), (1.00, 1), (0.50, 0))
    ]

    edge = edge_measured(runs, lead)

    # The machine slowed down in the second run, for both: the difference in the same run is what counts.
    assert edge["added_web_cpu_ms_runs"] == [0.15, 0.1, 0.09]
    assert edge["added_web_cpu_ms"] == 0.1
    assert edge["web_cpu_ms_per_request"] == 0.55
    assert edge["gateway_errors"] == 1


@pytest.mark.parametrize("text", ["chat,grpc", "chat,chat", ""])
def test_endpoints_are_distinct_known_ones(text):
    with pytest.raises(argparse.ArgumentTypeError):
        endpoints_parsed(text)


def test_endpoints_keep_their_order():
    assert endpoints_parsed("responses,chat") == ["responses", "chat"]
