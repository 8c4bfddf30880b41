"""`make bench`'s comparisons: the other protocols with chat completions (`tests/bench/run.py --endpoint a,b`),
and the gateway with the engine, run by run."""

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


def test_at_once_each_round_is_the_protocols_cpu_less_chats_in_that_round():
    from tests.bench.bench_edges import edge_cost

    # The machine slowed down in the third round, for both processes alike.
    rounds = [{"chat": 1.40, "ollama": 1.55}, {"chat": 1.45, "ollama": 1.60}, {"chat": 2.00, "ollama": 2.20}]

    cost = edge_cost(rounds, "ollama")

    assert cost["added_web_cpu_ms_rounds"] == [0.15, 0.15, 0.2]
    assert cost["added_web_cpu_ms"] == 0.15
    assert cost["chat_web_cpu_ms_per_request"] == 1.45
    assert cost["web_cpu_ms_per_request"] == 1.6


def test_at_once_the_processes_swap_endpoints_every_round():
    """A process that pays more for everything (+0.2 ms) serves chat completions in half the rounds and the protocol
    in the other half: over the rounds, the protocol's own cost is what is left."""
    from tests.bench.bench_edges import edge_cost, rounds_endpoints

    schedule = rounds_endpoints("messages", 4)
    own = {"chat": 1.0, "messages": 1.1}
    rounds = [{endpoint: own[endpoint] + (0.2 if process == 0 else 0.0) for process, endpoint in enumerate(pair)}
              for pair in schedule]  # fmt: skip

    assert schedule == [("chat", "messages"), ("messages", "chat")] * 2
    assert edge_cost(rounds, "messages")["added_web_cpu_ms_mean"] == 0.1


def test_added_ttft_is_also_given_run_by_run_against_the_engine_measured_just_before():
    from tests.bench.run import added_each_run

    direct = [{"ttft_p50_ms": ms} for ms in (0.50, 0.90, 0.40)]
    gateway = [{"ttft_p50_ms": ms} for ms in (2.40, 2.60, 2.45)]

    assert added_each_run(direct, gateway, "ttft_p50_ms") == [1.9, 1.7, 2.05]
    with pytest.raises(ValueError):
        added_each_run(direct, gateway[:2], "ttft_p50_ms")
