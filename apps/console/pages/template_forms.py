"""The prompt template editor's forms: a template's messages as rows of role and content (a formset, so each row
gets its own error), the variables detected from their `{{name}}` placeholders with an optional default each,
the default model and parameters as plain inputs, and a note. Nothing here is JSON to type; what the editor hands
the services is the content `apps.policies.prompts.services` validates again."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict

from apps.policies.models import PromptTemplateVersion
from apps.policies.prompts.rendering import (
    MAX_CONTENT_CHARS,
    MAX_MESSAGES,
    MESSAGE_ROLES,
    placeholders_check,
    template_placeholders,
)

MAX_DEFAULT_CHARS = 10_000
MAX_STOP_SEQUENCES = 4
DEFAULT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant for {{product}}."},
    {"role": "user", "content": "{{question}}"},
]
ROLE_CHOICES = [(role, role.capitalize()) for role in MESSAGE_ROLES]


class MessageForm(forms.Form):
    """One chat message of the template: who says it and what, with `{{name}}` placeholders."""

    role = forms.ChoiceField(
        choices=ROLE_CHOICES,
        initial="user",
        error_messages={"invalid_choice": f"'%(value)s' is not a role: use {', '.join(MESSAGE_ROLES)}."},
    )
    content = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=MAX_CONTENT_CHARS,
        error_messages={
            "required": "A message needs some text.",
            "max_length": f"At most {MAX_CONTENT_CHARS:,} characters (this one has %(show_value)d).",
        },
    )

    def clean_content(self) -> str:
        content: str = self.cleaned_data["content"]
        placeholders_check(content)
        return content


class BaseMessageFormSet(forms.BaseFormSet):  # type: ignore[type-arg]
    default_error_messages = {
        "too_few_forms": "A template needs at least one message.",
        "too_many_forms": f"A template has at most {MAX_MESSAGES} messages.",
    }

    def kept(self) -> list[forms.Form]:
        """The rows that are neither removed nor left blank, in order (once the formset is valid)."""
        removed = {id(form) for form in self.deleted_forms}
        return [form for form in self.forms if id(form) not in removed and form.cleaned_data]

    def removed(self, form: forms.Form) -> bool:
        """Whether the row was marked for removal (its own errors then do not count)."""
        return bool(self.data.get(f"{form.prefix}-DELETE")) if self.is_bound else False


MessageFormSet = forms.formset_factory(
    MessageForm,
    formset=BaseMessageFormSet,
    extra=0,
    min_num=1,
    validate_min=True,
    max_num=MAX_MESSAGES,
    validate_max=True,
    absolute_max=MAX_MESSAGES,  # also caps how many rows a forged TOTAL_FORMS makes Django build
    can_delete=True,
)


def _stop_clean(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line]
    if len(lines) > MAX_STOP_SEQUENCES:
        raise ValidationError(f"At most {MAX_STOP_SEQUENCES} stop sequences, one a line.")
    if any(len(line) > 200 for line in lines):
        raise ValidationError("A stop sequence has at most 200 characters.")
    return lines


class VersionSettingsForm(forms.Form):
    """What a version holds besides its messages: the default model and sampling parameters, and a note."""

    model = forms.CharField(label="Default model", required=False, max_length=200)
    temperature = forms.FloatField(label="Temperature", required=False, min_value=0, max_value=2)
    top_p = forms.FloatField(label="Top p", required=False, min_value=0, max_value=1)
    max_tokens = forms.IntegerField(label="Max tokens", required=False, min_value=1, max_value=1_000_000)
    presence_penalty = forms.FloatField(label="Presence penalty", required=False, min_value=-2, max_value=2)
    frequency_penalty = forms.FloatField(label="Frequency penalty", required=False, min_value=-2, max_value=2)
    seed = forms.IntegerField(label="Seed", required=False, min_value=0, max_value=2**63 - 1)
    stop = forms.CharField(
        label="Stop sequences", required=False, max_length=1000, strip=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    note = forms.CharField(label="What changed", required=False, max_length=500)

    PARAMS = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "seed", "stop")

    def clean_stop(self) -> list[str]:
        return _stop_clean(self.cleaned_data.get("stop") or "")

    def params(self) -> dict[str, Any]:
        values = {name: self.cleaned_data.get(name) for name in self.PARAMS}
        return {name: value for name, value in values.items() if value not in (None, [])}

    @classmethod
    def initial_from(cls, version: PromptTemplateVersion | None) -> dict[str, Any]:
        if version is None:
            return {}
        initial: dict[str, Any] = {"model": version.model, **version.params}
        stop = version.params.get("stop")
        if stop is not None:
            initial["stop"] = "\n".join([stop] if isinstance(stop, str) else stop)
        return initial


class VariableRow:
    """A detected variable as the editor lists it: its name, its default (empty: required) and any error."""

    def __init__(self, name: str, default: str, error: str = "", description: str = "") -> None:
        self.name, self.default, self.error, self.description = name, default, error, description

    @property
    def field_name(self) -> str:
        return f"var-{self.name}"


class TemplateEditor:
    """The whole editor bound to a POST (or unbound, showing a version): messages, detected variables, settings.

    Call `is_valid()`, then `content()` for the services' keyword arguments."""

    def __init__(
        self, data: QueryDict | None = None, *, version: PromptTemplateVersion | None = None, prefix: str = "messages"
    ) -> None:
        self.data = data
        self.previous = {v["name"]: v for v in (version.variables if version is not None else [])}
        if data is None:
            messages = version.messages if version is not None else DEFAULT_MESSAGES
            self.messages = MessageFormSet(initial=messages, prefix=prefix)
            self.settings = VersionSettingsForm(initial=VersionSettingsForm.initial_from(version))
        else:
            self.messages = MessageFormSet(data, prefix=prefix)
            self.settings = VersionSettingsForm(data)
        self._variables: list[VariableRow] | None = None

    def _contents(self) -> list[str]:
        if self.data is None:
            return [str(form.initial.get("content", "")) for form in self.messages.forms]
        return [
            str(self.data.get(f"{form.prefix}-content", ""))
            for form in self.messages.forms
            if not self.data.get(f"{form.prefix}-DELETE")
        ]

    @property
    def variables(self) -> list[VariableRow]:
        """The variables the messages use, in order, each with its default: posted, else the shown version's."""
        if self._variables is None:
            rows = []
            for name in template_placeholders(self._contents()):
                previous = self.previous.get(name, {})
                if self.data is None:
                    rows.append(
                        VariableRow(name, previous.get("default", ""), description=previous.get("description", ""))
                    )
                    continue
                default = str(self.data.get(f"var-{name}", ""))
                error = ""
                if len(default) > MAX_DEFAULT_CHARS:
                    error = f"At most {MAX_DEFAULT_CHARS:,} characters."
                elif "\x00" in default:
                    error = "The default holds a NUL character (U+0000), which cannot be stored."
                rows.append(VariableRow(name, default, error, previous.get("description", "")))
            self._variables = rows
        return self._variables

    def is_valid(self) -> bool:
        messages_ok = self.messages.is_valid()
        settings_ok = self.settings.is_valid()
        return messages_ok and settings_ok and not any(row.error for row in self.variables)

    def errors(self) -> list[str]:
        """Every problem in one list, each saying where it is (for the notice above the form)."""
        problems = [str(error) for error in self.messages.non_form_errors()]
        for number, form in enumerate(self.messages.forms, 1):
            if self.messages.removed(form):
                continue
            problems += [f"Message {number}: {' '.join(errors)}" for errors in form.errors.values()]
        problems += [f"{{{{{row.name}}}}}: {row.error}" for row in self.variables if row.error]
        for name, errors in self.settings.errors.items():
            problems.append(f"{self.settings.fields[name].label if name in self.settings.fields else name}: "
                            f"{' '.join(errors)}")  # fmt: skip
        return problems

    def content(self) -> dict[str, Any]:
        """The version's content as the services take it."""
        variables = []
        for row in self.variables:
            variable: dict[str, str] = {"name": row.name}
            if row.default:
                variable["default"] = row.default
            if row.description:
                variable["description"] = row.description
            variables.append(variable)
        return {
            "messages": [
                {"role": form.cleaned_data["role"], "content": form.cleaned_data["content"]}
                for form in self.messages.kept()
            ],
            "variables": variables,
            "model": self.settings.cleaned_data["model"],
            "params": self.settings.params(),
            "note": self.settings.cleaned_data["note"],
        }
