"""An engine that always fails, end to end: the real worker and beat of `inferia start all` (the package's `platform`
fixture, with the back-off shortened to 0.5 s doubling up to 2 s), a deployment made through the REST API whose
inferia-sim replicas exit at start, and the crash-loop back-off ending in FAILED with the engine's own error, instead
of a new replica every few seconds for ever."""

from __future__ import annotations

import itertools
import time
from datetime import datetime

import pytest

from inferia_cli.remote import ApiClient
from tests.kit.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

FAILED_DEADLINE_S = 120.0
MAX_FAILURES = 5  # the default INFERIA_DEPLOYMENT_MAX_FAILURES
ENGINE_ERROR = "failure_rate must be between 0 and 1"  # what inferia-sim says before it exits


def test_an_engine_that_always_fails_ends_in_failed_with_its_error_and_stops_churning(platform):
    api = ApiClient(platform.base_url, platform.manage_key)
    org = platform.organization_id
    # A simulator whose engine refuses its arguments and exits: every replica fails once it has started.
    provider = api.post(
        "providers/",
        {"organization": org, "name": "crashing", "kind": "simulator", "config": {"sim": {"failure_rate": 2.0}}},
    )
    pool = api.post("pools/", {"organization": org, "provider": provider["id"], "name": "crashing", "max_nodes": 2})
    deployment = api.post(
        "deployments/",
        {
            "organization": org,
            "pool": pool["id"],
            "name": "crashing",
            "model_id": "inferia/sim-model",
            "served_model_name": "crashing",
            "engine": "inferia-sim",
        },
    )
    started = time.monotonic()

    current = eventually(
        lambda: (now := api.get(f"deployments/{deployment['id']}/"))["state"] == "failed" and now,
        timeout=FAILED_DEADLINE_S,
        interval=0.5,
        what="the deployment FAILED",
    )
    failed_after = time.monotonic() - started
    time.sleep(6)  # three periodic reconciles: a FAILED deployment starts nothing more
    replicas = sorted(api.get("replicas/", {"deployment": deployment["id"]})["results"], key=lambda r: r["id"])
    events = api.get(f"deployments/{deployment['id']}/events/")

    assert current["consecutive_failures"] == MAX_FAILURES
    assert ENGINE_ERROR in current["last_error"]
    assert current["state_reason"].startswith(f"gave up after {MAX_FAILURES} replica failures in a row; last: ")
    assert ENGINE_ERROR in current["state_reason"]
    assert len(replicas) == MAX_FAILURES, replicas  # one replica per attempt, then none
    assert {replica["state"] for replica in replicas} == {"stopped"}
    assert all(ENGINE_ERROR in replica["last_error"] for replica in replicas)
    assert events[0]["to_state"] == "failed"
    created = [datetime.fromisoformat(replica["created_at"]) for replica in replicas]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(created)]
    # Replacement 1 is at once; 2, 3 and 4 wait 0.5, 1 and 2 s after their failure (on top of the time to fail).
    assert all(gap >= wait for gap, wait in zip(gaps[1:], (0.5, 1.0, 2.0), strict=True)), gaps
    print(f"FAILED after {failed_after:.1f}s, {len(replicas)} replica rows, gaps between replicas {gaps}")
