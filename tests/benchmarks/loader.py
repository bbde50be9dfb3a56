"""Benchmarks are scripts under ``benchmarks/``, not a package: tests load one by its path."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` (``name`` may hold a folder: ``kernels/topk_decode_attn``) as a
    fresh module named after it plus ``_bench``."""
    path = BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name.replace('/', '_')}_bench", path)
    mod = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    sys.path.insert(0, folder)  # a benchmark may import its siblings (``common``)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(folder)
    return mod
