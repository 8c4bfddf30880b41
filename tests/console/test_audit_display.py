"""The audit log page names what each event touched as it is called now, with a link to its console page ("Prompt
template 'support-reply'"), falls back to the type and id once it is deleted or out of view, names and links the
actor, shows the changes as field: before -> after rows with secrets masked, and resolves all of it with a few
queries per page, not per event."""

from __future__ import annotations

import re

import pytest

from apps.audit.services import audit_record
from apps.console.audit_display import audit_change_rows
from apps.keys.services import api_key_create
from apps.policies.models import PromptTemplate
from apps.policies.prompts.services import (
    prompt_template_create,
    prompt_template_delete,
    prompt_template_version_create,
)

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "system", "content": "Reply kindly to {{customer}}."}]


def _row(html: str, action: str) -> str:
    """The HTML of the first (newest) event row with `action`."""
    start = html.index(f'data-action="{action}"')
    end = html.find('data-testid="audit-row"', start)
    return html[start : end if end != -1 else len(html)]


def _template(acme, owner, name="support-reply"):
    return prompt_template_create(
        actor=owner, organization=acme.org, name=name, messages=MESSAGES, variables=[{"name": "customer"}]
    ).template


def test_a_template_event_names_it_links_it_and_lists_its_changes(acme, owner, signed_in):
    template = _template(acme, owner)
    prompt_template_version_create(
        template=template,
        actor=owner,
        messages=[{"role": "system", "content": "Reply briefly to {{customer}}."}],
        variables=[{"name": "customer"}],
        note="shorter",
    )
    html = signed_in(owner).get("/console/audit/", {"action": "prompt_template."}).content.decode()
    created = _row(html, "prompt_template.create")
    link = f'<a href="/console/templates/{template.pk}/">&lsquo;support-reply&rsquo;</a>'
    assert f"Prompt template {link}" in created
    assert re.search(r'data-field="name">.*?<span class="muted">—</span>.*?<span class="value">support-reply</span>',
                     created, re.DOTALL)  # fmt: skip
    added = _row(html, "prompt_template.version_create")
    assert link in added
    messages_row = re.search(r'data-field="messages">(.*?)</tr>', added, re.DOTALL).group(1)
    assert "system: Reply kindly to {{customer}}." in messages_row
    assert "system: Reply briefly to {{customer}}." in messages_row
    assert messages_row.index("kindly") < messages_row.index("→") < messages_row.index("briefly")
    assert re.search(r'data-field="note">.*?—.*?shorter', added, re.DOTALL)


def test_a_deleted_target_falls_back_to_its_type_id_and_recorded_name(acme, owner, signed_in):
    template = _template(acme, owner)
    pk = template.pk
    prompt_template_delete(template=template, actor=owner)
    assert not PromptTemplate.objects.filter(pk=pk).exists()
    html = signed_in(owner).get("/console/audit/", {"action": "prompt_template."}).content.decode()
    for action in ("prompt_template.create", "prompt_template.delete"):
        row = _row(html, action)
        assert f"Prompt template #{pk}" in row
        assert "(was &lsquo;support-reply&rsquo;; deleted or no longer visible)" in row
        assert f"/console/templates/{pk}/" not in row


def test_a_team_event_links_to_the_team_page(acme, owner, signed_in):
    audit_record(action="team.touched", actor=owner, target=acme.team)
    row = _row(signed_in(owner).get("/console/audit/", {"action": "team.touched"}).content.decode(), "team.touched")
    assert f'Team <a href="/console/members/teams/{acme.team.pk}/">&lsquo;{acme.team.name}&rsquo;</a>' in row


def test_another_organisations_object_is_never_named_or_linked(acme, globex, owner, signed_in):
    foreign = globex.template
    audit_record(action="cross.reference", actor=owner, target=foreign, organization_id=acme.org.pk)
    row = _row(signed_in(owner).get("/console/audit/", {"action": "cross."}).content.decode(), "cross.reference")
    assert f"Prompt template #{foreign.pk}" in row
    assert f"/console/templates/{foreign.pk}/" not in row


def test_the_actor_is_named_and_links_to_their_events_keeping_the_filters(acme, owner, signed_in):
    owner.full_name = "Ada Owner"
    owner.save(update_fields=["full_name"])
    _template(acme, owner)
    html = signed_in(owner).get("/console/audit/", {"action": "prompt_template.", "outcome": "success"}).content
    actor = re.search(r'data-testid="audit-actor">(.*?)</td>', _row(html.decode(), "prompt_template.create")).group(1)
    assert "Ada Owner &lt;owner@acme.test&gt;" in actor
    href = re.search(r'href="([^"]+)"', actor).group(1)
    assert "action=prompt_template." in href
    assert "outcome=success" in href
    assert "actor=owner%40acme.test" in href


