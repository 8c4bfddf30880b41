"""Console server-time benchmark: every main console page against a large tenant (issue 7's "< 300 ms per page with
1M usage rows, 100k API keys and 100k audit events").

Seeds (once; later runs reuse the data) a dedicated database with one organisation holding `--usage` usage records
spread over the last 30 days (with the rollups, at every grain, the usage worker would have written for them),
`--keys` API keys and `--audit` audit events, all by `INSERT ... SELECT ... FROM generate_series(...)` in SQL. Then,
in process with Django's test Client signed in as the organisation's owner (no authenticator enrolled), requests each
page: the first request warms caches, the next `--runs` are timed (median and p95), and one more counts the queries.
Prints a table and writes JSON under bench-results/.

    .venv/bin/python tests/bench/bench_console.py [--usage 1000000 --keys 100000 --audit 100000] [--runs 5]
        [--database inferia_bench_console] [--reseed]

The database is created (and migrated) when missing; DATABASE_URL is set to it by this script (the server from
BENCH_PG_URL, default the server of DATABASE_URL: the tests' PostgreSQL with pgvector). Redis: REDIS_URL's server,
database 9. A seed older than a day is redone, so that the "24h" range has data; so is a seed at other sizes (the
database is dropped and recreated: audit rows refuse DELETE).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from inferia_runtime.database_url import database_url_with_name  # noqa: E402

TARGET_MS = 300.0
# What the seed holds beyond its sizes; a seed of another shape is redone. 3: latency histograms, 4xx apart, the
# per-deployment and per-model daily rollups and the engines' load samples at both resolutions. 4: failed rows
# carry their error message; keys a purpose.
SEED_SHAPE = 4
ORG_SLUG = "bench-console"
OWNER_EMAIL = "owner@bench-console.test"
MODELS = [f"bench-model-{n}" for n in range(8)]
TEAMS = 6
MEMBERS = 200
DEPLOYMENTS = 16
HOT_KEYS = 2000  # usage comes mostly from these keys (skewed like real traffic); the rest of the keys are idle
ACTIONS = ["api_key.create", "api_key.rotate", "api_key.revoke", "policy.update", "deployment.scale",
           "membership.create", "login.success", "login.failure", "template.version", "team.update"]  # fmt: skip


def _pg_admin_url(database: str) -> tuple[str, str]:
    default = os.environ.get("DATABASE_URL", "postgres://postgres@localhost:5432/inferia")
    base = os.environ.get("BENCH_PG_URL", default)
    return base, database_url_with_name(base, database)


def _psql(base: str, sql: str, database: str = "postgres") -> str:
    out = subprocess.run(["psql", database_url_with_name(base, database), "-v", "ON_ERROR_STOP=1", "-tAc", sql],
                         check=True, capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip()


def database_prepare(database: str, *, drop: bool) -> None:
    base, url = _pg_admin_url(database)
    exists = _psql(base, f"SELECT 1 FROM pg_database WHERE datname = '{database}'") == "1"
    if exists and drop:
        print(f"dropping database {database} (reseed at another size)", flush=True)
        _psql(base, f'DROP DATABASE "{database}" WITH (FORCE)')
        exists = False
    if not exists:
        _psql(base, f'CREATE DATABASE "{database}"')
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True)


def seed_state(database: str) -> dict[str, Any] | None:
    base, _ = _pg_admin_url(database)
    if _psql(base, f"SELECT 1 FROM pg_database WHERE datname = '{database}'") != "1":
        return None
    found = _psql(base, "SELECT to_regclass('bench_console_seed') IS NOT NULL", database)
    if found != "t":
        return None
    value = _psql(base, "SELECT value FROM bench_console_seed WHERE name = 'seed'", database)
    return json.loads(value) if value else None


SEED_SQL = """
SELECT setseed(0.4242);
CREATE TABLE IF NOT EXISTS bench_console_seed (name text PRIMARY KEY, value text NOT NULL);

-- teams, members (users with memberships), deployments and replicas
INSERT INTO orgs_team (name, slug, created_at, organization_id)
SELECT 'Team ' || t, 'team-' || t, now(), %(org)s FROM generate_series(1, %(teams)s) t;

