"""The gate's Markdown report: one table row per gated metric, then a verdict line."""

from __future__ import annotations

from .match import Outcome

HEADER = ("| run | metric | baseline | candidate | change | verdict | note |\n"
          "|---|---|---:|---:|---:|---|---|")


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def summary(outcomes: list[Outcome]) -> str:
    regressed = [o.label for o in outcomes if o.regressed]
    missing = [o.label for o in outcomes if o.incomplete]
    compared = sum(1 for o in outcomes if o.not_compared is None)
    head = "**Gate: FAIL**" if regressed else "**Gate: INCOMPLETE**" if missing else "**Gate: PASS**"
    parts = [f"{compared} of {len(outcomes)} candidate record(s) compared"]
    if regressed:
        parts.append("regression in " + ", ".join(regressed))
    if missing:
        parts.append("not compared: " + ", ".join(missing))
    return f"{head}: " + "; ".join(parts) + "."


def markdown(outcomes: list[Outcome], baseline: str) -> str:
    """The full report; bold verdicts stand out in a CI log as well as on GitHub."""
    lines = [f"## sparsebench regression gate (baseline `{baseline}`)", "", HEADER]
    for o in outcomes:
        if o.not_compared is not None:
            lines.append(f"| {o.label} | (all) | | | | **not compared** | {_cell(o.not_compared)} |")
            continue
        for r in o.rows:
            verdict = f"**{r.verdict}**" if r.verdict in ("REGRESSION", "not compared") else r.verdict
            lines.append(f"| {o.label} | {r.metric} | {_num(r.baseline)} | {_num(r.candidate)} | {r.change} "
                         f"| {verdict} | {_cell(r.note)} |")
    notes = [f"- {o.label}: {o.note}" for o in outcomes if o.note]
    if notes:
        lines += ["", *notes]
    lines += ["", summary(outcomes)]
    return "\n".join(lines) + "\n"
