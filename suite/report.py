"""The comparison table printed after a run: dense vs method, side by side."""

from __future__ import annotations

from .api import RunRecord

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


def _change(key: str, base: float | None, new: float | None) -> str:
    if base is None or new is None:
        return ""
    if key.endswith("_ms_p50") or key.endswith("bytes"):
        return f"{base / new:.2f}x faster" if key.endswith("_ms_p50") and new else (
            f"{new / base:.2f}x" if base else "")
    if key == "perplexity":
        return f"{(new / base - 1) * 100:+.1f}%"
    return f"{new - base:+.3f}"


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
    for key, label, fmt in rows:
        cells = [label] + [_with_err(r, key, fmt) for r in records]
        if len(records) > 1:
            cells.append(_change(key, records[0].metrics.get(key), records[-1].metrics.get(key)))
        lines.append("| " + " | ".join(cells) + " |")
    for r in records:
        if r.status != "ok":
            lines.append(f"\n{r.spec['method']['name']}: {r.status}: {r.error or r.reason}")
    return "\n".join(lines)
