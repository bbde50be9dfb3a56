"""Variable tracking: seeded chains hidden in order in prompts of exact length, recall
scoring, config refusals, and one run through the registered task on a tiny model."""

import re

import pytest

from sparsebench import registry
from sparsebench.errors import UsageError
from sparsebench.resolve import build_config
from sparsebench.tasks.longctx import Haystack, recall
from sparsebench.tasks.variable_tracking import (
    VariableTracking,
    VariableTrackingConfig,
    build_prompts,
)


@pytest.fixture(scope="module")
def hay(eval_text, any_tok):
    return Haystack(eval_text, any_tok)


def test_same_seed_same_prompts_other_seed_other_prompts(hay, any_tok):
    cfg = VariableTrackingConfig(lengths=(1024,), samples=2, chains=2)
    a = build_prompts(hay, any_tok, cfg)
    assert a == build_prompts(hay, any_tok, cfg)
    b = build_prompts(hay, any_tok, cfg.model_copy(update={"seed": 7}))
    assert all(x.ids != y.ids and x.expected != y.expected for x, y in zip(a, b, strict=True))


def test_chains_are_hidden_in_order_in_prompts_of_exact_length(hay, any_tok):
    cfg = VariableTrackingConfig(lengths=(512, 4096), samples=3, chains=3, hops=4)
    for p in build_prompts(hay, any_tok, cfg):
        assert len(p.ids) == p.length - cfg.max_new_tokens
        text = any_tok.decode(list(p.ids))
        statements = re.findall(r"VAR ([A-Z]+) = (VAR ([A-Z]+)|\d+)\.", text)
        assert len(statements) == 3 * 5 == len(p.statement_starts)
        assert list(p.statement_starts) == sorted(p.statement_starts)
        for chain in p.chains:  # each chain's assignments appear in order, each one hop on
            mine = [s for s in statements if s[0] in chain]
            assert [s[0] for s in mine] == list(chain)
            assert [s[2] for s in mine[1:]] == list(chain[:-1])
        first = next(s for s in statements if s[0] == p.expected[0])
        assert first[1] == p.value and p.expected == p.chains[0] and len(set(sum(p.chains, ()))) == 15
        assert text.endswith(f"The 5 variables that hold the value {p.value} are:")


def test_recall_of_a_chain_by_hand():
    chain = ("QKZTP", "MLRTA", "XXBCD", "PQRST", "ABCDE")
    assert recall(" QKZTP, MLRTA, XXBCD, PQRST, ABCDE", chain) == 1.0
    assert recall(" QKZTP, MLRTA, and ZZZZZ", chain) == 0.4


@pytest.mark.parametrize("config, message", [
    ({"lengths": []}, "at least one context length"),
    ({"chains": 0}, "chains"),
    ({"hops": 0}, "hops"),
    ({"chain": 1}, "unknown option"),
])
def test_bad_configs_are_refused(config, message):
    with pytest.raises(UsageError, match=message):
        build_config("task", "vt", VariableTracking, config)


def test_too_short_a_length_is_refused(hay, any_tok):
    cfg = VariableTrackingConfig(lengths=(128,), hops=20)
    with pytest.raises(ValueError, match="leaves .* tokens of haystack"):
        build_prompts(hay, any_tok, cfg)


def test_end_to_end_on_a_tiny_model(make_model, ctx):
    cfg = VariableTrackingConfig(lengths=(384, 512), samples=2, hops=2, max_new_tokens=6)
    task = registry.tasks().get("vt")(cfg)
    with pytest.raises(ValueError, match="at most 256 positions"):
        task.evaluate(make_model(256), ctx)
    metrics = task.evaluate(make_model(512), ctx)
    assert set(metrics) == {"vt_recall", "vt_recall_L384", "vt_recall_L512"}
    assert metrics["vt_recall"].n == 4 and all(0 <= m.value <= 1 for m in metrics.values())
    assert ctx.seen == [("vt", 4)]
