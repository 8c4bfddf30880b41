"""Money: integer micro-units of the configured currency inside, decimal amounts in the currency outside.

Prices, costs and budgets are stored and counted as integers of micro-units (1 unit = 1,000,000 micro-units), so
sums are exact and Redis counts them with HINCRBY. People read and type amounts in the currency
(`INFERIA_CURRENCY`, ISO 4217, "USD" by default): "5" or "5.00" means five dollars. Converting goes through
`Decimal` only, never a float, so every micro-unit survives a round trip: `money_parse(money_plain(m)) == m`.

Below the apps (the policies' 429 message, the usage CSV export and the console all use it), so it imports only
Django's settings.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.conf import settings

MICROS_PER_UNIT = 1_000_000
# The largest amount a form accepts: a trillion units, far above any budget and far below what a bigint holds.
MONEY_MAX_MICROS = 10**12 * MICROS_PER_UNIT
DECIMAL_PLACES = 6  # a micro-unit is the smallest amount

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}
# Digits with at most one decimal point: no sign, no exponent, no NaN or Infinity, no thousands separators.
_AMOUNT = re.compile(r"(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})")


class MoneyInvalid(ValueError):
    """Text that is not an amount of money a form accepts; the message says why, for the person who typed it."""


def money_currency() -> str:
    """The currency every amount is in (`INFERIA_CURRENCY`), e.g. "USD"."""
    return str(getattr(settings, "INFERIA_CURRENCY", "USD") or "USD")


def money_symbol(currency: str | None = None) -> str:
    """What precedes an amount: "$" for USD, "€" for EUR; otherwise the code and a space ("CHF ")."""
    code = currency or money_currency()
    return _SYMBOLS.get(code, f"{code} ")


def money_parse(text: str, *, currency: str | None = None, max_micros: int = MONEY_MAX_MICROS) -> int:
    """An amount typed in the currency ("5", "5.00", "0.000001", "$5") as micro-units (5 -> 5_000_000), exactly.

    Raises `MoneyInvalid` for anything else: a negative amount, more than 6 decimal places (finer than a
    micro-unit), NaN, infinities, exponents, thousands separators, or more than `max_micros`."""
    value = (text or "").strip()
    code = currency or money_currency()
    for prefix in (_SYMBOLS.get(code, ""), code):
        if prefix and value.upper().startswith(prefix.upper()):
            value = value[len(prefix) :].strip()
            break
    if value.startswith("-"):
        raise MoneyInvalid("An amount cannot be negative.")
    if not _AMOUNT.fullmatch(value):
        raise MoneyInvalid(f"Enter an amount in {code} with digits and at most one decimal point, e.g. 5 or 5.00.")
    decimals = value.partition(".")[2]
    if len(decimals.rstrip("0")) > DECIMAL_PLACES:
        raise MoneyInvalid(f"At most {DECIMAL_PLACES} decimal places: the smallest amount is 0.000001 {code}.")
    micros = int(Decimal(value).scaleb(DECIMAL_PLACES))  # exact: at most 6 significant decimals remain
    if micros > max_micros:
        raise MoneyInvalid(f"At most {money_format(max_micros, currency=code)}.")
    return micros


def money_decimal(micros: int) -> Decimal:
    """Micro-units as an exact Decimal amount in the currency: 1_500 -> Decimal("0.0015")."""
    return Decimal(int(micros)).scaleb(-DECIMAL_PLACES)


def money_plain(micros: int) -> str:
    """Micro-units as an exact decimal string without symbol or separators, with at least 2 decimals and no
    trailing zeros beyond them: 5_000_000 -> "5.00", 1_234_567 -> "1.234567", -1_500 -> "-0.0015". What CSV
    exports and form fields hold; `money_parse` reads it back to the same micro-units."""
    micros = int(micros)
    sign = "-" if micros < 0 else ""
    units, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    decimals = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{units}.{decimals}"


def money_format(micros: Any, *, currency: str | None = None) -> str:
    """Micro-units as an amount in the currency, every digit shown: 5_000_000 -> "$5.00", 1_234_500_000 ->
    "$1,234.50", 1 -> "$0.000001", -1_500 -> "-$0.0015". None reads as 0."""
    plain = money_plain(int(micros or 0))
    sign, digits = ("-", plain[1:]) if plain.startswith("-") else ("", plain)
    units, _, decimals = digits.partition(".")
    return f"{sign}{money_symbol(currency)}{int(units):,}.{decimals}"


def money_short(micros: Any, *, currency: str | None = None) -> str:
    """Micro-units as a short amount for tiles and bars: rounded to cents ("$1.23"), except small amounts, which
    keep four decimals ("$0.0015") so that a little spend never reads as nothing."""
    amount = money_decimal(int(micros or 0))
    places = Decimal("0.0001") if 0 < abs(amount) < Decimal("0.01") else Decimal("0.01")
    rounded = amount.quantize(places)
    sign = "-" if rounded < 0 else ""
    return f"{sign}{money_symbol(currency)}{abs(rounded):,}"


__all__ = [
    "DECIMAL_PLACES",
    "MICROS_PER_UNIT",
    "MONEY_MAX_MICROS",
    "MoneyInvalid",
    "money_currency",
    "money_decimal",
    "money_format",
    "money_parse",
    "money_plain",
    "money_short",
    "money_symbol",
]
