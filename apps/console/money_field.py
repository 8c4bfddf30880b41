"""The form field for an amount of money typed in the currency (a budget): "5" or "5.00" is five units of
`INFERIA_CURRENCY`, cleaned to integer micro-units (5_000_000) through `inferia_runtime.money`, never a float."""

from __future__ import annotations

from typing import Any

from django import forms

from inferia_runtime.money import MONEY_MAX_MICROS, MoneyInvalid, money_parse, money_plain


class MoneyField(forms.Field):
    """An optional amount in the currency; cleans to micro-units (int) or None when left empty. A negative, NaN,
    exponent, more than 6 decimal places or more than a trillion units is a form error saying why. An initial value
    is micro-units and is shown as the decimal amount ("5.00")."""

    widget = forms.TextInput(attrs={"inputmode": "decimal", "maxlength": "40", "autocomplete": "off"})
    # Longer text is no amount anyone means; refused before any parsing.
    MAX_LENGTH = 40

    def __init__(self, *, max_micros: int = MONEY_MAX_MICROS, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.max_micros = max_micros

    def prepare_value(self, value: Any) -> Any:
        # Initial data is micro-units (int); data a person typed comes back as they typed it.
        return money_plain(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def to_python(self, value: Any) -> int | None:
        text = "" if value is None else str(value).strip()
        if not text:
            return None
        if len(text) > self.MAX_LENGTH or "\x00" in text:
            raise forms.ValidationError("Enter an amount like 5 or 5.00.", code="invalid")
        try:
            return money_parse(text, max_micros=self.max_micros)
        except MoneyInvalid as exc:
            raise forms.ValidationError(str(exc), code="invalid") from exc
