"""Shared by the kernel tests: where they run, and the skips when they cannot."""

import pytest
import torch

from sparsebench.kernels.dispatch import interpreting, triton_available

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
#: a Triton kernel runs compiled on a GPU, or under the interpreter on CPU (nox -s tests sets it)
needs_triton = pytest.mark.skipif(
    not triton_available() or (DEVICE == "cpu" and not interpreting()),
    reason="needs triton and a GPU, or TRITON_INTERPRET=1 on CPU")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(),
                                reason="needs a CUDA device")


def _rtc_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    from sparsebench.kernels import cuda_rtc

    return cuda_rtc.available()[0]


#: the NVRTC-compiled CUDA kernels run on a GPU where NVRTC is found
needs_rtc = pytest.mark.skipif(not _rtc_ready(), reason="needs a CUDA device and NVRTC")


def nvrtc_or_skip():
    """``cuda_rtc`` where NVRTC can be loaded (compiling needs no GPU), else skip the test."""
    from sparsebench.kernels import cuda_rtc

    try:
        cuda_rtc._nvrtc()
    except cuda_rtc.RtcError:
        pytest.skip("NVRTC not found (set SPARSEBENCH_NVRTC)")
    return cuda_rtc


def force_pdl(monkeypatch, *modules):
    """Take the programmatic-dependent-launch path of the kernels launched from ``modules``.
    On a Hopper or newer GPU it is the real thing (``SPARSEBENCH_PDL=1``). The interpreter has
    no grids to overlap, so there the two grid-dependency instructions become no-ops (what
    they amount to when nothing overlaps) and what is checked is the path's own arithmetic
    (the dense GEMV's peeled first tile)."""
    if DEVICE == "cuda":
        if torch.cuda.get_device_capability()[0] < 9:
            pytest.skip("programmatic dependent launch needs a Hopper or newer GPU")
        monkeypatch.setenv("SPARSEBENCH_PDL", "1")
        return
    import triton.language.extra.cuda as gdc

    monkeypatch.setattr(gdc, "gdc_wait", lambda: None)
    monkeypatch.setattr(gdc, "gdc_launch_dependents", lambda: None)
    for module in modules:
        monkeypatch.setattr(module, "pdl", lambda device: True)
