"""Checksums and shape rules that tell a real identifier from a look-alike (a number that fails Luhn, an IBAN
whose check digits are wrong, a version string shaped like an IP address)."""

from __future__ import annotations

import ipaddress

# IBAN length per country (ISO 13616 registry); a candidate of another length is not an IBAN.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24,
    "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24,
    "XK": 20,
}  # fmt: skip

# Issuer prefixes of the card networks in use (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro):
# a Luhn-valid number outside them is far more likely an order or account number than a card.
_CARD_PREFIXES = (
    "4", "51", "52", "53", "54", "55", "22", "23", "24", "25", "26", "27", "34", "37", "6011", "644", "645", "646",
    "647", "648", "649", "65", "35", "300", "301", "302", "303", "304", "305", "36", "38", "39", "62", "50", "56",
    "57", "58", "63", "67",
)  # fmt: skip
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_number_valid(digits: str) -> bool:
    """A payment card number: 13 to 19 digits, a known network's prefix, Luhn-valid, not one digit repeated."""
    return 13 <= len(digits) <= 19 and digits.startswith(_CARD_PREFIXES) and len(set(digits)) > 1 and luhn_valid(digits)


def iban_valid(compact: str) -> bool:
    """An IBAN (no spaces, upper case): the country's length and the ISO 7064 mod-97 check."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def us_ssn_valid(area: str, group: str, serial: str) -> bool:
    """A US Social Security number's issuable ranges (no 000/666/9xx area, no 00 group, no 0000 serial)."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def br_cpf_valid(digits: str) -> bool:
    """A Brazilian CPF: 11 digits whose last two are check digits (and not one digit repeated)."""
    if len(digits) != 11 or len(set(digits)) == 1:
        return False
    for length in (9, 10):
        total = sum(int(digits[i]) * (length + 1 - i) for i in range(length))
        check = (total * 10) % 11 % 10
        if check != int(digits[length]):
            return False
    return True


def es_dni_valid(value: str) -> bool:
    """A Spanish DNI (8 digits and a letter) or NIE (X/Y/Z, 7 digits, a letter): the letter is a mod-23 check."""
    value = value.replace("-", "").upper()
    head = value[:-1]
    if head[0] in "XYZ":
        head = str("XYZ".index(head[0])) + head[1:]
    if not head.isdigit():
        return False
    return _DNI_LETTERS[int(head) % 23] == value[-1]


def uk_nino_valid(value: str) -> bool:
    """A UK National Insurance number's prefix rules (some letter pairs are never issued)."""
    prefix = value[:2].upper()
    return prefix not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ") and prefix[1] != "O"


def ipv4_valid(candidate: str) -> bool:
    """Four decimal octets of at most 255, without leading zeros (which read as a version or an octal number)."""
    parts = candidate.split(".")
    return len(parts) == 4 and all(
        part.isdigit() and len(part) <= 3 and int(part) <= 255 and (part == "0" or part[0] != "0") for part in parts
    )


def ipv6_valid(candidate: str) -> bool:
    """A real IPv6 address (not a time like 12:30:45, nor a lone '::')."""
    if candidate.count(":") < 2 or candidate.strip(":") == "":
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True
