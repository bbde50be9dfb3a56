"""The MInference stage benchmark: its strided cross-check of the diagonal sums, its
argument errors, and its CPU dry run over every stage."""

import pytest
import torch

from sparsebench.methods.sparse_attention import patterns as P

from .loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("minference_stages")


@pytest.mark.parametrize("m,n", [(1, 1), (3, 3), (4, 29), (64, 200)])
def test_strided_diagonal_sums_equal_the_methods_scatter(bench, m, n):
    g = torch.Generator().manual_seed(m * n)
    q_pos = torch.arange(n - m, n)
    probs = torch.rand(2, 3, m, n, generator=g) * (torch.arange(n)[None, :] <= q_pos[:, None])
    _, diag = P.line_scores(probs, q_pos)
    torch.testing.assert_close(bench.tail_diagonal_sums(probs), diag)


@pytest.mark.parametrize("argv", [["--density", "0"], ["--density", "1.5"], ["--last-q", "0"]])
def test_bad_arguments_exit_2(bench, argv, capsys):
    assert bench.main(["--device", "cpu", *argv]) == 2
    assert "density must be in (0, 1]" in capsys.readouterr().err


def test_cpu_dry_run_times_every_stage(bench, capsys):
    assert bench.main(["--device", "cpu", "--lengths", "96"]) == 0
    out = capsys.readouterr().out
    for stage in ("sdpa", "scores", "line_scores", "select_lines", "block_mask", "kernel[vertical_slash]",
                  "pooled_mask[block_sparse]", "kernel[block_sparse]"):
        assert f" {stage} " in out
    assert "vertical-slash block density" in out
