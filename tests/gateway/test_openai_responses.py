"""The official `openai` client against `/v1/responses` on a real web process and inferia-sim: text, streams,
function tools, structured output, usage records, errors, stored responses (policy-gated, organisation-scoped) and
the file_search tool."""

from __future__ import annotations

import io
import json

import openai
import pydantic
import pytest

from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.factories import OrganizationFactory
from tests.gateway.conftest import http, make_deployment, make_key, wait_until_served
from tests.gateway.stand_ins import scripted_engine
from tests.gateway.test_policy_guardrails import tenant_on
from tests.gateway.test_policy_limits import tenant_with_policy
from tests.gateway.test_translated_send import streamed_through
from tests.knowledge.conftest import knowledge_files  # noqa: F401 (a fixture: uploaded files in the test's folder)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}


def _client(gateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0)


@pytest.fixture
def client(tenant, gateway):
    with _client(gateway, tenant.secret) as sync_client:
        yield sync_client


def test_a_response_answers_text_with_usage(client):
    response = client.responses.create(model="gw-chat", input="Say something.", max_output_tokens=5)
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.model == "gw-chat"
    assert [item.type for item in response.output] == ["message"]
    assert len(response.output_text.split()) == 5
    assert response.status == "incomplete"  # the answer hit max_output_tokens, as OpenAI reports it
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 5
    assert response.usage.input_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + 5
    assert response.max_output_tokens == 5
    assert response.store is False  # the organisation's policy does not store responses


def test_instructions_come_first_and_count_as_input(client):
    plain = client.responses.create(model="gw-chat", input="Say something.", max_output_tokens=2)
    instructed = client.responses.create(
        model="gw-chat",
        instructions="You are a terse assistant who answers in as few words as the question allows.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Say something."}]}],
        max_output_tokens=2,
        temperature=0.5,
        top_p=0.9,
    )
    assert instructed.instructions.startswith("You are a terse")
    assert (instructed.temperature, instructed.top_p) == (0.5, 0.9)
    assert instructed.usage.input_tokens > plain.usage.input_tokens + 10


