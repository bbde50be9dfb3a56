"""Reading candidate records and baseline files; writing baseline files atomically.

A baseline file ``results/baselines/<name>.json`` holds full run records, not summaries,
so the gate can re-test raw latency samples and explain any spec difference:
``{"schema": 1, "created_at": ..., "records": [RunRecord, ...]}``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from ..api import RunRecord
from ..errors import StoreError, UsageError
from ..store import parse_record, read_json, read_record

BASELINE_SCHEMA = 1


def record_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Record files named directly, or the ``*.json`` in a directory (or its ``runs/``)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            d = p / "runs" if (p / "runs").is_dir() else p
            out.extend(sorted(q for q in d.glob("*.json") if not q.name.startswith(".")))
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"The candidate {p} does not exist; give record files or directories of records.")
    if not out:
        raise UsageError("No candidate records found in " + ", ".join(map(str, inputs)) + "; nothing to gate.")
    return out


def load_candidates(inputs: Iterable[str | Path]) -> list[RunRecord]:
    return [read_record(p, "Fix or remove it, then gate again") for p in record_paths(inputs)]


def load_baseline(path: str | Path) -> list[RunRecord]:
    """The records of a baseline file, or a ``StoreError`` naming what is wrong with it."""
    path = Path(path)
    advice = f"Restore {path} from git, or write a new one with --update-baseline"
    if not path.is_file():
        raise UsageError(f"The baseline {path} does not exist. Create it from candidate records with "
                         f"'sparsebench gate RECORDS... --baseline {path} --update-baseline'.")
    raw = read_json(path, advice)
    if not isinstance(raw, dict) or raw.get("schema") != BASELINE_SCHEMA or not isinstance(raw.get("records"), list):
        raise StoreError(f"The baseline {path} is not a sparsebench baseline file (expected a JSON object with "
                         f"\"schema\": {BASELINE_SCHEMA} and a \"records\" list). {advice}.")
    return [parse_record(r, f"Record {i} of the baseline {path}", advice) for i, r in enumerate(raw["records"])]


def write_baseline(path: str | Path, records: list[RunRecord]) -> Path:
    """Replace ``path`` with a baseline of ``records`` (temp file + rename: never torn)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema": BASELINE_SCHEMA,
           "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "records": [r.model_dump(mode="json") for r in records]}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a baseline is meant to be committed and shared
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
