"""The toxicity detector: insults, harassment and profanity aimed at people, scored per sentence by the linear
classifier `alt-profanity-check` ships inside its package (TF-IDF and a calibrated linear SVM; nothing is
downloaded at run time).

The classifier was trained on short comments, and its bag of words dilutes: one insult inside a long paragraph
scores far lower than the same insult alone. So text is scored in windows of one sentence (split at . ! ? and line
breaks, and at most `WINDOW_CHARS` characters), and a window whose probability reaches the profile's threshold is
a finding over that window. On a stream the same windows bound what is held back: a sentence is released once it
is complete (or `WINDOW_CHARS` long). The model (a few MB) is loaded once per process, on first use.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from apps.policies.guardrails.detectors import TOXICITY, Finding

DEFAULT_THRESHOLD = 0.8
MIN_THRESHOLD = 0.5
MAX_THRESHOLD = 0.99
WINDOW_CHARS = 400
# One sentence: starts at a visible character and runs to a line break or to end punctuation followed by a space
# (so "3.14" and "example.com" stay inside it), at most WINDOW_CHARS characters.
SENTENCE_SOURCE = rf"[^\s.!?。！？](?:[^.!?\n。！？]|[.!?](?=[^\s.!?])){{0,{WINDOW_CHARS - 1}}}[.!?。！？]*"  # noqa: RUF001 (CJK stops)


class _Model(NamedTuple):
    vectorizer: Any
    weights: Any  # features x folds: each fold's linear SVM
    intercepts: Any
    slopes: Any  # each fold's sigmoid calibration: p = 1 / (1 + exp(slope * decision + offset))
    offsets: Any


@functools.cache
def _model() -> _Model:
    # Importing the package loads its vectorizer and model from disk: once per process, and only when a profile
    # scans for toxicity.
    import numpy as np
    from profanity_check import profanity_check as shipped

    model = shipped.model
    folds = model.calibrated_classifiers_
    if model.method != "sigmoid" or any(len(fold.calibrators) != 1 for fold in folds):
        raise RuntimeError("the shipped toxicity model is not a sigmoid-calibrated linear classifier")
    return _Model(
        vectorizer=shipped.vectorizer,
        weights=np.stack([fold.estimator.coef_.ravel() for fold in folds], axis=1),
        intercepts=np.array([fold.estimator.intercept_[0] for fold in folds]),
        slopes=np.array([fold.calibrators[0].a_ for fold in folds]),
        offsets=np.array([fold.calibrators[0].b_ for fold in folds]),
    )


def toxicity_scores(windows: Sequence[str]) -> list[float]:
    """The classifier's probability that each window is offensive.

    The shipped model averages five sigmoid-calibrated linear SVMs; computing that average here from their weights
    gives the same probabilities as the package's `predict_prob` (tests/policies/test_toxicity.py compares them)
    at a fraction of scikit-learn's per-call overhead, which dominates on a stream's one-sentence calls."""
    if not windows:
        return []
    import numpy as np

    model = _model()
    decisions = model.vectorizer.transform(list(windows)) @ model.weights + model.intercepts
    probabilities = 1.0 / (1.0 + np.exp(decisions * model.slopes + model.offsets))
    return [float(value) for value in probabilities.mean(axis=1)]


class ToxicityDetector:
    """Scores each sentence of a text; those at or above `threshold` are findings of category `toxicity`."""

    name = "toxicity"
    source = SENTENCE_SOURCE
    categories = frozenset({TOXICITY})
    max_chars = WINDOW_CHARS
    flags = 0

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self.pattern = re.compile(SENTENCE_SOURCE)

    def classify(self, matched: str, text: str, start: int) -> str | None:
        """One window (a streamed sentence): toxic or not."""
        return TOXICITY if toxicity_scores([matched])[0] >= self.threshold else None

    def scan(self, text: str, out: list[Finding]) -> None:
        """Every sentence of `text`, scored in one batch."""
        spans = [match.span() for match in self.pattern.finditer(text) if any(char.isalpha() for char in match.group())]
        scores = toxicity_scores([text[start:end] for start, end in spans])
        out.extend(Finding(start, end, TOXICITY) for (start, end), score in zip(spans, scores, strict=True)
                   if score >= self.threshold)  # fmt: skip