INSERT INTO orgs_user (password, is_superuser, email, full_name, is_staff, is_active, date_joined)
SELECT '!', false, 'member' || n || '@bench-console.test', 'Member ' || n, false, true, now() - n * interval '1 hour'
FROM generate_series(1, %(members)s) n;
INSERT INTO orgs_membership (created_at, role_id, user_id, organization_id)
SELECT u.date_joined, %(member_role)s, u.id, %(org)s FROM orgs_user u WHERE u.email LIKE 'member%%@bench-console.test';

-- API keys: created over the last year, a tenth revoked, a tenth with a team, owned by the owner
INSERT INTO keys_apikey (name, prefix, secret_hash, scopes, allowed_models, created_at, expires_at, revoked_at,
                         last_used_at, created_by_id, organization_id, owner_id, rotated_from_id, team_id, purpose)
SELECT 'key-' || lpad(k::text, 6, '0') || CASE WHEN k %% 3 = 0 THEN ' ci runner' WHEN k %% 3 = 1 THEN ' backend'
                                             ELSE ' notebook' END,
       'sk-inf-b' || lpad(k::text, 8, '0'),
       md5('secret' || k) || md5('hash' || k),
       ARRAY['inference'], ARRAY[]::varchar[],
       now() - (%(keys)s - k) * (interval '365 days' / %(keys)s),
       NULL,
       CASE WHEN k %% 10 = 0 THEN now() - interval '1 day' END,
       NULL, %(owner)s, %(org)s, %(owner)s, NULL,
       CASE WHEN k %% 10 = 1 THEN (SELECT min(id) FROM orgs_team WHERE organization_id = %(org)s) + (k %% %(teams)s)
       END, ''
FROM generate_series(1, %(keys)s) k;

CREATE TEMP TABLE bench_keys AS
SELECT row_number() OVER (ORDER BY id DESC) AS n, id, team_id FROM keys_apikey WHERE organization_id = %(org)s;
CREATE INDEX ON bench_keys (n);
ANALYZE bench_keys;

-- usage: spread over the last 30 days; 90%% from the hot keys (the newest), 10%% from any key; 3%% failures (a third
-- of them refused 429, the rest 500), 2%% with guardrails that fired; spread over the deployments
INSERT INTO audit_usagerecord (request_id, started_at, endpoint, model, prompt_tokens, completion_tokens, cost_micros,
    ttft_ms, latency_ms, status_code, outcome, error_code, error_message, estimated, streamed, guardrails, api_key_id,
    deployment_id, organization_id, replica_id, team_id)
SELECT 'bench-' || u.i, u.started_at, 'chat.completions',
       (ARRAY%(models)s)[1 + ((u.key_n * (%(models_per_key)s < %(nmodels)s)::int + u.i %% %(models_per_key)s)
                              %% %(nmodels)s)],
       u.prompt, u.completion,
       (u.prompt * 500 + u.completion * 1500) / 1000,
       20 + (u.r * 80), 200 + (u.r * 1800),
       CASE WHEN NOT u.err THEN 200 WHEN u.i %% 3 = 0 THEN 429 ELSE 500 END,
       CASE WHEN NOT u.err THEN 'ok' WHEN u.i %% 3 = 0 THEN 'denied' ELSE 'error' END,
       CASE WHEN NOT u.err THEN '' WHEN u.i %% 3 = 0 THEN 'rate_limited' ELSE 'upstream_error' END,
       CASE WHEN NOT u.err THEN '' WHEN u.i %% 3 = 0 THEN 'Rate limit reached' ELSE 'The upstream failed' END,
       false, u.i %% 2 = 0,
       CASE WHEN u.i %% 50 = 0 THEN
         jsonb_build_array(jsonb_build_object('category', (ARRAY['pii', 'toxicity', 'prompt_injection'])[1 + u.i %% 3],
                                              'action', (ARRAY['redact', 'block', 'flag'])[1 + u.i %% 3], 'count', 1))
       ELSE '[]'::jsonb END,
       k.id, (SELECT min(id) FROM compute_modeldeployment WHERE organization_id = %(org)s) + u.i %% %(deployments)s,
       %(org)s, NULL, k.team_id
