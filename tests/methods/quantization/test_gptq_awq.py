"""GPTQ's error feedback and AWQ's scaling on small exact cases."""

import pytest
import torch

from sparsebench.methods.quantization.awq import fake_quant, search_scale
from sparsebench.methods.quantization.gptq import gptq_quantize
from sparsebench.methods.quantization.grid import Grid, dequantize, quantize_rtn


def _out_err(x, w, q, s, o, group):
    return float((x @ w.t() - x @ dequantize(q, s, o, group).t()).pow(2).sum())


def test_gptq_with_identity_hessian_is_rtn():
    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    grid = Grid(4, 16, False)
    q, s, o = gptq_quantize(w, 2 * torch.eye(32), grid, damp=0.0, block_size=8)
    q_rtn, s_rtn, o_rtn = quantize_rtn(w, grid)
    assert torch.equal(q, q_rtn) and torch.allclose(s, s_rtn) and torch.allclose(o, o_rtn)


def test_gptq_feeds_the_rounding_error_forward_by_hand():
    # 2-bit per-channel grid fitted on [0.4, 0.4, 0, 3]: levels 0, 1, 2, 3 (scale 1, offset 0).
    # H couples columns 0 and 1: fixing w0 = 0.4 to 0 moves w1 by (w0 - q0) * H01 / H11 = +0.2,
    # so w1 = 0.6 rounds to 1, where plain rounding of 0.4 gives 0.
    w = torch.tensor([[0.4, 0.4, 0.0, 3.0]])
    h = torch.tensor([[2.0, 1.0, 0, 0], [1.0, 2.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 2.0]])
    q, s, o = gptq_quantize(w, h, Grid(2, 0, False), damp=0.0)
    assert s.tolist() == [[1.0]] and o.tolist() == [[0.0]]
    assert q.tolist() == [[0, 1, 0, 3]]
    assert quantize_rtn(w, Grid(2, 0, False))[0].tolist() == [[0, 0, 0, 3]]


def test_gptq_beats_rtn_on_correlated_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(512, 64, generator=g) @ torch.randn(64, 64, generator=g)  # correlated columns
    w = torch.randn(16, 64, generator=g)
    grid = Grid(3, 32, False)
    h = 2 * x.t() @ x / x.shape[0]
    gptq = _out_err(x, w, *gptq_quantize(w, h, grid, damp=0.01, block_size=16), 32)
    rtn = _out_err(x, w, *quantize_rtn(w, grid), 32)
    assert gptq < 0.7 * rtn
    act = _out_err(x, w, *gptq_quantize(w, h, grid, damp=0.01, act_order=True), 32)
    assert act < rtn


def test_awq_scale_protects_the_channel_with_large_activations():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(256, 64, generator=g)
    x[:, 5] *= 50.0  # one salient input channel
    w = torch.randn(32, 64, generator=g)
    grid = Grid(3, 64, False)
    s, alpha = search_scale(x, [w], grid, n_grid=20)
    assert alpha > 0
    scaled = float(((x / s) @ fake_quant(w * s, grid).t() - x @ w.t()).pow(2).mean())
    plain = float((x @ fake_quant(w, grid).t() - x @ w.t()).pow(2).mean())
    assert scaled < plain
    # alpha = 0 is tried: the search can never be worse than plain RTN
    assert scaled <= plain + 1e-9


def test_awq_folding_keeps_the_full_precision_block_exact():
    from sparsebench.methods.quantization.awq import divide_producer

    norm = torch.nn.RMSNorm(8)
    norm.weight.data = torch.rand(8) + 0.5
    lin = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(5, 8)
    before = lin(norm(x))
    s = torch.rand(8) + 0.5
    divide_producer(norm, s)
    lin.weight.data *= s
    assert torch.allclose(lin(norm(x)), before, atol=1e-6)
    up = torch.nn.Linear(3, 8)
    down = torch.nn.Linear(8, 2, bias=False)
    h = torch.randn(4, 3)
    before = down(up(h))
    divide_producer(up, s)
    down.weight.data *= s
    assert torch.allclose(down(up(h)), before, atol=1e-5)


@pytest.mark.parametrize("group,groups", [(16, 3), (0, 1), (32, 2)])  # 32: a short last group (48 = 32 + 16)
def test_gptq_groups_straddling_blocks_and_short_last_group(group, groups):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(128, 48, generator=g)
    w = torch.randn(4, 48, generator=g)
    h = 2 * x.t() @ x / 128
    grid = Grid(4, group, False)
    q, s, o = gptq_quantize(w, h, grid, block_size=20)
    assert q.max() <= 15 and s.shape == (4, groups)
    size = grid.group_of(48)
    assert _out_err(x, w, q, s, o, size) < _out_err(x, w, *quantize_rtn(w, grid), size)
