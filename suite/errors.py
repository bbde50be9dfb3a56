"""User-facing errors: each carries the exit code the CLI returns for it.

A ``UsageError`` means the input was wrong (exit 2) and nothing was run or written;
its message names the problem and what is allowed, in one paragraph.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class SparsebenchError(Exception):
    """Base class for errors the CLI reports without a traceback."""

    exit_code = EXIT_FAILED


class UsageError(SparsebenchError):
    """Bad input from the user: unknown names, out-of-range values, malformed files."""

    exit_code = EXIT_USAGE


class StoreError(UsageError):
    """A record in the results store cannot be read (corrupt, or from a newer schema)."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UsageError:
    """Build the standard 'unknown X' error with the known names and the closest match."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(known) if known else "(none installed)"
    return UsageError(f"Unknown {kind} '{name}'.{hint} Known {kind}s: {listing}.")