FROM (
    SELECT i,
           now() - random() * interval '30 days' AS started_at,
           (50 + random() * 950)::int AS prompt, (10 + random() * 490)::int AS completion,
           random() AS r, random() < 0.03 AS err,
           CASE WHEN random() < 0.9 THEN 1 + floor(random() * %(hot)s)::int
                ELSE 1 + floor(random() * %(keys)s)::int END AS key_n
    FROM generate_series(1, %(usage)s) i
) u JOIN bench_keys k ON k.n = u.key_n;

-- the hourly rollups the usage worker keeps, from those very rows, with their latency histograms
INSERT INTO audit_usagerollup (hour, model, requests, errors, prompt_tokens, completion_tokens, cost_micros,
                               latency_ms_total, ttft_ms_total, client_errors, server_errors, ttft_histogram,
                               latency_histogram, api_key_id, organization_id, team_id)
SELECT date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', model, count(*),
       count(*) FILTER (WHERE outcome <> 'ok'), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros),
       sum(latency_ms), sum(coalesce(ttft_ms, 0)), count(*) FILTER (WHERE status_code BETWEEN 400 AND 499),
       count(*) FILTER (WHERE status_code >= 500), %(ttft_histogram)s, %(latency_histogram)s,
       api_key_id, organization_id, team_id
FROM audit_usagerecord WHERE organization_id = %(org)s
GROUP BY 1, model, api_key_id, organization_id, team_id;

-- the per-deployment hourly rollups, from the rows too (the hourly ones have no deployment)
INSERT INTO usage_deploymentrollup (hour, deployment_id, requests, errors, prompt_tokens, completion_tokens,
                                    cost_micros, latency_ms_total, ttft_ms_total, client_errors, server_errors,
                                    ttft_histogram, latency_histogram, organization_id, team_id)
SELECT date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', deployment_id, count(*),
       count(*) FILTER (WHERE outcome <> 'ok'), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros),
       sum(latency_ms), sum(coalesce(ttft_ms, 0)), count(*) FILTER (WHERE status_code BETWEEN 400 AND 499),
       count(*) FILTER (WHERE status_code >= 500), %(ttft_histogram)s, %(latency_histogram)s,
       organization_id, team_id
FROM audit_usagerecord WHERE organization_id = %(org)s AND deployment_id IS NOT NULL
GROUP BY 1, deployment_id, organization_id, team_id;

-- and the per-model hourly and per-key daily rollups it keeps beside them, from the hourly ones
INSERT INTO audit_usagemodelrollup (hour, organization_id, team_id, model, requests, errors, prompt_tokens,
                                    completion_tokens, cost_micros, latency_ms_total, ttft_ms_total, client_errors,
                                    server_errors, ttft_histogram, latency_histogram)
SELECT hour, organization_id, team_id, model, sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens),
       sum(cost_micros), sum(latency_ms_total), sum(ttft_ms_total), sum(client_errors), sum(server_errors),
       %(ttft_histogram_sum)s, %(latency_histogram_sum)s
FROM audit_usagerollup WHERE organization_id = %(org)s GROUP BY hour, organization_id, team_id, model;

-- the per-model daily rollups, from the hourly ones
INSERT INTO usage_modeldayrollup (day, organization_id, team_id, model, requests, errors, prompt_tokens,
                                  completion_tokens, cost_micros, latency_ms_total, ttft_ms_total, client_errors,
                                  server_errors, ttft_histogram, latency_histogram)
SELECT date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', organization_id, team_id, model, sum(requests),
       sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros), sum(latency_ms_total),
       sum(ttft_ms_total), sum(client_errors), sum(server_errors), %(ttft_histogram_sum)s, %(latency_histogram_sum)s
FROM audit_usagerollup WHERE organization_id = %(org)s GROUP BY 1, organization_id, team_id, model;

-- the engines' load the health task samples: every deployment, at both resolutions, for their whole history
INSERT INTO compute_deploymentloadsample (deployment_id, step, at, running, waiting, kv_cache, replicas)
SELECT d.id, r.step,
       to_timestamp(floor(extract(epoch FROM now()) / r.step) * r.step) - s * r.step * interval '1 second',
       floor(random() * 12), floor(random() * 4), random(), 2
