"""Passkey retrieval: seeded prompts of exact length with the needle at its depth, config
refusals, and one run through the registered task on a tiny model."""

import pytest

from sparsebench import registry
from sparsebench.api import TaskSpec
from sparsebench.errors import UsageError
from sparsebench.resolve import build_config
from sparsebench.tasks.longctx import SNAP_TOKENS, Haystack
from sparsebench.tasks.passkey import NEEDLE, Passkey, PasskeyConfig, build_prompts


@pytest.fixture(scope="module")
def hay(eval_text, any_tok):
    return Haystack(eval_text, any_tok)


def test_same_seed_same_prompts_other_seed_other_prompts(hay, any_tok):
    cfg = PasskeyConfig(lengths=(1024,), depths=(0.5,), samples=3)
    a, b = build_prompts(hay, any_tok, cfg), build_prompts(hay, any_tok, cfg)
    assert a == b
    c = build_prompts(hay, any_tok, cfg.model_copy(update={"seed": 1}))
    assert all(x.ids != y.ids and x.key != y.key for x, y in zip(a, c, strict=True))
    assert len({p.key for p in a}) == 3 and len({p.ids for p in a}) == 3
    # a cell's prompts do not depend on which other cells are asked for
    wider = build_prompts(hay, any_tok, cfg.model_copy(update={"lengths": (512, 1024), "samples": 4}))
    assert [p for p in wider if p.length == 1024][:3] == a


def test_prompts_have_the_exact_length_and_the_needle_at_its_depth(hay, any_tok):
    cfg = PasskeyConfig(lengths=(512, 2048, 8192), depths=(0.0, 0.25, 0.5, 0.9, 1.0), samples=2)
    prompts = build_prompts(hay, any_tok, cfg)
    assert len(prompts) == 3 * 5 * 2
    for p in prompts:
        assert len(p.ids) == p.length - cfg.max_new_tokens
        assert 5 <= len(p.key) <= 7 and p.key[0] != "0"
        # the needle's tokens sit where the prompt says, and decode to the sentence
        needle = any_tok.decode(list(p.ids[p.needle_start:p.needle_start + p.needle_tokens]))
        assert needle == NEEDLE.format(key=p.key)
        # it starts within SNAP_TOKENS of depth x haystack tokens, counted in the haystack
        offset = p.needle_start - p.haystack_start
        assert abs(offset - p.depth * p.haystack_tokens) <= SNAP_TOKENS
        assert p.haystack_start + p.haystack_tokens + p.needle_tokens < len(p.ids)
    ends = [p for p in prompts if p.depth in (0.0, 1.0)]
    assert all(p.needle_start - p.haystack_start == round(p.depth * p.haystack_tokens) for p in ends)
    text = any_tok.decode(list(prompts[-1].ids))
    assert text.endswith("What is the pass key? The pass key is") and "Kiyo" in any_tok.decode(list(hay.ids))


@pytest.mark.parametrize("config, message", [
    ({"lengths": []}, "at least one context length"),
    ({"lengths": "1024,1024"}, "twice"),
    ({"lengths": [64]}, "between 128"),
    ({"depths": []}, "at least one depth"),
    ({"depths": "0.5,1.5"}, r"in \[0, 1\]"),
    ({"depths": [-0.1]}, r"in \[0, 1\]"),
    ({"min_digits": 8, "max_digits": 6}, "must not exceed"),
    ({"samples": 0}, "samples"),
    ({"depth": 0.5}, "unknown option"),
])
def test_bad_configs_are_refused_with_the_reason(config, message):
    with pytest.raises(UsageError, match=message):
        build_config("task", "passkey", Passkey, config)


def test_cli_strings_become_sorted_tuples_and_round_trip():
    cfg = build_config("task", "passkey", Passkey, {"lengths": "4096,1024", "depths": "0.9 0.1", "samples": "2"})
    assert cfg.lengths == (1024, 4096) and cfg.depths == (0.1, 0.9) and cfg.samples == 2
    assert cfg.to_dict()["version"] == 1
    assert PasskeyConfig.from_dict(cfg.to_dict()) == cfg
    assert TaskSpec(name="passkey", config=cfg.to_dict())  # what the resolved spec stores


def test_context_longer_than_the_model_is_refused(make_model, ctx):
    task = registry.tasks().get("passkey")(PasskeyConfig(lengths=(256, 1024), samples=1))
    model = make_model(512)
    with pytest.raises(ValueError, match="1024 tokens.*at most 512 positions"):
        task.check_model(model)
    with pytest.raises(ValueError, match="at most 512 positions"):
        task.evaluate(model, ctx)
    assert ctx.seen == []  # refused before any prompt ran


def test_end_to_end_on_a_tiny_model(make_model, ctx):
    cfg = PasskeyConfig(lengths=(256, 512), depths=(0.2, 0.8), samples=2, batch_size=2, max_new_tokens=4)
    task = registry.tasks().get("passkey")(cfg)
    metrics = task.evaluate(make_model(512), ctx)
    assert set(metrics) == {"passkey_accuracy", "passkey_accuracy_L256_D20", "passkey_accuracy_L256_D80",
                            "passkey_accuracy_L512_D20", "passkey_accuracy_L512_D80"}
    assert metrics["passkey_accuracy"].n == 8 and metrics["passkey_accuracy_L512_D80"].n == 2
    assert all(0.0 <= m.value <= 1.0 and m.direction == "higher" for m in metrics.values())
    assert ctx.seen == [("passkey", 4)]  # one progress bar, equal-length prompts batched in twos
