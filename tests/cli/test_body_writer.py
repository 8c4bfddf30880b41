"""The default server's body writer (the fast relay's write path) leaves no reference cycle: a request's cycle, its
scope and its buffers are freed when the request is done, not whenever the garbage collector next runs."""

from __future__ import annotations

import gc
import weakref

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from inferia_cli.transport.uvicorn_http import BodyWriter
from inferia_runtime.body_writer import BODY_WRITER
from tests.kit.asgi_cycles import RecordingTransport, request_cycle


def _cycle(transport: RecordingTransport) -> RequestResponseCycle:
    cycle = request_cycle(transport)
    cycle.scope["extensions"] = {BODY_WRITER: BodyWriter(cycle)}  # as the protocol adds it
    return cycle


def test_a_finished_request_is_freed_by_reference_counting_alone():
    gc.disable()
    try:
        cycle = _cycle(RecordingTransport())
        gone = weakref.ref(cycle)
        del cycle
        assert gone() is None
    finally:
        gc.enable()


def test_the_writer_writes_chunked_bodies_and_stops_once_the_request_is_gone():
    transport = RecordingTransport()
    cycle = _cycle(transport)
    cycle.chunked_encoding = True
    writer = cycle.scope["extensions"][BODY_WRITER]
    assert writer.write(b"data: 1\n\n") is True
    assert transport.written == [b"9\r\ndata: 1\n\n\r\n"]
    del cycle
    assert writer.write(b"data: 2\n\n") is False
    assert len(transport.written) == 1
