"""Security headers of the pages Django renders: a Content-Security-Policy that runs no inline script, on console
and admin pages alike, templates a strict policy does not break (no inline script, event handler or style
attribute), and HSTS once the TLS settings are on."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from django.contrib.admin import site as admin_site
from django.test import Client, RequestFactory
from django.urls import reverse

from apps.orgs.models import User

pytestmark = pytest.mark.django_db


class _InlineFinder(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' blocks: inline scripts, on* handlers, style attributes,
    javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "src" not in names and names.get("type") not in ("application/json",):
            self._in_inline_script = True
        for name, value in attrs:
            if name.startswith("on") or name == "style" or (value or "").strip().lower().startswith("javascript:"):
                self.blocked.append(f"<{tag} {name}={value!r}>")

    def handle_data(self, data: str) -> None:
        if self._in_inline_script and data.strip():
            self.blocked.append(f"<script>{data.strip()[:60]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_inline_script = False


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def _check_page(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    policy = _policy(response)
    assert policy["script-src"][0] == "'self'", path
    assert not {"'unsafe-inline'", "'unsafe-eval'"} & set(policy["script-src"]), path
    assert (policy["object-src"], policy["frame-ancestors"]) == (["'none'"], ["'none'"]), path
    assert "'unsafe-inline'" not in policy["style-src"], path
    finder = _InlineFinder()
    finder.feed(response.content.decode())
    assert finder.blocked == [], (path, finder.blocked)


@pytest.fixture
def root(db):
    return User.objects.create_superuser("root@inferia.test", "correct horse battery")


def test_console_pages_carry_a_strict_policy_and_nothing_inline(acme, owner, signed_in):
    client = signed_in(owner)
    paths = [reverse(f"console:{name}") for name in (
        "home", "security", "dashboard", "deployments", "playground", "keys", "usage", "audit", "members",
        "member-invitations", "member-teams", "member-roles", "policies", "policy-profiles",
        "compute-providers", "compute-provider-create", "compute-pools", "compute-pool-create",
    )]  # fmt: skip
    paths += [
        reverse("console:deployment-detail", args=[acme.deployment.pk]),
        reverse("console:key-detail", args=[acme.key.key.pk]),
        reverse("console:policy-profile-edit", args=[acme.guardrail_profile.pk]),
        reverse("console:policy-edit", args=[acme.policy.pk]),
        reverse("console:compute-provider-edit", args=[acme.provider.pk]),
        reverse("console:compute-pool-edit", args=[acme.pool.pk]),
        "/console/templates/",
    ]
    for path in paths:
        _check_page(client, path)
    _check_page(Client(), reverse("console:login"))


def test_admin_pages_carry_the_policy_and_nothing_inline(acme, root):
    client = Client()
    client.force_login(root)
    request = RequestFactory().get("/admin/")
    request.user = root
    _check_page(client, "/admin/")
    for model, model_admin in admin_site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        _check_page(client, reverse("admin:{}_{}_changelist".format(*info)))
        if model_admin.has_add_permission(request):
            _check_page(client, reverse("admin:{}_{}_add".format(*info)))
        first = model_admin.get_queryset(request).first()
        if first is not None:
            _check_page(client, reverse("admin:{}_{}_change".format(*info), args=[first.pk]))


def _settings_in_a_fresh_process(**env: str) -> str:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'inferia_site.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD)"
    )
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("INFERIA_SECURE", "INFERIA_BEHIND", "INFERIA_HSTS"))
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_hsts_is_on_once_the_tls_settings_are():
    assert _settings_in_a_fresh_process() == "0 False False"
    assert _settings_in_a_fresh_process(INFERIA_SECURE_COOKIES="true") == "31536000 False False"
    assert _settings_in_a_fresh_process(INFERIA_BEHIND_TLS_PROXY="true", INFERIA_HSTS_INCLUDE_SUBDOMAINS="true") == (
        "31536000 True False"
    )
    assert _settings_in_a_fresh_process(INFERIA_SECURE_COOKIES="true", INFERIA_HSTS_SECONDS="0") == "0 False False"


def test_a_secure_request_gets_the_hsts_header(client, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    response = client.get(reverse("console:login"), secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000"
    assert "Strict-Transport-Security" not in client.get(reverse("console:login"))
