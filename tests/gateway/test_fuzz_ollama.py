"""Generated bodies and headers against `/ollama` on the real web process: every answer is Ollama-shaped and never a
5xx, and no request is metered twice."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.gateway.conftest import http
from tests.gateway.test_fuzz_v1 import HEADERS, HOSTILE_TEXT, JSON_VALUES, RAW_BODIES, SCALARS

MODEL = st.one_of(st.just("gw-chat"), HOSTILE_TEXT)
MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "wizard"]), "content": HOSTILE_TEXT},
        optional={"tool_name": HOSTILE_TEXT, "tool_calls": JSON_VALUES, "images": JSON_VALUES},
    ),
    JSON_VALUES,
)
OPTIONS = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "num_predict": st.one_of(st.integers(-3, 8), SCALARS),
            "temperature": st.one_of(st.floats(-1, 3), SCALARS),
            "stop": st.one_of(HOSTILE_TEXT, st.lists(HOSTILE_TEXT, max_size=3), SCALARS),
            "seed": SCALARS,
            "num_ctx": SCALARS,
        },
    ),
    JSON_VALUES,
)
GENERATING = {
    "stream": st.one_of(st.booleans(), SCALARS),
    "options": OPTIONS,
    "format": st.one_of(st.sampled_from(["", "json", "yaml"]), JSON_VALUES),
    "keep_alive": SCALARS,
}
CHAT_BODY = st.fixed_dictionaries(
    {"model": MODEL, "messages": st.lists(MESSAGE, max_size=3)}, optional={**GENERATING, "tools": JSON_VALUES}
)
GENERATE_BODY = st.fixed_dictionaries(
    {"model": MODEL, "prompt": st.one_of(HOSTILE_TEXT, JSON_VALUES)},
    optional={**GENERATING, "system": HOSTILE_TEXT, "raw": SCALARS, "suffix": HOSTILE_TEXT, "context": JSON_VALUES},
)
EMBED_BODY = st.fixed_dictionaries(
    {"model": MODEL, "input": st.one_of(HOSTILE_TEXT, JSON_VALUES)}, optional={"dimensions": SCALARS}
)
REQUESTS = st.one_of(
    st.tuples(st.just("/ollama/api/chat"), st.one_of(CHAT_BODY, JSON_VALUES)),
    st.tuples(st.just("/ollama/api/generate"), GENERATE_BODY),
    st.tuples(st.just("/ollama/api/embed"), EMBED_BODY),
    st.tuples(st.just("/ollama/api/show"), st.fixed_dictionaries({"model": MODEL})),
)


def _ollama_shaped(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (status, body[:300])
    if status != 200:
        error = json.loads(body)
        assert list(error) == ["error"]
        assert isinstance(error["error"], str)
        assert error["error"]
    elif headers.get("content-type") == "application/x-ndjson":
        lines = [json.loads(line) for line in body.decode().splitlines()]
        assert all(isinstance(line, dict) for line in lines)
        assert lines[-1].get("done") is True or list(lines[-1]) == ["error"]
    else:
        assert isinstance(json.loads(body), dict)


def test_generated_requests_get_ollama_shaped_answers_and_at_most_one_usage_record_each(tenant, gateway, redis_cache):
    answered: list[str] = []

    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(request=REQUESTS, raw=st.one_of(st.none(), RAW_BODIES), headers=HEADERS)
    def one(request: tuple[str, object], raw: bytes | None, headers: dict[str, str]) -> None:
        path, document = request
        body = raw if raw is not None else json.dumps(document).encode()
        status, answer_headers, answer = http(
            "POST", f"{gateway.url}{path}", body=body, secret=tenant.secret, headers=headers
        )
        _ollama_shaped(status, answer_headers, answer)
        answered.append(answer_headers["x-request-id"])

    one()

    assert len(set(answered)) == len(answered)
    usage_stream_drain()
    stored = list(
        UsageRecord.objects.filter(organization_id=tenant.organization.pk).values_list("request_id", flat=True)
    )
    print(f"{len(answered)} generated requests answered, {len(stored)} usage records")  # figures for `-s`
    assert len(set(stored)) == len(stored)
    assert set(stored) <= set(answered)
    assert stored  # some generated requests were good enough to reach the engine
