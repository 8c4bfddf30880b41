"""What each `inferia` command does; `inferia_cli` parses the arguments and calls one of these."""

from __future__ import annotations

import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferia_cli.launcher import Supervisor
from inferia_cli.processes import ALL_ROLES, Endpoints, data_dir, drain_seconds, endpoints_from_env, role_spec
from inferia_runtime.draining import drain_begin, drain_clear

READY_TIMEOUT_S = 120.0
STOP_MARGIN_S = 5.0  # beyond the web server's drain time, before the supervisor kills what is left
WORKER_READY_LINE = " ready."  # Celery's "celery@host ready." once the worker consumes


@dataclass(frozen=True)
class EmbeddedStarted:
    """Which embedded servers this process started, and so stops again when it exits."""

    postgres: bool = False
    redis: bool = False


def embedded_up(data: Path) -> EmbeddedStarted:
    """Start the embedded servers that the environment does not replace by a URL (as settings.py would), before
    any child does, and tell which were not running yet."""
    from inferia_runtime import embedded

    wants_postgres, wants_redis = not os.environ.get("DATABASE_URL"), not os.environ.get("REDIS_URL")
    started = EmbeddedStarted(
        postgres=wants_postgres and not embedded.postgres_running(data),
        redis=wants_redis and not embedded.redis_running(data),
    )
    if wants_postgres:
        embedded.postgres_url(data)
    if wants_redis:
        embedded.redis_url(data)
    return started


def embedded_down(data: Path, started: EmbeddedStarted) -> None:
    """Stop the embedded servers this process started: Ctrl-C on `inferia demo` leaves nothing running."""
    if started.postgres or started.redis:
        from inferia_runtime import embedded

        embedded.stop(data, postgres=started.postgres, redis=started.redis)


def http_ok(url: str) -> bool:
    """Whether `url` answers 200 right now (readiness probes of the web server and the simulated node)."""
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own http:// endpoints
        return bool(response.status == 200)


def _supervisor_for_all(endpoints: Endpoints) -> Supervisor:
    """web, worker and beat under one supervisor, which waits for the web server's drain before killing. (Model
    replicas are the worker's to provision, through their provider's adapter; `inferia start sim` runs a
    standalone simulated node.)"""
    specs = [role_spec(role, endpoints) for role in ALL_ROLES]
    return Supervisor(specs, stop_timeout_s=drain_seconds() + STOP_MARGIN_S)


def replicas_stop_all() -> int:
    """Stop the replica processes the worker started on this host (simulator and local vLLM, tracked by pidfiles
    under the data directory): they outlive a worker restart, but not `inferia start all` stopping."""
    import django

    django.setup()
    from apps.compute.adapters.process import process_replicas_stop_all

    return process_replicas_stop_all()


def _supervise_then_stop_replicas(supervisor: Supervisor) -> int:
    """Supervise until Ctrl-C or a child's death; then, with the worker stopped, stop the replicas it started."""
    code = supervisor.supervise()
    stopped = replicas_stop_all()
    if stopped:
        supervisor.say(f"stopped {stopped} replica process(es)")
    return code


def command_init(*, verbosity: int) -> int:
    """`inferia init`."""
    import django

    django.setup()
    from inferia_cli.bootstrap import platform_init

    result = platform_init(verbosity=verbosity)
    admin = f", superadmin {result.superadmin.email}" if result.superadmin else " (no INFERIA_SUPERADMIN_EMAIL set)"
    state = "initialised" if result.changed else "already initialised; nothing changed"
    print(f"inferia: {state}: organisation {result.organization.slug!r}{admin}")
    return 0


def command_start(*, role: str, port: int | None, sim_port: int | None) -> int:
    """`inferia start ROLE`: one role replaces this process; `all` supervises every role."""
    endpoints = endpoints_from_env(port=port, sim_port=sim_port)
    if role in ("all", "web"):
        drain_clear(data_dir())  # a marker left by the previous run (a restarted container keeps its volumes)
    if role != "all":
        spec = role_spec(role, endpoints)
        os.execve(spec.argv[0], list(spec.argv), {**os.environ, **spec.env})  # noqa: S606 - our own server
    data = data_dir()
    started = embedded_up(data)
    try:
        supervisor = _supervisor_for_all(endpoints)
        supervisor.start()
        if supervisor.wait_until(
            lambda: http_ok(f"{endpoints.web_url}/healthz"), timeout_s=READY_TIMEOUT_S, what="web"
        ):
            supervisor.say(f"Inferia is serving on {endpoints.web_url} (Ctrl-C stops everything)")
        return _supervise_then_stop_replicas(supervisor)
    finally:
        embedded_down(data, started)


