"""Reading prompt templates: resolving a reference to a version, rendering it, and diffing two versions."""

from __future__ import annotations

import difflib
import json
from typing import Any

from apps.policies.errors import TemplateNotFound
from apps.policies.models import PromptTemplate, PromptTemplateVersion
from apps.policies.prompts.rendering import (
    CompiledTemplate,
    RenderedTemplate,
    template_compile,
    template_compiled_render,
    template_ref_parse,
)


def prompt_template_version_get(*, organization_id: int, name: str, version: int | None) -> PromptTemplateVersion:
    """The version `version` (None: the latest) of the organisation's template `name`, with its template, in one
    query. Raises `TemplateNotFound`."""
    versions = PromptTemplateVersion.objects.select_related("template").filter(
        template__organization_id=organization_id, template__name=name
    )
    found = versions.filter(version=version).first() if version is not None else versions.order_by("-version").first()
    if found is None:
        raise TemplateNotFound(name, version)
    return found


def prompt_template_version_compile(version: PromptTemplateVersion) -> CompiledTemplate:
    """A saved version as the renderer (and the gateway's cache) keeps it."""
    return template_compile(
        template_id=version.template_id,
        organization_id=version.template.organization_id,
        name=version.template.name,
        version=version.version,
        messages=version.messages,
        variables=version.variables,
        model=version.model,
        params=version.params,
    )


def prompt_template_compiled_get(*, organization_id: int, name: str, version: int | None) -> CompiledTemplate:
    """`prompt_template_version_get`, compiled. What the gateway's cache loads (off the event loop)."""
    return prompt_template_version_compile(
        prompt_template_version_get(organization_id=organization_id, name=name, version=version)
    )


def template_render(*, organization_id: int, ref: str, variables: dict[str, Any] | None) -> RenderedTemplate:
    """Render the template `ref` (`"name"`, `"name@latest"` or `"name@3"`) of an organisation with `variables`.

    Sync, uncached (one query): for previews, the console and tests. The gateway uses
    `apps.policies.prompts.cache.template_render_async`. Raises `TemplateRefInvalid` (400),
    `TemplateNotFound` (404) or `TemplateVariablesInvalid` (400), all `PolicyDenied`."""
    name, version = template_ref_parse(ref)
    compiled = prompt_template_compiled_get(organization_id=organization_id, name=name, version=version)
    return template_compiled_render(compiled, variables)


def _content_lines(version: PromptTemplateVersion) -> list[str]:
    content = {
        "messages": version.messages,
        "variables": version.variables,
        "model": version.model,
        "params": version.params,
    }
    return json.dumps(content, indent=2, ensure_ascii=False).splitlines(keepends=True)


def prompt_template_versions_diff(*, template: PromptTemplate, from_version: int, to_version: int) -> str:
    """A unified diff between two versions' content (messages, variables, model, params) as indented JSON.
    Raises `TemplateNotFound` when either version does not exist."""
    versions = {v.version: v for v in template.versions.filter(version__in=[from_version, to_version])}
    for number in (from_version, to_version):
        if number not in versions:
            raise TemplateNotFound(template.name, number)
    return "".join(
        difflib.unified_diff(
            _content_lines(versions[from_version]),
            _content_lines(versions[to_version]),
            fromfile=f"{template.name}@{from_version}",
            tofile=f"{template.name}@{to_version}",
        )
    )
