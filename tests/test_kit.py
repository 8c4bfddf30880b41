"""The test kit itself: reserved ports, the process harness, `eventually()` and the factories."""

from __future__ import annotations

import fcntl
import os
import socket
import sys

import pytest

from tests.factories import ApiKeyFactory, MembershipFactory, ProviderFactory, ReplicaFactory
from tests.kit.ports import LOCK_DIR, PORT_RANGE, port_reserve
from tests.kit.processes import TestProcess, sim_start
from tests.kit.waiting import NotYet, eventually


def test_a_reserved_port_is_locked_against_other_test_runs_and_never_handed_out_twice():
    ports = {port_reserve() for _ in range(20)}

    assert len(ports) == 20
    assert all(port in PORT_RANGE for port in ports)
    # What another test process would try: the lock is taken, so it moves on to another port.
    fd = os.open(LOCK_DIR / f"{min(ports)}.lock", os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_port_something_listens_on_is_never_handed_out(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.setattr("tests.kit.ports.PORT_RANGE", range(taken, taken + 1))

        with pytest.raises(RuntimeError, match="no free port left"):
            port_reserve()


def test_eventually_returns_the_first_truthy_value():
    calls = iter([None, 0, "ready"])

    assert eventually(lambda: next(calls), interval=0) == "ready"


def test_eventually_says_what_it_waited_for_and_what_it_saw_last():
    with pytest.raises(NotYet, match=r"the answer not within 0.1s \(last value: \[\]\)"):
        eventually(list, timeout=0.1, interval=0.01, what="the answer")


def test_eventually_retries_the_errors_it_is_told_to_ignore_and_reports_the_last_one():
    with pytest.raises(NotYet, match="ConnectionError"):
        eventually(lambda: (_ for _ in ()).throw(ConnectionError("refused")), timeout=0.1, ignoring=(ConnectionError,))


def test_a_process_that_exits_while_awaited_fails_at_once_with_its_output():
    process = TestProcess([sys.executable, "-c", "print('no config'); raise SystemExit(3)"], name="broken")

    with pytest.raises(AssertionError, match=r"(?s)exit 3\).*no config.*exited while the test waited"):
        process.wait_until(lambda: False, timeout=30)


def test_a_started_engine_answers_on_its_port_and_stops_on_sigterm():
    engine = sim_start(models=("kit-model",))

    assert engine.url.endswith(f":{engine.port}")
    assert engine.stop() == 0


@pytest.mark.django_db
def test_a_replica_brings_one_organisation_for_its_whole_chain():
    replica = ReplicaFactory()

    deployment = replica.deployment
    assert deployment.pool.organization == deployment.organization
    assert deployment.pool.provider.organization == deployment.organization


@pytest.mark.django_db
def test_provider_credentials_are_stored_encrypted():
    from apps.compute.credentials import provider_credentials

    provider = ProviderFactory(credentials={"token": "s3cret"})

    provider.refresh_from_db()
    assert "s3cret" not in provider.credentials_encrypted
    assert provider_credentials(provider)["token"] == "s3cret"


@pytest.mark.django_db
def test_a_key_is_issued_by_the_service_hashed_with_its_secret_returned():
    from apps.keys.models import ApiKey

    issued = ApiKeyFactory(scopes=("read",))

    stored = ApiKey.objects.get(pk=issued.key.pk)
    assert issued.secret.startswith(stored.prefix)
    assert issued.secret not in {value for value in vars(stored).values() if isinstance(value, str)}
    assert stored.scopes == ["read"]


@pytest.mark.django_db
def test_a_membership_takes_a_built_in_role_by_slug():
    assert MembershipFactory(role="viewer").role.slug == "viewer"
