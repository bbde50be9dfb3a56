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
