"""Generated bodies and headers against `/v1` on the real web process: every answer is OpenAI-shaped and never a
5xx, and once the flush has run there is exactly one usage record per answered request."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.gateway.conftest import http

# What reaches Inferia in a header value: the server's HTTP parser refuses other control characters itself.
HEADER_TEXT = st.text(
    alphabet=st.one_of(
        st.just("\t"),
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.characters(min_codepoint=0x80, max_codepoint=0xFF),
    ),
    max_size=200,
)
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["gw-chat", "gw-chat\u0000", "gw\nchat", "", " ", "x" * 300, "\u202egw-chat", "gw-chat\x7f"]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), HOSTILE_TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "wizard"]), "content": HOSTILE_TEXT}
    ),
    JSON_VALUES,
)
SMALL_COUNTS = st.one_of(st.integers(-3, 24), st.sampled_from(["8", True, 2.5, None, 10**20]))
CHAT_BODY = st.fixed_dictionaries(
    {"model": st.one_of(st.just("gw-chat"), HOSTILE_TEXT), "messages": st.lists(MESSAGE, max_size=3)},
    optional={
        "max_tokens": SMALL_COUNTS,
        "n": SMALL_COUNTS,
        "stream": st.one_of(st.booleans(), SCALARS),
        "stream_options": st.one_of(st.just({"include_usage": True}), JSON_VALUES),
        "temperature": st.one_of(st.floats(-1, 3), SCALARS),
        "user": HOSTILE_TEXT,
        "metadata": st.one_of(st.dictionaries(HOSTILE_TEXT, HOSTILE_TEXT, max_size=3), JSON_VALUES),
        "template": HOSTILE_TEXT,
        "template_variables": JSON_VALUES,
    },
)
COMPLETION_BODY = st.fixed_dictionaries(
    {"model": st.one_of(st.just("gw-chat"), HOSTILE_TEXT), "prompt": st.one_of(HOSTILE_TEXT, JSON_VALUES)},
    optional={"max_tokens": SMALL_COUNTS, "stream": st.one_of(st.booleans(), SCALARS)},
)
EMBEDDING_BODY = st.fixed_dictionaries(
    {"model": st.one_of(st.just("gw-chat"), HOSTILE_TEXT), "input": st.one_of(HOSTILE_TEXT, JSON_VALUES)}
)
REQUESTS = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), st.one_of(CHAT_BODY, JSON_VALUES)),
    st.tuples(st.just("/v1/completions"), COMPLETION_BODY),
    st.tuples(st.just("/v1/embeddings"), EMBEDDING_BODY),
)
RAW_BODIES = st.one_of(st.binary(max_size=64), st.text(string.printable, max_size=64).map(str.encode))
HEADERS = st.dictionaries(
    st.sampled_from(["X-Request-ID", "X-Client-Request-Id", "X-Session-Id", "Content-Type", "traceparent"]),
    HEADER_TEXT,
    max_size=3,
)


def _openai_shaped(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (status, body[:300])
    if status != 200:
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str)
        assert error["message"]
    elif headers.get("content-type", "").startswith("text/event-stream"):
        events = [block for block in body.decode().split("\n\n") if block]
        assert events[-1] == "data: [DONE]"
        assert all(event.startswith("data: ") for event in events)
    else:
        assert isinstance(json.loads(body), dict)


def test_generated_requests_get_openai_shaped_answers_and_exactly_one_usage_record_each(tenant, gateway, redis_cache):
    answered: list[str] = []

    @settings(
        max_examples=150,
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
        _openai_shaped(status, answer_headers, answer)
        answered.append(answer_headers["x-request-id"])

    one()

    assert len(set(answered)) == len(answered)  # every request its own id, whatever the caller sent
    usage_stream_drain()
    stored = list(
        UsageRecord.objects.filter(organization_id=tenant.organization.pk).values_list("request_id", flat=True)
    )
    print(f"{len(answered)} generated requests answered, {len(stored)} usage records")  # figures for `-s`
    assert sorted(stored) == sorted(answered)
