"""The software environment of a run: git state and package versions, for the record."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ALLOC_CONF_ENV = "PYTORCH_CUDA_ALLOC_CONF"
PACKAGES = ("sparsebench", "torch", "transformers", "accelerate", "gguf", "safetensors",
            "pydantic", "mlflow", "triton", "numpy")


def git_state(where: Path | None = None) -> dict[str, Any]:
    """``sha`` and ``dirty`` of the checkout holding the code (None outside a git checkout)."""
    if os.environ.get("SPARSEBENCH_GIT_SHA"):  # a copy of the tree without .git (e.g. a GPU box)
        return {"sha": os.environ["SPARSEBENCH_GIT_SHA"],
                "dirty": os.environ.get("SPARSEBENCH_GIT_DIRTY", "unknown") == "1", "source": "env"}
    where = where or Path(__file__).resolve().parent
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return {"sha": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status)}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def environment() -> dict[str, Any]:
    return {
        "git": git_state(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        # the CUDA caching allocator's settings change where tensors live, and decode timings with them
        "cuda_alloc_conf": os.environ.get(ALLOC_CONF_ENV),
    }
