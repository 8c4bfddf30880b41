"""The answer translators' stream handling: an event split across the pieces a stream arrives in is translated once,
whole, whichever bytes it was cut at."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.gateway.messages_out import MessagesSend
from apps.gateway.translated_send import TranslatedSend

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gw-chat"}


def _event(**fields) -> bytes:
    # As vLLM writes its chunks: compact, and UTF-8 rather than \u escapes.
    document = json.dumps({**HEAD, **fields}, separators=(",", ":"), ensure_ascii=False)
    return b"data: " + document.encode() + b"\n\n"


STREAM = b"".join(
    [
        _event(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        *(
            _event(choices=[{"index": 0, "delta": {"content": f"w{n} "}, "logprobs": None, "finish_reason": None}])
            for n in range(5)
        ),
        _event(choices=[{"index": 0, "delta": {"content": "end"}, "finish_reason": "length"}]),
        _event(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}),
        b"data: [DONE]\n\n",
    ]
)


def _translated(pieces: list[bytes]) -> bytes:
    return _through(MessagesSend(None), pieces)


def test_a_stream_cut_anywhere_translates_as_it_does_whole():
    whole = _translated([STREAM])
    assert whole.count(b"event: content_block_delta") == 6
    assert b'"output_tokens":6' in whole
    for size in (1, 7, 50, 333):
        assert _translated([STREAM[at : at + size] for at in range(0, len(STREAM), size)]) == whole, size


def test_complete_events_keeps_an_unfinished_event_for_the_next_piece():
    translator = MessagesSend(None)  # any translator: the base cuts the events
    assert translator.complete_events(b"data: 1\n\ndata: 2") == b"data: 1\n\n"
    assert translator.complete_events(b"2\n") == b""
    assert translator.complete_events(b"\ndata: 3\n\n") == b"data: 22\n\ndata: 3\n\n"


def streamed_through(translator: TranslatedSend, pieces: list[bytes]) -> list[dict]:
    """The ASGI messages `translator` sends for a 200 stream that arrives in `pieces`."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        translator._send = send
        await translator(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
        )
        for piece in pieces:
            await translator({"type": "http.response.body", "body": piece, "more_body": True})
        await translator({"type": "http.response.body", "body": b"", "more_body": False})

    asyncio.run(run())
    return sent


def _through(translator: TranslatedSend, pieces: list[bytes]) -> bytes:
    return b"".join(message.get("body", b"") for message in streamed_through(translator, pieces))


class _Collected:
    """A server's body writer that keeps what is written."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> bool:
        self.parts.append(data)
        return True

    async def drain(self) -> None:
        return None


def _written_through(translator: TranslatedSend, pieces: list[bytes]) -> bytes:
    """What the client gets when the fast relay writes `pieces` through the translator's writer (the stream's end
    still goes through its ASGI send, as the exchange's last message)."""
    collected = _Collected()

    async def send(message: dict) -> None:
        collected.parts.append(message.get("body", b""))

    async def run() -> None:
        translator._send = send
        await translator(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
        )
        writer = translator.fast_writer(collected)
        for piece in pieces:
            assert writer.write(piece)
        await translator({"type": "http.response.body", "body": b"", "more_body": False})

    asyncio.run(run())
    return b"".join(collected.parts)


def _normalised(raw: bytes) -> bytes:
    """Without what differs from one run to the next: item ids, timestamps and durations."""
    raw = re.sub(rb'"(msg|fc|fs|call)_[0-9a-f]+"', rb'"\1_id"', raw)
    raw = re.sub(rb'"created_at":"[^"]*"', b'"created_at":"t"', raw)
    return re.sub(rb'"(\w+_duration)":\d+', rb'"\1":0', raw)


TRICKY = [
    _event(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
    *(
        _event(choices=[{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}])
        for text in ("Caf\u00e9 ", 'a "quote" ', "\\ back\nslash ", "\u2603 ")
    ),
    _event(choices=[{"index": 0, "delta": {"content": "end"}, "finish_reason": "length"}]),
    _event(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}),
    b"data: [DONE]\n\n",
]


# Another kind of chunk (one with logprobs) between text chunks: the texts around it are copied, it is parsed.
MIXED = [
    *TRICKY[:3],
    _event(choices=[{"index": 0, "delta": {"content": "lp "}, "logprobs": {"content": []}, "finish_reason": None}]),
    *TRICKY[3:],
]


@pytest.mark.parametrize("translator", ["messages", "responses", "ollama-chat", "ollama-generate"])
@pytest.mark.parametrize("cut", [None, "event", 1, 13])
@pytest.mark.parametrize("events", [TRICKY, MIXED], ids=["text", "mixed"])
@pytest.mark.parametrize("relay", ["general", "fast"])
def test_copied_text_chunks_translate_as_parsed_ones_do(translator, cut, events, relay):
    """Text chunks are copied without parsing (the common case), whether a piece of the stream holds many of them or
    one (an engine that sends each token as it comes); the answer is the one parsing them would give."""
    from apps.gateway.ollama_out import CHAT, GENERATE, OllamaSend
    from apps.gateway.responses_out import ResponsesSend

    def make(parsed: bool) -> TranslatedSend:
        if translator == "messages":
            cls, options = MessagesSend, {}
        elif translator == "responses":
            cls, options = ResponsesSend, {}
        else:
            cls, options = OllamaSend, {"answers": CHAT if translator == "ollama-chat" else GENERATE}
        if parsed:
            return type("Parsed", (cls,), {"texts_copying": lambda self: False})(None, **options)

        def counted(self, data: bytes, position: int, end: int) -> tuple[list[bytes], int]:
            texts, position = cls.texts_copied(self, data, position, end)
            counts[-1] += len(texts)
            return texts, position

        def counted_alone(self, data: bytes) -> bytes | None:
            translated = cls.text_alone_translated(self, data)
            counts[-1] += bool(translated)
            return translated

        counts.append(0)
        return type("Copied", (cls,), {"texts_copied": counted, "text_alone_translated": counted_alone})(
            None, **options
        )

    counts: list[int] = []
    stream = b"".join(events)
    if cut is None:
        pieces = [stream]
    elif cut == "event":
        pieces = events
    else:
        pieces = [stream[at : at + cut] for at in range(0, len(stream), cut)]
    through = _through if relay == "general" else _written_through
    copied, parsed = through(make(False), pieces), _through(make(True), pieces)
    assert _normalised(copied) == _normalised(parsed)
    # Copied: every text chunk after the first parsed one.
    assert counts == [4]


