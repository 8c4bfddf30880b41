"""`TranslatedSend`: an ASGI `send` in front of the real one that turns the pipeline's answers (OpenAI's shapes) into
another protocol's on their way to the client, as the edges for other clients do (Anthropic Messages, OpenAI
Responses, Ollama).

A stream goes through as it arrives, each body message translated (`stream_body`); a JSON answer is held until its
last byte (the pipeline sends that once the request is metered), translated whole (`whole_body`) and sent with its
new length.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from apps.gateway.event_relay import whole_events
from inferia_runtime.json_copy import json_strings, string_between

if TYPE_CHECKING:
    from inferia_runtime.body_writer import BodyWriter

Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# The common chunk of a stream is one more piece of text. vLLM's chunks of one stream share their head (id, object,
# created, model), so a chunk that is that head, this prefix, one JSON string and this suffix carries that string and
# nothing else: it is translated by copying the string as it came (already escaped), without parsing the chunk.
TEXT_PREFIX = b'"choices":[{"index":0,"delta":{"content":'
TEXT_SUFFIX = b'},"logprobs":null,"finish_reason":null}]}'
_TEXT_END = TEXT_SUFFIX + b"\n\n"


class TranslatedSend(ABC):
    """The ASGI side of an answer's translation; a subclass says how bodies (and, if need be, headers) change."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._streaming = False
        self._start: dict[str, Any] | None = None
        self._held: list[bytes] = []
        self._pending = b""  # the start of a stream's event that the last piece did not finish
        self._text_head = b""  # `data: `, the stream's chunk head and TEXT_PREFIX, once a chunk was parsed

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body" and self._streaming:  # a stream's chunks: the common message
            more = message.get("more_body", False)
            body = await self.stream_body(message.get("body", b""), final=not more)
            await self._send({"type": "http.response.body", "body": body, "more_body": more})
            return
        if kind == "http.response.start":
            headers = message.get("headers") or []
            self._streaming = any(
                name == b"content-type" and value.startswith(b"text/event-stream") for name, value in headers
            )
            headers = self.response_headers(headers, streaming=self._streaming)
            if self._streaming:
                await self._send({**message, "headers": headers})
            else:
                self._start = {**message, "headers": [(n, v) for n, v in headers if n != b"content-length"]}
            return
        if kind != "http.response.body":
            await self._send(message)
            return
        self._held.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        start = self._start
        assert start is not None
        body = await self.whole_body(start["status"], b"".join(self._held))
        await self._send({**start, "headers": [*start["headers"], (b"content-length", b"%d" % len(body))]})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    def complete_events(self, data: bytes) -> bytes:
        """A stream's events that are complete with this piece of it (SSE events end with a blank line), starting
        with the one the last piece left unfinished; an unfinished last one waits for the next piece."""
        data, self._pending = whole_events(self._pending, data)
        return data

    def text_head_learn(self, payload: bytes) -> None:
        """Remember the head of the stream's chunks from one that was parsed (`payload`: its JSON)."""
        choices_at = payload.find(b'"choices":')
        if choices_at > 0 and not self._text_head:
            self._text_head = b"data: " + payload[:choices_at] + TEXT_PREFIX

    def texts_copied(self, data: bytes, position: int, end: int) -> tuple[list[bytes], int]:
        """The texts of the text chunks that start at `position` in `data` (whole events up to `end`), each the JSON
        string it came as (quotes included; empty ones left out), and where the first other event starts. None
        before a chunk taught the stream's head, and none for the rest of a stream whose text chunks are not
        well-formed."""
        head = self._text_head
        if not (head and data.startswith(head, position)):
            return [], position
        # The common case, checked at once: every event up to the last text chunk's end is a text chunk (a JSON
        # string cannot hold the chunks' end, so splitting there cuts only between chunks).
        last = data.rfind(_TEXT_END, position, end)
        if last != -1:
            skip = len(head)
            pieces = data[position:last].split(_TEXT_END)
            texts = [piece[skip:] for piece in pieces]
            if all(map(head.__eq__, [piece[:skip] for piece in pieces])) and json_strings(texts):
                return [text for text in texts if text != b'""'], last + len(_TEXT_END)
        return self._texts_walked(data, position, end)

    def _texts_walked(self, data: bytes, position: int, end: int) -> tuple[list[bytes], int]:
        """`texts_copied` chunk by chunk: where other events come between text chunks, or a text is no JSON string."""
        head = self._text_head
        texts: list[bytes] = []
        start, skip = position, len(head)
        while data.startswith(head, position):
            # Where the chunk ends, if it is a text chunk; an event that ends before that is another kind of chunk
            # with the same head (logprobs, a finish reason), where the run stops.
            text_end = data.find(_TEXT_END, position + skip, end)
            if text_end == -1 or data.find(b"\n\n", position + skip, text_end + len(TEXT_SUFFIX)) != -1:
                break
            text = data[position + skip : text_end]
            if text != b'""':  # an empty text adds nothing, as a parsed one would not
                texts.append(text)
            position = text_end + len(_TEXT_END)
        if texts and not json_strings(texts):
            self._text_head = b""  # such chunks are parsed, every one
            return [], start
        return texts, position

    def text_alone_translated(self, data: bytes) -> bytes | None:
        """`data` translated when it is one text chunk and nothing else (with nothing pending before it, while texts
        are copied), as a stream's piece is when its engine sends a token at a time: checked in one call
        (`string_between`, compiled where it could be built), without splitting or parsing it. None for any other
        piece."""
        head = self._text_head
        if head and not self._pending and self.texts_copying():
            text = string_between(data, head, _TEXT_END)
            if text is not None:
                # An empty text adds nothing, as a parsed one would not.
                return self.text_translated(text) if text != b'""' else b""
        return None

    def text_translated(self, text: bytes) -> bytes:
        """One copied text (a JSON string as it came) translated: what `texts_add` gives for it alone, which an edge
        may build more directly."""
        out: list[bytes] = []
        self.texts_add([text], out)
        return b"".join(out)

    def events_translate(self, data: bytes, out: list[bytes]) -> int:
        """Translate the whole events of `data` into `out`: each run of text chunks through `texts_add` (while
        `texts_copying`), each other `data:` event's payload through `event_add`, until `event_add` answers True;
        where the walk stopped (the length of `data` when it went through)."""
        end = len(data)
        position = 0
        while position < end:
            if self.texts_copying():
                texts, position = self.texts_copied(data, position, end)
                if texts:
                    self.texts_add(texts, out)
                if position >= end:
                    break
            boundary = data.find(b"\n\n", position, end)
            if data.startswith(b"data: ", position) and self.event_add(data[position + 6 : boundary], out):
                return position
            position = boundary + 2
        return end

    @abstractmethod
    def texts_copying(self) -> bool:
        """Whether text chunks are copied now (`texts_add`) rather than parsed (`event_add`)."""

    @abstractmethod
    def texts_add(self, texts: list[bytes], out: list[bytes]) -> None:
        """Translate copied texts (JSON strings as they came) into `out`."""

    @abstractmethod
    def event_add(self, payload: bytes, out: list[bytes]) -> bool:
        """Translate one parsed event's payload (`[DONE]` included) into `out`; True to stop the walk there."""

    def fast_writer(self, writer: BodyWriter) -> BodyWriter:
        """The server's body writer with this translation in front, for the fast relay."""
        return TranslatedWriter(writer, self)

    @abstractmethod
    def piece_translated(self, data: bytes) -> bytes:
        """A piece of a stream but its last, translated as `stream_body` would translate it, without awaiting."""

    def response_headers(self, headers: Headers, *, streaming: bool) -> Headers:
        """The answer's headers as the client gets them (the same by default)."""
        return headers

    @abstractmethod
    async def stream_body(self, data: bytes, *, final: bool) -> bytes:
        """What the client gets for the next piece of a stream (`final`: its last)."""

    @abstractmethod
    async def whole_body(self, status: int, body: bytes) -> bytes:
        """What the client gets for a whole answer with this status."""


class TranslatedWriter:
    """A body writer that translates each piece of a stream on its way to the server's: the fast relay's writes get
    the same translation as the general relay's ASGI messages."""

    __slots__ = ("_send", "_writer")

    def __init__(self, writer: BodyWriter, send: TranslatedSend) -> None:
        self._writer = writer
        self._send = send

    def write(self, data: bytes) -> bool:
        # The common piece (one more token) first, without the walk through the piece's events.
        translated = self._send.text_alone_translated(data)
        if translated is None:
            translated = self._send.piece_translated(data)
        return self._writer.write(translated) if translated else True

    async def drain(self) -> None:
        await self._writer.drain()
