"""Sweeps: a YAML grid of runs, planned, resumed and run with crash isolation.

``sparsebench sweep sweeps/pruning.yaml`` (or ``nox -s sweep -- sweeps/pruning.yaml``):

1. loads the sweep file (format: ``sparsebench.sweep.file``) and refuses a malformed one
   with a one-paragraph error and exit 2, before anything runs;
2. starts the executor (entry-point group ``sparsebench.executors``: ``local`` by default,
   ``ray``), resolves every grid point against the machine the runs execute on, and prints
   the plan: distinct runs, one dense baseline per setting (run first), and which runs are
   already done (an ``ok`` record with the same spec key on the same machine);
3. runs what is missing, each run in its own process or Ray task; records are written only
   by this driver, atomically, as they arrive; a run that raises, times out or dies gets a
   ``failed`` record with the reason and the sweep goes on;
4. prints a summary with the failures and the executor's overhead per run. Exit code 0 when
   every run ended ok or skipped, 1 otherwise, 2 for bad input, 130 on Ctrl-C (re-running
   the same command continues where it stopped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .file import SweepFile, expand, load_sweep, parse_sweep

__all__ = ["SweepFile", "expand", "load_sweep", "make_executor", "parse_sweep", "precheck"]


def precheck(sweep: SweepFile) -> int:
    """Resolve every grid point against a machine-independent view (no torch, no executor),
    so a bad method, task or option is refused before any process or Ray cluster starts."""
    from ..errors import UsageError
    from ..resolve import resolve

    runs = expand(sweep)
    for run in runs:
        try:
            resolve(run.spec, {"id": None, "cuda_available": False})
        except UsageError as exc:
            raise UsageError(f"The sweep '{sweep.name}', {run.origin}: {exc}") from None
    return len(runs)


def make_executor(name: str, **options: Any) -> Any:
    from .. import registry

    return registry.executors().get(name)(**options)


def default_logs(results: str | Path) -> Path:
    return Path(results).resolve().parent / "sweep-logs"
