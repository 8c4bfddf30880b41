#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis servers the test suite needs are reachable on localhost:
# start them where installed but stopped; install them with apt where missing and we are root;
# create the database role and database; fail loudly only when none of that works.
set -uo pipefail

PG_HOST=${PG_HOST:-localhost}
PG_PORT=${PG_PORT:-5432}
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
say "PostgreSQL and Redis are up"
