"""Guardrail profiles compiled for the hot path, and the input check the gateway runs on a request body.

A profile's configuration (JSON on `GuardrailProfile`, or the built-in default) maps each category to an action:
on input `block` (the request is answered 400 `guardrail_violation`), `redact` (the text is replaced by a tag such
as `[EMAIL]` before the prompt leaves Inferia), `flag` (allowed and recorded) or `off`; on output `redact`, `stop`
(the stream ends with an error event) or `off`. Compilation happens once per distinct configuration per process.
The `toxicity` category (a classifier, see `toxicity`) is off unless a profile names it; `toxicity_threshold`
(0.5 to 0.99, default 0.8) is the score at which a sentence counts. Plug-in scanners run on input and, for the
categories a profile gives an output action, on output too, one sentence window at a time.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from django.conf import settings

from apps.policies.guardrails import detectors as d
from apps.policies.guardrails.detectors import Detector, Finding
from apps.policies.guardrails.toxicity import (
    DEFAULT_THRESHOLD,
    MAX_THRESHOLD,
    MIN_THRESHOLD,
    SENTENCE_SOURCE,
    WINDOW_CHARS,
    ToxicityDetector,
)
from inferia_runtime.errors import DomainRefusal
from inferia_runtime.text_search import OwnedNeedles

if TYPE_CHECKING:
    from apps.policies.guardrails.stream import StreamChunk

BLOCK, REDACT, FLAG, OFF, STOP = "block", "redact", "flag", "off", "stop"
INPUT_ACTIONS = (BLOCK, REDACT, FLAG, OFF)
OUTPUT_ACTIONS = (REDACT, STOP, OFF)
CUSTOM_PREFIX = "custom:"

# What replaces a redacted span. Hidden characters are simply removed.
TAGS: dict[str, str] = {
    d.EMAIL: "[EMAIL]",
    d.PHONE: "[PHONE]",
    d.CARD: "[CARD]",
    d.IBAN: "[IBAN]",
    d.NATIONAL_ID: "[NATIONAL_ID]",
    d.IP_ADDRESS: "[IP_ADDRESS]",
    d.SECRET: "[SECRET]",
    d.PROMPT_INJECTION: "[PROMPT_INJECTION]",
    d.HIDDEN_CHARACTERS: "",
    d.TOXICITY: "[TOXICITY]",
    d.BLOCKLIST: "[BLOCKED]",
}

# The profile every key gets when no level of its policy names one: secrets never leave Inferia, payment and bank
# data are redacted, other personal data and injection attempts are recorded. No output scanning, so streams stay
# unbuffered.
DEFAULT_PROFILE_CONFIG: dict[str, Any] = {
    "input": {
        d.EMAIL: FLAG,
        d.PHONE: FLAG,
        d.CARD: REDACT,
        d.IBAN: REDACT,
        d.NATIONAL_ID: REDACT,
        d.IP_ADDRESS: FLAG,
        d.SECRET: REDACT,
        d.PROMPT_INJECTION: FLAG,
        d.HIDDEN_CHARACTERS: REDACT,
        d.BLOCKLIST: BLOCK,
    },
    "output": {},
    "blocklist": [],
    "patterns": [],
    "scanners": [],
}


class GuardrailConfigError(DomainRefusal):
    """A profile configuration that cannot be compiled (unknown action, invalid pattern, unknown scanner class)."""


@runtime_checkable
class Scanner(Protocol):
    """What a pluggable scanner provides: the categories it reports and a `scan` that appends its findings.

    Configured by class path in a profile's `scanners` list (`{"class": "pkg.module.Class", "options": {...}}`) or
    in the `INFERIA_GUARDRAIL_SCANNERS` setting for every profile. A scanner that needs I/O (a classifier behind an
    HTTP endpoint) also defines `async def scan_async(text) -> list[Finding]`, which the input check awaits instead.
    On output (when the profile gives one of its categories an output action) `scan` sees one sentence of the
    streamed text at a time; scanners that need I/O are not run on output.
    """

    categories: frozenset[str]

    def scan(self, text: str, out: list[Finding]) -> None: ...


@runtime_checkable
class AsyncScanner(Scanner, Protocol):
    """A scanner that needs I/O: the input check awaits its `scan_async` instead of calling `scan`."""

    async def scan_async(self, text: str) -> list[Finding]: ...


@dataclass(frozen=True, slots=True)
class GuardrailHit:
    """How often one category fired in a request, and what was done about it."""

    category: str
    action: str
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {"category": self.category, "action": self.action, "count": self.count}


@dataclass(frozen=True, slots=True)
class InputVerdict:
    """The outcome of the input check. `blocked` names the category that blocks the request (never the text);
    `redacted` says the body was changed in place and must be serialised again before it goes upstream."""

    blocked: str | None = None
    redacted: bool = False
    hits: tuple[GuardrailHit, ...] = ()

    @property
    def error_message(self) -> str:
        return f"The request was blocked by the '{self.blocked}' guardrail." if self.blocked else ""

    def usage_entries(self) -> list[dict[str, Any]]:
        """What goes on the request's usage event (`UsageRecord.guardrails`)."""
        return [hit.as_dict() for hit in self.hits]


