"""Metric-by-metric verdicts for one candidate record against its baseline record.

Three kinds of metric, three rules:
- accuracy (direction lower/higher, not timing or bytes): fails when it moves the worse
  way by more than the task's declared ``Tolerance`` (default ``DEFAULT_TOLERANCE``);
- latency (raw ``*_ms`` sample sets): fails only when the median ratio passes the
  threshold *and* a one-sided Mann-Whitney test says the candidate is slower (p < alpha);
- memory (``*bytes``, direction lower): fails when the ratio passes the threshold; a
  single reading has no spread to test, so peaks are only compared on the same machine.
Timings and process peaks from another machine are listed as ``not gated``: they say
nothing about the code. Summary statistics of the samples (p50, p90, mean, roofline)
are not gated twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..api import RunRecord, Tolerance
from ..measure.stats import percentile
from .stats import mann_whitney_greater

Verdict = Literal["pass", "improved", "REGRESSION", "not compared", "not gated", "info"]

DEFAULT_TOLERANCE = Tolerance(0.001)  # for accuracy metrics whose task declares none
DEFAULT_LATENCY_THRESHOLD = 0.10
DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class Row:
    """One line of the gate's table."""

    metric: str
    baseline: float | None
    candidate: float | None
    change: str
    verdict: Verdict
    note: str = ""


@dataclass(frozen=True)
class Settings:
    latency_threshold: float = DEFAULT_LATENCY_THRESHOLD
    alpha: float = DEFAULT_ALPHA


def _rel(b: float, c: float) -> str:
    if b == c:
        return "0"
    return f"{(c - b) / abs(b):+.2%}" if b else f"{c - b:+.4g}"


def _same_machine(a: RunRecord, b: RunRecord) -> bool:
    fa, fb = a.hardware.get("fingerprint", {}), b.hardware.get("fingerprint", {})
    return bool(fa.get("id")) and fa.get("id") == fb.get("id")


def _nan_row(name: str, b: float, c: float) -> Row | None:
    if not (math.isnan(b) or math.isnan(c)):
        return None
    if math.isnan(b) and math.isnan(c):
        return Row(name, b, c, "0", "pass")
    return Row(name, b, c, "NaN", "REGRESSION" if math.isnan(c) else "improved")


def accuracy_row(name: str, b: float, c: float, direction: str, tol: Tolerance) -> Row:
    if (row := _nan_row(name, b, c)) is not None:
        return row
    worse = (c - b) if direction == "lower" else (b - c)
    allowed = tol.allowed(b)
    change = _rel(b, c) if tol.kind == "relative" or b == c else f"{c - b:+.4g}"
    verdict: Verdict = "REGRESSION" if worse > allowed else "improved" if -worse > allowed else "pass"
    return Row(name, b, c, change, verdict, f"tolerance {tol.describe()}")


@dataclass(frozen=True)
class LatencyChange:
    """Candidate latency samples against baseline ones. A change is called only when it is
    larger than ``band`` (relative) *and* a one-sided Mann-Whitney test finds it (p < alpha):
    a ratio of medians alone reads slow drift of the machine as a speed-up or a slowdown.
    The gate and the printed comparison table both decide with this; they differ in ``band``."""

    ratio: float  # candidate median / baseline median
    p_slower: float
    p_faster: float
    band: float
    alpha: float
    n: tuple[int, int]  # candidate and baseline sample counts

    @property
    def verdict(self) -> Literal["slower", "faster", "within noise"]:
        if self.ratio > 1 + self.band and self.p_slower < self.alpha:
            return "slower"
        if self.ratio < 1 / (1 + self.band) and self.p_faster < self.alpha:
            return "faster"
        return "within noise"

    @property
    def p(self) -> float:
        """The p-value of the direction the medians point to."""
        return self.p_slower if self.ratio >= 1 else self.p_faster


