"""The remote `inferia` verbs, run as the console script against the running platform (the e2e package's one
`inferia start all`): what they print, and what they do to the real platform."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request

import pytest
from openai import OpenAI

from inferia_cli.remote import ApiClient
from inferia_cli.remote_keys import SECRET_LABEL
from tests.kit.processes import INFERIA
from tests.kit.waiting import eventually

# django_db: pytest-django creates the test database only for a run that has a test asking for it, and the
# platform fixture needs one even when this module runs alone.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

CLI_TIMEOUT_S = 60


class Cli:
    """Runs `inferia ...` as a subprocess with the platform's URL and a management key in its environment."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.key = key

    def __call__(self, *args: str, key: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "INFERIA_URL": self.base_url, "INFERIA_API_KEY": self.key if key is None else key}
        done = subprocess.run(
            [INFERIA, *args], env=env, input=stdin, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
        )
        assert self.key not in done.stdout + done.stderr, "the management key was printed"
        return done

    def ok(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        done = self(*args, **kwargs)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "--json").stdout)


@pytest.fixture
def cli(platform):
    return Cli(platform.base_url, platform.manage_key)


@pytest.fixture
def sim_url(platform, django_db_blocker):
    """The simulated node `inferia start all` runs, as the e2e deployment's replica records it."""
    from apps.compute.models import Replica

    with django_db_blocker.unblock():
        return Replica.objects.filter(deployment__served_model_name=platform.model).values_list("endpoint", flat=True)[
            0
        ]


def secret_of(output: str) -> str:
    lines = output.splitlines()
    secret = lines[lines.index(SECRET_LABEL) + 1].strip()
    assert secret.startswith("sk-inf-")
    return secret


