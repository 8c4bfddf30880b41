"""Money between people and counters: amounts typed in the currency become integer micro-units exactly (through
Decimal, never a float) and every micro-unit reads back; anything that is not a plain non-negative amount with at most
six decimals is refused with a reason."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from inferia_runtime.money import (
    MONEY_MAX_MICROS,
    MoneyInvalid,
    money_decimal,
    money_format,
    money_parse,
    money_plain,
    money_short,
)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("5", 5_000_000),
        ("5.00", 5_000_000),
        (" 5.5 ", 5_500_000),
        ("$5", 5_000_000),
        ("USD 5", 5_000_000),
        ("0.000001", 1),
        ("0.1", 100_000),
        (".25", 250_000),
        ("0", 0),
        ("5.0000000", 5_000_000),  # zeros past the sixth decimal change nothing
        ("1000000000000", MONEY_MAX_MICROS),
    ],
)
def test_it_parses_amounts_in_the_currency_to_micro_units(text, micros):
    assert money_parse(text) == micros


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("-5", "negative"),
        ("NaN", "digits"),
        ("nan", "digits"),
        ("Infinity", "digits"),
        ("1e3", "digits"),
        ("1,000", "digits"),
        ("5.5.5", "digits"),
        ("", "digits"),
        ("0.0000001", "6 decimal places"),
        ("1.1234567", "6 decimal places"),
        ("1000000000000.000001", "At most $1,000,000,000,000.00"),
        ("9" * 20, "At most"),
        ("€5", "digits"),  # another currency's symbol is not this one's
    ],
)
def test_it_refuses_what_is_not_an_amount_and_says_why(text, why):
    with pytest.raises(MoneyInvalid) as refused:
        money_parse(text)
    assert why in str(refused.value)


@given(st.integers(min_value=0, max_value=MONEY_MAX_MICROS))
def test_every_micro_unit_survives_a_round_trip_through_text(micros):
    assert money_parse(money_plain(micros)) == micros
    assert money_decimal(micros) == Decimal(micros) / 1_000_000


@given(st.decimals(min_value=0, max_value=10**12, places=6, allow_nan=False, allow_infinity=False))
def test_every_amount_with_six_decimals_parses_exactly(amount):
    micros = money_parse(format(amount, "f"))
    assert Decimal(micros) == amount * 1_000_000
    assert Decimal(money_plain(micros)) == amount


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_formatting_shows_every_digit(micros):
    shown = money_format(micros)
    assert Decimal(shown.replace("$", "").replace(",", "")) == Decimal(micros) / 1_000_000


@pytest.mark.parametrize(
    ("micros", "shown"),
    [
        (5_000_000, "$5.00"),
        (5_010_000, "$5.01"),
        (1_234_500_000, "$1,234.50"),
        (1, "$0.000001"),
        (1_500, "$0.0015"),
        (-1_500, "-$0.0015"),
        (None, "$0.00"),
    ],
)
def test_it_formats_micro_units_in_the_currency(micros, shown):
    assert money_format(micros) == shown


def test_another_currency_is_shown_with_its_symbol_or_code():
    with override_settings(INFERIA_CURRENCY="EUR"):
        assert money_format(5_000_000) == "€5.00"
        assert money_parse("€5") == 5_000_000
    with override_settings(INFERIA_CURRENCY="CHF"):
        assert money_format(5_000_000) == "CHF 5.00"
        assert money_parse("CHF 5") == 5_000_000


@pytest.mark.parametrize(
    ("micros", "shown"), [(1_234_567, "$1.23"), (1_500, "$0.0015"), (0, "$0.00"), (2_000_000_000, "$2,000.00")]
)
def test_short_amounts_round_to_cents_but_keep_small_spend_visible(micros, shown):
    assert money_short(micros) == shown
