"""What runs inside a sweep job's process: one ``Runner.run`` whose records go to the driver.

``execute(payload, emit)`` is shared by every executor. The local executor starts
``python -m sparsebench.sweep.worker FD`` per run: the job arrives as one JSON line on stdin,
records leave as JSON lines on file descriptor FD, and when stdin reaches end-of-file (the
driver died, even by SIGKILL) the worker exits at once, so an orphan never keeps running.
"""

from __future__ import annotations

import json
import os
import sys
import threading
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


def _exit_on_eof() -> None:
    sys.stdin.read()
    os._exit(3)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = os.fdopen(int(argv[0]), "w")

    def emit(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    payload = json.loads(sys.stdin.readline())
    threading.Thread(target=_exit_on_eof, daemon=True).start()
    if payload.get("probe"):
        emit({"machine": probe()})
    else:
        execute(payload, emit)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
