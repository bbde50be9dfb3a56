"""SparseGPT on hand-checkable layers: its update is the least-squares reconstruction."""

import pytest
import torch

from sparsebench.api import ApplyContext
from sparsebench.methods.pruning.masks import mask_from_score
from sparsebench.methods.pruning.sparsegpt import SparseGPT, SparseGPTConfig, sparsegpt_prune

from .test_wanda import _batches, _tiny_llama


def _hessian(x):
    return 2 * x.T @ x / x.shape[0]


def test_one_weight_by_hand():
    """w = [1, 2]; inputs x0 = (1, 1, 0), x1 = (1, 0, 1) over three tokens.

    H^-1 = [[1, -.5], [-.5, 1]], so U = [[1, -.5], [0, sqrt(.75)]]: saliencies w^2/U_jj^2 are
    1 and 16/3, so w0 goes. The best w1' minimises sum_t (x0 + 2 x1 - w1' x1)^2, i.e.
    w1' = 2 + (x0.x1)/(x1.x1) = 2.5, and SparseGPT's step gives 2 - (1/1) * (-.5) = 2.5.
    """
    x = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([[1.0, 2.0]])
    out = sparsegpt_prune(w, _hessian(x), 0.5, comparison="row", damp=0.0)
    assert out[0].tolist() == pytest.approx([0.0, 2.5])


def test_update_equals_least_squares_when_the_first_column_goes():
    """One weight pruned per row, in column 0: every other weight is free, and the result must
    be the exact least-squares fit of the dense outputs by the remaining inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g) + torch.tensor([0.5, 0.0, -1.0, 0.3])
    w = torch.tensor([[0.01, 1.0, -2.0, 0.5],
                      [-0.02, 0.7, 0.3, -1.5],
                      [0.03, -1.1, 0.9, 2.0]])
    out = sparsegpt_prune(w, _hessian(x), 0.25, comparison="row", damp=0.0)
    assert (out[:, 0] == 0).all() and (out[:, 1:] != 0).all()
    target = x @ w.T  # dense outputs, [tokens, rows]
    expected = torch.linalg.lstsq(x[:, 1:].double(), target.double()).solution.T
    assert torch.allclose(out[:, 1:].double(), expected, atol=1e-4)


def test_lazy_block_updates_equal_column_by_column():
    """For N:M the mask choice does not depend on the block size, so the lazy (blocked) update
    must give what updating every column at once gives (blocksize = M)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 32, generator=g) @ torch.randn(32, 32, generator=g)
    w = torch.randn(8, 32, generator=g)
    a = sparsegpt_prune(w, _hessian(x), 0.5, "2:4", blocksize=16)
    b = sparsegpt_prune(w, _hessian(x), 0.5, "2:4", blocksize=4)
    assert torch.equal(a == 0, b == 0)
    assert torch.allclose(a, b, atol=1e-4)


def _layer_error(w, out, x):
    return ((w - out) @ x.T).norm().item()


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
def test_reconstruction_beats_wanda_and_magnitude(pattern):
    g = torch.Generator().manual_seed(2)
    mix = torch.randn(64, 64, generator=g) * 0.3 + torch.eye(64)
    x = (torch.randn(1024, 64, generator=g) * torch.linspace(0.2, 3, 64)) @ mix  # correlated inputs
    w = torch.randn(32, 64, generator=g)
    out = sparsegpt_prune(w, _hessian(x), 0.5, pattern)
    assert (out == 0).float().mean().item() == 0.5
    if pattern != "unstructured":
        m = int(pattern.split(":")[1])
        assert ((out != 0).reshape(32, -1, m).sum(-1) == m // 2).all()
    l2 = x.pow(2).sum(0).sqrt()
    wanda = w * mask_from_score(w.abs() * l2, 0.5, pattern)
    magnitude = w * mask_from_score(w.abs(), 0.5, pattern)
    err = _layer_error(w, out, x)
    assert err < 0.9 * _layer_error(w, wanda, x)
    assert err < 0.9 * _layer_error(w, magnitude, x)


def test_dead_inputs_are_pruned_first_and_give_no_nan():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 8, generator=g)
    x[:, 2] = 0.0  # an input that never fires
    w = torch.randn(4, 8, generator=g)
    out = sparsegpt_prune(w, _hessian(x), 0.25, comparison="row")
    assert torch.isfinite(out).all()
    assert (out[:, 2] == 0).all()
    assert ((out == 0).sum(1) == 2).all()


def test_row_and_layer_comparison():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 16, generator=g)
    w = torch.randn(6, 16, generator=g) * torch.tensor([[0.1], [0.1], [1], [1], [5], [5]])
    row = sparsegpt_prune(w, _hessian(x), 0.5, comparison="row")
    layer = sparsegpt_prune(w, _hessian(x), 0.5, comparison="layer")
    assert ((row == 0).sum(1) == 8).all()
    assert (layer == 0).sum().item() == 48
    assert (layer[:2] == 0).sum() > (layer[4:] == 0).sum()  # small rows lose more


def test_config_refuses_blocks_that_split_groups():
    with pytest.raises(ValueError, match="multiple of M=8"):
        SparseGPTConfig.from_dict({"pattern": "4:8", "blocksize": 12})
    with pytest.raises(ValueError, match="conflicts with pattern 2:4"):
        SparseGPTConfig.from_dict({"pattern": "2:4", "sparsity": 0.99})
    assert SparseGPTConfig().to_dict() == {"sparsity": 0.5, "pattern": "unstructured", "comparison": "layer",
                                           "blocksize": 128, "damp": 0.01, "version": 1}


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
def test_sparsegpt_on_a_tiny_llama(pattern):
    from sparsebench.measure.sparsity import weight_sparsity

    model = _tiny_llama()
    cfg = SparseGPTConfig.from_dict({"pattern": pattern})
    result = SparseGPT(cfg).apply_(model, ApplyContext(calibration=_batches()))
    sp, _, _ = weight_sparsity(model)
    assert sp == pytest.approx(0.5)
    assert result.metrics["pruned_linear_layers"].value == 14
    with torch.inference_mode():
        assert torch.isfinite(model(_batches()[0]).logits).all()