def latency_change(base: list[float], cand: list[float], band: float = DEFAULT_LATENCY_THRESHOLD,
                   alpha: float = DEFAULT_ALPHA) -> LatencyChange:
    mb, mc = percentile(base, 50), percentile(cand, 50)
    ratio = mc / mb if mb > 0 else math.inf
    return LatencyChange(ratio, mann_whitney_greater(cand, base), mann_whitney_greater(base, cand),
                         band, alpha, (len(cand), len(base)))


_GATE_VERDICT: dict[str, Verdict] = {"slower": "REGRESSION", "faster": "improved", "within noise": "pass"}


def latency_row(name: str, b: list[float], c: list[float], s: Settings) -> Row:
    ch = latency_change(b, c, s.latency_threshold, s.alpha)
    mb, mc = percentile(b, 50), percentile(c, 50)
    note = f"median of {len(c)} vs {len(b)}, ratio {ch.ratio:.3f}, p={ch.p:.3g}"
    return Row(f"{name} (median)", mb, mc, _rel(mb, mc), _GATE_VERDICT[ch.verdict], note)


def memory_row(name: str, b: float, c: float, s: Settings) -> Row:
    if (row := _nan_row(name, b, c)) is not None:
        return row
    ratio = c / b if b > 0 else (1.0 if c == b else math.inf)
    verdict: Verdict = "pass"
    if ratio > 1 + s.latency_threshold:
        verdict = "REGRESSION"
    elif ratio < 1 / (1 + s.latency_threshold):
        verdict = "improved"
    return Row(name, b, c, _rel(b, c), verdict, f"ratio {ratio:.3f}, threshold {s.latency_threshold:.0%}")


def _derived_from_samples(name: str, sample_keys: set[str]) -> bool:
    """``prefill_b1_s32_ms_p50``, ``decode_b1_c16_roofline_fraction``: summaries of a sample set."""
    return any(name.startswith(k.removesuffix("_ms") + "_") for k in sample_keys)


def compare_records(base: RunRecord, cand: RunRecord, tolerances: dict[str, Tolerance],
                    settings: Settings | None = None) -> list[Row]:
    """Rows for every gated metric of two records that share a spec key."""
    settings = settings or Settings()
    rows: list[Row] = []
    same_machine = _same_machine(base, cand)
    sample_keys = set(base.samples) | set(cand.samples)
    for key in sorted(sample_keys):
        if key not in base.samples or key not in cand.samples:
            side = "baseline" if key not in base.samples else "candidate"
            rows.append(Row(f"{key} (median)", None, None, "", "not compared", f"no samples in the {side}"))
        elif not same_machine:
            rows.append(Row(f"{key} (median)", percentile(base.samples[key], 50),
                            percentile(cand.samples[key], 50), "", "not gated", "measured on another machine"))
        else:
            rows.append(latency_row(key, base.samples[key], cand.samples[key], settings))
    for name in sorted(set(base.metrics) | set(cand.metrics)):
        if _derived_from_samples(name, sample_keys):
            continue
        if name not in base.metrics or name not in cand.metrics:
            side = "baseline" if name not in base.metrics else "candidate"
            rows.append(Row(name, base.metrics.get(name), cand.metrics.get(name), "", "not compared",
                            f"missing in the {side}"))
            continue
        b, c = base.metrics[name], cand.metrics[name]
        info = cand.metric_info.get(name) or base.metric_info.get(name)
        direction = info.direction if info else "none"
        if direction == "none":
            if b != c and not (math.isnan(b) and math.isnan(c)):
                rows.append(Row(name, b, c, _rel(b, c), "info", "not gated (no better direction)"))
        elif name.endswith("bytes"):
            if "peak" in name and not same_machine:
                rows.append(Row(name, b, c, _rel(b, c), "not gated", "process peak on another machine"))
            else:
                rows.append(memory_row(name, b, c, settings))
        else:
            rows.append(accuracy_row(name, b, c, direction, tolerances.get(name, DEFAULT_TOLERANCE)))
    return rows
