"""What runs inside a sweep job's process: one ``Runner.run`` whose records go to the driver.

``execute(payload, emit)`` is shared by every executor: the runner's store is replaced by a
``RelayStore`` that holds the baseline records the driver sent and passes every record the
runner writes to ``emit`` instead of the disk.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..api import RunRecord, RunSpec
from ..store import ResultsStore


class RelayStore(ResultsStore):
    """A store that holds the records it was given and sends every write to the driver."""

    def __init__(self, records: list[RunRecord], emit: Callable[[dict[str, Any]], None]):
        super().__init__(os.devnull)
        self._records = list(records)
        self._emit = emit

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(list(self._records))

    def write(self, record: RunRecord) -> Path:
        self._records.append(record)
        self._emit({"record": record.model_dump(mode="json")})
        return Path("<sweep driver>") / f"{record.run_id}.json"


def execute(payload: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    """Run one job; every record and any error that escapes the runner go to ``emit``."""
    from ..runner import Runner

    try:
        store = RelayStore([RunRecord.model_validate(r) for r in payload["baselines"]], emit)
        runner = Runner(store=store, progress=False)
        runner.run(RunSpec.model_validate(payload["spec"]))
    except Exception as exc:  # the runner turns method/task errors into records; this is the rest
        emit({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=20)})


def probe() -> dict[str, Any]:
    """The machine as a run in this process sees it."""
    from ..profiles.hardware import fingerprint, machine_info

    return fingerprint(machine_info())
