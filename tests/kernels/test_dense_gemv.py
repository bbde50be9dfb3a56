"""The dense GEMV (one row of x, row-major weight) against its reference: odd shapes (no
multiple of any tile, so the row clamp and the K mask run), every dtype, bias or not, a
strided x, the registered op eagerly and under torch.compile, and the errors it raises.

Outputs go into NaN-filled tensors, so an element the kernel forgets to write fails. On CPU
this runs under the Triton interpreter (``TRITON_INTERPRET=1``, set by ``nox -s tests``).
"""

import pytest
import torch

from sparsebench.kernels.dense_gemv import (
    dense_gemv,
    dense_gemv_ref,
    dense_gemv_swiglu_ref,
    one_row_linear,
)
from sparsebench.kernels.dense_gemv.config import (
    DEFAULT,
    DenseGemvConfig,
    default_config,
    effective,
)
from sparsebench.kernels.tolerances import assert_close

from .markers import DEVICE, force_pdl, needs_cuda, needs_triton

SMALL = (DenseGemvConfig(block_n=4, block_k=32, num_warps=4, num_stages=1),
         DenseGemvConfig(block_n=8, block_k=16, num_warps=2, num_stages=2))
# (N outputs, K inputs): 37 x 53 is no multiple of 4/8 rows or 16/32 columns; 300 x 64 has
# an even K; 5 x 7 is smaller than one tile in both directions
SHAPES = [(37, 53), (300, 64), (5, 7)]
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def test_hand_checked_case():
    """y = W x for a 2 x 3 weight, worked out by hand: [1*1 + 2*0 + 3*(-1), 4*1 + 5*0 + 6*(-1)] + b."""
    w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    x = torch.tensor([[1.0, 0.0, -1.0]])
    b = torch.tensor([0.5, -0.5])
    assert torch.equal(dense_gemv_ref(x, w, b), torch.tensor([[-1.5, -2.5]]))


@needs_triton
@pytest.mark.parametrize("cfg", SMALL, ids=lambda c: c.label())
@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_matches_ref(cfg, n, k, dtype):
    from sparsebench.kernels.dense_gemv.triton import dense_gemv_triton

    g = torch.Generator().manual_seed(n * 1000 + k)
    w = torch.randn(n, k, generator=g).to(DEVICE, dtype)
    x = torch.randn(1, 1, k, generator=g).to(DEVICE, dtype)
    b = torch.randn(n, generator=g).to(DEVICE, dtype)
    for bias in (None, b):
        out = torch.full((n,), float("nan"), device=DEVICE, dtype=dtype)
        got = dense_gemv_triton(x, w, bias, config=cfg, out=out)
        assert got.shape == (1, 1, n) and got.dtype == dtype
        assert_close(got, dense_gemv_ref(x, w, bias))


@needs_triton
@pytest.mark.parametrize("cfg", SMALL, ids=lambda c: c.label())
@pytest.mark.parametrize("n,k", SHAPES + [(9, 16), (9, 33)])  # K of exactly one tile, one tile + 1
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_pdl_path_matches_ref(cfg, n, k, dtype, monkeypatch):
    """Launched with programmatic dependent launch the first K tile is peeled off the loop."""
    from sparsebench.kernels.dense_gemv import triton as kt

    force_pdl(monkeypatch, kt)
    g = torch.Generator().manual_seed(n + k)
    w = torch.randn(n, k, generator=g).to(DEVICE, dtype)
    x = torch.randn(1, k, generator=g).to(DEVICE, dtype)
    b = torch.randn(n, generator=g).to(DEVICE, dtype)
    out = torch.full((n,), float("nan"), device=DEVICE, dtype=dtype)
    assert_close(kt.dense_gemv_triton(x, w, b, config=cfg, out=out), dense_gemv_ref(x, w, b))


