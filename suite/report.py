"""The comparison table printed after a run: dense vs method, side by side.

A latency change is claimed ("1.40x faster") only when the samples say so beyond their
noise (``compare_latency``); otherwise the cell reads "~1.03x (within noise ±15%)". The
samples compared are the interleaved ones of the method's record where it has them (dense
and method timed in alternating rounds), else each record's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from .api import RunRecord
from .gate.compare import DEFAULT_ALPHA, DEFAULT_LATENCY_THRESHOLD, LatencyChange, latency_change
from .measure.stats import percentile, relative_spread

ROWS = [
    ("perplexity", "perplexity", "{:.3f}"),
    ("lastword_accuracy", "last-word accuracy", "{:.3f}"),
    ("weight_sparsity", "weight sparsity", "{:.3f}"),
    ("activation_sparsity_mean", "activation sparsity (evaluation)", "{:.3f}"),
    ("activation_weight_reads_skipped", "decode weight reads skipped", "{:.3f}"),
    ("passkey_accuracy", "passkey accuracy", "{:.3f}"),
    ("vt_recall", "variable-tracking recall", "{:.3f}"),
    ("cwe_recall", "common-words recall", "{:.3f}"),
    ("kv_fraction_held_mean", "KV cache held / full (mean)", "{:.3f}"),
    ("attention_density_prefill_mean", "attention density, prefill (mean)", "{:.3f}"),
    ("attention_density_decode_mean", "attention density, decode (mean)", "{:.3f}"),
    ("model_stored_bytes", "stored MB", "mb"),
    ("peak_rss_bytes", "peak RSS MB (run)", "mb"),
    ("inference_peak_rss_bytes", "peak RSS MB (inference)", "mb"),
    ("peak_allocated_bytes", "peak GPU MB (run)", "mb"),
    ("inference_peak_allocated_bytes", "peak GPU MB (inference)", "mb"),
]


def _fmt(value: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "mb":
        return f"{value / 2**20:.1f}"
    return fmt.format(value)


def _with_err(rec: RunRecord, key: str, fmt: str) -> str:
    v = rec.metrics.get(key)
    if v is None:
        return "-"
    info = rec.metric_info.get(key)
    s = _fmt(v, fmt)
    if info and info.stderr and fmt != "mb":
        s += " ± " + _fmt(info.stderr, fmt)
    return s


@dataclass(frozen=True)
class LatencyComparison:
    """Dense against method for one latency figure, and what may be said about it."""

    dense: list[float]
    method: list[float]
    interleaved: bool  # timed in alternating rounds of one process (else in separate phases)
    change: LatencyChange

    @property
    def speedup(self) -> float:
        """Dense median / method median."""
        return 1 / self.change.ratio if self.change.ratio else float("inf")

    @property
    def caveat(self) -> str:
        """Why no change is claimed ("within noise ±19%"); empty when one is."""
        c = self.change
        if c.verdict != "within noise":
            return ""
        if 1 / (1 + c.band) <= c.ratio <= 1 + c.band:
            return f"within noise ±{c.band:.0%}"
        return f"not significant: p={c.p:.2g}, {c.n[1]} vs {c.n[0]} samples"

    def text(self) -> str:
        if self.caveat:
            return f"~{self.speedup:.2f}x ({self.caveat})"
        if self.change.verdict == "faster":
            return f"{self.speedup:.2f}x faster"
        return f"{self.change.ratio:.2f}x slower"


def compare_latency(base: RunRecord, rec: RunRecord, metric: str, threshold: float = DEFAULT_LATENCY_THRESHOLD,
                    alpha: float = DEFAULT_ALPHA) -> LatencyComparison | None:
    """``metric`` (``prefill_b1_s128_ms_p50``) of ``rec`` against its dense ``base``, or None
    without samples on both sides. The noise band is the larger of ``threshold`` and either
    sample set's relative spread (p90 - p10) / p50: a difference of medians inside the
    rounds' own scatter is not a speed-up, however small its p-value."""
    key = metric.removesuffix("_p50")
    pair = rec.interleaved.get(key)
    if pair and pair.get("dense") and pair.get("method"):
        dense, method, interleaved = pair["dense"], pair["method"], True
    elif base.samples.get(key) and rec.samples.get(key):
        dense, method, interleaved = base.samples[key], rec.samples[key], False
    else:
        return None
    band = max(threshold, relative_spread(dense), relative_spread(method))
    return LatencyComparison(dense, method, interleaved, latency_change(dense, method, band, alpha))


