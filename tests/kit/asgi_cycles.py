"""uvicorn's per-request `RequestResponseCycle`, built without a server: for what the default server's body writer
does with one (tests) and costs (benchmarks)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


class RecordingTransport:
    """A transport that keeps what it is given (`written`), or drops it (`keep=False`)."""

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.keep:
            self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return None


def request_cycle(transport: RecordingTransport) -> RequestResponseCycle:
    """A cycle for a POST on `transport`, as uvicorn's httptools protocol makes one per request."""
    return RequestResponseCycle(
        scope={"type": "http", "method": "POST", "http_version": "1.1", "headers": []},  # type: ignore[arg-type]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("uvicorn.error"),
        access_logger=logging.getLogger("uvicorn.access"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
