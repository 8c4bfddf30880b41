"""Prompt templates: validation, rendering, immutable versions, audit, and the gateway's cached renderer."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from apps.audit.models import AuditEvent
from apps.keys.services import api_key_create
from apps.policies.errors import PolicyDenied, TemplateNotFound, TemplateRefInvalid, TemplateVariablesInvalid
from apps.policies.models import PromptTemplate, PromptTemplateVersion
from apps.policies.prompts.cache import TemplateCache, template_render_async
from apps.policies.prompts.rendering import template_ref_parse
from apps.policies.prompts.selectors import prompt_template_versions_diff, template_render
from apps.policies.prompts.services import (
    prompt_template_create,
    prompt_template_delete,
    prompt_template_update,
    prompt_template_version_create,
)
from inferia_runtime.errors import DomainRefusal
from tests.kit.waiting import eventually_async

SUPPORT = [
    {"role": "system", "content": "You support {{product}} customers. Answer in {{ language }}."},
    {"role": "user", "content": "My question: {{question}}"},
]
SUPPORT_VARIABLES = [{"name": "product"}, {"name": "language", "default": "English"}, {"name": "question"}]


@pytest.fixture
def support(org, owner):
    return prompt_template_create(
        actor=owner,
        organization=org,
        name="support",
        messages=SUPPORT,
        variables=SUPPORT_VARIABLES,
        model="llama-3-8b",
        params={"temperature": 0.2, "max_tokens": 256},
    ).template


def _second_version(template, owner, text="v2 for {{product}}"):
    return prompt_template_version_create(
        template=template, actor=owner, messages=[{"role": "system", "content": text}], variables=[{"name": "product"}]
    )


# --- references and rendering ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("support", ("support", None)), ("support@latest", ("support", None)), ("support@12", ("support", 12))],
)
def test_it_parses_template_references(ref, expected):
    assert template_ref_parse(ref) == expected


@pytest.mark.parametrize("ref", ["", "support@", "support@0", "support@-1", "support@v2", "a b", "@3", None, 3])
def test_it_rejects_malformed_references_with_a_400(ref):
    with pytest.raises(TemplateRefInvalid) as caught:
        template_ref_parse(ref)
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "invalid_template_ref", "template")


def test_it_renders_variables_defaults_model_and_params(support, org):
    rendered = template_render(
        organization_id=org.pk, ref="support", variables={"product": "Inferia", "question": "Is it {{fast}}?"}
    )
    assert rendered.messages == [
        {"role": "system", "content": "You support Inferia customers. Answer in English."},
        {"role": "user", "content": "My question: Is it {{fast}}?"},  # values are never expanded again
    ]
    assert (rendered.model, rendered.params) == ("llama-3-8b", {"temperature": 0.2, "max_tokens": 256})
    assert (rendered.template_id, rendered.version, rendered.ref) == (support.pk, 1, "support@1")


def test_numbers_and_booleans_render_as_text(support, org):
    rendered = template_render(
        organization_id=org.pk, ref="support@1", variables={"product": 42, "question": True, "language": "fr"}
    )
    assert rendered.messages[0]["content"] == "You support 42 customers. Answer in fr."
    assert rendered.messages[1]["content"] == "My question: true"


def test_it_names_missing_and_unexpected_variables(support, org):
    with pytest.raises(TemplateVariablesInvalid) as caught:
        template_render(organization_id=org.pk, ref="support", variables={"product": "x", "colour": "red"})
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "template_variables_invalid", "template_variables")
    assert (error.missing, error.unexpected) == (("question",), ("colour",))
    assert "question" in error.message
    assert "colour" in error.message
    assert isinstance(error, PolicyDenied)  # the gateway answers it like any policy refusal


@pytest.mark.parametrize("value", [None, {"a": 1}, ["x"]])
def test_it_refuses_values_that_are_not_text_or_numbers(support, org, value):
    with pytest.raises(TemplateVariablesInvalid):
        template_render(organization_id=org.pk, ref="support", variables={"product": value, "question": "q"})


def test_unknown_templates_and_versions_are_404(support, org):
    with pytest.raises(TemplateNotFound) as caught:
        template_render(organization_id=org.pk, ref="nope", variables={})
    assert (caught.value.status, caught.value.code) == (404, "template_not_found")
    with pytest.raises(TemplateNotFound, match="has no version 7"):
        template_render(organization_id=org.pk, ref="support@7", variables={})


def test_another_organisations_template_is_not_found(support, other_org):
    with pytest.raises(TemplateNotFound):
        template_render(organization_id=other_org.pk, ref="support", variables={"product": "x", "question": "y"})


# --- what a version may contain ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "variables", "params", "field"),
    [
        ([], [], {}, "messages"),
        ([{"role": "wizard", "content": "x"}], [], {}, "messages"),
        ([{"role": "user", "content": ""}], [], {}, "messages"),
        ([{"role": "user", "content": "hi", "name": "x"}], [], {}, "messages"),
        ([{"role": "user", "content": "{{user.name}}"}], [{"name": "user"}], {}, "messages"),
        ([{"role": "user", "content": "{{ x | upper }}"}], [{"name": "x"}], {}, "messages"),
        ([{"role": "user", "content": "{{__class__.__mro__}}"}], [], {}, "messages"),
        ([{"role": "user", "content": "{{undeclared}}"}], [], {}, "variables"),
        ([{"role": "user", "content": "hi"}], [{"name": "unused"}], {}, "variables"),
        ([{"role": "user", "content": "{{a}}"}], [{"name": "a"}, {"name": "a"}], {}, "variables"),
        ([{"role": "user", "content": "{{a}}"}], [{"name": "a", "default": 3}], {}, "variables"),
        ([{"role": "user", "content": "{{a}}"}], [{"name": "1a"}], {}, "variables"),
        ([{"role": "user", "content": "hi"}], [], {"logit_bias": {}}, "params"),
        ([{"role": "user", "content": "hi"}], [], {"temperature": "hot"}, "params"),
        ([{"role": "user", "content": "hi"}], [], {"max_tokens": 0}, "params"),
    ],
)
def test_it_refuses_bad_content_naming_the_field(org, owner, messages, variables, params, field):
    with pytest.raises(ValidationError) as caught:
        prompt_template_create(
            actor=owner, organization=org, name="bad", messages=messages, variables=variables, params=params
        )
    assert field in caught.value.message_dict
    assert not PromptTemplate.objects.filter(name="bad").exists()


@pytest.mark.parametrize("name", ["", "has space", "at@sign", "-leading", "x" * 101])
def test_it_refuses_bad_names(org, owner, name):
    with pytest.raises(ValidationError):
        prompt_template_create(actor=owner, organization=org, name=name, messages=[{"role": "user", "content": "hi"}])


def test_a_name_is_unique_within_an_organisation_only(support, org, other_org, owner, outsider):
    with pytest.raises(ValidationError, match="already has a template"):
        prompt_template_create(actor=owner, organization=org, name="support", messages=SUPPORT[1:2], variables=[])
    other = prompt_template_create(
        actor=outsider,
        organization=other_org,
        name="support",
        messages=[{"role": "user", "content": "{{question}}"}],
        variables=[{"name": "question"}],
    )
    assert other.template.organization_id == other_org.pk


# --- versions ----------------------------------------------------------------------------------------------------


def test_an_edit_is_a_new_version_and_pinned_versions_keep_their_content(support, org, owner):
    second = _second_version(support, owner)
    support.refresh_from_db()
    assert (second.version, support.latest_version) == (2, 2)
    latest = template_render(organization_id=org.pk, ref="support@latest", variables={"product": "Inferia"})
    assert (latest.messages, latest.version) == ([{"role": "system", "content": "v2 for Inferia"}], 2)
    pinned = template_render(organization_id=org.pk, ref="support@1", variables={"product": "P", "question": "Q"})
    assert pinned.messages[0]["content"].startswith("You support P")
    assert list(support.versions.values_list("version", flat=True)) == [2, 1]


def test_versions_cannot_be_changed_even_in_sql(support):
    version = support.versions.get()
    version.messages = [{"role": "user", "content": "rewritten history"}]
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        version.save()
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        PromptTemplateVersion.objects.filter(pk=version.pk).update(model="other")
    assert PromptTemplateVersion.objects.get(pk=version.pk).messages == SUPPORT


def test_a_version_made_with_a_key_records_the_key_and_its_owner(support, org, owner):
    issued = api_key_create(organization=org, name="ci", scopes=["manage"], owner=owner)
    version = _second_version(support, issued.key)
    assert (version.created_by_id, version.created_by_key_id) == (owner.pk, issued.key.pk)


def test_every_write_is_audited_with_what_changed(support, owner):
    created = AuditEvent.objects.get(action="prompt_template.create", target_id=str(support.pk))
    assert created.changes["name"]["after"] == "support"
    assert created.changes["messages"]["after"] == SUPPORT
    _second_version(support, owner)
    added = AuditEvent.objects.get(action="prompt_template.version_create", target_id=str(support.pk))
    assert added.changes["version"] == {"before": 1, "after": 2}
    assert added.changes["messages"]["after"] == [{"role": "system", "content": "v2 for {{product}}"}]
    prompt_template_update(template=support, actor=owner, changes={"description": "For the help desk"})
    updated = AuditEvent.objects.get(action="prompt_template.update")
    assert updated.changes == {"description": {"before": "", "after": "For the help desk"}}
    with pytest.raises(DomainRefusal, match="cannot change name"):
        prompt_template_update(template=support, actor=owner, changes={"name": "renamed"})
    template_id = support.pk
    prompt_template_delete(template=support, actor=owner)
    assert AuditEvent.objects.filter(action="prompt_template.delete", target_id=str(template_id)).exists()
    assert not PromptTemplateVersion.objects.filter(template_id=template_id).exists()


def test_the_diff_is_a_unified_diff_of_the_content(support, owner):
    _second_version(support, owner)
    diff = prompt_template_versions_diff(template=support, from_version=1, to_version=2)
    assert diff.startswith("--- support@1\n+++ support@2\n")
    assert '+      "content": "v2 for {{product}}",' in diff or '+      "content": "v2 for {{product}}"' in diff
    assert '-  "model": "llama-3-8b",' in diff
    assert prompt_template_versions_diff(template=support, from_version=1, to_version=1) == ""
    with pytest.raises(TemplateNotFound):
        prompt_template_versions_diff(template=support, from_version=1, to_version=9)


@pytest.mark.django_db(transaction=True)
def test_concurrent_edits_get_gapless_distinct_numbers(org, owner):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    template = prompt_template_create(
        actor=owner, organization=org, name="busy", messages=[{"role": "user", "content": "v1"}]
    ).template

    def edit(i):
        try:
            with transaction.atomic(durable=True):
                return prompt_template_version_create(
                    template=template, actor=owner, messages=[{"role": "user", "content": f"edit {i}"}]
                ).version
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        numbers = sorted(pool.map(edit, range(16)))
    assert numbers == list(range(2, 18))


# --- the gateway's cached renderer -------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def listening(aredis):
    """A cache applying published invalidations, as a gateway process's would."""
    cache = TemplateCache(latest_ttl_s=300)
    ready = asyncio.Event()
    task = asyncio.create_task(cache.listen(aredis, ready))
    await asyncio.wait_for(ready.wait(), 5)
    yield cache
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_versions_are_read_once_then_served_from_memory(org, owner, listening):
    from asgiref.sync import sync_to_async

    # Subscribing cleared the cache, which counts as one invalidation: count from here.
    before = listening.invalidations
    template = await sync_to_async(lambda: prompt_template_create(
        actor=owner, organization=org, name="cached", messages=SUPPORT, variables=SUPPORT_VARIABLES
    ).template)()  # fmt: skip

    # The create publishes an invalidation after commit; once it has arrived, nothing else should evict.
    async def published():
        return listening.invalidations > before

    await eventually_async(published, timeout=2.0, interval=0.01, what="the create's invalidation")
    variables = {"product": "Inferia", "question": "why?"}
    for _ in range(5):
        rendered = await template_render_async(
            organization_id=org.pk, ref="cached@1", variables=variables, cache=listening
        )
    assert (rendered.version, listening.database_reads) == (1, 1)
    await listening.render(organization_id=org.pk, ref="cached", variables=variables)
    await listening.render(organization_id=org.pk, ref="cached@latest", variables=variables)
    assert listening.database_reads == 2  # `latest` resolved once, then cached
    with pytest.raises(TemplateVariablesInvalid):
        await listening.render(organization_id=org.pk, ref="cached@1", variables={})
    assert listening.database_reads == 2
    assert template.pk == rendered.template_id


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_new_version_reaches_latest_within_a_second_through_pubsub(org, owner, listening):
    from asgiref.sync import sync_to_async

    template = await sync_to_async(lambda: prompt_template_create(
        actor=owner, organization=org, name="live", messages=[{"role": "user", "content": "one"}]
    ).template)()  # fmt: skip
    assert (await listening.render(organization_id=org.pk, ref="live", variables={})).version == 1

    def add_version():
        with transaction.atomic(durable=True):  # published on commit
            prompt_template_version_create(
                template=template, actor=owner, messages=[{"role": "user", "content": "two"}]
            )

    await sync_to_async(add_version)()

    async def sees_two():
        return (await listening.render(organization_id=org.pk, ref="live", variables={})).messages[0][
            "content"
        ] == "two"

    await eventually_async(sees_two, timeout=1.0, interval=0.02, what="version 2 seen")
    # The old version stays reachable by number.
    assert (await listening.render(organization_id=org.pk, ref="live@1", variables={})).messages[0]["content"] == "one"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_deleted_and_recreated_template_never_serves_the_old_content(org, owner, listening):
    from asgiref.sync import sync_to_async

    def create(text):
        with transaction.atomic(durable=True):
            return prompt_template_create(
                actor=owner, organization=org, name="phoenix", messages=[{"role": "user", "content": text}]
            ).template

    old = await sync_to_async(create)("old")
    assert (await listening.render(organization_id=org.pk, ref="phoenix@1", variables={})).messages[0][
        "content"
    ] == "old"

    def delete():
        with transaction.atomic(durable=True):
            prompt_template_delete(template=old, actor=owner)

    await sync_to_async(delete)()

    async def gone():
        try:
            await listening.render(organization_id=org.pk, ref="phoenix@1", variables={})
        except TemplateNotFound:
            return True
        return False

    await eventually_async(gone, timeout=2.0, interval=0.02, what="the template gone")
    await sync_to_async(create)("new")

    async def sees_new():
        rendered = await listening.render(organization_id=org.pk, ref="phoenix@1", variables={})
        return rendered.messages[0]["content"] == "new"

    await eventually_async(sees_new, timeout=2.0, interval=0.02, what="the new content seen")


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_without_a_listener_latest_is_at_most_the_ttl_old(org, owner):
    from asgiref.sync import sync_to_async

    cache = TemplateCache(latest_ttl_s=0.2)
    template = await sync_to_async(lambda: prompt_template_create(
        actor=owner, organization=org, name="ttl", messages=[{"role": "user", "content": "one"}]
    ).template)()  # fmt: skip
    assert (await cache.render(organization_id=org.pk, ref="ttl", variables={})).version == 1
    await sync_to_async(
        lambda: prompt_template_version_create(
            template=template, actor=owner, messages=[{"role": "user", "content": "2"}]
        )
    )()
    assert (await cache.render(organization_id=org.pk, ref="ttl", variables={})).version == 1  # still cached

    async def sees_two() -> bool:
        return (await cache.render(organization_id=org.pk, ref="ttl", variables={})).version == 2

    # The TTL is kept on the monotonic clock, which time-machine does not move: wait for it, bounded by the TTL.
    await eventually_async(sees_two, timeout=0.2 + 0.3, interval=0.02, what="the latest version after the TTL")


