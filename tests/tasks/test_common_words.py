"""Common words extraction: seeded lists of real words with the right frequencies that fit
the length within one item, recall scoring, refusals, and a tiny end-to-end run."""

from collections import Counter

import pytest

from sparsebench import registry
from sparsebench.errors import UsageError
from sparsebench.resolve import build_config
from sparsebench.tasks.common_words import CommonWords, CommonWordsConfig, build_prompts, vocabulary
from sparsebench.tasks.longctx import recall


def test_vocabulary_is_real_words_of_the_text(eval_text):
    words = vocabulary(eval_text)
    assert len(words) > 3000 and words == sorted(words)
    assert all(w.isalpha() and w.islower() and 4 <= len(w) <= 10 for w in words)
    assert all(f" {w}" in eval_text for w in words[:: len(words) // 50])


def test_same_seed_same_prompts_other_seed_other_prompts(eval_text, any_tok):
    cfg = CommonWordsConfig(lengths=(1024,), samples=2)
    a = build_prompts(eval_text, any_tok, cfg)
    assert a == build_prompts(eval_text, any_tok, cfg)
    b = build_prompts(eval_text, any_tok, cfg.model_copy(update={"seed": 3}))
    assert all(x.ids != y.ids and x.common != y.common for x, y in zip(a, b, strict=True))


def test_lists_have_the_frequencies_and_fit_the_length(eval_text, any_tok):
    cfg = CommonWordsConfig(lengths=(1024, 4096), samples=2)
    for p in build_prompts(eval_text, any_tok, cfg):
        budget = p.length - cfg.max_new_tokens
        longest_item = max(len(any_tok(f" {w},", add_special_tokens=False)["input_ids"]) for w, _ in p.counts)
        assert budget - longest_item < len(p.ids) <= budget  # short by less than one item
        text = any_tok.decode(list(p.ids))
        listed = text.split("\n\n")[1]
        seen = Counter(w.strip() for w in listed.split(",") if w.strip())
        assert seen == dict(p.counts)
        top = [w for w, _ in seen.most_common(cfg.common)]
        assert set(top) == set(p.common) and all(seen[w] == cfg.common_freq for w in p.common)
        assert max(k for w, k in seen.items() if w not in p.common) <= cfg.rare_freq
        assert text.endswith("The 10 words that appear most often in the list are:")


def test_recall_of_common_words_by_hand():
    common = ["house", "river", "apple", "stone"]
    assert recall(" House, river, apple and STONE.", common, case_sensitive=False) == 1.0
    assert recall(" house, houses, riverbank", common, case_sensitive=False) == 0.25


@pytest.mark.parametrize("config, message", [
    ({"lengths": "[]"}, "at least one context length"),
    ({"rare_freq": 20, "common_freq": 20}, "must be below common_freq"),
    ({"common": 0}, "common"),
])
def test_bad_configs_are_refused(config, message):
    with pytest.raises(UsageError, match=message):
        build_config("task", "cwe", CommonWords, config)


def test_common_words_that_cannot_fit_are_refused(eval_text, any_tok):
    cfg = CommonWordsConfig(lengths=(256,), common=10, common_freq=30)
    with pytest.raises(ValueError, match="common words x 30 take"):
        build_prompts(eval_text, any_tok, cfg)


def test_end_to_end_on_a_tiny_model(make_model, ctx):
    cfg = CommonWordsConfig(lengths=(512,), samples=3, common=3, common_freq=6, max_new_tokens=6, batch_size=3)
    task = registry.tasks().get("cwe")(cfg)
    metrics = task.evaluate(make_model(512), ctx)
    assert set(metrics) == {"cwe_recall", "cwe_recall_L512"}
    assert metrics["cwe_recall"].n == 3 and 0 <= metrics["cwe_recall"].value <= 1
    assert ctx.seen and ctx.seen[0][0] == "cwe"
