"""``impl="auto|ref|triton"`` resolution shared by every op's public function.

``auto`` takes the Triton path for CUDA tensors when Triton imports, else the reference.
``triton`` on CPU tensors works only under the interpreter (``TRITON_INTERPRET=1``), which
is how CI checks every kernel against its reference.
"""

from __future__ import annotations

import os
from typing import Any

IMPLS = ("auto", "ref", "triton")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def choose_impl(impl: str, tensor: Any) -> str:
    """The implementation that will run for ``impl`` on ``tensor``'s device."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    on_gpu = tensor.device.type == "cuda"
    if impl == "auto":
        return "triton" if on_gpu and triton_available() else "ref"
    if impl == "triton":
        if not triton_available():
            raise RuntimeError("impl='triton' needs the triton package (pip install 'sparsebench[triton]')")
        if not on_gpu and not interpreting():
            raise RuntimeError("impl='triton' on CPU tensors needs TRITON_INTERPRET=1 (the Triton interpreter)")
    return impl
