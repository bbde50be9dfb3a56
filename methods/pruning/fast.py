"""Swap pruned ``nn.Linear`` layers for sparse-kernel modules, so sparsity pays on a GPU.

``kernel`` is the run's choice: ``ref`` keeps dense GEMMs on masked weights; ``fast`` and,
on CUDA, ``auto`` put 2:4 layers on cuSPARSELt (``SemiStructuredLinear``) and every other
pattern on the Triton bitmask SpMM (``SparseLinear``). A layer a kernel cannot hold (shape,
dtype) stays dense and the reason is reported; ``fast`` on a CPU model is an error.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from sparsebench.kernels.semi_structured import SemiStructuredLinear, SemiStructuredUnsupported
from sparsebench.kernels.spmm import SparseLinear

from ..layerwise import block_linears, decoder_blocks
from .masks import parse_pattern

DENSE = "torch.nn.Linear (dense GEMM on masked weights)"
LABELS = {
    "SemiStructuredLinear": "cuSPARSELt 2:4 (SemiStructuredLinear, config tuned per shape and M bucket)",
    "SparseLinear": "Triton bitmask-tile SpMM for M<=16, on-device unpack + cuBLAS above (SparseLinear)",
}


def wants_fast(kernel: str, model: nn.Module) -> bool:
    on_cuda = next(model.parameters()).device.type == "cuda"
    if kernel == "fast" and not on_cuda:
        raise ValueError("kernel 'fast' runs pruned layers through GPU sparse kernels, but the model is "
                         "not on a CUDA device; use --kernel auto or ref on this machine")
    return kernel == "fast" or (kernel == "auto" and on_cuda)


def use_sparse_kernels_(model: nn.Module, pattern: str, kernel: str) -> tuple[dict[str, str], list[str]]:
    """Replace the decoder linears in place; returns (kernels used, notes)."""
    if not wants_fast(kernel, model):
        return {"linear": DENSE}, []
    two_four = parse_pattern(pattern) == (2, 4)
    used: Counter[str] = Counter()
    notes: list[str] = []
    for i, block in enumerate(decoder_blocks(model)):
        for name, lin in block_linears(block).items():
            try:
                new = (SemiStructuredLinear.from_linear(lin) if two_four else SparseLinear.from_linear(lin))
            except (SemiStructuredUnsupported, ValueError) as exc:
                used[DENSE] += 1
                notes.append(f"layers.{i}.{name} kept dense: {exc}")
                continue
            parent_name, _, child = name.rpartition(".")
            setattr(block.get_submodule(parent_name) if parent_name else block, child, new)
            used[LABELS[type(new).__name__]] += 1
            del lin
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    total = sum(used.values())
    label = "; ".join(f"{k} x{v}/{total}" for k, v in used.most_common())
    return {"linear": label}, notes[:20] + ([f"... {len(notes) - 20} more layers kept dense"] if len(notes) > 20 else [])
