"""The shared pieces of the long-context tasks: list options, insertion between words,
hand-checkable scoring, the context check and greedy generation."""

import random

import pytest

from sparsebench.tasks.longctx import (
    Haystack,
    accuracy_metric,
    assemble,
    by_length,
    check_context,
    depth_label,
    greedy_generate,
    mean_metric,
    parse_list,
    recall,
    snap,
)
from sparsebench.tasks.passkey import passkey_correct


@pytest.mark.parametrize("raw, parsed", [
    ("1024,2048", ["1024", "2048"]), ("1024 2048", ["1024", "2048"]), ("[1024, 2048]", [1024, 2048]),
    (4096, [4096]), ([1, 2], [1, 2]), ("0.1, 0.5", ["0.1", "0.5"]),
])
def test_parse_list_accepts_cli_strings(raw, parsed):
    assert parse_list(raw) == parsed


def test_depth_labels_have_no_dots():
    assert [depth_label(d) for d in (0.0, 0.1, 0.5, 1.0, 0.125)] == ["D0", "D10", "D50", "D100", "D12p5"]


@pytest.mark.parametrize("answer, key, ok", [
    (" 482913.", "482913", True),
    ("482913", "482913", True),
    (" is 482913, I think", "482913", True),
    (" 4829130", "482913", False),   # a longer number is not the key
    (" 48291", "482913", False),     # nor a prefix of it
    (" 12 then 482913", "482913", False),  # the first number counts
    (" I do not know", "482913", False),
    ("", "482913", False),
])
def test_passkey_exact_match(answer, key, ok):
    assert passkey_correct(answer, key) is ok


def test_recall_by_hand():
    names = ["QKZTP", "MLRTA", "XXBCD", "PQRST"]
    assert recall(" QKZTP, MLRTA, XXBCD, PQRST", names) == 1.0
    assert recall(" QKZTP and MLRTA.", names) == 0.5
    assert recall(" QKZTPX, AMLRTA", names) == 0.0  # whole words only
    assert recall(" qkztp", names) == 0.0  # case-sensitive by default
    assert recall(" Apple, house", ["apple", "house", "river"], case_sensitive=False) == pytest.approx(2 / 3)
    assert recall(" apple apple apple", ["apple", "house"]) == 0.5  # repeats count once
    with pytest.raises(ValueError):
        recall("x", [])


def test_metrics_by_hand():
    m = accuracy_metric([True, False, True, True])
    assert m.value == 0.75 and m.stderr == pytest.approx((0.75 * 0.25 / 4) ** 0.5)
    assert m.direction == "higher" and m.n == 4
    r = mean_metric([1.0, 0.5, 0.0])
    assert r.value == 0.5 and r.stderr == pytest.approx(0.5 / 3**0.5) and r.direction == "higher"


def test_snap_goes_to_the_nearest_word_start():
    starts = [True, False, False, True, False, False, False, False, True]
    assert snap(starts, 0) == 0 and snap(starts, 9) == 9  # both ends are always valid
    assert snap(starts, 4) == 3
    assert snap(starts, 2) == 3
    assert snap(starts, 6) == 8  # 8 is 2 away, 3 is 3 away
    assert snap(starts, 5) == 3  # a tie goes to the earlier point
    assert snap([False] * 100, 50, radius=4) == 50  # nothing within reach: the target


def test_assemble_places_pieces_and_reports_where():
    ids, where = assemble([1, 2], [10, 11, 12, 13], [(0, [7]), (2, [8, 8]), (2, [9]), (4, [6])], [3])
    assert ids == [1, 2, 7, 10, 11, 8, 8, 9, 12, 13, 6, 3]
    assert where == [2, 5, 7, 10]
    with pytest.raises(ValueError):
        assemble([], [1, 2], [(2, [5]), (1, [6])], [])


def test_haystack_slices_start_at_a_word_and_wrap(eval_text, tiny_tok):
    hay = Haystack(eval_text, tiny_tok)
    ids, starts = hay.take(random.Random(1), 50)
    assert len(ids) == 50 and starts[0] and tiny_tok.decode(ids[:1])[0].isspace()
    long_ids, _ = hay.take(random.Random(1), len(hay.ids) + 100)  # longer than the text
    assert len(long_ids) == len(hay.ids) + 100


def test_by_length_batches_never_mix_lengths():
    items = [[0] * n for n in (5, 5, 6, 5, 6, 5)]
    batches = by_length(items, 3, key=len)
    assert sorted(len(b) for b in batches) == [1, 2, 3]
    assert all(len({len(x) for x in b}) == 1 for b in batches)


def test_context_check_names_the_limit_and_the_fix(make_model):
    model = make_model(512)
    check_context("passkey", "lengths", 512, model)  # fits exactly
    with pytest.raises(ValueError, match=r"1024 tokens.*at most 512 positions.*--passkey-lengths 512"):
        check_context("passkey", "lengths", 1024, model)
    check_context("passkey", "lengths", 10**6, object())  # unknown limit: nothing to check


def test_greedy_generate_matches_transformers_greedy(make_model):
    import torch

    model = make_model(256)
    rows = [[5, 9, 17, 33, 2, 8], [40, 41, 42, 43, 44, 45]]
    ours = greedy_generate(model, rows, 6, "cpu")
    ref = model.generate(torch.tensor(rows), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                         eos_token_id=None, pad_token_id=0)[:, 6:].tolist()
    assert ours == ref
    with pytest.raises(ValueError, match="one length"):
        greedy_generate(model, [[1, 2], [1, 2, 3]], 2, "cpu")
