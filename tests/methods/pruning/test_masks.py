"""Masks on hand-checkable score matrices."""

import pytest
import torch

from sparsebench.methods.pruning.config import PruningConfig
from sparsebench.methods.pruning.masks import (
    mask_from_score,
    nm_mask,
    parse_pattern,
    unstructured_mask,
)


def test_row_mask_prunes_lowest_per_row():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0],
                          [0.5, 8.0, 7.0, 9.0]])
    mask = unstructured_mask(score, 0.5, "row")
    assert mask.tolist() == [[True, False, True, False],
                             [False, True, False, True]]


def test_layer_mask_prunes_lowest_globally():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0],
                          [0.5, 8.0, 7.0, 9.0]])
    mask = unstructured_mask(score, 0.5, "layer")
    # the four smallest overall are 0.5, 1, 2, 3
    assert mask.tolist() == [[True, False, False, False],
                             [False, True, True, True]]


def test_row_mask_rounds_down_and_zero_sparsity_keeps_all():
    score = torch.arange(10.0).reshape(2, 5)
    assert unstructured_mask(score, 0.5, "row").sum().item() == 2 * (5 - 2)
    assert unstructured_mask(score, 0.0, "row").all()


def test_nm_2_4_exact():
    score = torch.tensor([[1.0, 5.0, 3.0, 2.0, 9.0, 8.0, 0.0, 7.0]])
    mask = nm_mask(score, 2, 4)
    assert mask.tolist() == [[False, True, True, False, True, True, False, False]]


def test_nm_4_8_keeps_four_per_group():
    torch.manual_seed(0)
    score = torch.rand(16, 64)
    mask = nm_mask(score, 4, 8)
    assert (mask.view(16, 8, 8).sum(-1) == 4).all()
    # the kept ones are the largest of each group
    g = score.view(16, 8, 8)
    kept_min = torch.where(mask.view(16, 8, 8), g, torch.inf).min(-1).values
    dropped_max = torch.where(~mask.view(16, 8, 8), g, -torch.inf).max(-1).values
    assert (kept_min >= dropped_max).all()


def test_nm_refuses_width_not_multiple_of_m():
    with pytest.raises(ValueError, match="multiple of 4"):
        nm_mask(torch.rand(2, 6), 2, 4)


@pytest.mark.parametrize("bad", ["4:4", "5:4", "0:4", "2-4", "half", "2:"])
def test_bad_patterns(bad):
    with pytest.raises(ValueError):
        parse_pattern(bad)


def test_mask_from_score_dispatch():
    score = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert mask_from_score(score, 0.25, "unstructured").tolist() == [[False, True, True, True]]
    assert mask_from_score(score, 0.5, "2:4").tolist() == [[False, False, True, True]]


def test_config_implied_sparsity_and_errors():
    assert PruningConfig(pattern="2:4").sparsity == 0.5
    assert PruningConfig(pattern="1:4").sparsity == 0.75
    assert PruningConfig.from_dict(PruningConfig(sparsity=0.6).to_dict()) == PruningConfig(sparsity=0.6)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PruningConfig(sparsity=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        PruningConfig(sparsity=-0.1)
    with pytest.raises(ValueError, match="conflicts"):
        PruningConfig(sparsity=0.99, pattern="2:4")
    with pytest.raises(ValueError, match="N < M"):
        PruningConfig(pattern="4:4")
    with pytest.raises(ValueError):
        PruningConfig(sparsity=0.5, typo=1)
