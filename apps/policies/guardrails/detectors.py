"""The built-in detectors: precompiled patterns, each with a cheap pre-check and a validator.

A detector finds candidates with one regular expression and decides with plain Python what a candidate is (a
Luhn-valid card, a phone number, an IPv4 address, or nothing). Pre-checks keep a clean 2,000-token prompt cheap:
a pattern whose literal anchors are absent from the text is not run at all (a profile looks for all of them in one
pass), the e-mail pattern only looks around each '@', and the numbers' pattern is tried only just before each run of
digits. The same pattern sources compile with the `regex` module for partial matching on streams.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from apps.policies.guardrails import validators as v
from inferia_runtime.text_search import Needles, digit_runs

# Categories the built-in detectors report. Profiles map each to an action.
EMAIL = "email"
PHONE = "phone"
CARD = "card"
IBAN = "iban"
NATIONAL_ID = "national_id"
IP_ADDRESS = "ip_address"
SECRET = "secret"  # noqa: S105 (a category name)
PROMPT_INJECTION = "prompt_injection"
HIDDEN_CHARACTERS = "hidden_characters"
TOXICITY = "toxicity"
BLOCKLIST = "blocklist"
BUILTIN_CATEGORIES = (
    EMAIL, PHONE, CARD, IBAN, NATIONAL_ID, IP_ADDRESS, SECRET, PROMPT_INJECTION, HIDDEN_CHARACTERS, TOXICITY,
    BLOCKLIST,
)  # fmt: skip

# What each category is, in a line, for the people who choose its action (the console's profile form).
CATEGORY_DESCRIPTIONS: dict[str, str] = {
    EMAIL: "E-mail addresses.",
    PHONE: "Phone numbers, national and international formats.",
    CARD: "Payment card numbers (Luhn-valid, a known card network).",
    IBAN: "International bank account numbers (IBAN, check digits verified).",
    NATIONAL_ID: "National identity numbers: US SSN, Brazilian CPF, Spanish DNI/NIE, UK National Insurance.",
    IP_ADDRESS: "IPv4 and IPv6 addresses.",
    SECRET: "API keys, tokens and private keys (OpenAI, Stripe, AWS, GitHub, Slack, Google, Hugging Face, JWT).",
    PROMPT_INJECTION: "Attempts to override the system prompt or jailbreak the model, in several languages.",
    HIDDEN_CHARACTERS: "Invisible characters: zero-width, bidirectional controls, Unicode tags.",
    TOXICITY: "Insults, harassment and profanity aimed at people (a classifier, per sentence; off by default).",
    BLOCKLIST: "The profile's own words and phrases (its blocklist).",
}


class Finding(NamedTuple):
    """A span of text that belongs to a category."""

    start: int
    end: int
    category: str


Classifier = Callable[[str, str, int], "str | None"]


def _always(category: str) -> Classifier:
    def classify(matched: str, text: str, start: int) -> str | None:
        return category

    return classify


@dataclass(frozen=True)
class Detector:
    """One precompiled pattern and what its matches are.

    `classify(matched, text, start)` returns the category of a candidate or None for a look-alike. `anchors` are
    literal substrings a match must contain (the pattern is skipped when none occurs in the text); `window_anchor`
    makes the search look only around each occurrence of one character; `digit_within` says that every match's first
    decimal digit starts a run of digits, at most that many characters after the match's start, so the pattern is
    tried only just before each run; `starts` are literal strings one of which every match begins with (a stream's
    scanner skips the pattern while none occurs in its text and the text does not end with the beginning of one);
    `max_chars` is the longest match the pattern can produce, which bounds how much of a stream is ever held back for
    it.
    """

    name: str
    source: str
    categories: frozenset[str]
    classify: Classifier
    max_chars: int
    anchors: tuple[str, ...] = ()
    window_anchor: str | None = None
    window_before: int = 0
    window_after: int = 0
    digit_within: int | None = None
    starts: tuple[str, ...] = ()
    flags: int = 0
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(self.source, self.flags))

    def scan(self, text: str, out: list[Finding]) -> None:
        """Append this detector's findings in `text` to `out`."""
        if self.anchors and not any(anchor in text for anchor in self.anchors):
            return
        self.scan_anchored(text, out)

    def scan_anchored(self, text: str, out: list[Finding]) -> None:
        """`scan`, once one of the anchors is known to occur in `text` (a profile looks for all of its detectors'
        anchors in one pass)."""
        if self.window_anchor is not None:
            self._scan_windows(text, out)
            return
        if self.digit_within is not None:
            runs = digit_runs(text)
            if len(runs) * SPARSE_DIGIT_RUNS < len(text):
                self._scan_before_digits(text, out, runs)
                return
        for match in self.pattern.finditer(text):
            category = self.classify(match.group(), text, match.start())
            if category is not None:
                out.append(Finding(match.start(), match.end(), category))

    def _scan_before_digits(self, text: str, out: list[Finding], runs: list[int]) -> None:
        """The matches `finditer` finds, with the pattern tried only where one can start: at most `digit_within`
        characters before one of the `runs` of digits. Python's regular expressions would otherwise try it at each
        of the text's characters."""
        reach = self.digit_within
        assert reach is not None
        done = 0  # findings never overlap: none starts before the end of the last
        match_at = self.pattern.match
        for run in runs:
            start = max(done, run - reach)
            while start <= run:
                match = match_at(text, start)
                if match is None:
                    start += 1
                    continue
                category = self.classify(match.group(), text, start)
                if category is not None:
                    out.append(Finding(start, match.end(), category))
                done = start = match.end()

    def _scan_windows(self, text: str, out: list[Finding]) -> None:
        anchor = self.window_anchor
        assert anchor is not None
        position = text.find(anchor)
        done = 0  # findings never overlap: resume after the last one
        while position >= 0:
            low = max(done, position - self.window_before)
            high = min(len(text), position + self.window_after)
            for match in self.pattern.finditer(text, low, high):
                if match.start() <= position < match.end():
                    category = self.classify(match.group(), text, match.start())
                    if category is not None:
                        out.append(Finding(match.start(), match.end(), category))
                        done = match.end()
                    break
            position = text.find(anchor, max(position + 1, done))


