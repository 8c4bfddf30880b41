"""Benchmark of the toxicity guardrail: what the classifier costs per 1,000 tokens of prompt or streamed answer.

Uses the ~2,000-token prompt of bench_guardrails.py (prose with numbers and personal details), with a few insults
mixed in, and times the input check of a profile that only flags toxicity, then output scanning of the same text
in 4-character deltas. Loading the model (once per process) is timed apart. Prints milliseconds per 1,000 tokens
(tokens taken as characters / 4).

    .venv/bin/python tests/bench/bench_toxicity.py [--iterations 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_guardrails import build_prompt, percentile, time_input  # sets Django up first

from apps.policies.guardrails import guardrail_profile_compile
from apps.policies.guardrails.toxicity import toxicity_scores

INSULTS = ("You are a worthless idiot.", "Shut up, you stupid moron.", "What a pathetic loser you are.")


def toxic_prompt() -> str:
    sentences = build_prompt().split(". ")
    for index, insult in zip(range(7, len(sentences), 23), INSULTS * 10, strict=False):
        sentences[index] = insult.rstrip(".")
    return ". ".join(sentences)


def time_stream(text: str, iterations: int, delta: int = 4) -> list[float]:
    profile = guardrail_profile_compile({"output": {"toxicity": "redact"}})
    chunks = [text[i : i + delta] for i in range(0, len(text), delta)]
    samples = []
    for _ in range(iterations):
        scanner = profile.stream_scanner()
        assert scanner is not None
        started = time.perf_counter()
        for chunk in chunks:
            scanner.feed(chunk)
        scanner.finish()
        samples.append((time.perf_counter() - started) * 1e3)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    toxicity_scores(["warm up"])
    load_ms = (time.perf_counter() - started) * 1e3
    prompt = toxic_prompt()
    per_1k = 1000 / (len(prompt) / 4)
    scanned = time_input({"input": {"toxicity": "flag"}}, prompt, args.iterations)
    baseline = time_input({"input": {}}, prompt, args.iterations)
    stream = time_stream(prompt, max(3, args.iterations // 5))
    results = {
        "prompt_chars": len(prompt),
        "model_load_ms": load_ms,
        "input_hits": scanned["hits"],
        "input_ms_per_1k_tokens_p50": (scanned["p50_us"] - baseline["p50_us"]) / 1e3 * per_1k,
        "input_ms_per_1k_tokens_p99": (scanned["p99_us"] - baseline["p50_us"]) / 1e3 * per_1k,
        "stream_ms_per_1k_tokens_p50": percentile(stream, 0.5) * per_1k,
        "stream_ms_per_1k_tokens_mean": statistics.fmean(stream) * per_1k,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"prompt: {len(prompt)} characters (~{len(prompt) // 4} tokens), {args.iterations} iterations")
    for name, value in results.items():
        print(f"  {name:30s} {value:.2f}" if isinstance(value, float) else f"  {name:30s} {value}")


if __name__ == "__main__":
    main()