def test_hand_checked_norm_case():
    """x = [3, 4]: mean(x^2) = 12.5, so with eps = 0 the normalised x is [3, 4] / sqrt(12.5);
    times g = [2, 0] it is [6 / sqrt(12.5), 0], and W = [[1, 1], [0, 1]] gives [6 / sqrt(12.5), 0]."""
    x = torch.tensor([3.0, 4.0])
    w = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    got = dense_gemv_ref(x, w, norm_weight=torch.tensor([2.0, 0.0]), eps=0.0)
    torch.testing.assert_close(got, torch.tensor([6 / 12.5 ** 0.5, 0.0]))


@needs_triton
@pytest.mark.parametrize("cfg", SMALL, ids=lambda c: c.label())
@pytest.mark.parametrize("n,k", SHAPES + [(9, 16)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_norm_folded_matches_ref_and_the_model_norm(cfg, n, k, dtype):
    """The RMSNorm folded into the product against its reference, and the reference against
    normalising first the way transformers' Llama RMSNorm does (fp32, rounded once)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from sparsebench.kernels.dense_gemv.triton import dense_gemv_triton

    g = torch.Generator().manual_seed(7 * n + k)
    w = torch.randn(n, k, generator=g).to(DEVICE, dtype)
    x = (3 * torch.randn(1, 1, k, generator=g)).to(DEVICE, dtype)
    gw = torch.rand(k, generator=g).add(0.5).to(DEVICE, dtype)
    b = torch.randn(n, generator=g).to(DEVICE, dtype)
    for bias in (None, b):
        want = dense_gemv_ref(x, w, bias, norm_weight=gw, eps=1e-5)
        out = torch.full((n,), float("nan"), device=DEVICE, dtype=dtype)
        assert_close(dense_gemv_triton(x, w, bias, config=cfg, out=out, norm_weight=gw, eps=1e-5), want)
    norm = LlamaRMSNorm(k, eps=1e-5).to(DEVICE, dtype)
    with torch.no_grad():
        norm.weight.copy_(gw)
        assert_close(want, dense_gemv_ref(norm(x), w, b))


@needs_triton
def test_norm_folded_with_pdl(monkeypatch):
    from sparsebench.kernels.dense_gemv import triton as kt

    force_pdl(monkeypatch, kt)
    g = torch.Generator().manual_seed(3)
    w, x, gw = torch.randn(37, 53, generator=g), torch.randn(53, generator=g), torch.rand(53, generator=g)
    w, x, gw = w.to(DEVICE), x.to(DEVICE), gw.to(DEVICE)
    assert_close(kt.dense_gemv_triton(x, w, config=SMALL[1], norm_weight=gw, eps=1e-5),
                 dense_gemv_ref(x, w, norm_weight=gw, eps=1e-5))


def test_pdl_switch(monkeypatch):
    """Off unless asked for, never on a CPU tensor, and a bad value says what is allowed."""
    from sparsebench.kernels.launch import pdl

    cpu = torch.device("cpu")
    monkeypatch.delenv("SPARSEBENCH_PDL", raising=False)
    assert pdl(cpu) is False
    monkeypatch.setenv("SPARSEBENCH_PDL", "1")
    assert pdl(cpu) is False
    monkeypatch.setenv("SPARSEBENCH_PDL", "yes")
    with pytest.raises(ValueError, match="expected 1"):
        pdl(cpu)


@needs_triton
def test_strided_x_and_the_hand_case():
    from sparsebench.kernels.dense_gemv.triton import dense_gemv_triton

    w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], device=DEVICE)
    x = torch.tensor([[1.0, 9.0, 0.0, 9.0, -1.0, 9.0]], device=DEVICE)[:, ::2]  # [1, 0, -1], stride 2
    got = dense_gemv_triton(x, w, torch.tensor([0.5, -0.5], device=DEVICE), config=SMALL[0])
    assert torch.equal(got.cpu(), torch.tensor([[-1.5, -2.5]]))


@needs_triton
def test_registered_op_eager_and_compiled(monkeypatch):
    from sparsebench.kernels.dense_gemv.triton import dense_gemv_op

    monkeypatch.setenv("SPARSEBENCH_DENSE_GEMV_CONFIG", SMALL[0].label())
    w = torch.randn(37, 53, device=DEVICE, dtype=torch.bfloat16)
    x = torch.randn(1, 53, device=DEVICE, dtype=torch.bfloat16)
    want = dense_gemv_ref(x, w)
    assert_close(one_row_linear(x, w), want)
    assert_close(torch.ops.sparsebench.dense_gemv(x, w, None, None, 1e-6, 4, 32, 4, 1, False), want)
    compiled = torch.compile(lambda a, b: dense_gemv_op(a, b, config=SMALL[1]) * 2, backend="aot_eager",
                             fullgraph=True)  # no graph break: the op is opaque to dynamo
    assert_close(compiled(x, w), want * 2)
    gw = torch.rand(53, device=DEVICE, dtype=torch.bfloat16) + 0.5
    normed = torch.compile(lambda a, b, g: one_row_linear.normed(a, b, None, g, 1e-5) * 2, backend="aot_eager",
                           fullgraph=True)
    assert_close(normed(x, w, gw), dense_gemv_ref(x, w, norm_weight=gw, eps=1e-5) * 2)


def test_hand_checked_swiglu_case():
    """A fused gate/up pair of 1 x 2 weights: gate = [2 * 1 + 0 * 3] = 2, up = [1 * 1 + 1 * 3] = 4,
    silu(2) * 4 = 2 / (1 + e^-2) * 4."""
    w = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    x = torch.tensor([[1.0, 3.0]])
    want = 2.0 / (1.0 + torch.exp(torch.tensor(-2.0))) * 4.0
    torch.testing.assert_close(dense_gemv_swiglu_ref(x, w), want.reshape(1, 1))
    with pytest.raises(ValueError, match="even number of rows"):
        dense_gemv_swiglu_ref(x, torch.ones(3, 2))


@needs_triton
@pytest.mark.parametrize("cfg", (SMALL[1], DenseGemvConfig(block_n=2, block_k=16, num_warps=1, num_stages=1)),
                         ids=lambda c: c.label())
@pytest.mark.parametrize("n,k", [(37, 53), (5, 7), (1, 16)])  # n outputs: gate/up have 2n rows
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("pdl", [False, True], ids=["plain", "pdl"])
def test_swiglu_matches_ref(cfg, n, k, dtype, pdl, monkeypatch):
    """silu(gate) * up from one fused gate/up GEMV: odd output counts (a program's pairs run
    past the end), with and without bias and the folded norm, on the plain and PDL paths."""
    from sparsebench.kernels.dense_gemv import triton as kt

    if pdl:
        force_pdl(monkeypatch, kt)
    g = torch.Generator().manual_seed(7 * n + k)
    w = torch.randn(2 * n, k, generator=g).to(DEVICE, dtype)
    x = torch.randn(1, k, generator=g).to(DEVICE, dtype)
    b = torch.randn(2 * n, generator=g).to(DEVICE, dtype)
    gw = (torch.rand(k, generator=g) + 0.5).to(DEVICE, dtype)
    for bias, norm in ((None, None), (b, None), (None, gw), (b, gw)):
        out = torch.full((n,), float("nan"), device=DEVICE, dtype=dtype)
        got = kt.dense_gemv_triton(x, w, bias, config=cfg, out=out, norm_weight=norm, eps=1e-5, glu=True)
        assert got.shape == (1, n)
        assert_close(got, dense_gemv_swiglu_ref(x, w, bias, norm, 1e-5))


@needs_triton
def test_swiglu_through_the_plugin_compiled_and_refusals():
    w = torch.randn(2 * 37, 53, device=DEVICE, dtype=torch.bfloat16)
    x = torch.randn(1, 53, device=DEVICE, dtype=torch.bfloat16)
    gw = torch.rand(53, device=DEVICE, dtype=torch.bfloat16) + 0.5
    glu = torch.compile(lambda a, b, g: one_row_linear.swiglu(a, b, None, g, 1e-5) * 2, backend="aot_eager",
                        fullgraph=True)
    assert_close(glu(x, w, gw), dense_gemv_swiglu_ref(x, w, norm_weight=gw, eps=1e-5) * 2)
    from sparsebench.kernels.dense_gemv.triton import dense_gemv_triton

    with pytest.raises(ValueError, match="even number of rows"):
        dense_gemv_triton(x, w[:-1], glu=True)


@needs_triton
def test_public_entry_dispatch():
    w = torch.randn(37, 53, device=DEVICE)
    x1, x3 = torch.randn(1, 53, device=DEVICE), torch.randn(3, 53, device=DEVICE)
    assert_close(dense_gemv(x1, w, impl="ref"), dense_gemv_ref(x1, w))
    assert_close(dense_gemv(x3, w, impl="triton"), dense_gemv_ref(x3, w))  # more rows: cuBLAS / torch


@needs_triton
def test_bad_operands_are_refused():
    from sparsebench.kernels.dense_gemv.triton import dense_gemv_triton

    w = torch.randn(8, 16, device=DEVICE)
    with pytest.raises(ValueError, match="one row"):
        dense_gemv_triton(torch.randn(2, 16, device=DEVICE), w)
    with pytest.raises(ValueError, match=r"x has 15 inputs but the weight is \[8, 16\]"):
        dense_gemv_triton(torch.randn(1, 15, device=DEVICE), w)
    with pytest.raises(ValueError, match="contiguous rows"):
        dense_gemv_triton(torch.randn(1, 8, device=DEVICE), w.t())
    with pytest.raises(ValueError, match="contiguous tensor of 8"):
        dense_gemv_triton(torch.randn(1, 16, device=DEVICE), w, out=torch.empty(7, device=DEVICE))


def test_config_parse_and_clip(monkeypatch):
    assert DenseGemvConfig.parse("bn=16,bk=128") == DenseGemvConfig(block_n=16, block_k=128)
    assert DenseGemvConfig.parse(DEFAULT.label()) == DEFAULT
    for bad in ("bn=3", "bq=4", "bn=four", "s=0"):
        with pytest.raises(ValueError, match="dense GEMV config|power of two|num_stages"):
            DenseGemvConfig.parse(bad)
    monkeypatch.setenv("SPARSEBENCH_DENSE_GEMV_CONFIG", "bn=2,bk=64,w=1,s=2")
    assert default_config() == DenseGemvConfig(2, 64, 1, 2)
    # tiles clipped to the problem; one program per block of rows
    assert effective(DenseGemvConfig(block_n=8, block_k=512), 5, 7) == (8, 16, 1)
    assert effective(DenseGemvConfig(block_n=4, block_k=256), 4096, 14336) == (4, 256, 1024)


@needs_cuda
@pytest.mark.gpu
def test_gpu_pdl_chain_in_a_graph(monkeypatch):
    """A chain of products each reading what the one before wrote (8B shapes), launched with
    programmatic dependent launch inside a CUDA graph: a kernel that read its x before the
    wait would see the last replay's values, so the inputs change between replays."""
    from sparsebench.kernels.dense_gemv import triton as kt

    from .graphs import graph_replay

    force_pdl(monkeypatch, kt)
    g = torch.Generator().manual_seed(8)
    ws = [torch.randn(n, k, generator=g).div(k ** 0.5).to("cuda", torch.bfloat16)
          for n, k in ((6144, 4096), (4096, 6144), (14336, 4096), (4096, 14336))]
    x = torch.randn(1, 4096, generator=g).to("cuda", torch.bfloat16)

    def chain():
        h = x * 2  # a torch kernel between the input and the first GEMV
        for w in ws:
            h = kt.dense_gemv_triton(h, w)
        return h

    def want():
        h = x * 2
        for w in ws:
            h = dense_gemv_ref(h, w)
        return h

    out = graph_replay(chain)
    assert_close(out, want())
    x.normal_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain()
    for _ in range(3):
        x.normal_()
        graph.replay()
        torch.cuda.synchronize()
        assert_close(out, want())