@pytest.mark.parametrize("translator", ["messages", "responses", "ollama-chat"])
@pytest.mark.parametrize("whole", [True, False], ids=["one-piece", "piece-per-event"])
@pytest.mark.parametrize("relay", ["general", "fast"])
def test_text_chunks_that_are_not_json_strings_are_parsed_for_the_rest_of_the_stream(translator, whole, relay):
    """A text chunk whose "string" would break out of its JSON (an engine that is not what it claims) is never
    copied: from there on every chunk is parsed, and what the client gets is well-formed."""
    from apps.gateway.ollama_out import CHAT, OllamaSend
    from apps.gateway.responses_out import ResponsesSend

    head = json.dumps(HEAD, separators=(",", ":"))[:-1]
    forged = (
        b"data: " + head.encode() + b',"choices":[{"index":0,"delta":{"content":"a","injected":"b"},'
        b'"logprobs":null,"finish_reason":null}]}\n\n'
    )
    events = [*TRICKY[:2], forged, *TRICKY[2:]]
    translator_send = (
        MessagesSend(None)
        if translator == "messages"
        else ResponsesSend(None)
        if translator == "responses"
        else OllamaSend(None, answers=CHAT)
    )
    through = _through if relay == "general" else _written_through
    translated = through(translator_send, [b"".join(events)] if whole else events)
    assert b"injected" not in translated
    separator = b"\n" if translator == "ollama-chat" else b"\n\n"
    for event in filter(None, translated.split(separator)):
        payload = event if translator == "ollama-chat" else event.partition(b"data: ")[2]
        json.loads(payload)  # every event is whole JSON


@given(st.lists(st.text(min_size=1, max_size=8, alphabet=st.sampled_from('ab"\\\n\u00e9/')), min_size=1, max_size=8))
def test_copied_strings_join_into_the_string_of_their_texts(texts):
    from apps.gateway.responses_out import json_strings_joined

    strings = [json.dumps(text, ensure_ascii=False).encode() for text in texts]
    assert json.loads(json_strings_joined(strings)) == "".join(texts)


HUGE = 123456789012345678901234567890  # past 64 bits: JSON allows it, and so must every translation


def test_a_tool_call_with_an_integer_past_64_bits_translates_for_ollama():
    from apps.gateway.ollama_out import CHAT, OllamaSend

    arguments = json.dumps({"id": HUGE})
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "look_up", "arguments": arguments}}
    stream = b"".join(
        [
            _event(choices=[{"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}, "finish_reason": None}]),
            _event(choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
            b"data: [DONE]\n\n",
        ]
    )
    lines = [json.loads(line) for line in _through(OllamaSend(None, answers=CHAT), [stream]).splitlines()]
    assert lines[0]["message"]["tool_calls"][0]["function"]["arguments"] == {"id": HUGE}
    assert lines[-1]["done"] is True


def test_a_request_field_with_an_integer_past_64_bits_is_echoed_by_a_streamed_response():
    from apps.gateway.responses_out import ResponsesSend

    translator = ResponsesSend(None)
    translator.echo = {"model": "gw-chat", "tools": [{"type": "function", "parameters": {"maximum": HUGE}}]}
    events = _through(translator, [b"".join(TRICKY)]).split(b"\n\n")
    documents = [json.loads(event.partition(b"data: ")[2]) for event in events if event]
    assert documents[0]["response"]["tools"][0]["parameters"]["maximum"] == HUGE
    assert documents[-1]["type"] == "response.incomplete"


@pytest.mark.parametrize("translator", ["messages", "responses", "ollama-chat"])
def test_a_chunk_with_a_non_finite_number_translates_as_before(translator):
    """Engines written in Python may write NaN or -Infinity (a logprob), which the standard library reads."""
    from apps.gateway.ollama_out import CHAT, OllamaSend
    from apps.gateway.responses_out import ResponsesSend

    logprobs = b'{"content":[{"token":"w","logprob":-Infinity,"bytes":null,"top_logprobs":[]}]}'
    head = json.dumps(HEAD, separators=(",", ":"))[:-1].encode()
    chunk = b"data: " + head + b',"choices":[{"index":0,"delta":{"content":"w"},"logprobs":' + logprobs
    chunk += b',"finish_reason":null}]}\n\n'
    stream = b"".join([*TRICKY[:2], chunk, *TRICKY[2:]])
    make = {
        "messages": lambda: MessagesSend(None),
        "responses": lambda: ResponsesSend(None),
        "ollama-chat": lambda: OllamaSend(None, answers=CHAT),
    }[translator]
    translated = _through(make(), [stream])
    assert b'"w"' in translated  # its text, as a delta or a line
    assert translated.rstrip().endswith(b"}") or translated.rstrip().endswith(b"}\n")  # the stream's end went out
