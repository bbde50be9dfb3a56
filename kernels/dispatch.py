"""``impl="auto|ref|<fast>"`` resolution shared by every op's public function.

Each op names its fast paths (``triton`` for most, ``cusparselt`` for 2:4). ``auto`` takes
the first fast path usable for the tensor's device, else the reference. ``triton`` on CPU
tensors works only under the interpreter (``TRITON_INTERPRET=1``), which is how CI checks
every Triton kernel against its reference; ``cusparselt`` needs a CUDA tensor; ``cuda``
(kernels compiled at run time with NVRTC, ``cuda_rtc``) needs a CUDA tensor and NVRTC.
"""

from __future__ import annotations

import os
from typing import Any

IMPLS = ("auto", "ref", "triton", "cusparselt", "cuda")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def cusparselt_available() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.backends.cusparselt.is_available())


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _why_not(fast: str, on_gpu: bool) -> str | None:
    """Why ``fast`` cannot run on this device, or None when it can."""
    if fast == "triton":
        if not triton_available():
            return "impl='triton' needs the triton package (pip install 'sparsebench[triton]')"
        if not on_gpu and not interpreting():
            return "impl='triton' on CPU tensors needs TRITON_INTERPRET=1 (the Triton interpreter)"
        return None
    if fast == "cusparselt":
        if not on_gpu:
            return "impl='cusparselt' needs CUDA tensors (cuSPARSELt has no CPU path)"
        if not cusparselt_available():
            return "impl='cusparselt' needs a torch build with cuSPARSELt (torch.backends.cusparselt)"
        return None
    if fast == "cuda":
        if not on_gpu:
            return "impl='cuda' needs CUDA tensors (the NVRTC kernels have no CPU path)"
        from . import cuda_rtc

        ok, why = cuda_rtc.available()
        return None if ok else f"impl='cuda': {why}"
    raise ValueError(f"unknown fast implementation {fast!r}")


def choose_impl(impl: str, tensor: Any, fast: tuple[str, ...] = ("triton",)) -> str:
    """The implementation that will run for ``impl`` on ``tensor``'s device.

    ``fast`` lists the op's fast paths in order of preference.
    """
    allowed = ("auto", "ref", *fast)
    if impl not in allowed:
        raise ValueError(f"impl must be one of {', '.join(allowed)}, got {impl!r}")
    on_gpu = tensor.device.type == "cuda"
    if impl == "auto":
        for f in fast:
            # auto never picks the interpreter: it is for tests, far too slow for real use
            if on_gpu and _why_not(f, on_gpu) is None:
                return f
        return "ref"
    if impl != "ref":
        reason = _why_not(impl, on_gpu)
        if reason:
            raise RuntimeError(reason)
    return impl
