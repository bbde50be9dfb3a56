"""The one tolerance table every kernel test uses, in CI (Triton interpreter) and on a GPU.

A fast path is compared with its ``ref.py`` (never with another fast kernel). Both
accumulate in fp32; what differs is summation order and the output rounding, so the
tolerance depends on the output dtype only.
"""

from __future__ import annotations

from typing import Any

# output dtype name -> (rtol, atol)
TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (1e-4, 1e-4),
    "bfloat16": (1.6e-2, 1e-2),
    "float16": (2e-3, 2e-3),
}


def tolerance(dtype: Any) -> tuple[float, float]:
    """(rtol, atol) for an output of ``dtype`` (a torch dtype or its name)."""
    name = str(dtype).removeprefix("torch.")
    if name not in TOLERANCES:
        raise KeyError(f"no kernel tolerance for dtype {name}; known: {sorted(TOLERANCES)}")
    return TOLERANCES[name]


def assert_close(got: Any, want: Any) -> None:
    """``torch.testing.assert_close`` with the shared table, relative to the output scale."""
    import torch

    rtol, atol = tolerance(got.dtype)
    scale = max(float(want.float().abs().max()), 1.0)
    torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=atol * scale)