ALLOWED = InputVerdict()


def _phrase_source(terms: Iterable[str]) -> str | None:
    parts = sorted({term.strip() for term in terms if term.strip()}, key=len, reverse=True)
    if not parts:
        return None
    # Whole words where a term starts or ends with a word character; anywhere otherwise.
    return "|".join(
        (r"(?<!\w)" if re.match(r"\w", term) else "") + re.escape(term) + (r"(?!\w)" if re.search(r"\w$", term) else "")
        for term in parts
    )


def _custom_detectors(config: dict[str, Any]) -> list[Detector]:
    out: list[Detector] = []
    blocklist = _phrase_source(config.get("blocklist") or [])
    if blocklist is not None:
        longest = max(len(term) for term in config["blocklist"])
        out.append(
            Detector(
                "blocklist", blocklist, frozenset({d.BLOCKLIST}), d._always(d.BLOCKLIST), max_chars=longest,
                flags=re.IGNORECASE,
            )
        )  # fmt: skip
    for entry in config.get("patterns") or []:
        category = CUSTOM_PREFIX + entry["name"]
        try:
            re.compile(entry["pattern"])
        except re.error as exc:
            raise GuardrailConfigError(f"pattern '{entry['name']}' is not a valid regular expression: {exc}") from exc
        out.append(
            Detector(
                category, entry["pattern"], frozenset({category}), d._always(category),
                max_chars=int(entry.get("max_chars", 256)), flags=re.IGNORECASE if entry.get("ignore_case") else 0,
            )
        )  # fmt: skip
    return out


def _load_scanner(spec: str | dict[str, Any]) -> Scanner:
    if isinstance(spec, str):
        spec = {"class": spec}
    path = spec.get("class", "")
    module_name, _, class_name = path.rpartition(".")
    try:
        scanner_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise GuardrailConfigError(f"scanner class '{path}' cannot be imported") from exc
    scanner = scanner_class(**(spec.get("options") or {}))
    if not isinstance(scanner, Scanner):
        raise GuardrailConfigError(f"scanner class '{path}' has no `categories` and `scan(text, out)`")
    return scanner


class ScannerOnOutput:
    """A plug-in scanner on streamed output: the stream scanner holds back at most one sentence (`SENTENCE_SOURCE`,
    `WINDOW_CHARS` characters) and hands each complete one to the plug-in's `scan`."""

    source = SENTENCE_SOURCE
    max_chars = WINDOW_CHARS
    flags = 0

    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner
        self.name = type(scanner).__name__
        self.categories = frozenset(scanner.categories)

    def classify(self, matched: str, text: str, start: int) -> str | None:
        return None

    def window_findings(self, window: str, offset: int) -> list[Finding]:
        """The plug-in's findings in one window, placed at `offset` in the stream's text."""
        found: list[Finding] = []
        self.scanner.scan(window, found)
        return [
            Finding(offset + finding.start, offset + finding.end, finding.category)
            for finding in found
            if 0 <= finding.start < finding.end <= len(window)
        ]


