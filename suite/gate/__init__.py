"""The CI regression gate: compare candidate run records with a baseline file.

``sparsebench gate CANDIDATE... --baseline FILE`` prints a Markdown table and exits 0 when
every candidate was compared and passed, 1 on a regression or on a candidate that could
not be compared (a gate that silently skips runs gates nothing; ``--allow-unmatched``
relaxes that), 2 on unusable input, in which case no file is written.
"""

from __future__ import annotations

from pathlib import Path

from ..api import Tolerance
from ..errors import EXIT_FAILED, EXIT_OK
from .baseline import load_baseline, load_candidates, write_baseline
from .compare import Row, Settings, compare_records
from .match import Outcome, arithmetic, merged_baseline, pair
from .report import markdown

__all__ = ["Outcome", "Row", "Settings", "arithmetic", "compare_records", "gate", "load_baseline",
           "load_candidates", "markdown", "merged_baseline", "pair", "task_tolerances", "write_baseline"]


def task_tolerances(task_names: set[str]) -> dict[str, dict[str, Tolerance]]:
    """Tolerances declared by the installed task classes (a missing task gets the default)."""
    from .. import registry

    reg = registry.tasks()
    return {n: dict(reg.get(n).tolerances) for n in sorted(task_names) if n in reg}


def gate(candidates: list[str | Path], baseline: str | Path, *, report: str | Path | None = None,
         update: bool = False, settings: Settings | None = None, allow_unmatched: bool = False) -> int:
    """Run the gate; everything is read and checked before anything is written."""
    cands = load_candidates(candidates)
    base_path = Path(baseline)
    bases = []
    if update and not base_path.exists():
        outcomes: list[Outcome] = []
        text = ""
    else:
        bases = load_baseline(base_path)
        names = {t["name"] for r in cands for t in r.spec.get("tasks", [])}
        outcomes = pair(cands, bases, task_tolerances(names), settings or Settings())
        text = markdown(outcomes, str(base_path))
    if update:
        ok = [r for r in cands if r.status == "ok"]
        records, kept = merged_baseline(bases, ok)
        write_baseline(base_path, records)
        others = sorted({arithmetic(r) for r in records[:kept]})
        text += (f"\nWrote {len(ok)} record(s) to {base_path}"
                 + (f"; left out {len(cands) - len(ok)} not-ok record(s)" if len(ok) < len(cands) else "")
                 + (f"; kept {kept} record(s) of the same runs on {', '.join(others)} (if this change moves "
                    "results there too, update the baseline on that processor as well)" if kept else "") + ".\n")
    print(text, end="")
    if report:
        Path(report).write_text(text)
    if update:
        return EXIT_OK
    failed = any(o.regressed for o in outcomes) or (not allow_unmatched and any(o.incomplete for o in outcomes))
    return EXIT_FAILED if failed else EXIT_OK
