"""The results store: append-only run records under ``results/``, upgraded on read."""

from .migrations import upgrade
from .records import ResultsStore, new_run_id, parse_record, read_json, read_record

__all__ = ["ResultsStore", "new_run_id", "parse_record", "read_json", "read_record", "upgrade"]