def _toxicity_threshold(config: dict[str, Any]) -> float:
    value = config.get("toxicity_threshold", DEFAULT_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, int | float) or not MIN_THRESHOLD <= value <= MAX_THRESHOLD:
        raise GuardrailConfigError(f"toxicity_threshold must be a number from {MIN_THRESHOLD} to {MAX_THRESHOLD}")
    return float(value)


def _actions(config: dict[str, Any], side: str, allowed: tuple[str, ...]) -> dict[str, str]:
    actions = dict(config.get(side) or {})
    for entry in config.get("patterns") or []:
        value = entry.get(side)
        if value:
            actions.setdefault(CUSTOM_PREFIX + entry["name"], value)
    for category, action in actions.items():
        if action not in allowed:
            raise GuardrailConfigError(f"{side} action for '{category}' must be one of {', '.join(allowed)}")
    return actions


@dataclass(frozen=True)
class CompiledProfile:
    """A guardrail profile ready for the hot path: the detectors its actions need, nothing else."""

    input_actions: dict[str, str]
    output_actions: dict[str, str]
    input_detectors: tuple[Detector, ...]
    output_detectors: tuple[Detector, ...]
    scanners: tuple[Scanner, ...] = ()
    fingerprint: str = ""
    # Every category this profile can report (built-in, its patterns', its scanners'): what its actions may name.
    known_categories: frozenset[str] = frozenset()
    _async_scanners: tuple[AsyncScanner, ...] = field(default=(), repr=False)
    # The input detectors' anchors, all looked for in one pass (other kinds of detectors scan in their own way), and
    # whether each detector has any.
    _anchors: OwnedNeedles = field(init=False, repr=False, compare=False)
    _anchored: tuple[bool, ...] = field(init=False, repr=False, compare=False)
    # For a stream's scanner: the output detectors' starts, all looked for in one pass, and each detector's
    # beginnings of them (None for a detector without starts: it is scanned always).
    output_starts: OwnedNeedles = field(init=False, repr=False, compare=False)
    output_beginnings: tuple[tuple[str, ...] | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        anchors = [detector.anchors if type(detector) is Detector else () for detector in self.input_detectors]
        object.__setattr__(self, "_anchors", OwnedNeedles(anchors))
        object.__setattr__(self, "_anchored", tuple(bool(own) for own in anchors))
        starts = [getattr(detector, "starts", ()) for detector in self.output_detectors]
        object.__setattr__(self, "output_starts", OwnedNeedles(starts))
        object.__setattr__(self, "output_beginnings", tuple(_beginnings_of(own) if own else None for own in starts))

    @property
    def output_enabled(self) -> bool:
        """Whether streamed output must pass through a `StreamScanner` (when not, nothing is held back)."""
        return bool(self.output_detectors)

    def action_for(self, category: str) -> str:
        """The input action for a category; a category the profile does not name (a plugin's) is flagged."""
        return self.input_actions.get(category, FLAG)

    def scan(self, text: str) -> list[Finding]:
        """The non-overlapping findings in `text` of every enabled input category, in text order."""
        found: list[Finding] = []
        anchors_in_text = self._anchors.owners_in(text)
        for index, (detector, anchored) in enumerate(zip(self.input_detectors, self._anchored, strict=True)):
            if not anchored:
                detector.scan(text, found)
            elif index in anchors_in_text:
                detector.scan_anchored(text, found)
        for scanner in self.scanners:
            scanner.scan(text, found)
        if not found:
            return found
        return resolve_overlaps(found, self.input_actions)

    def stream_scanner(self) -> StreamScannerProtocol | None:
        """A fresh output scanner for one streamed choice, or None when this profile scans no output."""
        if not self.output_enabled:
            return None
        from apps.policies.guardrails.stream import StreamScanner

        return StreamScanner(self)


class StreamScannerProtocol(Protocol):
    def feed(self, delta: str) -> StreamChunk: ...

    def finish(self) -> StreamChunk: ...


_ACTION_RANK = {BLOCK: 3, REDACT: 2, FLAG: 1, STOP: 3, OFF: 0}


def _beginnings_of(starts: tuple[str, ...]) -> tuple[str, ...]:
    """What a text cut inside a match may end with: the beginnings of its starts ("s" and "sk" of "sk-")."""
    return tuple({start[:size] for start in starts for size in range(1, len(start))})


def resolve_overlaps(found: list[Finding], actions: dict[str, str]) -> list[Finding]:
    """Keep one finding per span: where two overlap, the earlier one wins, then the one with the stronger action,
    then the longer one; findings of categories switched off are dropped."""
    found = [finding for finding in found if actions.get(finding.category, FLAG) != OFF]
    found.sort(key=lambda f: (f.start, -_ACTION_RANK.get(actions.get(f.category, FLAG), 1), -(f.end - f.start)))
    kept: list[Finding] = []
    end = -1
    for finding in found:
        if finding.start >= end:
            kept.append(finding)
            end = finding.end
        elif finding.end > end and _ACTION_RANK.get(actions.get(finding.category, FLAG), 1) >= _ACTION_RANK.get(
            actions.get(kept[-1].category, FLAG), 1
        ):
            # A longer overlapping finding of at least the same action widens the span (the whole secret goes).
            kept[-1] = Finding(kept[-1].start, finding.end, kept[-1].category)
            end = finding.end
    return kept


def redact(text: str, findings: list[Finding], actions: dict[str, str], action: str = REDACT) -> str:
    """`text` with every finding whose action is `action` replaced by its category's tag."""
    pieces: list[str] = []
    position = 0
    for finding in findings:
        if actions.get(finding.category, FLAG) != action:
            continue
        pieces.append(text[position : finding.start])
        pieces.append(tag_for(finding.category))
        position = finding.end
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


def tag_for(category: str) -> str:
    tag = TAGS.get(category)
    if tag is None:
        name = category.removeprefix(CUSTOM_PREFIX)
        tag = "[" + re.sub(r"\W+", "_", name).upper() + "]"
    return tag


def guardrail_profile_compile(config: dict[str, Any] | None) -> CompiledProfile:
    """The compiled form of a profile configuration (None: the built-in default). Cached per configuration."""
    canonical = json.dumps(config if config is not None else DEFAULT_PROFILE_CONFIG, sort_keys=True)
    return _compile(canonical)


def guardrail_config_check(config: dict[str, Any]) -> CompiledProfile:
    """Compile a configuration for saving: also refuses an action for a category nothing reports (a typo such as
    `emal` would otherwise switch nothing on, silently). Raises GuardrailConfigError saying what is wrong."""
    compiled = guardrail_profile_compile(config)
    for side in ("input", "output"):
        for category in config.get(side) or {}:
            if category not in compiled.known_categories:
                close = difflib.get_close_matches(str(category), sorted(compiled.known_categories), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise GuardrailConfigError(
                    f"unknown {side} category '{category}'{hint}; known categories: "
                    + ", ".join(sorted(compiled.known_categories))
                )
    return compiled


def guardrail_categories() -> list[tuple[str, str]]:
    """Every category a profile's actions can name without patterns of its own: the built-in ones and those of
    the scanners configured for every profile (`INFERIA_GUARDRAIL_SCANNERS`), each with a one-line description."""
    known = guardrail_profile_compile({}).known_categories
    extra = sorted(known - set(d.BUILTIN_CATEGORIES))
    return [(category, d.CATEGORY_DESCRIPTIONS[category]) for category in d.BUILTIN_CATEGORIES] + [
        (category, "Reported by a scanner configured for every profile.") for category in extra
    ]


@dataclass(frozen=True, slots=True)
class TrialFinding:
    """One finding of a profile trial: where, what, what the profile does with it, and the text found."""

    start: int
    end: int
    category: str
    action: str
    text: str


@dataclass(frozen=True, slots=True)
class TrialResult:
    """What a profile does to a text: its findings, the category that would block it (if any), and the text as
    it would go upstream (redactions applied)."""

    findings: tuple[TrialFinding, ...]
    blocked: str | None
    redacted_text: str


def guardrail_profile_trial(profile: CompiledProfile, text: str) -> TrialResult:
    """Run a profile's input detectors on one text, as the gateway does on a prompt, and report everything
    (for trying a profile out in the console; nothing is stored). Scanners that need I/O are not run."""
    findings = profile.scan(text)
    trial = tuple(
        TrialFinding(f.start, f.end, f.category, profile.action_for(f.category), text[f.start : f.end])
        for f in findings
    )
    blocked = next((f.category for f in trial if f.action == BLOCK), None)
    return TrialResult(findings=trial, blocked=blocked, redacted_text=redact(text, findings, profile.input_actions))


@functools.lru_cache(maxsize=256)
def _compile(canonical: str) -> CompiledProfile:
    config = json.loads(canonical)
    input_actions = _actions(config, "input", INPUT_ACTIONS)
    output_actions = _actions(config, "output", OUTPUT_ACTIONS)
    toxicity = ToxicityDetector(_toxicity_threshold(config))
    # The classifier quacks like a Detector (source, categories, classify, scan), as the injection detector does.
    candidates: list[Detector] = [*d.builtin_detectors(), toxicity, *_custom_detectors(config)]  # type: ignore[list-item]

    def needed(actions: dict[str, str], default_on: bool) -> tuple[Detector, ...]:
        return tuple(
            detector
            for detector in candidates
            if any(actions.get(category, FLAG if default_on else OFF) != OFF for category in detector.categories)
            and (default_on or any(category in actions for category in detector.categories))
        )

    specs = [*getattr(settings, "INFERIA_GUARDRAIL_SCANNERS", []), *(config.get("scanners") or [])]
    scanners = tuple(_load_scanner(spec) for spec in specs)
    builtin_input = {category: input_actions.get(category, OFF) for category in d.BUILTIN_CATEGORIES}
    custom_input = {key: value for key, value in input_actions.items() if key not in builtin_input}
    effective_input = {**builtin_input, **custom_input}
    for detector in candidates:
        for category in detector.categories:
            effective_input.setdefault(category, OFF)
    on_output = tuple(
        ScannerOnOutput(scanner)
        for scanner in scanners
        if not isinstance(scanner, AsyncScanner)
        and any(output_actions.get(category, OFF) != OFF for category in scanner.categories)
    )
    return CompiledProfile(
        input_actions=effective_input,
        output_actions=output_actions,
        input_detectors=needed(effective_input, default_on=False),
        output_detectors=(*needed(output_actions, default_on=False), *on_output),  # type: ignore[arg-type]
        scanners=tuple(scanner for scanner in scanners if not isinstance(scanner, AsyncScanner)),
        fingerprint=canonical,
        known_categories=frozenset(
            {
                *d.BUILTIN_CATEGORIES,
                *(category for detector in candidates for category in detector.categories),
                *(category for scanner in scanners for category in scanner.categories),
            }
        ),
        _async_scanners=tuple(scanner for scanner in scanners if isinstance(scanner, AsyncScanner)),
    )


def _text_slots(body: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every text a request body sends to the model: chat message contents and text parts,
    completion prompts, embedding inputs."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                yield message, "content"
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        yield part, "text"
    for name in ("prompt", "input"):
        value = body.get(name)
        if isinstance(value, str):
            yield body, name
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, str):
                    yield value, index


async def guardrails_check_input(profile: CompiledProfile, body: dict[str, Any]) -> InputVerdict:
    """Scan every text of a parsed request body. Redacts in place; reports what fired and whether to block.

    For the gateway, after authentication and policy resolution and before admission: a blocked request costs no
    quota. When `redacted` is true the body must be serialised again (the original bytes must not go upstream).
    """
    counts: dict[str, int] = {}
    redacted = False
    blocked: str | None = None
    for container, key in _text_slots(body):
        text = container[key]
        findings = profile.scan(text)
        for scanner in profile._async_scanners:
            extra = await scanner.scan_async(text)
            if extra:
                findings = resolve_overlaps([*findings, *extra], profile.input_actions)
        if not findings:
            continue
        for finding in findings:
            counts[finding.category] = counts.get(finding.category, 0) + 1
            if blocked is None and profile.action_for(finding.category) == BLOCK:
                blocked = finding.category
        if blocked is None:
            new_text = redact(text, findings, profile.input_actions)
            if new_text is not text:
                container[key] = new_text
                redacted = True
    if not counts:
        return ALLOWED
    hits = tuple(
        GuardrailHit(category, profile.action_for(category), count) for category, count in sorted(counts.items())
    )
    return InputVerdict(blocked=blocked, redacted=redacted and blocked is None, hits=hits)
