"""Rate limits, concurrency, quotas and budgets: one Redis round trip to admit a request, one to settle it.

`limits_admit` checks every limit of every level of a request's effective policy (requests and tokens per minute
as GCRA, concurrent requests as a leased set, day/month tokens and money as reservations against the UTC calendar
period) in one Lua script: either all are counted or none is, and the first violated limit comes back with its
retry-after. The request's worst case is reserved (see costs.py). `limits_settle` replaces the reservation with
actual usage and frees the slot; call it exactly once however the request ends (completed, failed, client gone).

A day/month reservation is also recorded, in the same script, in its organisation's holds (a sorted set by due
time). Settling removes the record; if the process dies first, `limits_holds_release` (run by the reconciliation
task) gives the reservation back once it is due (`INFERIA_POLICY_RESERVATION_TTL_S` after admission), instead of it
counting until the period ends. Whichever removes the record gives the reservation back, so it happens once.
"""

from __future__ import annotations

import calendar
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import redis
from django.conf import settings

from apps.policies.costs import ActualUsage, RequestCost, cost_micros_for
from apps.policies.effective import EffectivePolicy, LevelLimits
from apps.policies.errors import PolicyDenied, PolicyUnavailable
from inferia_runtime.money import money_format
from inferia_runtime.redis_pipe import PipeScript, RedisPipe

logger = logging.getLogger(__name__)

_LUA = Path(__file__).resolve().parent / "lua"
ADMIT_LUA = (_LUA / "admit.lua").read_text()
SETTLE_LUA = (_LUA / "settle.lua").read_text()
RAISE_USED_LUA = (_LUA / "raise_used.lua").read_text()
RELEASE_LUA = (_LUA / "release.lua").read_text()

KEY_PREFIX = "inferia:lim:"
WINDOW_MS = 60_000
# How long a concurrency slot outlives a request whose process died before settling.
CONCURRENCY_LEASE_MS = 15 * 60 * 1000


@dataclass(slots=True)
class Admission:
    """An admitted request: what was reserved, how to settle it, and the `x-ratelimit-*` headers to send.
    `counted` is False when Redis was unreachable and `INFERIA_POLICY_FAIL_OPEN` let it through uncounted."""

    request_id: str
    cost: RequestCost
    headers: tuple[tuple[str, str], ...] = ()
    counted: bool = True
    _settle_keys: tuple[str, ...] = field(default=(), repr=False)
    _settle_ops: tuple[tuple[str, int, str], ...] = field(default=(), repr=False)  # kind, reserved kind, extra
    _holds_key: str = field(default="", repr=False)
    _hold: str = field(default="", repr=False)
    settled: bool = False


