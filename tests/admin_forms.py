"""Django admin pages submitted the way a browser submits them: the model form's fields with their current values,
for a test to change a few and post back."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any


class AdminForm(HTMLParser):
    """The fields of an admin page's model form as a browser would submit them (empty inline templates aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, Any] = {}
        self._inside = False
        self._select: tuple[str, bool] | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self._inside = str(attributes.get("id", "")).endswith("_form")
            return
        name = attributes.get("name")
        if not self._inside:
            return
        if tag == "input" and name and "__prefix__" not in name:
            kind = attributes.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in attributes:
                    self._put(name, attributes.get("value") or "on", many=kind == "checkbox")
            elif kind not in ("submit", "button", "file"):
                self.data[name] = attributes.get("value") or ""
        elif tag == "select" and name and "__prefix__" not in name:
            self._select = (name, "multiple" in attributes)
            if self._select[1]:
                self.data.setdefault(name, [])
        elif tag == "option" and self._select is not None and "selected" in attributes:
            name, many = self._select
            self._put(name, attributes.get("value") or "", many=many)
        elif tag == "textarea" and name and "__prefix__" not in name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.data[self._textarea] += data.removeprefix("\n") if not self.data[self._textarea] else data

    def _put(self, name: str, value: str, *, many: bool) -> None:
        if many:
            self.data.setdefault(name, []).append(value)
        else:
            self.data[name] = value


def page_form(client: Any, url: str) -> dict[str, Any]:
    page = client.get(url)
    assert page.status_code == 200, url
    parser = AdminForm()
    parser.feed(page.content.decode())
    return parser.data
