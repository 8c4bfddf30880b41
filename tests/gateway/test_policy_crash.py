"""A web process killed between admitting a request and settling it: the request's budget reservation stays held
until it is due, then the reconciliation gives it back (instead of it counting until the end of the day)."""

from __future__ import annotations

import contextlib
import threading
import time

from apps.policies.limits import quota_usage_get
from apps.policies.reconcile import policy_holds_release
from tests.gateway.conftest import SIM_MODELS, http
from tests.gateway.test_policy_limits import CHAT, tenant_with_policy
from tests.kit.processes import running_sim, web_start
from tests.kit.waiting import eventually


def test_the_reservation_of_a_request_whose_web_process_died_is_given_back_once_due(
    transactional_db, test_database_url, redis_cache
):
    web = web_start(test_database_url)
    try:
        # The engine never answers in time: the request is admitted and in flight when its web process dies.
        with running_sim("--ttft-ms", "60000", models=SIM_MODELS) as engine:
            tenant = tenant_with_policy(web, engine.url, model="gw-other", budget_per_day_micros=1_000_000)
            scope = f"{{o{tenant.organization.pk}}}:o"

            def call() -> None:
                with contextlib.suppress(OSError):
                    http("POST", f"{web.url}/v1/chat/completions", body={**CHAT, "model": "gw-other"},
                         secret=tenant.secret)  # fmt: skip

            threading.Thread(target=call, daemon=True).start()
            eventually(
                lambda: quota_usage_get(redis_cache, scope=scope, period="d")["usd_held"],
                timeout=10,
                what="the request admitted",
            )
            web.kill()
            held = quota_usage_get(redis_cache, scope=scope, period="d")["usd_held"]

            not_due = policy_holds_release(client=redis_cache)
            later = int(time.time() * 1000) + 2 * 3_600_000
            released = policy_holds_release(client=redis_cache, now_ms=later)
    finally:
        web.stop()

    assert held > 0
    assert not_due == 0
    assert released == 1
    usage = quota_usage_get(redis_cache, scope=scope, period="d")
    assert (usage["usd_held"], usage["usd_used"]) == (0, 0)