def test_a_stream_has_the_responses_events_in_sequence(client):
    with client.responses.stream(model="gw-chat", input="Say something.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text
    assert final.output_text == text
    assert final.status == "completed"
    assert final.usage.output_tokens == kinds.count("response.output_text.delta")  # the engine streams a token a chunk
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    assert final.id == events[0].response.id


def test_stream_true_iterates_the_raw_events(client):
    events = list(client.responses.create(model="gw-chat", input="Say something.", max_output_tokens=3, stream=True))
    assert [event.type for event in events].count("response.output_text.delta") == 3
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage.output_tokens == 3


def test_a_function_call_round_trip(client):
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    call = client.responses.create(model="gw-chat", input=asked, tools=[WEATHER], tool_choice="required")
    (item,) = call.output
    assert item.type == "function_call"
    assert item.name == "get_weather"
    assert json.loads(item.arguments) == {"city": "sim", "unit": "celsius"}  # the schema's required properties
    assert item.call_id

    answer = client.responses.create(
        model="gw-chat",
        tools=[WEATHER],
        input=[
            *asked,
            *[output.model_dump(exclude_none=True) for output in call.output],
            {"type": "function_call_output", "call_id": item.call_id, "output": "Sunny, 21."},
        ],
        max_output_tokens=4,
    )
    assert [output.type for output in answer.output] == ["message"]
    assert len(answer.output_text.split()) == 4


def test_a_streamed_function_call_has_argument_deltas(client):
    with client.responses.stream(
        model="gw-chat", input="Please call get_weather for Oslo.", tools=[WEATHER], tool_choice="auto"
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    (item,) = final.output
    assert (item.type, item.name, json.loads(item.arguments)) == ("function_call", "get_weather", WEATHER_ARGS)


WEATHER_ARGS = {"city": "sim", "unit": "celsius"}


def test_a_named_tool_choice_and_none(client):
    other = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    named = client.responses.create(
        model="gw-chat", input="Hi", tools=[WEATHER, other], tool_choice={"type": "function", "name": "get_time"}
    )
    assert [(item.type, item.name, item.arguments) for item in named.output] == [("function_call", "get_time", "{}")]
    plain = client.responses.create(
        model="gw-chat", input="get_weather please", tools=[WEATHER], tool_choice="none", max_output_tokens=2
    )
    assert [item.type for item in plain.output] == ["message"]


class Place(pydantic.BaseModel):
    city: str


def test_a_json_schema_text_format_reaches_the_engine_as_a_response_format(transactional_db, gateway, redis_cache):
    with scripted_engine(['{"city": ', '"Paris"}']) as engine:
        tenant = tenant_on(gateway, engine.url)
        with _client(gateway, tenant.secret) as client:
            parsed = client.responses.parse(model="gw-scripted", input="Where?", text_format=Place)
    assert parsed.output_parsed == Place(city="Paris")
    assert parsed.text.format.type == "json_schema"
    (received,) = engine.received
    assert received["response_format"]["type"] == "json_schema"
    assert received["response_format"]["json_schema"]["name"] == "Place"
    assert received["response_format"]["json_schema"]["schema"]["required"] == ["city"]
    assert received["response_format"]["json_schema"]["strict"] is True


def test_responses_are_metered_under_their_own_endpoint(client, tenant, redis_cache):
    client.responses.create(model="gw-chat", input="Say something.", max_output_tokens=3)
    with client.responses.stream(model="gw-chat", input="Say something.", max_output_tokens=4) as stream:
        list(stream)
    assert usage_stream_drain() == 2
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk).order_by("started_at")
    assert [(r.endpoint, r.streamed, r.completion_tokens, r.status_code) for r in records] == [
        ("responses", False, 3, 200),
        ("responses", True, 4, 200),
    ]
    assert records[0].deployment_id == tenant.deployment.pk


def test_responses_are_timed_under_their_own_route(client, gateway):
    from tests.gateway.test_metrics import scrape, value

    name = "inferia_gateway_request_duration_seconds_count"
    labels = {"model": "gw-chat", "route": "responses", "status_class": "2xx"}
    before = value(scrape(gateway.url), name, **labels)
    client.responses.create(model="gw-chat", input="Hi", max_output_tokens=2)
    assert value(scrape(gateway.url), name, **labels) == before + 1


def test_prompt_templates_apply_as_on_chat_completions(tenant, client):
    from apps.policies.prompts.services import prompt_template_create

    prompt_template_create(
        organization=tenant.organization, name="support", actor=None,
        messages=[{"role": "system", "content": "You answer for {{company}}, politely and in full sentences."}],
        variables=[{"name": "company"}],
    )  # fmt: skip
    plain = client.responses.create(model="gw-chat", input="Hi", max_output_tokens=2)
    templated = client.responses.create(
        model="gw-chat",
        input="Hi",
        max_output_tokens=2,
        extra_body={"template": "support@1", "template_variables": {"company": "Acme"}},
    )
    assert templated.usage.input_tokens > plain.usage.input_tokens + 5
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="gw-chat", input="Hi", extra_body={"template": "nope@1"})
    assert raised.value.body["code"] == "template_not_found"


# --- Errors -------------------------------------------------------------------------------------------------------


