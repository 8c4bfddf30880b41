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


def test_the_writer_tells_of_a_client_gone_before_the_response_was_complete_once_and_only_then():
    calls = []
    gone, complete, unwatched = (_cycle(RecordingTransport()) for _ in range(3))
    for name, cycle in (("gone", gone), ("complete", complete), ("unwatched", unwatched)):
        cycle.scope["extensions"][BODY_WRITER].on_client_gone(lambda name=name: calls.append(name))
    unwatched.scope["extensions"][BODY_WRITER].on_client_gone(None)
    # uvicorn marks the cycle when its connection is lost before the response was complete, and not after.
    gone.disconnected = unwatched.disconnected = True
    complete.response_complete = True
    for cycle in (gone, complete, unwatched, gone):
        cycle.scope["extensions"][BODY_WRITER].connection_lost()
    assert calls == ["gone"]