# --- E-mail addresses -----------------------------------------------------------------------------------------------
EMAIL_SOURCE = (
    r"(?<![\w.%+-])[^\W_](?:[\w.%+-]{0,62}[\w%+-])?@"
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,24}|xn--[a-z0-9-]{1,59})(?![\w-])"
)

# --- Numbers: cards, phones, ids and IPv4 share one candidate pattern ------------------------------------------------
# A run of digits with the separators people type inside numbers, optionally opened by '+' or '('.
NUMBER_SOURCE = r"(?:\+|\(\+?)?\d(?:[\d().\-/]|[ \t](?=[\d(]))*\d\)?(?![\w/]|[.-]\d)"
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
_DOTTED = re.compile(r"\d{1,4}(?:\.\d{1,4})+")
_SSN = re.compile(r"(\d{3})-(\d{2})-(\d{4})")
_CPF = re.compile(r"\d{3}\.\d{3}\.\d{3}-\d{2}")
_CARD_SHAPE = re.compile(r"\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,7}|\d{4}[ -]\d{6}[ -]\d{4,5}")
_NANP = re.compile(r"\(?[2-9]\d{2}\)?[ .-]?[2-9]\d{2}[ .-]\d{4}")
_INDIA_MOBILE = re.compile(r"[6-9]\d{4}[ -]?\d{5}")
_GROUPS = re.compile(r"[ .\-/()]+")
_PHONE_CONTEXT = (
    "tel", "phone", "call", "mobile", "cell", "fax", "whatsapp", "sms", "text me", "ring", "handy", "telefon",
    "téléphone", "portable", "teléfono", "móvil", "celular", "telefone", "telefono", "cellulare", "телефон",
    "номер", "電話", "电话", "手机", "携帯", "전화", "numéro", "nummer", "número", "numero",
)  # fmt: skip
_VERSION_CONTEXT = ("version", "release", "v.", "build", "python", "node", "ubuntu", "django", "chrome")


def _context_before(text: str, start: int, width: int = 32) -> str:
    return text[max(0, start - width) : start].lower()