def test_a_bad_key_is_a_401_in_openais_shape(tenant, gateway):
    with _client(gateway, "sk-inf-not-a-key") as bad, pytest.raises(openai.AuthenticationError) as raised:
        bad.responses.create(model="gw-chat", input="Hi")
    assert raised.value.status_code == 401
    assert raised.value.body["code"] == "invalid_api_key"
    status, _, raw = http("POST", f"{gateway.url}/v1/responses", body={"model": 3}, secret="sk-inf-not-a-key")
    assert (status, json.loads(raw)["error"]["code"]) == (401, "invalid_api_key")


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="no-such-model", input="Hi")
    assert raised.value.body["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gw-chat"}, "input"),
        ({"model": "gw-chat", "input": "Hi", "temperature": 3}, "temperature"),
        ({"model": "gw\x00chat", "input": "Hi"}, "model"),
        ({"model": "gw-chat", "input": [{"role": "user", "content": [{"type": "input_video"}]}]}, "input"),
        ({"model": "gw-chat", "input": "Hi", "tools": [{"type": "function", "name": "bad name"}]}, "tools"),
        ({"model": "gw-chat", "input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "gw-chat", "input": []}, "input"),
        (
            {"model": "gw-chat", "input": "Hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "x"}},
            "tool_choice",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(tenant, gateway, body, param):
    status, _, raw = http("POST", f"{gateway.url}/v1/responses", body=body, secret=tenant.secret)
    assert status == 400
    error = json.loads(raw)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(param)


def test_the_client_over_its_rate_limit_gets_a_429(transactional_db, sim, gateway, redis_cache):
    limited = tenant_with_policy(gateway, sim.url, requests_per_minute=1)
    with _client(gateway, limited.secret) as client:
        client.responses.create(model="gw-chat", input="Hi", max_output_tokens=2)
        with pytest.raises(openai.RateLimitError) as raised:
            client.responses.create(model="gw-chat", input="Hi", max_output_tokens=2)
    assert raised.value.status_code == 429
    assert raised.value.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60


# --- Stored responses ---------------------------------------------------------------------------------------------


@pytest.fixture
def storing(transactional_db, sim, gateway, redis_cache):
    """An organisation whose policy stores responses."""
    return tenant_with_policy(gateway, sim.url, responses_store=True)


def test_without_the_policy_nothing_is_stored(client, tenant, gateway, redis_cache):
    response = client.responses.create(model="gw-chat", input="Hi", max_output_tokens=2, store=True)
    assert response.store is False
    assert not redis_cache.keys("inferia:response:*")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="gw-chat", input="Hi", previous_response_id=response.id)
    assert raised.value.body["param"] == "previous_response_id"


def test_a_stored_response_is_read_continued_and_deleted(storing, gateway):
    with _client(gateway, storing.secret) as client:
        first = client.responses.create(
            model="gw-chat", instructions="Be brief.", input="My name is Ada.", max_output_tokens=3
        )
        assert first.store is True
        read = client.responses.retrieve(first.id)
        assert (read.id, read.output_text, read.usage.output_tokens) == (first.id, first.output_text, 3)

        alone = client.responses.create(model="gw-chat", input="What is my name?", max_output_tokens=2)
        follow = client.responses.create(
            model="gw-chat", input="What is my name?", previous_response_id=first.id, max_output_tokens=2
        )
        assert follow.previous_response_id == first.id
        (item,) = client.responses.input_items.list(follow.id).data  # its own input, not the earlier turn's
        assert (item.type, item.role, item.content[0].text) == ("message", "user", "What is my name?")
        # The earlier turn (its input and answer, not its instructions) came before the new input.
        assert follow.usage.input_tokens > alone.usage.input_tokens + 5

        with client.responses.stream(model="gw-chat", input="Again.", previous_response_id=follow.id) as stream:
            streamed = stream.get_final_response()
        assert client.responses.retrieve(streamed.id).output_text == streamed.output_text

        unstored = client.responses.create(model="gw-chat", input="Hi", max_output_tokens=2, store=False)
        assert unstored.store is False
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(unstored.id)

        client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.delete(first.id)


def test_input_items_are_listed_in_pages(storing, gateway):
    with _client(gateway, storing.secret) as client:
        inputs = [{"role": "user", "content": f"Turn {n}."} for n in range(5)]
        response = client.responses.create(model="gw-chat", input=inputs, max_output_tokens=2)
        listed = client.responses.input_items.list(response.id)
        assert [item.content[0].text for item in listed.data] == [f"Turn {n}." for n in reversed(range(5))]
        first_page = client.responses.input_items.list(response.id, order="asc", limit=2)
        assert [item.content[0].text for item in first_page.data] == ["Turn 0.", "Turn 1."]
        assert first_page.has_more is True
        every = [item.content[0].text for item in client.responses.input_items.list(response.id, order="asc", limit=2)]
        assert every == [f"Turn {n}." for n in range(5)]  # the client follows `after` from page to page
        with pytest.raises(openai.BadRequestError):
            client.responses.input_items.list(response.id, limit=101)
        with pytest.raises(openai.NotFoundError):
            client.responses.input_items.list("resp_" + "0" * 48)


def test_another_organisations_response_is_not_found(storing, gateway):
    other = OrganizationFactory(name="Other", slug="other")
    from apps.policies.services import policy_create

    policy_create(actor=None, organization=other, responses_store=True)
    _, other_secret = make_key(other)
    make_deployment(other, "gw-chat", [storing.replica.endpoint])
    wait_until_served(gateway, other_secret, "gw-chat")
    with _client(gateway, storing.secret) as client, _client(gateway, other_secret) as outsider:
        mine = client.responses.create(model="gw-chat", input="A secret.", max_output_tokens=2)
        with pytest.raises(openai.NotFoundError):
            outsider.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            outsider.responses.create(model="gw-chat", input="Hi", previous_response_id=mine.id)
        with pytest.raises(openai.NotFoundError):
            outsider.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError):
            outsider.responses.input_items.list(mine.id)
        assert client.responses.retrieve(mine.id).id == mine.id  # still there for its owner


def test_a_stored_response_expires_and_only_an_organisations_policy_stores(storing, gateway, redis_cache):
    from django.conf import settings
    from django.core.exceptions import ValidationError

    from apps.policies.services import policy_create

    with _client(gateway, storing.secret) as client:
        response = client.responses.create(model="gw-chat", input="Hi", max_output_tokens=2)
    (key,) = redis_cache.keys("inferia:response:*")
    assert key.decode() == f"inferia:response:{storing.organization.pk}:{response.id}"
    assert 0 < redis_cache.ttl(key) <= settings.INFERIA_RESPONSES_TTL_SECONDS
    with pytest.raises(ValidationError, match="organisation"):
        policy_create(actor=None, organization=storing.organization, api_key=storing.key, responses_store=True)


# --- file_search ---------------------------------------------------------------------------------------------------

DOCUMENT = "\n\n".join(
    [
        "The GPU nodes have 4.8 TB/s of HBM3e memory bandwidth and 141 GB of memory each.",
        "Simmer the tomato sauce for twenty minutes and season it with fresh basil.",
    ]
    * 8
)


def test_a_file_search_tool_searches_the_organisations_store(client, tenant, sim, gateway, knowledge_files):  # noqa: F811
    from apps.knowledge import ingestion, services
    from apps.knowledge.models import VectorStoreFile

    make_deployment(tenant.organization, "gw-other", [sim.url])
    file = services.knowledge_file_create(
        organization=tenant.organization, handle=io.BytesIO(DOCUMENT.encode()), filename="notes.txt",
        purpose="assistants", actor=None,
    )  # fmt: skip
    store = services.vector_store_create(
        organization=tenant.organization, embedding_model="gw-other", dimensions=384, actor=None,
        chunk_max_tokens=100, chunk_overlap_tokens=0, file_ids=[file.public_id],
    )  # fmt: skip
    store_file = VectorStoreFile.objects.get(vector_store=store)
    assert ingestion.store_file_claim(store_file.pk)
    ingestion.store_file_ingest_run(store_file.pk)

    question = "How much GPU memory bandwidth do the nodes have?"
    plain = client.responses.create(model="gw-chat", input=question, max_output_tokens=2)
    tool = {"type": "file_search", "vector_store_ids": [store.public_id], "max_num_results": 2}
    searched = client.responses.create(model="gw-chat", input=question, tools=[tool], max_output_tokens=2)
    search, message = searched.output
    assert search.type == "file_search_call"
    assert search.status == "completed"
    assert search.queries == [question]
    assert len(search.results) == 2
    assert {result.file_id for result in search.results} == {file.public_id}
    assert message.type == "message"
    assert searched.usage.input_tokens > plain.usage.input_tokens + 20  # the chunks went into the prompt

    with client.responses.stream(model="gw-chat", input=question, tools=[tool]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.file_search_call.completed" in kinds
    assert [item.type for item in final.output] == ["file_search_call", "message"]

    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model="gw-chat", input=question, tools=[{"type": "file_search", "vector_store_ids": ["vs_missing"]}]
        )


def test_a_response_over_the_size_cap_is_not_stored(redis_cache, settings):
    import asyncio

    import redis.asyncio as aioredis

    from apps.gateway.responses_store import response_id_new, stored_response_get, stored_response_put

    settings.INFERIA_RESPONSES_MAX_BYTES = 2000
    small = {"id": response_id_new(), "output": []}
    large = {"id": response_id_new(), "output": [{"type": "message", "content": [{"text": "x" * 2000}]}]}

    async def put_both() -> tuple[bool, bool, dict | None]:
        client = aioredis.Redis.from_url(settings.CACHE_REDIS_URL)
        try:
            kept = await stored_response_put(client, organization_id=1, response=small, input_items=[], conversation=[])
            refused = await stored_response_put(
                client, organization_id=1, response=large, input_items=[], conversation=[]
            )
            return kept, refused, await stored_response_get(client, organization_id=1, response_id=large["id"])
        finally:
            await client.aclose()

    assert asyncio.run(put_both()) == (True, False, None)
    assert len(redis_cache.keys("inferia:response:*")) == 1


def test_an_error_that_ends_a_started_stream_becomes_an_error_event():
    from apps.gateway.errors import upstream_failed
    from apps.gateway.responses_out import ResponsesSend

    out = ResponsesSend(None)
    out.response_id = "resp_1"
    chunk = {"id": "chatcmpl-1", "model": "gw-chat", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    sent = streamed_through(out, [b"data: " + json.dumps(chunk).encode() + b"\n\n", upstream_failed().sse_event()])
    text = b"".join(message.get("body", b"") for message in sent).decode()
    events = [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "error",
    ]
    assert [event["sequence_number"] for event in events] == list(range(9))
    assert (events[-1]["code"], events[-1]["message"]) == ("bad_gateway", "The model's engine failed to answer.")


def test_generated_bodies_get_openai_shaped_answers_never_a_5xx(tenant, gateway, redis_cache):
    from hypothesis import HealthCheck, example, given
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st

    from tests.gateway.test_fuzz_v1 import HOSTILE_TEXT, JSON_VALUES, SMALL_COUNTS

    part = st.one_of(st.fixed_dictionaries({"type": st.just("input_text"), "text": HOSTILE_TEXT}), JSON_VALUES)
    item = st.one_of(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant", "developer", "tool"]),
                "content": st.one_of(HOSTILE_TEXT, st.lists(part, max_size=2)),
            }
        ),
        st.fixed_dictionaries(
            {"type": st.just("function_call"), "call_id": HOSTILE_TEXT, "name": HOSTILE_TEXT, "arguments": HOSTILE_TEXT}
        ),
        st.fixed_dictionaries(
            {"type": st.just("function_call_output"), "call_id": HOSTILE_TEXT, "output": HOSTILE_TEXT}
        ),
        JSON_VALUES,
    )
    body = st.fixed_dictionaries(
        {
            "model": st.one_of(st.just("gw-chat"), HOSTILE_TEXT),
            "input": st.one_of(HOSTILE_TEXT, st.lists(item, max_size=3)),
        },
        optional={
            "instructions": st.one_of(HOSTILE_TEXT, JSON_VALUES),
            "max_output_tokens": SMALL_COUNTS,
            "stream": st.booleans(),
            "tools": st.one_of(st.just([WEATHER]), JSON_VALUES),
            "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required"]), JSON_VALUES),
            "text": JSON_VALUES,
            "previous_response_id": HOSTILE_TEXT,
            "store": st.one_of(st.booleans(), JSON_VALUES),
        },
    )

    statuses: list[int] = []

    @hypothesis_settings(
        max_examples=100, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )  # fmt: skip
    @given(document=st.one_of(body, JSON_VALUES))
    # Good bodies among the generated ones, always: how many of those hypothesis draws depends on its run.
    @example(document={"model": "gw-chat", "input": "Hi", "max_output_tokens": 4})
    @example(document={"model": "gw-chat", "input": "Hi", "stream": True, "instructions": "Be brief."})
    @example(document={"model": "gw-chat", "input": [{"role": "user", "content": "Hi"}], "store": False})
    @example(document={"model": "gw-chat", "input": "Hi", "tools": [WEATHER], "tool_choice": "auto"})
    @example(document={"model": "gw-chat", "input": "Hi", "stream": True, "text": {"format": {"type": "text"}}})
    def one(document: object) -> None:
        status, headers, raw = http("POST", f"{gateway.url}/v1/responses", body=document, secret=tenant.secret)
        statuses.append(status)
        assert status < 500, (status, raw[:300])
        if status != 200:
            assert set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}
        elif headers["content-type"].startswith("text/event-stream"):
            events = [block for block in raw.decode().split("\n\n") if block]
            assert events[0].startswith("event: response.created\n")
            assert json.loads(events[-1].split("data: ", 1)[1])["type"] in ("response.completed", "response.incomplete")
        else:
            assert json.loads(raw)["object"] == "response"

    one()
    # The five good examples are answered, streamed or not, and so is at least one good generated body.
    assert statuses.count(200) >= 6, statuses


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"tool_choice": "none"},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
        {"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}], "tool_choice": "required"},
        {"text": {"format": {"type": "json_object"}}},
        {"text": {}},
    ],
)
def test_a_response_repeats_the_requests_tools_choice_and_format_as_sent(fields):
    from apps.gateway.responses import request_parse, response_echo

    request = request_parse(json.dumps({"model": "gw-chat", "input": "Hi", **fields}).encode())
    sent = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    echo = response_echo(request, stored=False)
    assert echo["tools"] == sent.get("tools", [])
    assert echo["tool_choice"] == sent.get("tool_choice", "auto")
    assert echo["text"] == (sent.get("text") or {"format": {"type": "text"}})
    assert "input" not in echo
