"""The console in a real browser: one `inferia start all` (web, Celery worker and beat) for the package, against the
test database with committed data, driven by Playwright through Debian's headless Chromium.

The committed data: an organisation with a simulator pool serving `browser-chat`, its owner (TOTP enrolled; the tests
compute codes from the secret with pyotp) and a viewer. Screenshots go to `artifacts/screenshots/` (gitignored)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyotp
import pytest

from tests.factories import MembershipFactory, UserFactory
from tests.kit.ports import port_reserve
from tests.kit.processes import TestProcess, child_database_url, inferia_start
from tests.kit.waiting import eventually

CHROMIUM = os.environ.get("INFERIA_CHROMIUM", "/usr/bin/chromium")
# As root (CI here) Chromium needs --no-sandbox; the network flags keep it from calling out of a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "correct horse battery staple"
SERVED_MODEL = "browser-chat"
# The simulator provider's engine timings: tokens paced so the playground visibly streams, and a start-up delay so
# a new deployment is seen provisioning before it turns READY.
SIM = {"ttft_ms": 50, "itl_ms": 15, "startup_delay": 1.0}
COMPUTE_ENV = {
    "INFERIA_HEALTH_INTERVAL_SECONDS": "1.0",
    "INFERIA_RECONCILE_INTERVAL_SECONDS": "1.0",
}


@dataclass(frozen=True)
class Console:
    """A running Inferia and the people who use its console."""

    base_url: str
    org_slug: str
    owner_email: str
    owner_totp_secret: str
    viewer_email: str
    deployment_id: int
    process: TestProcess

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


def totp_code(*, email: str, secret: str) -> str:
    """A code the server will take now: each TOTP step is good once (replay protection), so use the next unused
    step, which the server accepts up to one step ahead (waiting when even that one is spent)."""
    from apps.rbac.models import TotpDevice

    totp = pyotp.TOTP(secret)

    def usable_code() -> str | None:
        last = TotpDevice.objects.get(user__email=email).last_used_step
        now_step = totp.timecode(time.time())
        step = max(now_step, last + 1)
        return totp.generate_otp(step) if step <= now_step + 1 else None

    return eventually(usable_code, timeout=2 * totp.interval, interval=1, what="an unused TOTP step")


def _ready(deployment_id: int) -> bool:
    from apps.compute.models import ModelDeployment

    return ModelDeployment.objects.filter(pk=deployment_id, state=ModelDeployment.State.READY).exists()


def _committed_data() -> dict[str, Any]:
    from apps.compute.services import simulator_deployment_ensure
    from apps.orgs.bootstrap_services import organization_ensure
    from apps.rbac.services import roles_ensure_builtin
    from apps.rbac.twofactor_services import totp_enrolment_confirm, totp_enrolment_start

    roles = roles_ensure_builtin()
    organization, _ = organization_ensure(slug="browser", name="Browser Co")
    owner = UserFactory(email="owner@browser.test", password=PASSWORD)
    MembershipFactory(user=owner, organization=organization, role=roles["owner"])
    viewer = UserFactory(email="viewer@browser.test", password=PASSWORD)
    MembershipFactory(user=viewer, organization=organization, role=roles["viewer"])
    enrolment = totp_enrolment_start(user=owner, actor=owner)
    totp_enrolment_confirm(user=owner, code=pyotp.TOTP(enrolment.secret).now(), actor=owner)
    deployment, _ = simulator_deployment_ensure(
        organization=organization, served_model_name=SERVED_MODEL, model_id="inferia/sim-model", sim=SIM
    )
    return {
        "organization": organization,
        "users": [owner, viewer],
        "secret": enrolment.secret,
        "deployment": deployment,
    }


def _committed_data_delete(data: dict[str, Any]) -> None:
    """Remove what the fixture committed; pools and providers are PROTECTed, so deployments go first."""
    from apps.compute.models import ComputePool, ModelDeployment, Provider
    from apps.orgs.models import User

    organization = data["organization"]
    ModelDeployment.objects.filter(organization=organization).delete()
    ComputePool.objects.filter(organization=organization).delete()
    Provider.objects.filter(organization=organization).delete()
    organization.delete()
    User.objects.filter(pk__in=[u.pk for u in data["users"]]).delete()


@pytest.fixture(scope="package")
def console(django_db_setup, django_db_blocker) -> Iterator[Console]:
    port = port_reserve()
    with django_db_blocker.unblock():
        data = _committed_data()
    env = {
        **os.environ,
        **COMPUTE_ENV,
        "DATABASE_URL": child_database_url(),
        "INFERIA_UPSTREAM_ALLOW_PRIVATE": "true",
        "INFERIA_WORKER_CONCURRENCY": "4",
    }
    env.pop("INFERIA_SIM_MODEL", None)
    process = inferia_start(["start", "all", "--port", str(port)], env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{base_url}/healthz")
        with django_db_blocker.unblock():
            process.wait_until(lambda: _ready(data["deployment"].pk), what="the simulator deployment")
        yield Console(
            base_url=base_url,
            org_slug=data["organization"].slug,
            owner_email="owner@browser.test",
            owner_totp_secret=data["secret"],
            viewer_email="viewer@browser.test",
            deployment_id=data["deployment"].pk,
            process=process,
        )
    finally:
        code = process.interrupt() if process.returncode is None else process.returncode
        process.kill_everything()
        with django_db_blocker.unblock():
            _committed_data_delete(data)
        assert code == 0, process.output[-5000:]


@pytest.fixture(scope="package")
def browser(console) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-browser.sh (make test does)")
    # Playwright's sync API keeps an event loop running in this thread, which Django takes for an async context and
    # refuses the ORM in (the fixtures' and pytest-django's own queries). Nothing here is async code: allow it while
    # the browser is up, and only then, so the rest of the suite keeps the check.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        # `launch` starts Chromium on a fresh, empty profile (a new --user-data-dir) of its own every time.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            # Queries made beside the running loop used connections of their own: close them, or the test
            # database cannot be dropped at the end of the session.
            from django.db import connections

            connections.close_all()
            if previous is None:
                os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            else:
                os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def sign_in(page: Any, console: Console, *, email: str, totp_secret: str = "") -> list[str]:
    """Sign in through the console's forms: password, then the authenticator code when the user has one. Returns
    the paths the browser was on after each step."""
    seen = []
    page.goto(console.url("/console/login/"))
    page.fill("#id_email", email)
    page.fill("#id_password", PASSWORD)
    page.click("[data-testid=login-form] button[type=submit]")
    if totp_secret:
        page.wait_for_selector("[data-testid=login-verify-form]")
        seen.append(urlsplit(page.url).path)
        page.fill("#id_code", totp_code(email=email, secret=totp_secret))
        page.click("[data-testid=login-verify-form] button[type=submit]")
    page.wait_for_selector("[data-testid=sign-out]")
    seen.append(urlsplit(page.url).path)
    return seen


def _new_context(browser: Any, console: Console, **kwargs: Any) -> Any:
    context = browser.new_context(
        base_url=console.base_url, viewport={"width": 1366, "height": 900}, device_scale_factor=1, **kwargs
    )
    context.set_default_timeout(15_000)
    return context


@dataclass(frozen=True)
class SignedIn:
    """A browser session that went through the sign-in forms: the paths it saw and its cookies."""

    steps: list[str]
    state: dict[str, Any]


@pytest.fixture(scope="package")
def owner_signin(browser, console, django_db_blocker) -> SignedIn:
    """The owner signs in once (password, then a TOTP code: each code is good once, so one sign-in per run keeps
    the tests from waiting for the next 30-second step); the tests that act as the owner share the session."""
    context = _new_context(browser, console)
    page = context.new_page()
    with django_db_blocker.unblock():
        steps = sign_in(page, console, email=console.owner_email, totp_secret=console.owner_totp_secret)
    state = context.storage_state()
    context.close()
    return SignedIn(steps=steps, state=state)


@pytest.fixture
def owner_page(browser, console, owner_signin) -> Iterator[Any]:
    context = _new_context(
        browser, console, storage_state=owner_signin.state, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def viewer_page(browser, console) -> Iterator[Any]:
    context = _new_context(browser, console)
    page = context.new_page()
    sign_in(page, console, email=console.viewer_email)
    yield page
    context.close()


@pytest.fixture
def fresh_context(browser, console) -> Iterator[Any]:
    context = _new_context(browser, console)
    yield context
    context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under artifacts/screenshots/ (kept by CI as an artifact, never committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
