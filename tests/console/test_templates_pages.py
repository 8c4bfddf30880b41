"""The prompt templates pages: create, the version history, a new version (never an edit in place), the diff
between two versions, delete; a viewer's forged POSTs are refused, another organisation's templates are 404, and
the list runs a fixed number of queries."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.policies.models import PromptTemplate
from apps.policies.prompts.services import prompt_template_create, prompt_template_version_create

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "system", "content": "Answer about {{topic}}."}]


def editor_post(messages, defaults=None, **fields):
    """The editor's form as a browser posts it: one formset row per message, a `var-<name>` default per variable."""
    data = {
        "messages-TOTAL_FORMS": str(len(messages)),
        "messages-INITIAL_FORMS": "0",
        "messages-MIN_NUM_FORMS": "1",
        "messages-MAX_NUM_FORMS": "100",
        **fields,
    }
    for index, message in enumerate(messages):
        data[f"messages-{index}-role"] = message["role"]
        data[f"messages-{index}-content"] = message["content"]
        if message.get("remove"):
            data[f"messages-{index}-DELETE"] = "on"
    for name, default in (defaults or {}).items():
        data[f"var-{name}"] = default
    return data


def test_the_list_runs_a_fixed_number_of_queries(
    acme, owner, signed_in, django_assert_max_num_queries, django_assert_num_queries
):
    client = signed_in(owner)
    client.get("/console/templates/")
    with django_assert_max_num_queries(10) as few:
        assert client.get("/console/templates/").status_code == 200
    for n in range(6):
        prompt_template_create(
            actor=owner, organization=acme.org, name=f"t{n}", messages=MESSAGES, variables=[{"name": "topic"}]
        )
    with django_assert_num_queries(len(few.captured_queries)):
        html = client.get("/console/templates/").content.decode()
    assert html.count('data-testid="template-row"') == 7


def test_the_list_shows_own_templates_only(acme, globex, viewer, signed_in):
    html = signed_in(viewer).get("/console/templates/").content.decode()
    assert "acme-template" in html
    assert "globex-template" not in html


def test_create_then_add_a_version_then_diff(acme, owner, signed_in):
    client = signed_in(owner)
    response = client.post(
        "/console/templates/new/",
        editor_post(MESSAGES, {"topic": "billing"}, organization=acme.org.pk, name="support"),
    )
    template = PromptTemplate.objects.get(organization=acme.org, name="support")
    assert response["Location"] == f"/console/templates/{template.pk}/"
    changed = [{"role": "system", "content": "Answer briefly about {{topic}}."}]
    client.post(f"/console/templates/{template.pk}/versions/", editor_post(changed, note="shorter"))
    template.refresh_from_db()
    assert template.latest_version == 2
    assert AuditEvent.objects.filter(action="prompt_template.version_create", target_id=str(template.pk)).exists()
    detail = client.get(f"/console/templates/{template.pk}/").content.decode()
    assert detail.count('data-testid="template-version-row"') == 2
    assert "shorter" in detail
    diff = client.get(f"/console/templates/{template.pk}/diff/", {"from": 1, "to": 2}).content.decode()
    assert '<span class="del">-' in diff
    assert '<span class="add">+' in diff
    assert "Answer briefly" in diff


def test_a_bad_version_is_refused_with_the_reason(acme, owner, signed_in):
    template = acme.template
    bad = [{"role": "wizard", "content": "Answer about {{topic}}."}]
    response = signed_in(owner).post(f"/console/templates/{template.pk}/versions/", editor_post(bad))
    assert response.status_code == 400
    assert b"&#x27;wizard&#x27; is not a role" in response.content
    template.refresh_from_db()
    assert template.latest_version == 1


def test_a_viewer_sees_no_buttons_and_forged_posts_are_refused(acme, viewer, signed_in):
    client = signed_in(viewer)
    assert 'data-testid="template-create"' not in client.get("/console/templates/").content.decode()
    detail = client.get(f"/console/templates/{acme.template.pk}/").content.decode()
    assert 'data-testid="template-version-save"' not in detail
    assert 'data-testid="template-delete"' not in detail
    version = client.post(f"/console/templates/{acme.template.pk}/versions/", editor_post(MESSAGES))
    assert version.status_code == 403
    assert client.post(f"/console/templates/{acme.template.pk}/delete/").status_code == 403
    assert client.get("/console/templates/new/").status_code == 403
    created = client.post("/console/templates/new/", editor_post(MESSAGES, organization=acme.org.pk, name="x"))
    assert created.status_code == 403
    acme.template.refresh_from_db()
    assert acme.template.latest_version == 1


def test_another_organisations_template_is_not_found(acme, globex, owner, signed_in):
    client = signed_in(owner)
    foreign = globex.template
    prompt_template_version_create(template=foreign, actor=None, messages=MESSAGES, variables=[{"name": "topic"}])
    assert client.get(f"/console/templates/{foreign.pk}/").status_code == 404
    assert client.get(f"/console/templates/{foreign.pk}/diff/", {"from": 1, "to": 2}).status_code == 404
    assert client.post(f"/console/templates/{foreign.pk}/versions/", editor_post(MESSAGES)).status_code == 404
    assert client.post(f"/console/templates/{foreign.pk}/description/", {"description": "x"}).status_code == 404
    assert client.post(f"/console/templates/{foreign.pk}/delete/").status_code == 404
    assert PromptTemplate.objects.filter(pk=foreign.pk).exists()


def test_an_owner_deletes_a_template(acme, owner, signed_in):
    response = signed_in(owner).post(f"/console/templates/{acme.template.pk}/delete/")
    assert response["Location"] == "/console/templates/"
    assert not PromptTemplate.objects.filter(pk=acme.template.pk).exists()


def test_a_nul_in_a_message_is_refused_with_the_reason(acme, owner, signed_in):
    template = acme.template
    messages = [{"role": "user", "content": "a\x00b {{topic}}"}]
    response = signed_in(owner).post(f"/console/templates/{template.pk}/versions/", editor_post(messages))
    assert response.status_code == 400
    assert b"Null characters are not allowed" in response.content
    template.refresh_from_db()
    assert template.latest_version == 1