def classify_number(matched: str, text: str, start: int) -> str | None:
    """What a run of digits is: IPv4, a national id, a card, a phone number, or nothing (dates, versions, counts)."""
    candidate = matched
    digits = "".join(char for char in candidate if char.isdigit())
    count = len(digits)
    if _DOTTED.fullmatch(candidate):
        # Dotted groups only: an IPv4 address when it is one, else a version or a decimal, never a phone or card.
        if v.ipv4_valid(candidate) and not any(word in _context_before(text, start) for word in _VERSION_CONTEXT):
            return IP_ADDRESS
        if not re.fullmatch(r"\d{2,3}\.\d{3}\.\d{4}|\d{2}(?:\.\d{2}){4}", candidate):  # US and French phones
            return None
    if _DATE.fullmatch(candidate):
        return None
    ssn = _SSN.fullmatch(candidate)
    if ssn is not None:
        return NATIONAL_ID if v.us_ssn_valid(*ssn.groups()) else None
    if _CPF.fullmatch(candidate):
        return NATIONAL_ID if v.br_cpf_valid(digits) else None
    if _CARD_SHAPE.fullmatch(candidate):
        # Card-shaped but not a valid card (fails Luhn, unknown network): an account or order number, not a phone.
        return CARD if v.card_number_valid(digits) else None
    if count < 7 or count > 15:
        if count == 9 and "ssn" in _context_before(text, start) and v.us_ssn_valid(digits[:3], digits[3:5], digits[5:]):
            return NATIONAL_ID
        return None
    if candidate[0] == "+" or candidate.startswith("(+"):
        return PHONE if count >= 8 else None
    if candidate.startswith("00") and count >= 10:
        return PHONE  # the international call prefix most of the world dials
    groups = [group for group in _GROUPS.split(candidate) if group]
    separated = len(groups) > 1
    if _NANP.fullmatch(candidate) or _INDIA_MOBILE.fullmatch(candidate):
        return PHONE
    if separated:
        # A national number written in groups: a trunk '0', an area code in parentheses, or three or more groups
        # (06 12 34 56 78, 030 1234 5678, 03-1234-5678, (11) 91234-5678) but not counts like "1 000 000".
        if count >= 8 and (digits[0] == "0" or "(" in candidate) and all(len(group) >= 2 for group in groups):
            return PHONE
        if count >= 9 and len(groups) >= 3 and all(len(group) >= 2 for group in groups) and len(groups[-1]) != 3:
            return PHONE
        return None
    if digits[0] == "0" and 10 <= count <= 11:
        return PHONE  # a national number with its trunk prefix, unseparated (07700900123)
    if count == 11 and digits[0] == "1" and digits[1] in "3456789":
        return PHONE  # a Chinese mobile number
    if 8 <= count <= 12 and any(word in _context_before(text, start) for word in _PHONE_CONTEXT):
        return PHONE
    return None


# --- Letters and digits: IBANs and national ids of other shapes ------------------------------------------------------
IBAN_SOURCE = r"[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![\w])"


def classify_iban(matched: str, text: str, start: int) -> str | None:
    compact = matched.replace(" ", "")
    return IBAN if v.iban_valid(compact) else None


NATIONAL_ID_SOURCE = r"(?:\d{8}-?[A-Z]|[XYZ]\d{7}-?[A-Z]|[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D])(?![\w])"
# Numbers, IBANs and lettered ids in one pass. The leading look-ahead lets the regex engine skip quickly to
# characters that can start one (a 2,000-token prompt costs a third of three separate scans).
STRUCTURED_SOURCE = rf"(?=[+(\dA-Z])(?<![\w+/.:-])(?:{NUMBER_SOURCE}|{IBAN_SOURCE}|{NATIONAL_ID_SOURCE})"
# How far into a structured match its first digit can be: `(+1`, `GB82`, `AB 12` (a UK national insurance number).
# That digit starts a run: what precedes it in the match is no digit, and a match that starts with it follows no word
# character.
STRUCTURED_DIGIT_WITHIN = 3
# Trying the pattern before each run of digits beats letting it try every character while there is less than one run
# in this many characters; where digits are denser (a hostile "a1a1a1..." makes it ten times slower), it does not.
SPARSE_DIGIT_RUNS = 32


def classify_structured(matched: str, text: str, start: int) -> str | None:
    """Dispatch a structured candidate: lettered ones are IBANs (15+ characters) or national ids."""
    if matched[0].isalpha() or matched[-1].isalpha():
        if len(matched.replace(" ", "")) >= 15:
            return classify_iban(matched, text, start)
        return classify_national_id(matched, text, start)
    return classify_number(matched, text, start)


def classify_national_id(matched: str, text: str, start: int) -> str | None:
    if matched[0].isdigit() or (matched[0] in "XYZ" and matched[1].isdigit()):
        return NATIONAL_ID if v.es_dni_valid(matched) else None
    return NATIONAL_ID if v.uk_nino_valid(matched) else None


# --- IPv6 -------------------------------------------------------------------------------------------------------------
IPV6_SOURCE = r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|:(?=:))(?:[0-9A-Fa-f]{0,4}:){1,7}[0-9A-Fa-f]{0,4}(?![\w:])"


