"""Reading and writing run records: one JSON file per run, written once and never rewritten.

Writes go to a temporary file that is then hard-linked into place, so a crash never
leaves a torn record and an existing record can never be overwritten.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from ..api import RunRecord
from ..errors import StoreError
from .migrations import upgrade


def new_run_id(method: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in method)[:40]
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


def parse_record(raw: object, origin: str, advice: str) -> RunRecord:
    """Upgrade and validate one record's JSON; ``origin`` names it and ``advice`` says
    what the user can do, so every reader reports a bad record in the same words."""
    if not isinstance(raw, dict):
        raise StoreError(f"{origin} is not a JSON object. {advice}.")
    rec = upgrade(raw, origin=origin)
    try:
        return RunRecord.model_validate(rec)
    except ValidationError as exc:
        raise StoreError(
            f"{origin} does not match the record schema: "
            f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}. {advice}."
        ) from None


def read_json(path: Path, advice: str) -> object:
    """The JSON in ``path``, or a ``StoreError`` that says what is wrong and what to do."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(
            f"The file {path} cannot be read ({exc}). {advice}; "
            "sparsebench never edits records, and no other file was touched."
        ) from None


def read_record(path: Path, advice: str = "Fix or remove it") -> RunRecord:
    """One record file, upgraded to the current schema."""
    return parse_record(read_json(path, advice), f"The record {path}", advice)


class ResultsStore:
    """Records live in ``<root>/runs/<run_id>.json``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def path_for(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def write(self, record: RunRecord) -> Path:
        """Atomically create the record's file; refuse to replace an existing one."""
        self.runs.mkdir(parents=True, exist_ok=True)
        final = self.path_for(record.run_id)
        data = json.dumps(record.model_dump(mode="json"), indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.runs)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are data to share
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise StoreError(f"Refusing to overwrite the existing record {final}.") from None
        finally:
            os.unlink(tmp)
        return final

    def read(self, path: Path) -> RunRecord:
        return read_record(path, f"Move it out of {self.runs} or fix it")

    def paths(self) -> list[Path]:
        if not self.runs.is_dir():
            return []
        return sorted(p for p in self.runs.glob("*.json") if not p.name.startswith("."))

    def __iter__(self) -> Iterator[RunRecord]:
        for p in self.paths():
            yield self.read(p)

    def all(self) -> list[RunRecord]:
        return list(self)

    def get(self, run_id: str) -> RunRecord:
        """A record by id or unique id prefix."""
        exact = self.path_for(run_id)
        if exact.is_file():
            return self.read(exact)
        hits = [p for p in self.paths() if p.stem.startswith(run_id)]
        if len(hits) == 1:
            return self.read(hits[0])
        if not hits:
            raise StoreError(f"No record '{run_id}' in {self.runs}. `sparsebench ls runs` lists them.")
        raise StoreError(f"'{run_id}' matches {len(hits)} records; give more of the id: "
                         + ", ".join(p.stem for p in hits[:5]))

    def find_ok(self, spec_key: str, machine_id: str | None = None) -> RunRecord | None:
        """Newest ``ok`` record with this spec key (and machine, if given)."""
        best = None
        for rec in self:
            if rec.status != "ok" or rec.spec_key != spec_key:
                continue
            if machine_id and rec.hardware.get("fingerprint", {}).get("id") != machine_id:
                continue
            if best is None or rec.created_at > best.created_at:
                best = rec
        return best