def test_a_key_actor_links_to_the_key(acme, owner, signed_in):
    created = api_key_create(organization=acme.org, name="deployer", scopes=["manage"], owner=owner, actor=owner)
    _template(acme, created.key, name="by-key")
    row = _row(signed_in(owner).get("/console/audit/", {"action": "prompt_template."}).content.decode(),
               "prompt_template.create")  # fmt: skip
    actor = re.search(r'data-testid="audit-actor">(.*?)</td>', row, re.DOTALL).group(1)
    assert f'href="/console/keys/{created.key.pk}/"' in actor
    assert ">deployer</a>" in actor


def test_secrets_stay_masked_in_the_change_rows(acme, owner, signed_in):
    audit_record(
        action="provider.credentials_replace",
        actor=owner,
        target=acme.provider,
        changes={
            "client_secret": {"before": "old-s3cret", "after": "new-s3cret"},
            "region": {"before": "a", "after": "b"},
        },
    )
    html = signed_in(owner).get("/console/audit/", {"action": "provider.credentials"}).content.decode()
    assert "s3cret" not in html
    assert re.search(r'data-field="client_secret">.*?<span class="value">\*{8}</span>', html, re.DOTALL)
    assert re.search(r'data-field="region">.*?>a</span>.*?→.*?>b</span>', html, re.DOTALL)
    rows = audit_change_rows({"password": {"before": "plain", "after": "text"}})
    assert (rows[0].label, rows[0].value) == ("Password", "********")


def test_change_rows_read_as_field_old_new_and_keep_plain_data():
    rows = audit_change_rows(
        {
            "requests_per_minute": {"before": 60, "after": None},
            "enabled": {"before": True, "after": False},
            "allowed_models": {"before": [], "after": ["llama-*"]},
            "reason": "rotated by the owner",
        },
        "policies.policy",
    )
    assert [(r.label, r.before, r.after, r.value) for r in rows] == [
        ("Requests per minute", "60", None, None),
        ("Enabled", "yes", "no", None),
        ("Allowed models", "(none)", '[\n "llama-*"\n]', None),
        ("Reason", None, None, "rotated by the owner"),
    ]
    created = audit_change_rows(
        {
            "variables": {"before": None, "after": [{"name": "product", "default": "Inferia"}, {"name": "customer"}]},
            "note": {"before": None, "after": ""},  # nothing a reader would call a change
        }
    )
    assert [(r.field, r.before, r.after) for r in created] == [
        ("variables", None, "product = Inferia\ncustomer (required)")
    ]
    long = audit_change_rows({"description": {"before": "", "after": "x" * 5000}})[0]
    assert len(long.after) < 2100
    assert long.after.endswith("(cut; the export has it all)")


def _bulk(acme, owner, n):
    template = _template(acme, owner, name=f"bulk-{n}")
    key = api_key_create(organization=acme.org, name=f"k{n}", scopes=["read"], owner=owner, actor=owner).key
    audit_record(action="bulk.org", actor=key, target=acme.org)
    audit_record(action="bulk.template", actor=owner, target=template, changes={"name": {"before": None, "after": "x"}})
    audit_record(action="bulk.key", actor=owner, target=key)


def test_names_cost_one_query_per_type_on_the_page_not_one_per_event(
    acme, owner, signed_in, django_assert_num_queries, django_assert_max_num_queries
):
    client = signed_in(owner)
    _bulk(acme, owner, 0)
    client.get("/console/audit/", {"action": "bulk."})
    with django_assert_max_num_queries(12) as baseline:
        client.get("/console/audit/", {"action": "bulk."})
    for n in range(1, 10):
        _bulk(acme, owner, n)
    with django_assert_num_queries(len(baseline.captured_queries)):
        html = client.get("/console/audit/", {"action": "bulk."}).content.decode()
    assert html.count('data-testid="audit-row"') == 25
    assert len(set(re.findall(r'href="/console/templates/(\d+)/"', html))) == 8
    assert len(set(re.findall(r'href="/console/keys/(\d+)/"', html))) == 9
    assert "Organisation &lsquo;Acme&rsquo;" in html
