"""Summaries of timing samples, as the benchmark reports them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / mean / min / max of millisecond samples, plus their count."""
    n = len(samples_ms)
    return {
        "n": n,
        "p50_ms": percentile(samples_ms, 50),
        "p99_ms": percentile(samples_ms, 99),
        "mean_ms": sum(samples_ms) / n if n else math.nan,
        "min_ms": min(samples_ms) if n else math.nan,
        "max_ms": max(samples_ms) if n else math.nan,
    }


def json_safe(value: Any) -> Any:
    """Non-finite floats (e.g. the NaN summary of an empty topic) as None, recursively: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