FROM compute_modeldeployment d,
     (VALUES (%(load_step)s, %(load_fine_samples)s), (3600, %(load_hourly_samples)s)) AS r(step, samples),
     LATERAL generate_series(0, r.samples - 1) s
WHERE d.organization_id = %(org)s;

-- audit events (inserts are allowed: the append-only triggers refuse UPDATE, DELETE and TRUNCATE only); the chain's
-- hashes are placeholders (this data is not for verification), the chain head moves past them so appends go on
INSERT INTO audit_auditevent (seq, occurred_at, actor_label, action, target_type, target_id, target_repr, changes,
    ip_address, user_agent, request_id, outcome, prev_hash, hash, actor_key_id, actor_user_id, organization_id)
SELECT h.seq + e, now() - (%(audit)s - e) * (interval '90 days' / %(audit)s),
       '%(owner_email)s', (ARRAY%(actions)s)[1 + (e %% %(nactions)s)], 'keys.apikey', (e %% 5000)::text,
       'key-' || lpad((e %% 5000)::text, 6, '0'), jsonb_build_object('name', jsonb_build_array('old', 'new')),
       '10.0.0.1'::inet, 'bench', 'bench-audit-' || e,
       CASE WHEN e %% 20 = 0 THEN 'denied' ELSE 'success' END,
       md5('p' || e) || md5('q' || e), md5('h' || e) || md5('i' || e), NULL, %(owner)s, %(org)s
