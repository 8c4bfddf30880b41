"""Output guardrails on a stream: text deltas in, text that may be released now out.

A secret can arrive split over several chunks (`sk-pro` + `j-AbC...`). The scanner releases everything that no
match can still involve and holds back only the tail from the leftmost position where a pattern could still
complete a match (found with the `regex` module's partial matching), never more than the longest pattern can need.
A match that completes is redacted (`[SECRET]`) or ends the stream (`stop`), as the profile says. The toxicity
classifier and plug-in scanners look at whole sentences: their pattern is one sentence, so at most one sentence
(`toxicity.WINDOW_CHARS`) is held back for them.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, NamedTuple

import regex

from apps.policies.guardrails.detectors import Detector, Finding
from apps.policies.guardrails.engine import OFF, STOP, redact, resolve_overlaps

if TYPE_CHECKING:
    from apps.policies.guardrails.engine import CompiledProfile

# Characters kept from already released text so that look-behinds at the start of the held tail see their context.
_CONTEXT_CHARS = 32


class StreamChunk(NamedTuple):
    """What `feed` or `finish` gives back: text to send on now, and the category that ends the stream, if any."""

    text: str
    stop: str | None = None


@functools.lru_cache(maxsize=512)
def _partial_pattern(source: str, ignore_case: bool) -> regex.Pattern[str]:
    return regex.compile(source, (regex.IGNORECASE if ignore_case else 0) | regex.VERSION0)


class StreamScanner:
    """Scans one streamed text (one choice of a completion) for the profile's output categories."""

    def __init__(self, profile: CompiledProfile) -> None:
        self._actions = profile.output_actions
        self._detectors: list[tuple[Detector, regex.Pattern[str]]] = [
            (detector, _partial_pattern(detector.source, bool(detector.flags & re.IGNORECASE)))
            for detector in profile.output_detectors
        ]
        self._starts = profile.output_starts
        self._beginnings = profile.output_beginnings
        self.max_hold = max((detector.max_chars for detector in profile.output_detectors), default=0)
        self._held = ""
        self._context = ""
        self.stopped: str | None = None
        self.hits: dict[str, int] = {}

    @property
    def held(self) -> int:
        """How many characters are being held back right now."""
        return len(self._held)

    def feed(self, delta: str) -> StreamChunk:
        """Take the next delta; return what may be released now (possibly empty) and whether to stop."""
        if self.stopped is not None:
            return StreamChunk("", self.stopped)
        if not self._detectors:
            return StreamChunk(delta)
        return self._process(self._held + delta, final=False)

    def finish(self) -> StreamChunk:
        """The stream ended: scan and release whatever is still held."""
        if self.stopped is not None:
            return StreamChunk("", self.stopped)
        if not self._held:
            return StreamChunk("")
        return self._process(self._held, final=True)

    def _process(self, buffer: str, *, final: bool) -> StreamChunk:
        text = self._context + buffer
        base = len(self._context)
        end = len(text)
        hold_from = end
        findings: list[Finding] = []
        started = self._starts.owners_in(text)
        for index, (detector, pattern) in enumerate(self._detectors):
            beginnings = self._beginnings[index]
            if beginnings is not None and index not in started and not text.endswith(beginnings):
                continue  # neither a match nor the beginning of one can be in the text
            for match in pattern.finditer(text, base, partial=not final):
                start, stop = match.span()
                if match.partial or (not final and stop == end):
                    # Could still grow into (a longer) match with the next delta: hold it back.
                    if stop > start:
                        hold_from = min(hold_from, start)
                    continue
                window_findings = getattr(detector, "window_findings", None)
                if window_findings is not None:
                    # A plug-in scanner: its own findings inside one complete sentence.
                    findings += [
                        finding
                        for finding in window_findings(match.group(), start)
                        if self._actions.get(finding.category, OFF) != OFF
                    ]
                    continue
                category = detector.classify(match.group(), text, start)
                if category is not None and self._actions.get(category, OFF) != OFF:
                    findings.append(Finding(start, stop, category))
        # Never hold more than the longest pattern can need.
        hold_from = max(hold_from, end - self.max_hold, base)
        findings = resolve_overlaps(findings, self._actions) if findings else findings
        # A complete finding that reaches into the held tail goes out whole, now.
        for finding in findings:
            if finding.start < hold_from < finding.end:
                hold_from = finding.end
        released = [finding for finding in findings if finding.end <= hold_from]
        stop_category: str | None = None
        for finding in released:
            self.hits[finding.category] = self.hits.get(finding.category, 0) + 1
            if stop_category is None and self._actions.get(finding.category) == STOP:
                stop_category = finding.category
                hold_from = finding.start
        if stop_category is not None:
            released = [finding for finding in released if finding.end <= hold_from]
            self.stopped = stop_category
        out = redact(text[:hold_from], released, self._actions)[base:] if released else text[base:hold_from]
        self._held = "" if stop_category is not None else text[hold_from:]
        self._context = text[max(0, hold_from - _CONTEXT_CHARS) : hold_from]
        return StreamChunk(out, stop_category)