def command_drain(*, wait_s: float) -> int:
    """`inferia drain`: `/readyz` of this data directory's web processes answers 503 from now on; returns after
    `wait_s`, the time load balancers take to stop sending new requests (the server's own drain follows SIGTERM)."""
    drain_begin(data_dir())
    print(f"inferia: draining: /readyz answers 503; waiting {wait_s:g} s for load balancers to notice", flush=True)
    time.sleep(max(0.0, wait_s))
    return 0


def command_demo(*, port: int | None, sim_port: int | None) -> int:
    """`inferia demo`: init, demo data, `start all`, and the banner with the keys once everything answers."""
    from inferia_cli.demo import demo_admin_prepare, demo_banner, demo_ensure

    data = data_dir()
    os.environ["INFERIA_UPSTREAM_ALLOW_PRIVATE"] = "true"  # the demo's node listens on loopback
    admin = demo_admin_prepare(data_dir=data)
    is_embedded = not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL")
    print("inferia: preparing the database" + (f" (embedded, under {data})" if is_embedded else ""), flush=True)
    started = embedded_up(data)
    try:
        import django

        django.setup()
        from django.db import connections

        from inferia_cli.bootstrap import platform_init

        platform_init(verbosity=0)
        demo = demo_ensure(data_dir=data, admin_email=admin.email)
        connections.close_all()  # the supervisor holds no connection while it waits
        endpoints = endpoints_from_env(port=port, sim_port=sim_port)
        supervisor = _supervisor_for_all(endpoints)
        worker_ready = supervisor.watch("worker", WORKER_READY_LINE)
        supervisor.start()
        nodes = _demo_ready(supervisor, endpoints, demo.deployment)
        if nodes and supervisor.wait_until(worker_ready.is_set, timeout_s=READY_TIMEOUT_S, what="worker"):
            store_id = _demo_store(supervisor, endpoints, demo, admin.email)
            # the banner comes last, so that it is not lost above the worker's own
            banner = demo_banner(
                endpoints=endpoints,
                admin=admin,
                demo=demo,
                data_dir=data,
                embedded=is_embedded,
                nodes=nodes,
                store_id=store_id,
            )
            supervisor.print_block(banner)
        return _supervise_then_stop_replicas(supervisor)
    finally:
        embedded_down(data, started)


def _demo_store(supervisor: Supervisor, endpoints: Endpoints, demo: Any, admin_email: str) -> str:
    """Once the embedding deployment serves, the sample vector store (created on the first run); "" when the
    embedding deployment did not come up or the store could not be created (the demo runs on without it)."""
    from django.db import connections

    from inferia_cli.demo import demo_store_ensure

    if not _demo_ready(supervisor, endpoints, demo.embedding_deployment):
        return ""
    try:
        return demo_store_ensure(organization=demo.organization, admin_email=admin_email)
    except Exception as error:  # the chat demo stands on its own; say why the knowledge part is missing
        supervisor.print_block(f"inferia: the sample knowledge base could not be created: {error}")
        return ""
    finally:
        connections.close_all()


def _demo_ready(supervisor: Supervisor, endpoints: Endpoints, deployment: Any) -> list[str]:
    """Wait for the worker to provision the demo deployment (READY, through the simulator adapter), then for the
    web server; the endpoints of its READY replicas, or [] if it did not come up."""
    from django.db import connections

    from apps.compute.models import ModelDeployment, Replica

    def ready_endpoints() -> list[str]:
        try:
            if not ModelDeployment.objects.filter(pk=deployment.pk, state=ModelDeployment.State.READY).exists():
                return []
            return list(
                Replica.objects.filter(deployment=deployment, state=Replica.State.READY).values_list(
                    "endpoint", flat=True
                )
            )
        finally:
            connections.close_all()  # the supervisor holds no connection while it waits

    nodes: list[str] = []

    def provisioned() -> bool:
        # A replica row can still say READY from before a restart while its process is gone (the health check
        # replaces it within seconds): only an endpoint that answers counts.
        nodes[:] = [url for url in ready_endpoints() if http_ok(engine_health_url(url))]
        return bool(nodes)

    if not supervisor.wait_until(provisioned, timeout_s=READY_TIMEOUT_S, what="the demo deployment"):
        return []
    web = supervisor.wait_until(lambda: http_ok(f"{endpoints.web_url}/healthz"), timeout_s=READY_TIMEOUT_S, what="web")
    return nodes if web else []


def engine_health_url(endpoint: str) -> str:
    """The engine's `/health`, from a replica endpoint given with or without its `/v1` suffix."""
    return endpoint.rstrip("/").removesuffix("/v1") + "/health"


def command_embedded(*, action: str) -> int:
    """`inferia embedded status|stop`: the embedded servers outlive `inferia init` and single-role starts."""
    from inferia_runtime import embedded

    data = data_dir()
    if action == "stop":
        embedded.stop(data)
    state = {True: "running", False: "stopped"}
    print(
        f"PostgreSQL: {state[embedded.postgres_running(data)]}; Redis: {state[embedded.redis_running(data)]} ({data})"
    )
    return 0
