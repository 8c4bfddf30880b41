"""The answer translators' stream handling: an event split across the pieces a stream arrives in is translated once,
whole, whichever bytes it was cut at."""

from __future__ import annotations

import asyncio
import json

from apps.gateway.messages_out import MessagesSend
from apps.gateway.translated_send import TranslatedSend

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gw-chat"}


def _event(**fields) -> bytes:
    return b"data: " + json.dumps({**HEAD, **fields}, separators=(",", ":")).encode() + b"\n\n"


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
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        out = MessagesSend(send)
        await out({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for piece in pieces:
            await out({"type": "http.response.body", "body": piece, "more_body": True})
        await out({"type": "http.response.body", "body": b"", "more_body": False})

    asyncio.run(run())
    return b"".join(message.get("body", b"") for message in sent)


def test_a_stream_cut_anywhere_translates_as_it_does_whole():
    whole = _translated([STREAM])
    assert whole.count(b"event: content_block_delta") == 6
    assert b'"output_tokens":6' in whole
    for size in (1, 7, 50, 333):
        assert _translated([STREAM[at : at + size] for at in range(0, len(STREAM), size)]) == whole, size


def test_complete_events_keeps_an_unfinished_event_for_the_next_piece():
    translator = TranslatedSend(lambda message: asyncio.sleep(0))
    assert translator.complete_events(b"data: 1\n\ndata: 2") == b"data: 1\n\n"
    assert translator.complete_events(b"2\n") == b""
    assert translator.complete_events(b"\ndata: 3\n\n") == b"data: 22\n\ndata: 3\n\n"
