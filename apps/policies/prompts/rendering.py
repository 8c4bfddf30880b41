"""Prompt template content: what a version may contain, and rendering its `{{variable}}` placeholders.

Rendering is plain text substitution in one pass, never template execution: a placeholder is `{{name}}` (spaces
inside the braces allowed) and nothing else, so there is no attribute access, no filters, no expressions, and a
variable's value is inserted as-is, never scanned for placeholders again. Pure functions, no database: the
services validate with them and the gateway renders with them from its cache.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from apps.policies.errors import TemplateRefInvalid, TemplateVariablesInvalid

TEMPLATE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
VARIABLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
# Anything that looks like a placeholder, to refuse the ones that are not simple names ({{user.name}}, {{x|upper}}).
_BRACES_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# A placeholder missing its first brace ({name}}), looked for once the whole placeholders are taken out.
_HALF_OPENED_RE = re.compile(r"(?<!\{)\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}")
_REF_RE = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})(?:@(?P<version>latest|[1-9][0-9]{0,8}))?")

MESSAGE_ROLES = ("system", "developer", "user", "assistant")
# The `/v1/chat/completions` body fields that name a template and supply its variables (the gateway pops both).
REQUEST_TEMPLATE_FIELD = "template"
REQUEST_VARIABLES_FIELD = "template_variables"
MAX_MESSAGES = 100
MAX_CONTENT_CHARS = 100_000
MAX_VARIABLES = 64
MAX_VALUE_CHARS = 100_000

# Default parameters a template may carry, with the JSON types each accepts. A request's own values win.
TEMPLATE_PARAMS: dict[str, tuple[type, ...]] = {
    "temperature": (int, float),
    "top_p": (int, float),
    "max_tokens": (int,),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
    "seed": (int,),
    "stop": (str, list),
    # Vector stores whose chunks enter the prompt (apps.gateway.retrieval checks the object on every request).
    "retrieval": (dict,),
}


@dataclass(frozen=True)
class CompiledTemplate:
    """One template version, checked and ready to render many times (what the gateway caches)."""

    template_id: int
    organization_id: int
    name: str
    version: int
    messages: tuple[tuple[str, str], ...]  # (role, content with placeholders)
    required: frozenset[str]
    defaults: Mapping[str, str]
    model: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderedTemplate:
    """A rendered template: the chat messages to put before the request's own, the default model (None: the
    request must name one) and default parameters, and which template version produced them (for usage records)."""

    messages: list[dict[str, str]]
    model: str | None
    params: dict[str, Any]
    template_id: int
    version: int
    name: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def template_ref_parse(ref: Any) -> tuple[str, int | None]:
    """`"name"`, `"name@latest"` -> (name, None); `"name@3"` -> (name, 3). Raises `TemplateRefInvalid`."""
    if not isinstance(ref, str):
        raise TemplateRefInvalid(repr(ref))
    match = _REF_RE.fullmatch(ref.strip())
    if match is None:
        raise TemplateRefInvalid(ref)
    version = match["version"]
    return match["name"], None if version in (None, "latest") else int(version)


def _snippet(content: str, at: int) -> str:
    return content[at : at + 30].split("\n", 1)[0]


def placeholders_check(content: str) -> None:
    """Refuse text that holds a NUL (PostgreSQL stores none) or a placeholder that was started and not finished:
    a `{{` with no `}}` before the next `{{` or the end (`{{name}`, `{{name and {{other}}`), or `{name}}`. A lone
    `}}` stays text: JSON examples end with it."""
    if "\x00" in content:
        raise ValidationError("The text holds a NUL character (U+0000), which cannot be stored.")
    position = 0
    while (start := content.find("{{", position)) != -1:
        end = content.find("}}", start + 2)
        reopened = content.find("{{", start + 2)
        if end == -1 or -1 < reopened < end:
            raise ValidationError(
                f"'{_snippet(content, start)}' opens a placeholder that is never closed: write {{{{name}}}}."
            )
        position = end + 2
    half = _HALF_OPENED_RE.search(_BRACES_RE.sub("", content))
    if half is not None:
        raise ValidationError(f"'{half.group()}' is missing a brace: write {{{{name}}}}.")


def template_placeholders(contents: list[str]) -> list[str]:
    """The variable names the texts use, in order of first appearance (what an editor lists as it detects them)."""
    seen: dict[str, None] = {}
    for content in contents:
        for name in PLACEHOLDER_RE.findall(content):
            seen.setdefault(name, None)
    return list(seen)


def _placeholders(content: str, number: int) -> set[str]:
    try:
        placeholders_check(content)
    except ValidationError as error:
        raise ValidationError({"messages": f"Message {number}: {error.messages[0]}"}) from None
    for inner in _BRACES_RE.findall(content):
        if VARIABLE_NAME_RE.fullmatch(inner.strip()) is None:
            raise ValidationError(
                {"messages": f"'{{{{{inner[:40]}}}}}' is not a placeholder: write {{{{name}}}} with a variable name "
                 "(letters, digits, '_'); attribute access, filters and expressions are not supported."}
            )  # fmt: skip
    return set(PLACEHOLDER_RE.findall(content))


def template_content_validate(*, messages: Any, variables: Any, model: Any = "", params: Any = None) -> None:
    """Check a version's content before it is saved; raises Django's ValidationError naming the field.

    Every placeholder must be declared and every declared variable used, so that a typo fails here, not in
    production."""
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        raise ValidationError({"messages": f"A list of 1 to {MAX_MESSAGES} messages."})
    used: set[str] = set()
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ValidationError({"messages": 'Each message is {"role": ..., "content": ...} and nothing else.'})
        if message["role"] not in MESSAGE_ROLES:
            raise ValidationError({"messages": f"A message's role is one of {', '.join(MESSAGE_ROLES)}."})
        content = message["content"]
        if not isinstance(content, str) or not content or len(content) > MAX_CONTENT_CHARS:
            raise ValidationError({"messages": f"A message's content is text of 1 to {MAX_CONTENT_CHARS} characters."})
        used |= _placeholders(content, number)
    if not isinstance(variables, list) or len(variables) > MAX_VARIABLES:
        raise ValidationError({"variables": f"A list of at most {MAX_VARIABLES} variables."})
    declared: set[str] = set()
    for variable in variables:
        if not isinstance(variable, dict) or not set(variable) <= {"name", "default", "description"}:
            raise ValidationError({"variables": 'Each variable is {"name": ..., "default": ..., "description": ...}.'})
        name = variable.get("name")
        if not isinstance(name, str) or VARIABLE_NAME_RE.fullmatch(name) is None:
            raise ValidationError(
                {"variables": "A variable's name is letters, digits and '_', not starting with a digit."}
            )
        if name in declared:
            raise ValidationError({"variables": f"The variable '{name}' is declared twice."})
        if "default" in variable and not isinstance(variable["default"], str):
            raise ValidationError({"variables": f"The default of '{name}' must be text."})
        if not isinstance(variable.get("description", ""), str):
            raise ValidationError({"variables": f"The description of '{name}' must be text."})
        if any("\x00" in variable.get(key, "") for key in ("default", "description")):
            raise ValidationError({"variables": f"The default or description of '{name}' holds a NUL character."})
        declared.add(name)
    if used - declared:
        raise ValidationError({"variables": f"Used but not declared: {', '.join(sorted(used - declared))}."})
    if declared - used:
        raise ValidationError({"variables": f"Declared but not used: {', '.join(sorted(declared - used))}."})
    if not isinstance(model, str) or len(model) > 200:
        raise ValidationError({"model": "A model name of at most 200 characters (or empty)."})
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ValidationError({"params": "An object of default parameters."})
    for name, value in params.items():
        kinds = TEMPLATE_PARAMS.get(name)
        if kinds is None:
            raise ValidationError(
                {"params": f"'{name}' is not a template parameter; one of {', '.join(TEMPLATE_PARAMS)}."}
            )
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValidationError({"params": f"'{name}' has the wrong type."})
        if name == "stop" and isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ValidationError({"params": "'stop' is a string or a list of strings."})
        if name == "max_tokens" and isinstance(value, int) and value < 1:
            raise ValidationError({"params": "'max_tokens' is at least 1."})


def template_compile(
    *,
    template_id: int,
    organization_id: int,
    name: str,
    version: int,
    messages: list[dict[str, str]],
    variables: list[dict[str, str]],
    model: str,
    params: dict[str, Any],
) -> CompiledTemplate:
    """A saved version, ready to render (its content was validated when it was saved)."""
    return CompiledTemplate(
        template_id=template_id,
        organization_id=organization_id,
        name=name,
        version=version,
        messages=tuple((message["role"], message["content"]) for message in messages),
        required=frozenset(variable["name"] for variable in variables if "default" not in variable),
        defaults={variable["name"]: variable["default"] for variable in variables if "default" in variable},
        model=model,
        params=dict(params),
    )


def _value_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    else:
        raise TemplateVariablesInvalid(f"The template variable '{name}' must be a string or a number.")
    if len(text) > MAX_VALUE_CHARS:
        raise TemplateVariablesInvalid(f"The template variable '{name}' is longer than {MAX_VALUE_CHARS} characters.")
    return text


def _names(names: AbstractSet[str]) -> str:
    listed = sorted(names)
    shown = ", ".join(name[:64] for name in listed[:10])
    return shown + (f" and {len(listed) - 10} more" if len(listed) > 10 else "")


def template_compiled_render(compiled: CompiledTemplate, variables: Any) -> RenderedTemplate:
    """Fill the placeholders; raises `TemplateVariablesInvalid` for missing, undeclared or non-text variables."""
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise TemplateVariablesInvalid("'template_variables' must be an object of names to values.")
    declared = compiled.required | set(compiled.defaults)
    missing = compiled.required - set(variables)
    unexpected = set(variables) - declared
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing: {_names(missing)}")
        if unexpected:
            parts.append(f"not declared by the template: {_names(unexpected)}")
        raise TemplateVariablesInvalid(
            f"Template '{compiled.name}@{compiled.version}' variables do not fit ({'; '.join(parts)}).",
            missing=tuple(sorted(missing)),
            unexpected=tuple(sorted(str(name) for name in unexpected)),
        )
    values = dict(compiled.defaults)
    values.update({name: _value_text(name, value) for name, value in variables.items()})

    def fill(match: re.Match[str]) -> str:
        return values[match[1]]

    return RenderedTemplate(
        messages=[{"role": role, "content": PLACEHOLDER_RE.sub(fill, content)} for role, content in compiled.messages],
        model=compiled.model or None,
        params=dict(compiled.params),
        template_id=compiled.template_id,
        version=compiled.version,
        name=compiled.name,
    )


def template_request_example(*, name: str, variables: list[dict[str, str]], model: str) -> dict[str, Any]:
    """A `/v1/chat/completions` body that uses template `name`: the field that names it, the one that supplies its
    variables (each default as its value, `<name>` for the required ones), and a user message after the template's.
    A template without a default model needs the request to name one."""
    body: dict[str, Any] = {} if model else {"model": "<model>"}
    body[REQUEST_TEMPLATE_FIELD] = name
    body[REQUEST_VARIABLES_FIELD] = {
        variable["name"]: variable.get("default", f"<{variable['name']}>") for variable in variables
    }
    body["messages"] = [{"role": "user", "content": "<the user's message>"}]
    return body
