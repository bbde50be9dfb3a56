"""DSnoT: swaps lower the reconstruction error and keep the sparsity (and N:M) exact."""

import pytest
import torch

from sparsebench.api import ApplyContext
from sparsebench.methods.pruning.dsnot import DSnoT, DSnoTConfig, dsnot_refine, expected_row_error
from sparsebench.methods.pruning.masks import mask_from_score

from .test_wanda import _batches, _tiny_llama


def test_one_swap_by_hand():
    """Row w = [1, 1, -1, 3], inputs with means (1, 1, 1, 0) and no variance; 2 of 4 pruned.

    Wanda-like start keeps columns {0, 3}: the pruned 1 and -1 cancel in the mean, error 0,
    nothing to do. Start instead from keeping {2, 3}: pruned {0, 1} leave a mean error of 2.
    Growing column 0 (or 1) halves it; pruning column 2 (-1) then cancels it exactly.
    """
    w = torch.tensor([[1.0, 1.0, -1.0, 3.0]])
    mean = torch.tensor([1.0, 1.0, 1.0, 0.0])
    var = torch.zeros(4)
    keep = torch.tensor([[False, False, True, True]])
    assert expected_row_error(w, keep, mean, var).item() == 4.0
    new, swaps = dsnot_refine(w, keep, mean, var)
    assert swaps == 1
    assert new.tolist() == [[True, False, False, True]]
    assert expected_row_error(w, new, mean, var).item() == 0.0
    # already optimal: no swap
    assert dsnot_refine(w, new, mean, var)[1] == 0


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
def test_swaps_reduce_the_real_error_and_keep_sparsity(pattern):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 64, generator=g)
    mean = torch.randn(64, generator=g)
    std = torch.rand(64, generator=g) * 2
    x = mean + std * torch.randn(4096, 64, generator=g)  # independent inputs with nonzero means
    keep = mask_from_score(w.abs() * x.pow(2).sum(0).sqrt(), 0.5, pattern)  # the Wanda mask
    new, swaps = dsnot_refine(w, keep, x.mean(0), x.var(0, unbiased=False), pattern)
    assert swaps > 0

    def error(k):
        return ((w * ~k) @ x.T).pow(2).sum().item()

    assert error(new) < 0.9 * error(keep)
    assert torch.equal(new.sum(1), keep.sum(1))  # every row keeps its count
    if pattern != "unstructured":
        n, m = map(int, pattern.split(":"))
        assert (new.reshape(32, -1, m).sum(-1) == n).all()


def test_max_cycles_and_threshold_stop_the_swaps():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 32, generator=g)
    mean, var = torch.randn(32, generator=g), torch.rand(32, generator=g)
    keep = mask_from_score(w.abs(), 0.5, "unstructured")
    assert dsnot_refine(w, keep, mean, var, max_cycles=0)[1] == 0
    assert dsnot_refine(w, keep, mean, var, max_cycles=1)[1] <= 8
    assert dsnot_refine(w, keep, mean, var, update_threshold=1.0)[1] == 0  # no swap removes all error


@pytest.mark.parametrize("config", [{}, {"pattern": "2:4"}, {"init": "magnitude", "pattern": "4:8"},
                                    {"layer_sparsity": {"mlp.*": 0.75, "layers.0.*": 0.25}}])
def test_dsnot_on_a_tiny_llama(config):
    from sparsebench.measure.sparsity import decoder_linears

    model = _tiny_llama()
    DSnoT(DSnoTConfig.from_dict(config)).apply_(model, ApplyContext(calibration=_batches()))
    for name, lin in decoder_linears(model).items():
        expected = 0.5
        if "layer_sparsity" in config:
            expected = 0.25 if name.startswith("layers.0.") else 0.75 if ".mlp." in name else 0.5
        assert (lin.weight == 0).float().mean().item() == pytest.approx(expected), name