def _change(key: str, base: float | None, new: float | None) -> str:
    if base is None or new is None:
        return ""
    if key.endswith("_ms_p50"):  # with samples on both sides compare_latency decides instead
        return f"~{base / new:.2f}x (no samples: noise unknown)" if new else ""
    if key.endswith("bytes"):
        return f"{new / base:.2f}x" if base else ""
    if key == "perplexity":
        return f"{(new / base - 1) * 100:+.1f}%"
    return f"{new - base:+.3f}"


def _latency_note(base: RunRecord, rec: RunRecord, compared: dict[str, LatencyComparison]) -> str:
    """Says how the latency rows were timed and the rule their change column follows."""
    if not compared:
        return ""
    name = rec.spec["method"]["name"]
    inter = [k for k, c in compared.items() if c.interleaved]
    parts = []
    if inter:
        own = ", ".join(f"{k.removesuffix('_ms_p50')} {base.metrics.get(k, float('nan')):.2f} / "
                        f"{rec.metrics.get(k, float('nan')):.2f}" for k in inter)
        parts.append(f"dense and {name} timed in alternating rounds of one process (the records' own "
                     f"phases, timed apart, gave dense / {name} p50 ms: {own})")
    if len(inter) < len(compared):
        parts.append(f"{len(compared) - len(inter)} row(s) compare the two records' own phases, timed apart: "
                     "slow drift of the machine between them is not controlled")
    return (f"\nLatency: {'; '.join(parts)}. A change is claimed only when a one-sided Mann-Whitney test "
            f"gives p < {DEFAULT_ALPHA} and it exceeds the noise band, the larger of "
            f"{DEFAULT_LATENCY_THRESHOLD:.0%} and each sample set's (p90 - p10) / p50.")


def comparison_table(records: list[RunRecord]) -> str:
    """Markdown table with one column per record and a change column (last vs first)."""
    if not records:
        return ""
    latency = sorted({k for r in records for k in r.metrics if k.endswith("_ms_p50")})
    rows = [(k, label, fmt) for k, label, fmt in ROWS if any(k in r.metrics for r in records)]
    rows += [(k, k.replace("_ms_p50", " p50 ms"), "{:.2f}") for k in latency]
    head = ["metric"] + [f"{r.spec['method']['name']} ({r.status})" for r in records]
    if len(records) > 1:
        head.append("change")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    compared: dict[str, LatencyComparison] = {}
    for key, label, fmt in rows:
        cells = [label] + [_with_err(r, key, fmt) for r in records]
        cmp = compare_latency(records[0], records[-1], key) if len(records) > 1 and key in latency else None
        if cmp is not None:
            compared[key] = cmp
            if cmp.interleaved and len(records) == 2:  # the values the change is computed from
                cells[:3] = [f"{label} (interleaved)", f"{percentile(cmp.dense, 50):.2f}",
                             f"{percentile(cmp.method, 50):.2f}"]
            cells.append(cmp.text())
        elif len(records) > 1:
            cells.append(_change(key, records[0].metrics.get(key), records[-1].metrics.get(key)))
        lines.append("| " + " | ".join(cells) + " |")
    if note := _latency_note(records[0], records[-1], compared):
        lines.append(note)
    for r in records:
        if r.status != "ok":
            lines.append(f"\n{r.spec['method']['name']}: {r.status}: {r.error or r.reason}")
    return "\n".join(lines)
