"""The management pages (keys, policies, templates, usage, audit, members) as assistive technology meets them:
one h1, every visible field labelled, tables captioned, and the stylesheet and script they rely on served."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db

PAGES = [
    "/console/keys/",
    "/console/policies/",
    "/console/policies/profiles/",
    "/console/policies/profiles/new/",
    "/console/templates/",
    "/console/usage/",
    "/console/audit/",
    "/console/members/",
    "/console/members/invitations/",
    "/console/members/teams/",
    "/console/members/roles/",
]


@pytest.mark.parametrize("url", PAGES)
def test_each_page_has_a_heading_labelled_fields_and_captioned_tables(url, acme, globex, owner, signed_in):
    html = signed_in(owner).get(url).content.decode()
    assert html.count("<h1") == 1, url
    labels = set(re.findall(r'<label for="([^"]+)"', html))
    fields = re.findall(r'<(?:input|select|textarea)(?![^>]*type="(?:hidden|checkbox)")[^>]*\sid="([^"]+)"', html)
    assert set(fields) <= labels, (url, set(fields) - labels)
    assert html.count("<table") == html.count("<caption"), url
    assert "/static/console/pages.css" in html


def test_the_detail_pages_are_labelled_too(acme, owner, signed_in):
    client = signed_in(owner)
    for url in (
        f"/console/keys/{acme.key.key.pk}/",
        f"/console/policies/{acme.policy.pk}/",
        f"/console/policies/profiles/{acme.guardrail_profile.pk}/",
        f"/console/templates/{acme.template.pk}/",
        f"/console/templates/{acme.template.pk}/diff/",
    ):
        html = client.get(url).content.decode()
        labels = set(re.findall(r'<label for="([^"]+)"', html))
        fields = re.findall(r'<(?:input|select|textarea)(?![^>]*type="(?:hidden|checkbox)")[^>]*\sid="([^"]+)"', html)
        assert set(fields) <= labels, (url, set(fields) - labels)


def test_the_assets_exist():
    assert finders.find("console/pages.css")
    assert finders.find("console/pages.js")
