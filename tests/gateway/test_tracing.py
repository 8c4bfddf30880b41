"""OpenTelemetry tracing: with an OTLP endpoint configured, a collector receives a span per step of a request, each
with the request id; without one, the gateway imports no opentelemetry module at all."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.factories import OrganizationFactory
from tests.gateway.conftest import http, make_deployment, make_key, wait_until_served
from tests.gateway.stand_ins import _LoopThread, scripted_engine
from tests.kit.ports import port_reserve
from tests.kit.processes import REPO, TestProcess, web_start
from tests.kit.waiting import eventually

OTEL_VARIABLES = ("INFERIA_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class OtlpCollector:
    """An OTLP/HTTP trace receiver: keeps (span name, attributes) of every span posted to /v1/traces, and each
    span's ids (hex: trace, span, parent) under its name in `ids`."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any]]] = []
        self.ids: list[tuple[str, str, str, str]] = []
        self.port = port_reserve()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = _LoopThread()
        self._runner: web.AppRunner | None = None
        self._loop.run(self._start())

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _traces(self, request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        export = ExportTraceServiceRequest()
        export.ParseFromString(raw)
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {item.key: _value(item.value) for item in span.attributes}
                    self.spans.append((span.name, attributes))
                    self.ids.append((span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex()))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def stop(self) -> None:
        if self._runner is not None:
            self._loop.run(self._runner.cleanup())
        self._loop.stop()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    running = OtlpCollector()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def traced_gateway(test_database_url: str, collector: OtlpCollector) -> Iterator[TestProcess]:
    process = web_start(
        test_database_url, extra_env={"INFERIA_OTEL_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    )
    yield process
    process.stop()


def test_a_traced_request_sends_a_span_per_step_with_its_request_id(transactional_db, sim, traced_gateway, collector):

    organization = OrganizationFactory(name="Acme", slug="acme")
    _key, secret = make_key(organization)
    make_deployment(organization, "gw-chat", [sim.url])
    wait_until_served(traced_gateway, secret, "gw-chat")
    body = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}

    status, _, _ = http(
        "POST", f"{traced_gateway.url}/v1/chat/completions", body=body, secret=secret,
        headers={"x-request-id": "trace-me-1"},
    )  # fmt: skip

    assert status == 200
    wanted = {"gateway.request", "gateway.auth", "gateway.policy", "gateway.upstream", "gateway.stream"}
    eventually(
        lambda: (
            wanted
            <= {
                name
                for name, attributes in collector.spans
                if attributes.get("inferia.client_request_id") == "trace-me-1"
            }
        ),
        timeout=10,
        what=f"the spans {sorted(wanted)}",
    )
    upstream = [attrs for name, attrs in collector.spans if name == "gateway.upstream"]
    assert upstream[-1]["inferia.replica_id"] > 0


def test_the_client_trace_continues_through_the_gateway_to_the_engine(transactional_db, traced_gateway, collector):

    organization = OrganizationFactory(name="Acme", slug="acme")
    _key, secret = make_key(organization)
    trace_id, client_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with scripted_engine(["Hel", "lo"]) as engine:
        make_deployment(organization, "gw-traced", [engine.url])
        wait_until_served(traced_gateway, secret, "gw-traced")
        body = {"model": "gw-traced", "messages": [{"role": "user", "content": "hi"}], "stream": True}

        status, _, _ = http(
            "POST", f"{traced_gateway.url}/v1/chat/completions", body=body, secret=secret,
            headers={"x-request-id": "trace-me-2", "traceparent": f"00-{trace_id}-{client_span}-01"},
        )  # fmt: skip

        assert status == 200
        upstream_parent = engine.headers[-1]["traceparent"]
    eventually(
        lambda: (
            {"gateway.request", "gateway.upstream"} <= {name for name, trace, *_ in collector.ids if trace == trace_id}
        ),
        timeout=10,
        what="the request and upstream spans of the client's trace",
    )
    spans = {name: (span, parent) for name, trace, span, parent in collector.ids if trace == trace_id}
    assert spans["gateway.request"][1] == client_span  # the gateway's root span is the client's span's child
    # The engine is called inside the upstream span: its traceparent names that trace and span.
    assert upstream_parent == f"00-{trace_id}-{spans['gateway.upstream'][0]}-01"


def test_with_tracing_off_the_gateway_imports_no_opentelemetry_module():
    # redis-py 8 imports the OpenTelemetry metrics SDK by itself when it is installed (its own optional metrics,
    # idle unless initialised): the gateway must add no opentelemetry module to what redis alone loads.
    script = (
        "import sys, redis;"
        "otel = lambda: {name for name in sys.modules if name.startswith('opentelemetry')};"
        "before = otel();"
        "import django; django.setup(); import inferia_site.asgi, apps.gateway.consumers, apps.gateway.pipeline;"
        "from apps.gateway import pipeline, tracing;"
        "assert not tracing.ENABLED; assert 'apps.gateway.otel' not in sys.modules;"
        "assert not hasattr(pipeline.authenticate, '__wrapped__');"
        "print(sorted(otel() - before))"
    )
    env = {name: value for name, value in os.environ.items() if name not in OTEL_VARIABLES}
    env["DJANGO_SETTINGS_MODULE"] = "inferia_site.settings"

    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
