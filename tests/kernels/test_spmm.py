"""Bitmask-tile SpMM: Triton (interpreter in CI, compiled on a GPU) against the reference."""

import pytest
import torch
from torch import nn

from sparsebench.kernels.spmm import SparseLinear, pack, spmm, unpack
from sparsebench.kernels.tolerances import assert_close

from .graphs import graph_replay
from .markers import DEVICE, needs_triton


def sparse(n, k, sparsity, dtype, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    w[torch.rand(n, k, generator=g) < sparsity] = 0
    return w.to(dtype).to(device)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_pack_round_trip_and_size(sparsity):
    w = sparse(37, 70, sparsity, torch.bfloat16, device="cpu")
    p = pack(w, tile_n=16, tile_k=32)
    assert torch.equal(unpack(p), w)
    assert p.nnz == int((w != 0).sum())
    assert p.bits.shape == (48, 3) and p.row_start.shape == (48, 3)


def test_half_sparse_bf16_reads_about_57_percent_of_dense():
    w = sparse(256, 512, 0.5, torch.bfloat16, device="cpu")
    ratio = pack(w).nbytes / (w.numel() * 2)
    assert 0.54 < ratio < 0.60


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k", [(1, 37, 70), (3, 37, 70), (16, 16, 64)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_triton_matches_reference(dtype, m, n, k, sparsity):
    w = sparse(n, k, sparsity, dtype)
    p = pack(w, tile_n=16, tile_k=32)
    x = torch.randn(m, k).to(dtype).to(DEVICE)
    want = spmm(x, p, impl="ref")
    for split in (1, 2):
        assert_close(spmm(x, p, impl="triton", split_k=split), want)


@needs_triton
def test_triton_unpack_and_large_m():
    from sparsebench.kernels.spmm import triton as tri

    w = sparse(37, 70, 0.7, torch.float16)
    p = pack(w, tile_n=16, tile_k=32)
    assert torch.equal(tri.unpack(p), w)
    x = torch.randn(20, 70).to(torch.float16).to(DEVICE)  # two M-tiles of the kernel
    assert_close(spmm(x, p, impl="triton"), spmm(x, p, impl="ref"))


def test_module_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        SparseLinear.from_linear(nn.Linear(8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("m", [1, 4, 16, 40])
def test_module_matches_reference_and_captures_in_a_graph(m):
    lin = nn.Linear(256, 96, bias=True).cuda().to(torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(sparse(96, 256, 0.5, torch.bfloat16))
    mod = SparseLinear.from_linear(lin)
    assert mod.bounds is not None and "bounds" not in mod.state_dict()  # the CUDA kernel's table, derived
    zeros, total = mod.weight_zero_count()
    assert zeros == int((lin.weight == 0).sum()) and total == 96 * 256
    x = torch.randn(m, 256, device="cuda", dtype=torch.bfloat16)
    want = (x.float() @ lin.weight.float().t() + lin.bias.float()).to(torch.bfloat16)
    assert_close(mod(x), want)
    assert_close(graph_replay(lambda: mod(x)), want)


@needs_triton
@pytest.mark.parametrize("m", [1, 3, 20])  # the SpMM kernel, and (20 > DECODE_M) decode + GEMM
def test_module_is_one_registered_op_eager_and_compiled(m):
    """The forward is ``torch.ops.sparsebench.spmm_linear``: ``torch.compile`` keeps it whole
    (``fullgraph`` raises on a graph break), so nothing of its tuning is traced."""
    w = sparse(37, 70, 0.5, torch.float32)
    bias = torch.randn(37).to(DEVICE)
    mod = SparseLinear(pack(w, tile_n=16, tile_k=32), bias)
    x = torch.randn(2, m, 70).to(DEVICE)
    want = x @ w.t() + bias
    assert_close(mod(x), want)
    compiled = torch.compile(lambda a: mod(a) * 2, backend="aot_eager", fullgraph=True)
    assert_close(compiled(x), want * 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_module_captures_in_a_graph():
    """What the compiled decode step does: compile (inductor), warm up (tunes), then capture."""
    lin = nn.Linear(256, 96, bias=False).cuda().to(torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(sparse(96, 256, 0.5, torch.bfloat16))
    mod = SparseLinear.from_linear(lin)
    x = torch.randn(1, 256, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(lambda a: mod(a) + 1, fullgraph=True)
    want = (x.float() @ lin.weight.float().t() + 1).to(torch.bfloat16)
    assert_close(compiled(x), want)
    assert_close(graph_replay(lambda: compiled(x)), want)
