"""2:4: the reference format on CPU; the cuSPARSELt path against the reference on a GPU."""

import pytest
import torch
from torch import nn

from sparsebench.kernels.semi_structured import (
    SemiStructuredLinear,
    SemiStructuredUnsupported,
    linear,
    ref,
)
from sparsebench.kernels.tolerances import assert_close

from .graphs import graph_replay

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def two_four(n, k, dtype=torch.float32, seed=0, extra_zeros=0.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    score = torch.rand(n, k // 4, 4, generator=g)
    drop = torch.sort(score, dim=-1).indices[..., :2]
    mask = torch.ones(n, k // 4, 4, dtype=torch.bool).scatter_(-1, drop, False).reshape(n, k)
    w = w * mask
    if extra_zeros:
        w[torch.rand(n, k, generator=g) < extra_zeros] = 0
    return w.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("extra_zeros", [0.0, 0.5, 1.0])
def test_compress_round_trip(dtype, extra_zeros):
    w = two_four(6, 20, dtype, extra_zeros=extra_zeros)
    values, index = ref.compress(w)
    assert values.shape == (6, 10) and index.shape == (6, 5) and index.dtype == torch.uint8
    assert torch.equal(ref.decompress(values, index), w)


def test_kept_values_are_in_column_order():
    w = torch.tensor([[0.0, 3.0, 0.0, 5.0, 7.0, 0.0, 0.0, 0.0]])
    values, index = ref.compress(w)
    assert values.tolist() == [[3.0, 5.0, 7.0, 0.0]]
    assert index.tolist() == [[1 | 3 << 2, 0 | 1 << 2]]


def test_not_two_four_is_reported_with_its_place():
    w = two_four(4, 8)
    assert ref.is_2to4(w)
    w[2, 4:8] = 1.0
    assert not ref.is_2to4(w)
    with pytest.raises(ValueError, match="row 2, columns 4..7"):
        ref.check_2to4(w)
    with pytest.raises(ValueError, match="multiple of 4"):
        ref.check_2to4(torch.zeros(2, 6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_reference_is_the_dense_product(dtype):
    w = two_four(12, 16, dtype)
    x = torch.randn(3, 5, 16).to(dtype)
    b = torch.randn(12).to(dtype)
    assert_close(linear(x, w, b, impl="ref"), (x.double() @ w.double().t() + b.double()).to(dtype))


def test_cpu_refuses_cusparselt():
    with pytest.raises(RuntimeError, match="CUDA"):
        linear(torch.zeros(2, 16), two_four(16, 16), impl="cusparselt")


def test_module_refuses_cpu_weights_with_a_reason():
    with pytest.raises(SemiStructuredUnsupported, match="CUDA"):
        SemiStructuredLinear.from_linear(nn.Linear(16, 16))


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 5, 64, 200])
def test_cusparselt_matches_reference(dtype, m):
    from sparsebench.kernels.semi_structured import cusparselt

    w = two_four(96, 160, dtype, extra_zeros=0.1).cuda()
    x = torch.randn(m, 160, device="cuda").to(dtype)
    want = linear(x, w, impl="ref")
    packed = cusparselt.compress(w)
    for cfg in (cusparselt.DEFAULT, cusparselt.TORCH_DEFAULT, cusparselt.CsltConfig(False, True, 0),
                cusparselt.CsltConfig(False, False, 0)):
        assert_close(cusparselt.matmul(x, packed, cfg), want)
    best = cusparselt.tune(packed, 96, 160, m, dtype)
    assert_close(cusparselt.matmul(x, packed, best), want)


@pytest.mark.gpu
@GPU
def test_module_matches_reference_and_captures_in_a_graph():
    lin = nn.Linear(160, 96, bias=True).cuda().to(torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(two_four(96, 160, torch.bfloat16).cuda())
    mod = SemiStructuredLinear.from_linear(lin)
    assert mod.weight_zero_count() == (96 * 80, 96 * 160)
    x = torch.randn(2, 7, 160, device="cuda", dtype=torch.bfloat16)
    want = linear(x, lin.weight, lin.bias, impl="ref")
    assert_close(mod(x), want)
    assert_close(graph_replay(lambda: mod(x)), want)


@pytest.mark.gpu
@GPU
def test_module_refuses_shapes_and_patterns_it_cannot_hold():
    lin = nn.Linear(20, 32).cuda().to(torch.bfloat16)  # 20 is not a multiple of 16
    with pytest.raises(SemiStructuredUnsupported, match="multiples of 16"):
        SemiStructuredLinear.from_linear(lin)
    with pytest.raises(SemiStructuredUnsupported, match="not 2:4"):
        SemiStructuredLinear.from_linear(nn.Linear(32, 32).cuda().to(torch.bfloat16))
