"""A replica's engine output: read by the worker through the adapter, redacted, buffered in Redis without repeats,
announced to the deployment's live page, and served by `GET /api/replicas/{id}/logs/` to who may view the replica.

The simulator's replicas are real `inferia-sim` processes writing to their log file under the data directory; where
only the file matters, the tests write it themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import threading

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from apps.compute.adapters.process import process_replicas_stop_all, replica_key, replicas_dir
from apps.compute.credentials import provider_credentials_set
from apps.compute.health import replicas_health_check
from apps.compute.models import Provider, Replica
from apps.compute.node_tokens import node_token
from apps.compute.reconcile import deployment_reconcile_run
from apps.compute.replica_logs import (
    LOG_PUBLISH_LINES,
    REDACTED,
    log_lines_redact,
    replica_logs_capture,
    replica_logs_recent,
)
from apps.compute.tasks import replica_provision
from apps.console.live import deployment_group
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ProviderFactory
from tests.kit.waiting import NotYet, eventually

RState = Replica.State
HF_TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
UPSTREAM_KEY = "sk-upstreamSecret0123456789abcdef"


def test_credentials_of_every_shape_are_masked_and_ordinary_lines_are_kept():
    lines = [
        f"INFO loading with token {HF_TOKEN}",
        "DEBUG headers: {'Authorization': 'Bearer abcdef123456ghijkl', 'Accept': '*/*'}",
        "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA==' http://node",
        "args: --model org/m --api-key s3cr3t-value --port 8000",
        "non-default args: {'hf_token': 'plainvalue99', 'max_num_batched_tokens': 8192}",
        "HF_TOKEN=anothersecretvalue password: hunter22",
        "pulling from https://deploy:pa55word@registry.example.com/vllm",
        f"key {UPSTREAM_KEY} and a node token inf-node-{'ab' * 32}",
        "found a literal mysecretliteral here",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
        "-----END OPENSSH PRIVATE KEY-----",
        "INFO Started server process; max_num_batched_tokens=8192 max_model_len=4096",
    ]

    masked = log_lines_redact(lines, secrets=["mysecretliteral", "short"])
    text = "\n".join(masked)

    for secret in (
        HF_TOKEN, "abcdef123456ghijkl", "dXNlcjpwYXNzd29yZA", "s3cr3t-value", "plainvalue99", "anothersecretvalue",
        "hunter22", "pa55word", UPSTREAM_KEY, "ab" * 32, "mysecretliteral", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
    ):  # fmt: skip
        assert secret not in text, secret
    assert masked[4].endswith("'max_num_batched_tokens': 8192}")  # a number named like a token is not a secret
    assert masked[-1] == lines[-1]
    assert masked[3] == f"args: --model org/m --api-key {REDACTED} --port 8000"
    assert masked[9:12] == [REDACTED] * 3
    assert "Accept': '*/*'" in masked[1]


@pytest.fixture
def file_replica(make_replica, redis_cache):
    """A simulator replica with no process: its log file is written by the test, read through the adapter."""
    replica = make_replica(Provider.Kind.SIMULATOR, served="logs-model")
    replica.provider_handle = {"key": replica_key(replica)}
    replica.state = RState.STARTING
    replica.save()
    path = replicas_dir() / f"{replica_key(replica)}.log"
    path.unlink(missing_ok=True)
    yield replica, path
    path.unlink(missing_ok=True)


def write(path, text):
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)


def test_each_capture_keeps_only_lines_not_seen_before(file_replica):
    replica, path = file_replica
    write(path, "one\ntwo\nthree\n")

    first = replica_logs_capture(replica)
    again = replica_logs_capture(replica)
    write(path, "three\nfour\npartial")
    third = replica_logs_capture(replica)
    write(path, " line done\n")
    fourth = replica_logs_capture(replica)

    assert first.lines == ["one", "two", "three"]
    assert again.lines == []
    assert third.lines == ["three", "four"]  # a repeated line that is new is still new; the partial one waits
    assert fourth.lines == ["partial line done"]
    assert replica_logs_recent(replica_ids=[replica.pk])[replica.pk] == ["one", "two", "three", "three", "four",
                                                                         "partial line done"]  # fmt: skip


def test_a_burst_larger_than_one_announcement_is_cut_to_its_newest_lines(file_replica):
    replica, path = file_replica
    write(path, "start\n")
    replica_logs_capture(replica)
    write(path, "".join(f"line {n}\n" for n in range(250)))

    burst = replica_logs_capture(replica)

    assert len(burst.lines) == LOG_PUBLISH_LINES
    assert burst.lines[-1] == "line 249"
    assert burst.skipped == 200 - LOG_PUBLISH_LINES  # the tail read is 200 lines: the rest were never seen
    assert replica_logs_capture(replica).lines == []


def test_the_providers_own_secrets_and_the_node_token_are_masked_before_they_are_kept(file_replica):
    replica, path = file_replica
    provider = replica.deployment.pool.provider
    provider_credentials_set(provider=provider, credentials={"hf_token": "plain-words-secret"})
    provider.save()
    replica = Replica.objects.select_related("deployment__pool__provider").get(pk=replica.pk)
    write(path, f"using plain-words-secret\nnode {node_token(replica)}\n")

    captured = replica_logs_capture(replica)

    assert captured.lines == [f"using {REDACTED}", f"node {REDACTED}"]
    stored = replica_logs_recent(replica_ids=[replica.pk])[replica.pk]
    assert "plain-words-secret" not in str(stored)


def test_the_logs_endpoint_returns_the_newest_lines_to_who_may_view_the_replica(
    file_replica, owner, viewer, outsider, as_user
):
    replica, path = file_replica
    write(path, "".join(f"step {n}\n" for n in range(30)) + f"Authorization: Bearer {UPSTREAM_KEY}\n")
    replica_logs_capture(replica)
    url = f"/api/replicas/{replica.pk}/logs/"

    full = as_user(owner).get(url)
    tail = as_user(viewer).get(url, {"tail": 5})
    foreign = as_user(outsider).get(url)
    too_many = as_user(owner).get(url, {"tail": 100_000})
    zero = as_user(owner).get(url, {"tail": 0})

    assert full.status_code == 200, full.data
    assert (full.data["replica"], full.data["state"]) == (replica.pk, "starting")
    assert full.data["lines"][0] == "step 0"
    assert len(full.data["lines"]) == 31
    assert UPSTREAM_KEY not in str(full.data)
    assert full.data["lines"][-1] == f"Authorization: {REDACTED}"
    assert tail.status_code == 200
    assert tail.data["lines"] == ["step 26", "step 27", "step 28", "step 29", f"Authorization: {REDACTED}"]
    assert foreign.status_code == 404
    assert (too_many.status_code, zero.status_code) == (400, 400)


def test_a_replica_without_captured_output_has_no_lines(make_replica, owner, as_user, redis_cache):
    replica = make_replica(Provider.Kind.SIMULATOR, served="quiet")

    response = as_user(owner).get(f"/api/replicas/{replica.pk}/logs/")

    assert response.status_code == 200
    assert response.data["lines"] == []


@pytest.fixture
def slow_sim(org, redis_cache):
    """A simulator deployment whose engine takes long to be ready, so its replica stays STARTING."""
    provider = ProviderFactory(organization=org, name="slow-sim", config={"sim": {"startup_delay": 60.0}})
    pool = ComputePoolFactory(organization=org, provider=provider, name="slow-pool", max_nodes=2)
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="slow", model_id="inferia/sim-model", engine="inferia-sim"
    )
    yield deployment
    process_replicas_stop_all()


class Watcher:
    """A channel in the deployment's live group, as the console's consumer joins it, read by a thread of its own
    (a channel layer's receive belongs to one event loop) into a queue."""

    def __init__(self, deployment_id):
        self.messages = queue.Queue()
        self.joined = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._listen(deployment_group(deployment_id)),))
        self.thread.start()
        assert self.joined.wait(10)

    async def _listen(self, group):
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        self.joined.set()
        while not self.stopped.is_set():
            try:
                self.messages.put(await asyncio.wait_for(layer.receive(channel), 0.5))
            except TimeoutError:
                continue
        await layer.group_discard(group, channel)

    def close(self):
        self.stopped.set()
        self.thread.join(10)

    def log_lines(self, *, until, timeout_s=20.0):
        """The output lines announced to the group, running `until()` before each read, as soon as there are some
        (or none after `timeout_s`)."""

        def announced() -> list[str]:
            until()
            lines = []
            with contextlib.suppress(queue.Empty):
                message = self.messages.get(timeout=0.5)
                while True:
                    if message["type"] == "deployment.logs":
                        lines += message["lines"]
                    message = self.messages.get(timeout=0.2)
            return lines

        with contextlib.suppress(NotYet):
            return eventually(announced, timeout=timeout_s, interval=0, what="log lines announced")
        return []


