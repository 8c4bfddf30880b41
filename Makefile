# Inferia developer commands. `make run` and `make test` are the README's quick start.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# What the test suite talks to: real PostgreSQL (with pgvector) and Redis servers. scripts/ensure-services.sh starts
# them and writes the database's URL to .inferia-test/database-url: the local server's when it has pgvector, else
# the one the pgserver wheel ships, on a loopback port.
TEST_DATABASE_URL ?= $$(cat .inferia-test/database-url 2>/dev/null || echo postgres://postgres@localhost:5432/inferia)
TEST_REDIS_URL ?= redis://localhost:6379
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	CELERY_BROKER_URL=$(TEST_REDIS_URL)/10 INFERIA_CACHE_REDIS_URL=$(TEST_REDIS_URL)/11 \
	INFERIA_CHANNELS_REDIS_URL=$(TEST_REDIS_URL)/12 INFERIA_DATA_DIR=$(CURDIR)/.inferia-test

# What mypy checks strictly (see [tool.mypy] in pyproject.toml): every services and selectors module, all of the
# gateway and policies, and the runtime's settings helpers. Files under the two packages are named once, by package.
MYPY_PACKAGES := apps/gateway apps/policies
MYPY_FILES := inferia_runtime/env.py inferia_runtime/redis_urls.py inferia_runtime/database_url.py apps/audit/actors.py $(MYPY_PACKAGES) \
	$(filter-out $(addsuffix /%,$(MYPY_PACKAGES)),$(sort $(wildcard apps/*/services.py apps/*/*_services.py \
	apps/*/selectors.py apps/*/*_selectors.py)))

.PHONY: venv run test lint format bench bench-knowledge clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml setup.py inferia_runtime/_json_copy.c inferia_runtime/_text_search.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

run: venv
	$(BIN)/inferia demo

test: venv
	@bash scripts/ensure-services.sh
	@bash scripts/ensure-browser.sh
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	@bash scripts/ensure-services.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(TEST_ENV) $(BIN)/python manage.py check
	$(TEST_ENV) $(BIN)/python manage.py makemigrations --check --dry-run
	$(TEST_ENV) $(BIN)/mypy $(MYPY_FILES)

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

BENCH_ENDPOINTS = chat,messages,responses,ollama

bench: venv
	@bash scripts/ensure-services.sh
	@# Every benchmark runs even when an earlier one misses a target; the status says whether any did. The health
	@# benchmark times one check cycle over 1,000 replicas on distinct loopback addresses, against its 2 s period.
	@# The console pages against 1M usage rows, 100k keys, 100k audit events (seeding takes minutes the first time):
	@# `make bench BENCH_CONSOLE=1`. At zero delay the gateway run takes the protocols in turns on one server, each
	@# run compared with chat completions' in the same run; at 5 ms per token, where a machine's drift is larger than
	@# the difference, bench_edges.py loads two web processes at once, one with chat completions and one with the
	@# protocol, swapped each round. The chat socket carries 256 streams over 16 WebSocket connections.
	status=0; \
	$(TEST_ENV) $(BIN)/python tests/bench/run.py --endpoint $(BENCH_ENDPOINTS) || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/run.py --itl-ms 5 --levels 64,256 --requests 1000 || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/bench_edges.py --itl-ms 5 --endpoint $(BENCH_ENDPOINTS) || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/bench_chat_socket.py --connections 16 --streams 256 || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/bench_relay.py || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/bench_routing.py || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/bench_prefix.py || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/bench_health.py || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/bench_usage_wait.py || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/bench_toxicity.py || status=1; \
	$(TEST_ENV) $(BIN)/python tests/bench/bench_guardrails.py || status=1; \
	if [ -n "$(BENCH_CONSOLE)" ]; then $(TEST_ENV) $(BIN)/python tests/bench/bench_console.py || status=1; fi; \
	exit $$status

# Knowledge bases at 10k and 100k chunks: search latency and recall, ingestion rate, what retrieval adds to a chat
# completion (seeding takes a few minutes the first time).
bench-knowledge: venv
	@bash scripts/ensure-services.sh
	$(TEST_ENV) $(BIN)/python tests/bench/bench_knowledge.py

clean:
	rm -rf $(VENV) .inferia-test .pytest_cache .ruff_cache .mypy_cache
