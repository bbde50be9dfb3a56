"""Where sparsebench keeps downloaded wheels and converted models between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SPARSEBENCH_CACHE``, else ``$XDG_CACHE_HOME/sparsebench``, else ``~/.cache/sparsebench``."""
    if env := os.environ.get("SPARSEBENCH_CACHE"):
        root = Path(env)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sparsebench"
    root.mkdir(parents=True, exist_ok=True)
    return root