FROM generate_series(1, %(audit)s) e, (SELECT coalesce(max(seq), 0) AS seq FROM audit_auditevent) h;
INSERT INTO audit_auditchainhead (id, seq, hash) VALUES (1, (SELECT max(seq) FROM audit_auditevent), repeat('0', 64))
ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash;
"""


def seed(sizes: dict[str, int]) -> None:
    from django.conf import settings
    from django.db import connection, transaction

    from apps.compute.models import ModelDeployment, Replica
    from apps.rbac.services import roles_ensure_builtin
    from apps.usage.histograms import histogram_count_sql, histogram_sum_sql
    from tests.factories import (
        ComputePoolFactory,
        MembershipFactory,
        ModelDeploymentFactory,
        OrganizationFactory,
        ReplicaFactory,
    )

    started = time.perf_counter()
    roles = roles_ensure_builtin()
    with transaction.atomic():
        organization = OrganizationFactory(name="Bench Console", slug=ORG_SLUG)
        owner = MembershipFactory(user__email=OWNER_EMAIL, organization=organization, role=roles["owner"]).user
        pool = ComputePoolFactory(organization=organization, provider__name="bench", name="bench")
        for n in range(DEPLOYMENTS):
            model = MODELS[n % len(MODELS)]
            deployment = ModelDeploymentFactory(
                organization=organization,
                pool=pool,
                name=f"{model}-{n}",
                model_id=f"sim/{model}",
                state=ModelDeployment.State.READY,
            )
            ReplicaFactory.create_batch(
                2, deployment=deployment, endpoint="http://127.0.0.1:1", state=Replica.State.READY
            )
        params = {
            "org": organization.pk, "owner": owner.pk, "owner_email": OWNER_EMAIL, "member_role": roles["member"].pk,
            "teams": TEAMS, "members": MEMBERS, "hot": min(sizes["hot_keys"], sizes["keys"]),
            "models": "[" + ",".join(f"'{m}'" for m in MODELS) + "]", "nmodels": len(MODELS),
            "actions": "[" + ",".join(f"'{a}'" for a in ACTIONS) + "]", "nactions": len(ACTIONS), **sizes,
            "deployments": DEPLOYMENTS, "load_step": settings.INFERIA_LOAD_SAMPLE_SECONDS,
            "load_fine_samples": settings.INFERIA_LOAD_FINE_HISTORY_DAYS * 86400
            // settings.INFERIA_LOAD_SAMPLE_SECONDS,
            "load_hourly_samples": settings.INFERIA_LOAD_HISTORY_DAYS * 24,
            "ttft_histogram": histogram_count_sql("ttft_ms", "outcome = 'ok'"),
            "latency_histogram": histogram_count_sql("latency_ms", "outcome = 'ok'"),
            "ttft_histogram_sum": histogram_sum_sql("ttft_histogram"),
            "latency_histogram_sum": histogram_sum_sql("latency_histogram"),
        }  # fmt: skip
        sql = SEED_SQL % {k: v for k, v in params.items()}  # trusted constants and integers only
        with connection.cursor() as cursor:
            for statement in (s.strip() for s in sql.split(";\n")):
                if statement and not all(line.startswith("--") for line in statement.splitlines()):
                    t0 = time.perf_counter()
                    cursor.execute(statement)
                    print(
                        f"  seed: {statement.splitlines()[-1][:60]:<60} {time.perf_counter() - t0:6.1f} s", flush=True
                    )
            cursor.execute(
                "INSERT INTO bench_console_seed (name, value) VALUES ('seed', %s)",
                [json.dumps({**sizes, "seeded_at": datetime.now(UTC).isoformat()})],
            )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"seeded in {time.perf_counter() - started:.1f} s", flush=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(client: Any, url: str, *, runs: int, stream: bool = False) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def once() -> tuple[float, int]:
        started = time.perf_counter()
        response = client.get(url)
        if stream:
            next(iter(response.streaming_content))
        elapsed = (time.perf_counter() - started) * 1000
        status = response.status_code
        response.close()
        return elapsed, status

    once()  # warm
    times = []
    for _ in range(runs):
        elapsed, status = once()
        if status != 200:
            raise SystemExit(f"{url} answered {status}")
        times.append(elapsed)
    with CaptureQueriesContext(connection) as captured:
        once()
    slowest = max(captured.captured_queries, key=lambda q: float(q["time"]), default={"sql": "", "time": "0"})
    return {
        "url": url,
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(_percentile(times, 0.95), 1),
        "runs_ms": [round(t, 1) for t in times],
        "queries": len(captured.captured_queries),
        "slowest_query_ms": round(float(slowest["time"]) * 1000, 1),
        "slowest_query": slowest["sql"][:2000],
    }


def pages() -> list[tuple[str, str, bool]]:
    """(label, url, streamed) of every page measured."""
    from apps.audit.models import AuditEvent
    from apps.compute.models import ModelDeployment
    from apps.console.pages.support import _encode
    from apps.keys.models import ApiKey
    from apps.orgs.models import Organization

    organization = Organization.objects.get(slug=ORG_SLUG)
    deployment = ModelDeployment.objects.filter(organization=organization).order_by("pk").first()
    keys = ApiKey.objects.filter(organization=organization).order_by("-created_at", "-pk")
    deep = keys.values("created_at", "pk")[keys.count() // 2]
    hot_key = keys.values_list("pk", "prefix")[5]
    last_event = AuditEvent.objects.filter(organization=organization).order_by("-occurred_at").first()
    until = (last_event.occurred_at if last_event else datetime.now(UTC)).date() - timedelta(days=10)
    since = until - timedelta(days=6)

    def u(path: str, **query: Any) -> str:
        return path + ("?" + urlencode(query) if query else "")

    org = {"org": ORG_SLUG}
    return [
        ("dashboard 24h", u("/console/dashboard/", org=ORG_SLUG, range="24h"), False),
        ("dashboard 7d", u("/console/dashboard/", org=ORG_SLUG, range="7d"), False),
        ("dashboard 30d", u("/console/dashboard/", org=ORG_SLUG, range="30d"), False),
        ("deployments", u("/console/deployments/", **org), False),
        ("deployment 24h", u(f"/console/deployments/{deployment.pk}/", range="24h"), False),
        ("deployment 7d", u(f"/console/deployments/{deployment.pk}/", range="7d"), False),
        ("deployment 30d", u(f"/console/deployments/{deployment.pk}/", range="30d"), False),
        ("keys", u("/console/keys/", **org), False),
        ("keys search name", u("/console/keys/", q="key-04217", **org), False),
        ("keys search word", u("/console/keys/", q="notebook", **org), False),
        ("keys deep page", u("/console/keys/", older=_encode([deep["created_at"], deep["pk"]]), **org), False),
        ("usage", u("/console/usage/", **org), False),
        ("usage by model", u("/console/usage/", model=MODELS[3], **org), False),
        ("usage by key prefix", u("/console/usage/", key=hot_key[1], **org), False),
        ("usage by key id", u("/console/usage/", key=hot_key[0], **org), False),
        ("usage csv first chunk", u("/console/usage/export.csv", **org), True),
        ("audit", u("/console/audit/", **org), False),
        (
            "audit action+dates",
            u("/console/audit/", action="api_key.rot", since=since.isoformat(), until=until.isoformat(), **org),
            False,
        ),
        ("members", u("/console/members/", **org), False),
        ("policies", u("/console/policies/", **org), False),
        ("templates", u("/console/templates/", **org), False),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Console page server times against a large tenant.")
    parser.add_argument("--usage", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--audit", type=int, default=100_000)
    parser.add_argument("--hot-keys", type=int, default=HOT_KEYS, help="90%% of the usage comes from this many keys")
    parser.add_argument("--models-per-key", type=int, default=len(MODELS),
                        help="how many of the 8 models each key calls (fewer: rollups compress more)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database", default="inferia_bench_console")
    parser.add_argument("--reseed", action="store_true", help="drop the database and seed again")
    parser.add_argument("--only", default="", help="measure only pages whose label contains this")
    args = parser.parse_args(argv)
    sizes = {"usage": args.usage, "keys": args.keys, "audit": args.audit, "hot_keys": args.hot_keys,
             "models_per_key": min(args.models_per_key, len(MODELS)), "shape": SEED_SHAPE}  # fmt: skip

    os.environ["DATABASE_URL"] = _pg_admin_url(args.database)[1]
    # Redis database 9 for everything, away from the test suite's (10-12) and a development server's.
    redis_base = os.environ.setdefault("REDIS_URL", "redis://localhost:6379").rstrip("/")
    for name in ("CELERY_BROKER_URL", "INFERIA_CACHE_REDIS_URL", "INFERIA_CHANNELS_REDIS_URL"):
        os.environ[name] = f"{redis_base}/9"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

    state = seed_state(args.database)
    fresh = False
    if state is not None:
        age = datetime.now(UTC) - datetime.fromisoformat(state["seeded_at"])
        fresh = all(state.get(k) == v for k, v in sizes.items()) and age < timedelta(days=1)
    needs_seed = args.reseed or not fresh
    database_prepare(args.database, drop=(needs_seed and state is not None) or args.reseed)

    import django

    django.setup()
    from django.test import Client
    from django.test.utils import setup_test_environment

    from apps.console.auth_flow import SESSION_SECOND_FACTOR
    from apps.orgs.models import User

    if needs_seed:
        print(f"seeding {sizes} into {args.database}", flush=True)
        seed(sizes)
    else:
        print(f"reusing the seed of {state['seeded_at']} in {args.database} ({sizes})", flush=True)

    setup_test_environment()
    client = Client()
    client.force_login(User.objects.get(email=OWNER_EMAIL))
    session = client.session
    session[SESSION_SECOND_FACTOR] = "none"  # what the password-only sign-in records (no authenticator enrolled)
    session.save()

    results = []
    print(f"{'page':<24} {'median ms':>10} {'p95 ms':>9} {'queries':>8}  slowest query", flush=True)
    for label, url, stream in pages():
        if args.only and args.only not in label:
            continue
        result = {"page": label, **measure(client, url, runs=args.runs, stream=stream)}
        result["ok"] = result["p95_ms"] < TARGET_MS
        results.append(result)
        print(f"{label:<24} {result['median_ms']:>10.1f} {result['p95_ms']:>9.1f} {result['queries']:>8}  "
              f"{result['slowest_query_ms']:.1f} ms{'' if result['ok'] else '  MISSED'}", flush=True)  # fmt: skip

    missed = [r["page"] for r in results if not r["ok"]]
    print(f"target p95 < {TARGET_MS:.0f} ms: " + ("all pages ok" if not missed else "MISSED by " + ", ".join(missed)))
    out_dir = REPO / "bench-results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"console-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"sizes": sizes, "runs": args.runs, "target_ms": TARGET_MS, "pages": results},
                               indent=2))  # fmt: skip
    print(f"written {path.relative_to(REPO)}")
    return 0 if not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