@pytest.fixture
def watcher(slow_sim):
    watching = Watcher(slow_sim.pk)
    yield watching
    watching.close()


@pytest.fixture
def health_check(django_capture_on_commit_callbacks):
    """`replicas_health_check` as the beat runs it: its events are delivered once it commits (the test's own
    transaction never does)."""

    def check():
        with django_capture_on_commit_callbacks(execute=True):
            replicas_health_check()

    return check


def test_a_starting_simulator_replicas_output_is_announced_live_once(slow_sim, watcher, health_check):
    replica_id = deployment_reconcile_run(deployment_id=slow_sim.pk).provision[0]
    replica_provision(replica_id)
    assert Replica.objects.get(pk=replica_id).state == RState.STARTING

    lines = watcher.log_lines(until=health_check)
    later = watcher.log_lines(until=health_check, timeout_s=3.0)

    assert any("inferia-sim" in line and "listening on" in line for line in lines), lines
    assert later == []  # the next checks found nothing new
    assert Replica.objects.get(pk=replica_id).state == RState.STARTING
    assert replica_logs_recent(replica_ids=[replica_id])[replica_id] == lines


def test_a_failing_replicas_last_output_is_announced_before_it_is_torn_down(slow_sim, watcher, health_check):
    replica_id = deployment_reconcile_run(deployment_id=slow_sim.pk).provision[0]
    replica_provision(replica_id)
    watcher.log_lines(until=health_check)
    replica = Replica.objects.get(pk=replica_id)
    write(replicas_dir() / f"{replica.provider_handle['key']}.log", f"fatal: out of memory (HF_TOKEN={HF_TOKEN})")
    os.killpg(replica.provider_handle["pid"], signal.SIGKILL)

    lines = watcher.log_lines(until=health_check)

    assert lines == [f"fatal: out of memory (HF_TOKEN={REDACTED})"]  # a last line without newline, on failure
    assert Replica.objects.get(pk=replica_id).state == RState.FAILED