def v1_status(base_url: str, key: str) -> int:
    request = urllib.request.Request(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - the platform's http:// URL
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def chat_text(platform, key: str, model: str | None = None) -> str:
    client = OpenAI(base_url=f"{platform.base_url}/v1", api_key=key, max_retries=0, timeout=30)
    answer = client.chat.completions.create(
        model=model or platform.model, messages=[{"role": "user", "content": "Hello there"}]
    )
    return answer.choices[0].message.content or ""


def test_a_key_created_by_the_cli_authenticates_on_v1(cli, platform):
    done = cli.ok("keys", "create", "--name", "cli made", "--scope", "inference", "--expires-in", "30d")

    secret = secret_of(done.stdout)
    assert "cli made" in done.stdout
    assert chat_text(platform, secret).strip()


def test_keys_list_shows_prefixes_and_states_and_never_a_secret(cli):
    secret = secret_of(cli.ok("keys", "create", "--name", "listed", "--scope", "read").stdout)

    rows = cli.json("keys", "list")
    table = cli.ok("keys", "list").stdout

    listed = next(row for row in rows if secret.startswith(row["prefix"]))
    assert listed["name"] == "listed"
    assert listed["scopes"] == ["read"]
    assert "secret" not in listed
    assert secret not in table
    line = next(line for line in table.splitlines() if line.startswith(listed["prefix"]))
    assert re.search(r"listed\s+application\s+read\s+-\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+active$", line), line


def test_a_key_revoked_by_the_cli_gets_401_within_a_second(cli, platform):
    secret = secret_of(cli.ok("keys", "create", "--name", "doomed").stdout)
    assert v1_status(platform.base_url, secret) == 200  # cached by the gateway now

    done = cli.ok("keys", "revoke", secret[: len("sk-inf-") + 8], "--reason", "e2e")

    assert "revoked" in done.stdout
    eventually(lambda: v1_status(platform.base_url, secret) == 401, timeout=1.0, what="the revoked key refused")


def test_rotation_gives_a_new_secret_and_the_old_one_works_through_the_grace(cli, platform):
    old = secret_of(cli.ok("keys", "create", "--name", "rotating").stdout)
    old_prefix = old[: len("sk-inf-") + 8]

    done = cli.ok("keys", "rotate", old_prefix, "--grace", "1h")

    new = secret_of(done.stdout)
    assert new != old
    assert v1_status(platform.base_url, new) == 200
    assert v1_status(platform.base_url, old) == 200
    states = {row["prefix"]: row for row in cli.json("keys", "list")}
    assert states[old_prefix]["revoked_at"] is not None
    assert states[old_prefix]["is_usable"]
    assert "grace until" in next(line for line in cli.ok("keys", "list").stdout.splitlines() if old_prefix in line)


def test_errors_are_plain_messages_with_a_non_zero_exit(cli, platform):
    reader = secret_of(cli.ok("keys", "create", "--name", "reader", "--scope", "read").stdout)
    unknown = cli("keys", "list", key="sk-inf-not-a-key-at-all")
    inference_only = cli("keys", "create", "--name", "nope", key=reader)
    missing = cli("keys", "revoke", "999999999")
    unreachable = cli("keys", "list", "--url", "http://127.0.0.1:9")

    assert (unknown.returncode, inference_only.returncode, missing.returncode, unreachable.returncode) == (1, 1, 1, 1)
    assert "HTTP 401" in unknown.stderr
    assert "INFERIA_API_KEY" in unknown.stderr
    assert "HTTP 403" in inference_only.stderr
    assert "HTTP 404" in missing.stderr
    assert "cannot reach Inferia at http://127.0.0.1:9" in unreachable.stderr
    for done in (unknown, inference_only, missing, unreachable):
        assert "Traceback" not in done.stderr
        assert platform.key not in done.stdout + done.stderr


def test_audit_lists_and_exports_the_key_events(cli):
    secret = secret_of(cli.ok("keys", "create", "--name", "audited").stdout)
    prefix = secret[: len("sk-inf-") + 8]

    rows = cli.json("audit", "--action", "key.create", "--since", "1h")
    jsonl = cli.ok("audit", "--action", "key.create", "--format", "jsonl").stdout
    csv = cli.ok("audit", "--action", "key.create", "--format", "csv").stdout
    table = cli.ok("audit", "--action", "key.create").stdout

    assert rows
    assert all(row["action"].startswith("key.create") for row in rows)
    assert any(prefix in row["target_repr"] for row in rows)
    exported = [json.loads(line) for line in jsonl.splitlines() if line.strip()]
    assert {row["seq"] for row in rows} <= {row["seq"] for row in exported}
    assert prefix in csv
    assert csv.splitlines()[0].count(",") >= 5
    assert table.splitlines()[0].split()[:4] == ["SEQ", "WHEN", "ACTOR", "ACTION"]
    assert prefix in table


def test_usage_sums_the_requests_per_model(cli, platform):
    chat_text(platform, platform.key)

    def counted() -> list[dict]:  # the worker moves usage from the Redis stream into PostgreSQL in batches
        mine = [row for row in cli.json("usage", "--by", "model", "--since", "1d") if row["model"] == platform.model]
        return mine if mine and mine[0]["requests"] >= 1 else []

    mine = eventually(counted, timeout=30, interval=1, what="the request in the usage rows")

    table = cli.ok("usage", "--by", "model", "--since", "1d").stdout

    assert mine[0]["prompt_tokens"] > 0
    assert table.splitlines()[0].split()[:2] == ["MODEL", "REQUESTS"]
    assert any(line.startswith(platform.model) for line in table.splitlines())


def test_chat_streams_two_turns_and_sends_the_history(cli, platform):
    done = cli.ok("chat", "--model", platform.model, "--verbose", key=platform.key, stdin="Hello there\nTell me more\n")

    answers = [line for line in done.stdout.splitlines() if line.strip()]
    turns = re.findall(r"\[turn (\d): sent (\d) message\(s\); prompt_tokens (\d+)", done.stderr)
    assert len(answers) == 2, done.stdout
    assert [(turn, sent) for turn, sent, _ in turns] == [("1", "1"), ("2", "3")], done.stderr
    assert int(turns[1][2]) > int(turns[0][2])  # the second request carried the first turn


def test_chat_ends_at_exit_and_refuses_a_bad_key(cli, platform):
    ended = cli.ok("chat", "--model", platform.model, "--verbose", key=platform.key, stdin="Hi\n/exit\nNot sent\n")
    refused = cli("chat", "--model", platform.model, key="sk-inf-not-a-key-at-all", stdin="Hi\n")

    assert ended.stderr.count("[turn ") == 1
    assert refused.returncode == 1
    assert "401" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_deploy_creates_a_deployment_on_a_pool_once(cli):
    created = cli.json(
        "deploy", "--model", "cli-idle", "--model-id", "org/cli-idle", "--replicas", "0", "--pool", "local-sim"
    )
    again = cli("deploy", "--model", "cli-idle", "--replicas", "0", "--pool", "local-sim")

    shape = (created["served_model_name"], created["model_id"], created["desired_replicas"], created["state"])
    assert shape == ("cli-idle", "org/cli-idle", 0, "pending")
    assert again.returncode == 1
    assert f"HTTP 409: This organisation already serves 'cli-idle': deployment 'cli-idle' (id {created['id']})" in (
        again.stderr
    )
    assert "compute_deployment" not in again.stderr
    assert "Traceback" not in again.stderr


def test_deploy_external_adopts_a_running_server_as_a_ready_replica(cli, platform, sim_url):
    api = ApiClient(platform.base_url, platform.manage_key)

    created = cli.json("deploy", "--external", sim_url, "--model", "cli-external", "--model-id", "demo-chat")

    assert (created["served_model_name"], created["desired_replicas"]) == ("cli-external", 1)
    pool = api.get(f"pools/{created['pool']}/")
    provider = api.get(f"providers/{pool['provider']}/")
    assert (provider["kind"], provider["config"]["base_urls"]) == ("external", [sim_url])
    eventually(  # the worker adopts the URL as the deployment's replica and health-checks it
        lambda: (
            [(r["state"], r["endpoint"]) for r in api.get("replicas/", {"deployment": created["id"]})["results"]]
            == [("ready", sim_url)]
        ),
        timeout=30,
        interval=0.5,
        what="the URL adopted as a READY replica",
    )


def test_deploy_external_again_with_the_same_urls_is_a_no_op_and_other_urls_a_conflict(cli, platform, sim_url):
    api = ApiClient(platform.base_url, platform.manage_key)
    created = cli.json("deploy", "--external", sim_url, "--model", "cli-twice", "--model-id", "demo-chat")
    deployments_before = api.get("deployments/")["count"]

    again = cli("deploy", "--external", sim_url + "/", "--model", "cli-twice", "--model-id", "demo-chat")
    elsewhere = cli("deploy", "--external", "http://127.0.0.1:9/", "--model", "cli-twice", "--model-id", "demo-chat")

    assert again.returncode == 0, again.stderr
    assert f"already registered as deployment 'cli-twice' (id {created['id']})" in again.stdout
    assert elsewhere.returncode == 1
    assert f"HTTP 409: This organisation already serves 'cli-twice': deployment 'cli-twice' (id {created['id']})" in (
        elsewhere.stderr
    )
    assert api.get("deployments/")["count"] == deployments_before


def test_deploy_external_refuses_an_unset_upstream_key_variable_and_creates_nothing(cli, platform, sim_url):
    api = ApiClient(platform.base_url, platform.manage_key)
    providers_before = api.get("providers/")["count"]

    done = cli("deploy", "--external", sim_url, "--model", "cli-nokey", "--upstream-key-env", "INFERIA_TEST_UNSET_VAR")

    assert done.returncode == 1
    assert "INFERIA_TEST_UNSET_VAR, which is not set" in done.stderr
    assert api.get("providers/")["count"] == providers_before