class LimitDenied(PolicyDenied):
    """A counted limit refused the request. `prompt_tokens_room` is the most prompt tokens that limit would take
    now with the same max tokens and prices, where the prompt's size can change the answer (token and money
    limits); None for request and concurrency limits. A caller that reserved an upper bound of the prompt may count
    it exactly and try once more when the exact count fits the room."""

    def __init__(self, *args: Any, prompt_tokens_room: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prompt_tokens_room = prompt_tokens_room


# --- Period keys ------------------------------------------------------------------------------------------------------


def _period_bounds(now: datetime) -> tuple[str, int, str, int]:
    """(day id, ms left in the day, month id, ms left in the month) for a UTC moment."""
    day_id = now.strftime("%Y%m%d")
    month_id = now.strftime("%Y%m")
    epoch_ms = int(now.timestamp() * 1000)
    day_end = datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() * 1000 + 86_400_000
    days_in_month = calendar.monthrange(now.year, now.month)[1]
    month_end = datetime(now.year, now.month, 1, tzinfo=UTC).timestamp() * 1000 + days_in_month * 86_400_000
    return day_id, max(1, int(day_end) - epoch_ms), month_id, max(1, int(month_end) - epoch_ms)


def quota_key(scope: str, period: str, period_id: str) -> str:
    """The hash counting a scope's tokens and money in one day (`d`, YYYYMMDD) or month (`m`, YYYYMM)."""
    return f"{KEY_PREFIX}{scope}:{period}:{period_id}"


def holds_key(scope: str) -> str:
    """The sorted set of an organisation's unsettled day/month reservations. Named by the organisation's hash tag
    (`{o<id>}`, the start of every scope), so that it lives in the same Redis Cluster slot as its counters."""
    tag = scope[: scope.find("}") + 1] if scope.startswith("{") else scope.split(":", 1)[0]
    return f"{KEY_PREFIX}{tag}:held"


def hold_parse(hold: str | bytes) -> list[tuple[str, str, int]]:
    """The reservations a hold record stands for: (hash key, field prefix, amount) each."""
    text = hold.decode() if isinstance(hold, bytes) else hold
    reservations = []
    for line in text.split("\n")[1:]:
        key, prefix, amount = line.split(" ")
        reservations.append((key, prefix, int(amount)))
    return reservations


def _hold_record(request_id: str, checks: list[_Check]) -> str:
    """One line for the request (a random part keeps two requests with the same id, which clients may send, from
    sharing a record), then one line per reservation: "<hash key> <field prefix> <amount>" (keys have no spaces)."""
    lines = [f"{check.key} {check.a} {check.cost}" for check in checks if check.kind == "sum"]
    if not lines:
        return ""
    return f"{os.urandom(6).hex()} {request_id}\n" + "\n".join(lines)


# What each check is, for error messages and codes.
_CHECKS = {
    "rpm": ("rate_limit_exceeded", "requests per minute"),
    "tpm": ("rate_limit_exceeded", "tokens per minute"),
    "conc": ("rate_limit_exceeded", "concurrent requests"),
    "tok_d": ("quota_exceeded", "tokens per day"),
    "tok_m": ("quota_exceeded", "tokens per month"),
    "usd_d": ("budget_exceeded", "budget per day"),
    "usd_m": ("budget_exceeded", "budget per month"),
}
_LEVEL_NAMES = {"o": "organisation", "t": "team", "k": "key"}


@dataclass(frozen=True, slots=True)
class _Check:
    name: str
    level: LevelLimits
    key: str
    kind: str
    limit: int
    cost: int
    a: str | int
    b: int = 0


def _plan(policy: EffectivePolicy, cost: RequestCost, now: datetime) -> list[_Check]:
    day_id, day_left, month_id, month_left = _period_bounds(now)
    checks: list[_Check] = []
    tokens, money = cost.tokens, cost.cost_micros
    for level in policy.levels:
        base = KEY_PREFIX + level.scope
        if level.requests_per_minute is not None:
            checks.append(_Check("rpm", level, base + ":rpm", "rate", level.requests_per_minute, 1, WINDOW_MS))
        if level.tokens_per_minute is not None:
            checks.append(_Check("tpm", level, base + ":tpm", "rate", level.tokens_per_minute, tokens, WINDOW_MS))
        if level.concurrent_requests is not None:
            lease = getattr(settings, "INFERIA_POLICY_CONCURRENCY_LEASE_MS", CONCURRENCY_LEASE_MS)
            checks.append(_Check("conc", level, base + ":conc", "conc", level.concurrent_requests, 1, lease))
        day_key, month_key = quota_key(level.scope, "d", day_id), quota_key(level.scope, "m", month_id)
        for name, limit, key, amount, prefix, left in (
            ("tok_d", level.tokens_per_day, day_key, tokens, "tok", day_left),
            ("tok_m", level.tokens_per_month, month_key, tokens, "tok", month_left),
            ("usd_d", level.budget_per_day_micros, day_key, money, "usd", day_left),
            ("usd_m", level.budget_per_month_micros, month_key, money, "usd", month_left),
        ):
            if limit is not None:
                checks.append(_Check(name, level, key, "sum", limit, amount, prefix, left))
    return checks


def _duration(ms: int) -> str:
    """A reset time the way OpenAI writes it: "20ms", "1s", "6m0s", "1h2m3s"."""
    if ms < 1000:
        return f"{max(0, ms)}ms"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def _headers(checks: list[_Check], values: list[int]) -> tuple[tuple[str, str], ...]:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` from the tightest level's per-minute limits."""
    headers: list[tuple[str, str]] = []
    for name, suffix in (("rpm", "requests"), ("tpm", "tokens")):
        best: tuple[int, int, int] | None = None
        for index, check in enumerate(checks):
            if check.name == name:
                remaining, reset = values[2 * index], values[2 * index + 1]
                if best is None or remaining < best[1]:
                    best = (check.limit, remaining, reset)
        if best is not None:
            headers += [
                (f"x-ratelimit-limit-{suffix}", str(best[0])),
                (f"x-ratelimit-remaining-{suffix}", str(max(0, best[1]))),
                (f"x-ratelimit-reset-{suffix}", _duration(best[2])),
            ]
    return tuple(headers)


def _prompt_tokens_room(check: _Check, cost: RequestCost, room: int) -> int | None:
    """The most prompt tokens a refusing check with `room` left would take with the request's max tokens."""
    if check.name in ("tpm", "tok_d", "tok_m"):
        return room - cost.max_tokens
    if check.name in ("usd_d", "usd_m") and cost.price_input_per_mtok_micros > 0:
        # cost_micros rounds up, so it fits `room` exactly when the unrounded product does.
        spare = room * 1_000_000 - cost.max_tokens * cost.price_output_per_mtok_micros
        return spare // cost.price_input_per_mtok_micros
    return None


def _budget_message(check: _Check, level: str, retry_ms: int, cost: int, used: int, held: int) -> str:
    """A budget refusal in the currency, e.g. "Budget exceeded: team budget per day $5.00 (spent $5.01); retry in
    3h2m1s." Spent is what requests settled this period; held what requests in flight have reserved."""
    _, what = _CHECKS[check.name]
    spent = f"spent {money_format(used)}" + (f", {money_format(held)} held by requests in flight" if held else "")
    head = f"Budget exceeded: {level} {what} {money_format(check.limit)} ({spent})"
    if retry_ms < 0:
        return f"{head}; this request alone may cost up to {money_format(cost)}: ask for fewer tokens (max_tokens)."
    return f"{head}; retry in {_duration(retry_ms)}."


def _denied(
    check: _Check, retry_ms: int, prompt_tokens_room: int | None = None, *, used: int = 0, held: int = 0
) -> LimitDenied:
    code, what = _CHECKS[check.name]
    level = _LEVEL_NAMES.get(check.level.scope.rsplit(":", 1)[-1][:1], "policy")
    if code == "budget_exceeded":
        message = _budget_message(check, level, retry_ms, check.cost, used, held)
    elif retry_ms < 0:
        message = f"This request alone exceeds the {level}'s {what} limit ({check.limit}); ask for fewer tokens."
    else:
        message = f"The {level}'s {what} limit ({check.limit}) is reached; retry in {_duration(retry_ms)}."
    if retry_ms < 0:
        return LimitDenied(429, code, message, type=_error_type(code), prompt_tokens_room=prompt_tokens_room)
    retry_s = max(1, math.ceil(retry_ms / 1000))
    return LimitDenied(
        429,
        code,
        message,
        type=_error_type(code),
        retry_after_s=retry_s,
        headers=(("retry-after", str(retry_s)),),
        prompt_tokens_room=prompt_tokens_room,
    )


def _error_type(code: str) -> str:
    return "insufficient_quota" if code in ("quota_exceeded", "budget_exceeded") else "rate_limit_error"


def _fail_open() -> bool:
    return bool(getattr(settings, "INFERIA_POLICY_FAIL_OPEN", False))


_ADMIT = PipeScript(ADMIT_LUA)
_SETTLE = PipeScript(SETTLE_LUA)


async def limits_admit(pipe: RedisPipe, policy: EffectivePolicy, cost: RequestCost, *, request_id: str) -> Admission:
    """Check and count every limit of the request at every level, in one round trip.

    Raises `LimitDenied` (429 `rate_limit_exceeded`, `quota_exceeded` or `budget_exceeded`, with retry-after) for
    the first violated limit, having counted nothing; `PolicyUnavailable` when Redis cannot be reached and the
    policy fails closed (the default). A policy without counted limits costs no round trip."""
    checks = _plan(policy, cost, datetime.now(UTC))
    if not checks:
        return Admission(request_id=request_id, cost=cost, counted=False)
    keys = [check.key for check in checks]
    hold = _hold_record(request_id, checks)
    holds = holds_key(checks[0].level.scope) if hold else ""
    if hold:
        keys.append(holds)
    args: list[str | int] = [request_id, hold, settings.INFERIA_POLICY_RESERVATION_TTL_S * 1000 if hold else 0]
    for check in checks:
        args += [check.kind, check.limit, check.cost, check.a, check.b]
    try:
        reply = await _ADMIT.run(pipe, keys, args)
    except (TimeoutError, redis.RedisError, OSError) as exc:
        if _fail_open():
            logger.warning("Redis unreachable: admitting request %s without limits (fail open)", request_id)
            return Admission(request_id=request_id, cost=cost, counted=False)
        raise PolicyUnavailable() from exc
    if int(reply[0]) != 1:
        check = checks[int(reply[1]) - 1]
        used, held = (int(reply[4]), int(reply[5])) if len(reply) > 5 else (0, 0)
        raise _denied(check, int(reply[2]), _prompt_tokens_room(check, cost, int(reply[3])), used=used, held=held)
    settle_keys: list[str] = []
    settle_ops: list[tuple[str, int, str]] = []
    for check in checks:
        if check.name == "rpm":
            continue
        settle_keys.append(check.key)
        if check.name == "tpm":
            settle_ops.append(("rate", check.cost, repr(WINDOW_MS / check.limit)))
        elif check.name == "conc":
            settle_ops.append(("conc", 0, ""))
        else:
            settle_ops.append(("sum", check.cost, str(check.a)))
    return Admission(
        request_id=request_id,
        cost=cost,
        headers=_headers(checks, [int(value) for value in reply[1:]]),
        _settle_keys=tuple(settle_keys),
        _settle_ops=tuple(settle_ops),
        _holds_key=holds,
        _hold=hold,
    )


async def limits_settle(pipe: RedisPipe, admission: Admission, actual: ActualUsage) -> None:
    """Replace the admission's reservations with `actual` usage and free its concurrency slot, in one round trip.

    Call it once when the request ends, whatever the outcome (a failure before any token: `ActualUsage()`).
    Idempotent per admission. Never raises for Redis trouble: the usage event still reaches PostgreSQL and
    reconciliation rebuilds the counters from it."""
    if admission.settled or not admission.counted or not admission._settle_keys:
        admission.settled = True
        return
    admission.settled = True
    tokens = actual.prompt_tokens + actual.completion_tokens
    money = actual.cost_micros
    if money is None:
        money = cost_micros_for(
            prompt_tokens=actual.prompt_tokens,
            completion_tokens=actual.completion_tokens,
            price_input_per_mtok_micros=admission.cost.price_input_per_mtok_micros,
            price_output_per_mtok_micros=admission.cost.price_output_per_mtok_micros,
        )
    keys = list(admission._settle_keys)
    if admission._hold:
        keys.append(admission._holds_key)
    args: list[str | int] = [admission.request_id, admission._hold]
    for kind, reserved, extra in admission._settle_ops:
        if kind == "sum":
            used = money if extra == "usd" else tokens
            args += [kind, reserved, used, extra]
        else:
            args += [kind, reserved, tokens, extra or 0]
    try:
        await _SETTLE.run(pipe, keys, args)
    except (TimeoutError, redis.RedisError, OSError):
        logger.warning("could not settle request %s in Redis; reconciliation will correct", admission.request_id)


def limits_holds_release(client: redis.Redis, *, scope: str, now_ms: int | None = None, batch: int = 500) -> int:
    """Give back the day/month reservations of an organisation's requests that were due before `now_ms` (Redis's
    clock by default) and never settled, because their web process died. Returns how many were given back. Safe
    to run anywhere and any time: each record is given back by one script that first removes it, so a settle or
    another sweep racing it cannot give the same reservation back twice."""
    holds = holds_key(scope)
    if now_ms is None:
        seconds, micros = client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
    release = client.register_script(RELEASE_LUA)
    released = 0
    while True:
        due = cast("list[bytes]", client.zrangebyscore(holds, "-inf", now_ms, start=0, num=batch))
        for hold in due:
            reservations = hold_parse(hold)
            args: list[str | bytes | int] = [hold]
            for _key, prefix, amount in reservations:
                args += [prefix, amount]
            released += int(release(keys=[holds, *(key for key, _prefix, _amount in reservations)], args=args))
        if len(due) < batch:
            return released


def quota_usage_get(client: redis.Redis, *, scope: str, period: str, now: datetime | None = None) -> dict[str, int]:
    """A scope's counters for the current day (`d`) or month (`m`): tok_used, tok_held, usd_used, usd_held."""
    moment = now or datetime.now(UTC)
    period_id = moment.strftime("%Y%m%d" if period == "d" else "%Y%m")
    raw = client.hgetall(quota_key(scope, period, period_id))
    values = {key.decode() if isinstance(key, bytes) else key: int(value) for key, value in raw.items()}
    return {name: values.get(name, 0) for name in ("tok_used", "tok_held", "usd_used", "usd_held")}