def classify_ipv6(matched: str, text: str, start: int) -> str | None:
    return IP_ADDRESS if v.ipv6_valid(matched) else None


# --- Secrets ----------------------------------------------------------------------------------------------------------
_OPENAI_LIKE = re.compile(r"sk-(?:inf-|proj-|svcacct-|admin-|ant-(?:api\d\d-)?)?")


def classify_sk_key(matched: str, text: str, start: int) -> str | None:
    """An `sk-...` key: random base62, so it has digits and both cases; `sk-learn-is-great` in prose has not."""
    body = matched[_OPENAI_LIKE.match(matched).end() :]  # type: ignore[union-attr]
    has_digit = any(char.isdigit() for char in body)
    has_upper = any(char.isupper() for char in body)
    has_lower = any(char.islower() for char in body)
    return SECRET if len(body) >= 20 and has_digit + has_upper + has_lower >= 3 else None


def classify_random_token(matched: str, text: str, start: int) -> str | None:
    """A token with a fixed vendor prefix whose body looks random (digits or mixed case), not a word."""
    body = matched.split("_", 1)[-1] if "_" in matched[:12] else matched[4:]
    kinds = any(c.isdigit() for c in body) + any(c.isupper() for c in body) + any(c.islower() for c in body)
    return SECRET if kinds >= 2 else None


_SECRET_DETECTORS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], int, Classifier], ...] = (
    # name, pattern, anchors (a match holds one), starts (a match begins with one; () where the case varies),
    # longest match, classifier
    ("openai_key", r"(?<![\w-])sk-(?:[A-Za-z0-9]+-){0,2}[A-Za-z0-9_-]{20,200}(?![\w-])", ("sk-",), ("sk-",), 240,
     classify_sk_key),
    ("stripe_key", r"(?<![\w])(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,128}(?![\w])", ("_live_", "_test_"),
     ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_", "pk_test_"), 140, classify_random_token),
    ("aws_access_key", r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
     ("AKIA", "ASIA", "ABIA", "ACCA"), ("AKIA", "ASIA", "ABIA", "ACCA"), 20, _always(SECRET)),
    ("aws_secret_key", r"(?i:aws_?secret_?access_?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])",
     ("ecret",), (), 80, _always(SECRET)),
    ("github_token", r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,240})(?![\w])",
     ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
     255, classify_random_token),
    ("slack_token", r"(?<![\w])xox[abprse]-[A-Za-z0-9-]{10,250}(?![\w-])", ("xox",), ("xox",), 256,
     classify_random_token),
    ("slack_webhook", r"https://hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]{16,64}",
     ("hooks.slack.com",), ("https://hooks.slack.com/",), 160, _always(SECRET)),
    ("google_api_key", r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])", ("AIza",), ("AIza",), 39, _always(SECRET)),
    ("huggingface_token", r"(?<![\w])hf_[A-Za-z0-9]{34,40}(?![\w])", ("hf_",), ("hf_",), 43, classify_random_token),
    ("private_key",
     r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]{0,8000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY"
     r"(?: BLOCK)?-----)?", ("-----BEGIN",), ("-----BEGIN ",), 8100, _always(SECRET)),
    ("jwt", r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,2000}(?![\w-])", ("eyJ",),
     ("eyJ",), 8010, _always(SECRET)),
)  # fmt: skip


