"""The results store: append-only run records under ``results/``, upgraded on read."""

from .migrations import upgrade
from .records import ResultsStore, new_run_id

__all__ = ["ResultsStore", "new_run_id", "upgrade"]
