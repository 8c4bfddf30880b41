#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis servers the test suite needs are reachable on localhost:
# start them where installed but stopped; install them with apt where missing and we are root;
# create the database role and database; fail loudly only when none of that works.
# Vectors need pgvector: when the local PostgreSQL lacks the extension, the tests run on the PostgreSQL with
# pgvector that the pinned pgserver wheel ships, on a loopback port (scripts/pgvector_server.py). The URL they
# use is written to .inferia-test/database-url, which the Makefile reads.
set -uo pipefail

PG_HOST=${PG_HOST:-localhost}
PG_PORT=${PG_PORT:-5432}
PGVECTOR_PORT=${PGVECTOR_PORT:-5433}
PGVECTOR_DATA=${PGVECTOR_DATA:-/tmp/inferia-pgvector}
URL_FILE="$(cd "$(dirname "$0")/.." && pwd)/.inferia-test/database-url"
REDIS_PORT=${REDIS_PORT:-6379}

say() { echo "[services] $*"; }
die() { echo "[services] ERROR: $*" >&2; exit 1; }

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
redis_up() { redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  as_root || return 1
  say "installing $* with apt"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

start_postgres() {
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      say "starting PostgreSQL $version"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
    done
  fi
}

if ! pg_up; then
  command -v pg_isready >/dev/null 2>&1 && [ -d /etc/postgresql ] || apt_install postgresql postgresql-client
  start_postgres
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || die "PostgreSQL is not reachable on $PG_HOST:$PG_PORT and could not be started or installed"
fi

# The tests connect as 'postgres' without a password (trust on localhost here; set TEST_DATABASE_URL otherwise).
if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "select 1" >/dev/null 2>&1; then
  if as_root && command -v runuser >/dev/null; then
    runuser -u postgres -- psql -tAc "ALTER ROLE postgres WITH LOGIN PASSWORD 'postgres'" >/dev/null 2>&1 || true
  fi
  psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "select 1" >/dev/null 2>&1 \
    || die "cannot connect to PostgreSQL as role 'postgres'; set TEST_DATABASE_URL to a role that may create databases"
fi
psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='inferia'" | grep -q 1 \
  || psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -qc "create database inferia" \
  || die "could not create the database 'inferia'"

mkdir -p "$(dirname "$URL_FILE")"
if psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "select 1 from pg_available_extensions where name='vector'" \
    | grep -q 1; then
  echo "postgres://postgres@$PG_HOST:$PG_PORT/inferia" > "$URL_FILE"
else
  python="$(dirname "$0")/../.venv/bin/python"
  [ -x "$python" ] || die "the local PostgreSQL has no pgvector and .venv (with pgserver's) is missing: run make venv"
  url=$("$python" "$(dirname "$0")/pgvector_server.py" --port "$PGVECTOR_PORT" --data "$PGVECTOR_DATA") \
    || die "could not start pgserver's PostgreSQL with pgvector on 127.0.0.1:$PGVECTOR_PORT"
  echo "$url" > "$URL_FILE"
  say "the local PostgreSQL has no pgvector: tests use $url"
fi

if ! redis_up; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  command -v redis-server >/dev/null 2>&1 || die "Redis is not installed and could not be installed"
  say "starting Redis on port $REDIS_PORT"
  mkdir -p /tmp/inferia-redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp/inferia-redis --logfile /tmp/inferia-redis/redis.log >/dev/null
  for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
  redis_up || die "Redis is not reachable on port $REDIS_PORT and could not be started"
fi

# promtool (Debian's prometheus package) checks and unit-tests the alert rules (tests/deploy/test_monitoring.py).
# policy-rc.d keeps the package from starting a Prometheus server on this machine.
if ! command -v promtool >/dev/null 2>&1 && as_root; then
  if [ -e /usr/sbin/policy-rc.d ]; then
    apt_install --no-install-recommends prometheus
  else
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt_install --no-install-recommends prometheus
    rm -f /usr/sbin/policy-rc.d
  fi
  command -v promtool >/dev/null 2>&1 || say "promtool could not be installed: the alert rule tests will be skipped"
fi

# Sentinel, for the failover test (tests/e2e/test_redis_failover.py): a real master, replica and sentinels. As above,
# policy-rc.d keeps the package from starting a sentinel service on this machine.
if ! command -v redis-sentinel >/dev/null 2>&1 && as_root; then
  if [ -e /usr/sbin/policy-rc.d ]; then
    apt_install redis-sentinel
  else
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt_install redis-sentinel
    rm -f /usr/sbin/policy-rc.d
  fi
  command -v redis-sentinel >/dev/null 2>&1 || say "redis-sentinel could not be installed: the failover tests will be skipped"
fi

say "PostgreSQL and Redis are up"