# --- Prompt injection -------------------------------------------------------------------------------------------------
# Instruction-override phrases in several languages and role-play jailbreak patterns, matched on lower-cased text.
# Each phrase starts with one of its trigger words; the scan looks for the triggers with plain substring search
# and tries the phrase only where one occurs, which keeps a long clean prompt cheap.
_INSTRUCTIONS_EN = r"(?:instructions?|prompts?|rules|directions|directives|guidelines|commands|guardrails|constraints)"
INJECTION_PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    # English: override
    (("ignore", "disregard", "forget", "skip", "override", "bypass"),
     r"\s+(?:all\s+|any\s+|every\s+)?(?:of\s+)?(?:the\s+|your\s+|my\s+|these\s+|those\s+)?(?:previous|prior|above|"
     r"preceding|earlier|former|initial|original|system|safety|existing)\s+" + _INSTRUCTIONS_EN),
    (("ignore", "disregard", "forget"),
     r"\s+(?:everything|all)\s+(?:you\s+(?:were|have\s+been)\s+told|above|before|previously\s+said|"
     r"that\s+came\s+before)"),
    (("reveal", "show", "print", "output", "repeat", "leak", "dump", "display"),
     r"\s+(?:me\s+)?(?:your|the)\s+(?:full\s+|entire\s+|original\s+|hidden\s+)?(?:system\s+prompt|initial\s+"
     r"(?:prompt|instructions)|hidden\s+instructions|developer\s+message)"),
    (("new",), r"\s+(?:system\s+)?instructions\s*:"),
    (("system",), r"\s+override\b"),
    # English: role-play jailbreaks
    (("do",), r"\s+anything\s+now\b"),
    (("you",), r"\s+are\s+(?:now\s+)?(?:dan|an?\s+(?:unrestricted|unfiltered|uncensored|jailbroken|unaligned|evil)\s+"
     r"(?:ai|model|assistant|chatbot|llm))\b"),
    (("act", "behave", "respond"),
     r"\s+as\s+(?:if\s+you\s+(?:are|were)\s+)?(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken|unaligned)\b"),
    (("pretend",),
     r"\s+(?:that\s+)?(?:you\s+(?:are|have)|to\s+be)\s+(?:an?\s+)?(?:ai\s+)?(?:with\s+)?(?:no|without)\s+"
     r"(?:restrictions|rules|limits|filters|guidelines|ethics|censorship)"),
    (("enable", "enter", "activate", "switch"),
     r"(?:\s+to)?\s+(?:the\s+)?(?:developer|god|jailbreak|dan|unrestricted)\s+mode\b"),
    (("answer", "respond", "reply"),
     r"\s+without\s+(?:any\s+)?(?:restrictions|filters|censorship|safety\s+guidelines)"),
    (("jailbreak",), r"(?:ed)?\s+(?:mode|prompt)\b"),
    # French, German, Spanish, Italian, Portuguese, Dutch, Polish, Turkish
    (("ignore", "oublie"),
     r"[rz]?\s+(?:toutes?\s+)?(?:les\s+|tes\s+|vos\s+)?(?:instructions|consignes|règles)\s+"
     r"(?:précédentes|antérieures|ci-dessus)"),
    (("ignorier", "vergiss", "vergessen sie"),
     r"(?:e|en)?\s+(?:alle\s+|sämtliche\s+)?(?:vorherigen|bisherigen|obigen|vorigen|früheren)\s+(?:anweisungen|"
     r"instruktionen|befehle|regeln)"),
    (("ignora", "olvida"),
     r"r?\s+(?:todas\s+)?(?:las\s+)?(?:instrucciones|indicaciones|reglas)\s+(?:anteriores|previas)"),
    (("ignora", "dimentica"), r"\s+(?:tutte\s+)?(?:le\s+)?(?:istruzioni|regole)\s+(?:precedenti|sopra)"),
    (("ignore", "ignora", "esqueça", "esqueca"),
     r"\s+(?:todas\s+)?(?:as\s+)?(?:instruções|instrucoes|regras)\s+(?:anteriores|acima)"),
    (("negeer", "vergeet"), r"\s+(?:alle\s+)?(?:vorige|eerdere|voorgaande)\s+(?:instructies|regels)"),
    (("zignoruj", "ignoruj", "zapomnij"),
     r"\s+(?:wszystkie\s+)?(?:poprzednie|wcześniejsze)\s+(?:instrukcje|polecenia)"),
    (("önceki",), r"\s+talimatları\s+(?:yok\s+say|görmezden\s+gel|unut)"),  # noqa: RUF001 (Turkish dotless i)
    # Russian, Chinese, Japanese, Korean
    (("игнорируй", "проигнорируй", "забудь"),
     r"\s+(?:все\s+)?(?:предыдущие|прежние|вышеуказанные)\s+(?:инструкции|указания|правила)"),
    (("忽略", "无视", "忘记", "忽視", "無視"),
     r"(?:之前|以上|上面|先前|前面|所有)(?:的)?(?:所有)?(?:指令|指示|说明|提示|規則|规则)"),
    (("以前の", "前の", "上記の", "これまでの"), r"(?:指示|命令|指令)を(?:すべて|全て)?(?:無視|忘れ)"),
    (("이전",), r"\s*(?:의\s*)?(?:지시|명령|지침)(?:을|를|사항을)?\s*(?:모두\s*)?(?:무시|잊어)"),
)  # fmt: skip


def _spaced(trigger: str) -> bool:
    """Whether the trigger's script separates words (Latin, Cyrillic, ...): then it must start a word. Chinese and
    Japanese do not separate words, and Korean attaches particles, so theirs may start anywhere."""
    return ord(trigger[0]) < 0x2E80