# --- admin -------------------------------------------------------------------------------------------------------


def test_the_admin_adds_versions_through_the_services_and_shows_the_history(org, client, django_user_model):
    import json

    root = django_user_model.objects.create_superuser("root@platform.test", "correct horse battery")
    client.force_login(root)
    form = {
        "organization": org.pk,
        "name": "faq",
        "description": "",
        "messages": json.dumps([{"role": "user", "content": "{{q}}"}]),
        "variables": json.dumps([{"name": "q"}]),
        "model": "",
        "params": "{}",
        "note": "",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }
    added = client.post("/admin/policies/prompttemplate/add/", form)
    assert added.status_code == 302, added.content[:2000]
    template = PromptTemplate.objects.get(name="faq")
    edited = client.post(
        f"/admin/policies/prompttemplate/{template.pk}/change/",
        {**form, "messages": json.dumps([{"role": "user", "content": "Q: {{q}}"}]), "versions-INITIAL_FORMS": "1",
         "versions-TOTAL_FORMS": "1", "versions-0-id": template.versions.get().pk, "versions-0-template": template.pk},
    )  # fmt: skip
    assert edited.status_code == 302, edited.content[:2000]
    assert list(template.versions.values_list("version", flat=True)) == [2, 1]
    assert AuditEvent.objects.filter(action="prompt_template.version_create", actor_user_id=root.pk).exists()
    bad = client.post(
        f"/admin/policies/prompttemplate/{template.pk}/change/", {**form, "messages": json.dumps([{"role": "x"}])}
    )
    assert bad.status_code == 200  # the form again, with the error, not a 500
    page = client.get(f"/admin/policies/prompttemplate/{template.pk}/change/")
    assert b"Q: {{q}}" in page.content
