"""The shared block-by-block statistics on hand-checkable inputs."""

import torch

from sparsebench.methods.layerwise import InputStats


def test_input_stats_accumulate_norms_abs_and_hessian():
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])  # 2 tokens, 2 input columns
    s = InputStats.empty(2, "cpu", hessian=True)
    s.add(x[:1])
    s.add(x[1:].unsqueeze(0))  # batched shape [1, 1, 2] is flattened to tokens
    assert s.tokens == 2
    assert torch.allclose(s.sq_sum, torch.tensor([10.0, 4.25]))
    assert torch.allclose(s.mean_abs, torch.tensor([2.0, 1.25]))
    # X^T X = [[1+9, -2+1.5], [-2+1.5, 4+0.25]], Hessian = 2 X^T X / tokens
    assert torch.allclose(s.hessian(), torch.tensor([[10.0, -0.5], [-0.5, 4.25]]))
    assert torch.allclose(s.l2, torch.tensor([10.0, 4.25]).sqrt())
