"""The KV decode benchmark's attention paths against the fp32 definition, and its CPU dry run."""

import json

import pytest
import torch

from .loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("kv_decode")


def test_held_tokens_round_up_and_full_is_the_context(bench):
    assert bench.held_tokens(1000, 1.0) == 1000
    assert bench.held_tokens(1000, 0.125) == 125
    assert bench.held_tokens(1001, 0.125) == 126
    assert bench.held_tokens(10, 0.01) == 1


def test_voting_attention_is_attention_and_its_votes_are_probabilities(bench):
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 6, 1, 8, generator=g), torch.randn(1, 2, 37, 8, generator=g), torch.randn(1, 2, 37, 8, generator=g)
    ref = bench.reference(q, k, v)
    torch.testing.assert_close(bench.method_decode(q, k, v).float(), ref, atol=1e-5, rtol=1e-5)
    votes = torch.zeros(1, 2, 37)
    torch.testing.assert_close(bench.voting_decode(q, k, v, votes).float(), ref, atol=1e-5, rtol=1e-5)
    # each of the 3 query heads of a KV head spreads probability 1 over the keys
    torch.testing.assert_close(votes.sum(-1), torch.full((1, 2), 3.0))
    # one key made dominant for every query: it collects (almost) all the votes
    k[:, :, 5] = q[:, ::3, 0] * 50
    votes.zero_()
    bench.voting_decode(q, k, v, votes)
    assert votes.argmax(-1).tolist() == [[5, 5]]


def test_dry_run_writes_a_record_with_every_case(bench, tmp_path, capsys):
    rc = bench.main(["--device", "cpu", "--contexts", "64", "--budgets", "1", "0.25", "--reps", "2",
                     "--results", str(tmp_path)])
    assert rc == 0
    (f,) = (tmp_path / "kernels").glob("*-kv_decode-*.json")
    rec = json.loads(f.read_text())
    assert {(c["impl"], c["params"]["held"]) for c in rec["cases"]} == {
        ("attention", 64), ("attention+votes", 64), ("attention", 16), ("attention+votes", 16)}
    assert {r["impl"] for r in rec["ratios"]} == {"attention", "attention+votes"}
    assert "dry run" in " ".join(rec["notes"])


def test_bad_budgets_are_refused(bench, tmp_path, capsys):
    assert bench.main(["--device", "cpu", "--budgets", "0", "--results", str(tmp_path)]) == 2
    assert "budgets must be fractions in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "kernels").exists()