INJECTION_SOURCE = "|".join(
    "(?:" + "|".join((r"(?<!\w)" if _spaced(trigger) else "") + re.escape(trigger) for trigger in triggers) + ")" + rest
    for triggers, rest in INJECTION_PHRASES
)


class InjectionDetector:
    """Finds the phrases of `INJECTION_PHRASES`: substring search for each trigger word in the lower-cased text,
    then the phrase's pattern anchored at each occurrence."""

    name = "prompt_injection"
    source = INJECTION_SOURCE
    categories = frozenset({PROMPT_INJECTION})
    max_chars = 200
    flags = re.IGNORECASE

    def __init__(self) -> None:
        by_trigger: dict[str, list[re.Pattern[str]]] = {}
        for triggers, rest in INJECTION_PHRASES:
            for trigger in triggers:
                by_trigger.setdefault(trigger, []).append(re.compile(re.escape(trigger) + rest))
        self._triggers = tuple((trigger, _spaced(trigger), tuple(patterns)) for trigger, patterns in by_trigger.items())
        self._trigger_needles = Needles(by_trigger)

    def classify(self, matched: str, text: str, start: int) -> str | None:
        return PROMPT_INJECTION

    def scan(self, text: str, out: list[Finding]) -> None:
        lowered = text.lower()
        if len(lowered) != len(text):
            # A few characters change length when lower-cased: match the original case-insensitively instead,
            # so that offsets stay exact.
            for match in _ignorecase(INJECTION_SOURCE).finditer(text):
                out.append(Finding(match.start(), match.end(), PROMPT_INJECTION))
            return
        # One pass finds the triggers that occur at all; only theirs are searched for one by one.
        occurring = self._trigger_needles.found_in(lowered)
        for trigger, occurs in zip(self._triggers, occurring, strict=True):
            if occurs:
                self.trigger_scan(lowered, trigger, out)

    @staticmethod
    def trigger_scan(lowered: str, trigger: tuple[str, bool, tuple[re.Pattern[str], ...]], out: list[Finding]) -> None:
        """The phrases of one trigger word (with whether it must start a word, and its phrases' patterns)."""
        word, spaced, patterns = trigger
        position = lowered.find(word)
        while position >= 0:
            if not spaced or position == 0 or not lowered[position - 1].isalnum():
                for pattern in patterns:
                    found = pattern.match(lowered, position)
                    if found is not None:
                        out.append(Finding(position, found.end(), PROMPT_INJECTION))
                        break
            position = lowered.find(word, position + 1)


@functools.cache
def _ignorecase(source: str) -> re.Pattern[str]:
    return re.compile(source, re.IGNORECASE)


# --- Hidden characters ------------------------------------------------------------------------------------------------
# Zero-width characters, bidirectional controls and Unicode tag characters: invisible to a reader, read by a model.
HIDDEN_SOURCE = "[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]+"


@dataclass(frozen=True)
class NonAsciiDetector(Detector):
    """A detector for characters outside ASCII: an ASCII text (most prompts) is skipped at once."""

    def scan(self, text: str, out: list[Finding]) -> None:
        if text.isascii():
            return
        super().scan(text, out)


def builtin_detectors() -> tuple[Detector, ...]:
    """Every built-in detector, compiled once per process."""
    return _BUILTIN


_BUILTIN: tuple[Detector, ...] = (
    Detector(
        "email", EMAIL_SOURCE, frozenset({EMAIL}), _always(EMAIL), max_chars=320,
        window_anchor="@", window_before=64, window_after=260,
    ),
    Detector(
        "structured", STRUCTURED_SOURCE, frozenset({CARD, PHONE, NATIONAL_ID, IP_ADDRESS, IBAN}), classify_structured,
        max_chars=48, digit_within=STRUCTURED_DIGIT_WITHIN,
    ),
    Detector("ipv6", IPV6_SOURCE, frozenset({IP_ADDRESS}), classify_ipv6, max_chars=45, anchors=("::", ":")),
    *(
        Detector(name, source, frozenset({SECRET}), classify, max_chars=max_chars, anchors=anchors, starts=starts)
        for name, source, anchors, starts, max_chars, classify in _SECRET_DETECTORS
    ),
    InjectionDetector(),  # type: ignore[arg-type]
    NonAsciiDetector(
        "hidden_characters", HIDDEN_SOURCE, frozenset({HIDDEN_CHARACTERS}), _always(HIDDEN_CHARACTERS), max_chars=64,
    ),
)  # fmt: skip
