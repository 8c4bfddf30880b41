"""The prompt template editor: messages as rows of role and content, variables detected from `{{name}}`
placeholders (with defaults), clear refusals (unknown role, empty text, an unfinished placeholder, sizes, NUL), and
the detail page's example `/v1/chat/completions` body, which names the real request fields and renders."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.core.exceptions import ValidationError

from apps.audit.models import AuditEvent
from apps.policies.models import PromptTemplate
from apps.policies.prompts.rendering import (
    MAX_CONTENT_CHARS,
    placeholders_check,
    template_content_validate,
    template_placeholders,
)
from apps.policies.prompts.selectors import template_render
from tests.console.test_templates_pages import editor_post

TWO_MESSAGES = [
    {"role": "system", "content": "You answer for {{product}}. Be kind to {{ customer }}."},
    {"role": "user", "content": "{{customer}} asks: {{question}}"},
]


# --- detection and checks (pure) ---------------------------------------------------------------------------------


def test_variables_are_detected_in_order_of_first_use_once_each():
    assert template_placeholders([m["content"] for m in TWO_MESSAGES]) == ["product", "customer", "question"]
    assert template_placeholders(["no placeholders", "a lone }} and {single}"]) == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Hello {{name", "'{{name' opens a placeholder that is never closed"),
        ("Hello {{name} and more", "never closed"),
        ("{{first and then {{second}}", "'{{first and then {{second}}' opens a placeholder"),
        ("Hello {name}} there", "'{name}}' is missing a brace"),
        ("nul \x00 here", "NUL character"),
    ],
)
def test_an_unfinished_placeholder_or_a_nul_is_refused_with_what_to_write(text, says):
    with pytest.raises(ValidationError) as refused:
        placeholders_check(text)
    assert says in refused.value.messages[0]


def test_whole_placeholders_and_json_examples_pass():
    placeholders_check('Reply as {"answer": {"text": "..."}} for {{ topic }} and {{user_2}}.')


def test_the_services_refuse_an_unfinished_placeholder_too_naming_the_message():
    with pytest.raises(ValidationError) as refused:
        template_content_validate(
            messages=[{"role": "system", "content": "ok"}, {"role": "user", "content": "Hi {{name"}], variables=[]
        )
    assert refused.value.message_dict["messages"][0].startswith("Message 2: '{{name'")


# --- the editor through the pages --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_new_template_page_shows_the_editor_rows_and_detected_variables(acme, owner, signed_in):
    page = signed_in(owner).get("/console/templates/new/", {"org": acme.org.slug})
    body = page.content.decode()
    assert page.status_code == 200
    assert body.count('data-testid="template-message-row"') == 3  # two rows, and the empty row in its <template>
    assert 'name="messages-TOTAL_FORMS"' in body
    assert re.findall(r'data-variable="(\w+)"', body) == ["product", "question"]
    assert "template_editor.js" in body
    assert "<script>" not in body  # the CSP allows no inline script


@pytest.mark.django_db
def test_creating_with_two_messages_stores_them_and_the_detected_variables(acme, owner, signed_in):
    client = signed_in(owner)
    data = editor_post(
        TWO_MESSAGES,
        {"product": "Inferia", "customer": "", "question": "", "stale": "ignored"},
        organization=acme.org.pk,
        name="support-reply",
        description="Replies to support tickets",
        temperature="0.2",
        stop="END\n###",
    )
    response = client.post("/console/templates/new/", data)
    template = PromptTemplate.objects.get(organization=acme.org, name="support-reply")
    assert response.status_code == 302
    version = template.versions.get()
    assert version.messages == [{"role": m["role"], "content": m["content"]} for m in TWO_MESSAGES]
    assert version.variables == [{"name": "product", "default": "Inferia"}, {"name": "customer"}, {"name": "question"}]
    assert version.params == {"temperature": 0.2, "stop": ["END", "###"]}
    assert template.description == "Replies to support tickets"
    assert AuditEvent.objects.filter(action="prompt_template.create", target_id=str(template.pk)).exists()


@pytest.mark.django_db
def test_removed_and_blank_added_rows_are_left_out_with_their_variables(acme, owner, signed_in):
    rows = [*TWO_MESSAGES, {"role": "assistant", "content": "About {{gone}}", "remove": True}]
    data = editor_post(rows, organization=acme.org.pk, name="trimmed")
    data["messages-TOTAL_FORMS"] = "4"  # a fourth row was added and left empty: skipped, not an error
    data["messages-3-role"] = "user"
    data["messages-3-content"] = ""
    response = signed_in(owner).post("/console/templates/new/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    version = PromptTemplate.objects.get(name="trimmed").versions.get()
    assert len(version.messages) == 2
    assert [v["name"] for v in version.variables] == ["product", "customer", "question"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("messages", "extra", "says"),
    [
        (
            [{"role": "wizard", "content": "hi"}],
            {},
            "Message 1: &#x27;wizard&#x27; is not a role: use system, developer",
        ),
        ([{"role": "user", "content": "   "}], {}, "Message 1: A message needs some text."),
        (
            [{"role": "system", "content": "ok"}, {"role": "user", "content": "Hi {{name"}],
            {},
            "Message 2: &#x27;{{name&#x27; opens a placeholder that is never closed",
        ),
        (
            [{"role": "user", "content": "x" * (MAX_CONTENT_CHARS + 1)}],
            {},
            f"At most 100,000 characters (this one has {MAX_CONTENT_CHARS + 1})",
        ),
        ([{"role": "user", "content": "{{a}}"}], {"var-a": "d" * 10_001}, "{{a}}: At most 10,000 characters."),
        ([{"role": "user", "content": "{{a}}"}], {"var-a": "bad\x00"}, "{{a}}: The default holds a NUL"),
        ([{"role": "user", "content": "hi", "remove": True}], {}, "A template needs at least one message."),
        ([{"role": "user", "content": "hi"}], {"name": "has space"}, "Name: Letters, digits"),
        ([{"role": "user", "content": "hi"}], {"temperature": "9"}, "Temperature: Ensure this value is less than"),
        ([{"role": "user", "content": "hi"}], {"stop": "a\nb\nc\nd\ne"}, "Stop sequences: At most 4"),
    ],
)
def test_a_bad_template_is_refused_with_a_clear_reason_and_the_input_kept(
    acme, owner, signed_in, messages, extra, says
):
    data = {**editor_post(messages, organization=acme.org.pk, name="refused"), **extra}
    response = signed_in(owner).post("/console/templates/new/", data)
    body = response.content.decode()
    assert response.status_code == 400
    assert 'data-testid="template-problems"' in body
    assert says in body, re.findall(r"<li>[^<]*</li>", body)[:5]
    assert not PromptTemplate.objects.filter(organization=acme.org, name__in=["refused", "has space"]).exists()


@pytest.mark.django_db
def test_a_forged_row_count_is_capped_and_refused(acme, owner, signed_in):
    data = editor_post([{"role": "user", "content": "hi"}], organization=acme.org.pk, name="flood")
    data["messages-TOTAL_FORMS"] = "1000000"
    response = signed_in(owner).post("/console/templates/new/", data)
    assert response.status_code == 400
    assert "at most 100 messages" in response.content.decode()
    assert not PromptTemplate.objects.filter(name="flood").exists()


@pytest.mark.django_db
def test_a_new_version_keeps_the_defaults_shown_and_the_variable_descriptions(acme, owner, signed_in):
    client = signed_in(owner)
    template = acme.template  # v1 declares {{topic}} (required)
    page = client.get(f"/console/templates/{template.pk}/").content.decode()
    assert re.findall(r'data-variable="(\w+)"', page) == ["topic"]
    changed = [{"role": "system", "content": "Short answers on {{topic}} in {{language}}."}]
    response = client.post(
        f"/console/templates/{template.pk}/versions/", editor_post(changed, {"topic": "", "language": "English"})
    )
    assert response.status_code == 302
    template.refresh_from_db()
    latest = template.versions.get(version=2)
    assert latest.variables == [{"name": "topic"}, {"name": "language", "default": "English"}]


@pytest.mark.django_db
def test_the_detail_page_shows_the_request_field_and_an_example_body_that_renders(acme, owner, signed_in):
    client = signed_in(owner)
    client.post(
        "/console/templates/new/",
        editor_post(TWO_MESSAGES, {"product": "Inferia"}, organization=acme.org.pk, name="support-reply"),
    )
    template = PromptTemplate.objects.get(name="support-reply")
    page = client.get(f"/console/templates/{template.pk}/").content.decode()
    assert 'data-testid="template-variables-field">"template_variables"</code>' in page
    example_html = re.search(r'data-testid="template-example">(.*?)</pre>', page, re.DOTALL).group(1)
    example = json.loads(html.unescape(example_html))
    assert example == {
        "model": "<model>",
        "template": "support-reply",
        "template_variables": {"product": "Inferia", "customer": "<customer>", "question": "<question>"},
        "messages": [{"role": "user", "content": "<the user's message>"}],
    }
    rendered = template_render(
        organization_id=acme.org.pk, ref=example["template"], variables=example["template_variables"]
    )
    assert rendered.messages[1] == {"role": "user", "content": "<customer> asks: <question>"}
    assert f'href="/console/playground/?org={acme.org.slug}&amp;template=support-reply"' in page


@pytest.mark.django_db
def test_the_description_changes_through_the_audited_service(acme, owner, viewer, signed_in):
    template = acme.template
    assert (
        signed_in(viewer).post(f"/console/templates/{template.pk}/description/", {"description": "x"}).status_code
        == 403
    )
    response = signed_in(owner).post(f"/console/templates/{template.pk}/description/", {"description": "For billing"})
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.description == "For billing"
    event = AuditEvent.objects.get(action="prompt_template.update", target_id=str(template.pk))
    assert event.changes == {"description": {"before": "", "after": "For billing"}}


@pytest.mark.django_db
def test_a_template_cannot_be_created_in_another_organisation(acme, globex, owner, signed_in):
    data = editor_post(TWO_MESSAGES, organization=globex.org.pk, name="planted")
    assert signed_in(owner).post("/console/templates/new/", data).status_code == 403
    assert not PromptTemplate.objects.filter(name="planted").exists()


@pytest.mark.django_db
def test_a_removed_row_s_own_errors_do_not_count(acme, owner, signed_in):
    rows = [{"role": "user", "content": "{{q}}"}, {"role": "system", "content": "", "remove": True}]
    response = signed_in(owner).post("/console/templates/new/", editor_post(rows, organization=acme.org.pk, name="ok"))
    assert response.status_code == 302
    assert PromptTemplate.objects.get(name="ok").versions.get().messages == [{"role": "user", "content": "{{q}}"}]
    rows.append({"role": "wizard", "content": "x"})
    refused = signed_in(owner).post("/console/templates/new/", editor_post(rows, organization=acme.org.pk, name="no"))
    problems = re.search(r'data-testid="template-problems">(.*?)</div>', refused.content.decode(), re.DOTALL).group(1)
    assert "Message 3:" in problems
    assert "Message 2:" not in problems
