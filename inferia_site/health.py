"""Health endpoints for load balancers and orchestrators.

- `/livez`: the process answers. Nothing else: a database or Redis outage must not get every web process restarted.
- `/readyz`: it should get traffic: the database and Redis answer and it is not draining (inferia_runtime.draining).
- `/healthz`: the database and Redis answer (for checks that predate the two above, such as docker compose's).
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from inferia_runtime.draining import draining
from inferia_runtime.redis_clients import redis_ping


def _dependencies() -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure to reach the database means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    checks["redis"] = "ok" if redis_ping() else "error"
    return checks


def _answer(checks: dict[str, str]) -> JsonResponse:
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503
    )


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and Redis answer, 503 naming what does not."""
    return _answer(_dependencies())


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and Redis answer and the process is not draining, 503 naming what is wrong."""
    if draining(settings.DATA_DIR):
        return _answer({"draining": "yes"})
    return _answer(_dependencies())


def livez(request: HttpRequest) -> JsonResponse:
    """200 while the process can answer at all."""
    return JsonResponse({"status": "ok"})
