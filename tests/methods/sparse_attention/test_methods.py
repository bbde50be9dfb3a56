"""The four methods on a tiny random Llama: exact when the pattern covers everything, greedy
generation through the long-context tasks' loop, and the densities ``report`` gives."""


import pytest
import torch

from sparsebench import registry
from sparsebench.api import ApplyContext, kv_cache_arg
from sparsebench.methods.sparse_attention.attention import NAME
from sparsebench.tasks.longctx import greedy_generate

from .helpers import ids, tiny_llama

CALIB = [ids(2, 48, 1), ids(2, 48, 2)]
SMALL_MINF = dict(min_length=16, block_size=8, last_q=8)


def _apply(name, layers=4, **cfg):
    cls = registry.methods().get(name)
    method = cls(cls.Config(**cfg))
    model = tiny_llama(layers)
    result = method.apply_(model, ApplyContext(calibration=CALIB))
    return method, model, result


def _step_logits(model, x, tokens, cache=None):
    """Prefill ``x``, then feed ``tokens`` one by one; all logits (prefill's included)."""
    kw = kv_cache_arg(model)
    out_logits = []
    with torch.inference_mode():
        if cache is None:
            out = model(input_ids=x, use_cache=True)
            cache = getattr(out, kw)
        else:
            out = model(input_ids=x, use_cache=True, **{kw: cache})
        out_logits.append(out.logits)
        for t in tokens:
            out = model(input_ids=torch.full((x.shape[0], 1), t), use_cache=True, **{kw: cache})
            out_logits.append(out.logits)
    return out_logits


COVERING = [
    ("streaming", dict(window=128)),
    ("minference", dict(density=1.0, **SMALL_MINF)),
    ("quest", dict(budget=1.0, page_size=4)),
    ("quest", dict(budget=64, budget_unit="tokens", page_size=3, dense_layers=0)),
    ("tidaldecode", dict(budget=1.0, selection_layers=(1,))),
]


@pytest.mark.parametrize("name,cfg", COVERING)
def test_a_pattern_covering_everything_gives_the_dense_logits(name, cfg):
    _, model, _ = _apply(name, **cfg)
    dense = tiny_llama()
    x = ids(2, 40, 5)
    tokens = [3, 17, 42, 8, 60]
    for got, want in zip(_step_logits(model, x, tokens), _step_logits(dense, x, tokens), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,cfg", [c for c in COVERING if c[0] != "minference"])
def test_covering_patterns_with_a_static_cache_mask(name, cfg):
    from transformers import StaticCache

    _, model, _ = _apply(name, **cfg)
    dense = tiny_llama()
    x = ids(1, 20, 6)
    tokens = [5, 9, 33]
    got = _step_logits(model, x, tokens, StaticCache(config=model.config, max_cache_len=32))
    want = _step_logits(dense, x, tokens, StaticCache(config=dense.config, max_cache_len=32))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_streaming_reads_a_static_cache_mask_like_a_dynamic_cache():
    from transformers import StaticCache

    _, model, _ = _apply("streaming", window=6, sinks=2)
    x = ids(1, 20, 7)
    tokens = [1, 2, 3, 4]
    dynamic = _step_logits(model, x, tokens)
    static = _step_logits(model, x, tokens, StaticCache(config=model.config, max_cache_len=40))
    for g, w in zip(static, dynamic, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_the_dense_model_is_untouched():
    dense = tiny_llama()
    x = ids(1, 30, 8)
    with torch.inference_mode():
        before = dense(input_ids=x).logits
    _, model, _ = _apply("streaming", window=4)
    assert model.config._attn_implementation == NAME
    assert dense.config._attn_implementation == "sdpa"
    with torch.inference_mode():
        torch.testing.assert_close(dense(input_ids=x).logits, before, rtol=0, atol=0)
        assert not torch.allclose(model(input_ids=x).logits, before, atol=1e-3)


def test_streaming_density_window8_sinks2_on_32_tokens():
    method, model, _ = _apply("streaming", window=8, sinks=2)
    out = greedy_generate(model, ids(1, 32, 9).tolist(), 4, "cpu")
    assert len(out[0]) == 4
    rep = method.report(model)
    assert rep["attention_density_prefill_mean"].value == pytest.approx((55 + 220) / 528)  # see test_patterns
    # 3 decode steps at contexts 33, 34, 35: each query attends 2 sinks + 8
    assert rep["attention_density_decode_mean"].value == pytest.approx((10 / 33 + 10 / 34 + 10 / 35) / 3)
    assert rep["attention_prefill_forwards"].value == 1 and rep["attention_prefill_dense_forwards"].value == 0
    assert rep["attention_decode_forwards"].value == 3
    assert rep["attention_density_prefill_mean"].n == 4  # one call per layer


def test_a_window_covering_the_prompt_is_dense_and_counted():
    method, model, _ = _apply("streaming", window=30, sinks=4)
    greedy_generate(model, ids(1, 20, 9).tolist(), 16, "cpu")  # contexts 20..34 > 34 only at the end
    rep = method.report(model)
    assert rep["attention_prefill_dense_forwards"].value == 1
    assert rep["attention_density_prefill_mean"].value == 1.0
    assert rep["attention_decode_dense_forwards"].value == 14  # contexts 21..34 <= 34
    assert rep["attention_decode_forwards"].value == 15


GENERATE = [
    ("streaming", dict(window=8, sinks=2)),
    ("minference", dict(density=0.3, **SMALL_MINF)),
    ("quest", dict(budget=0.25, page_size=4)),
    ("tidaldecode", dict(budget=8, budget_unit="tokens")),
]


@pytest.mark.parametrize("name,cfg", GENERATE)
def test_greedy_generation_works_and_densities_are_plausible(name, cfg):
    method, model, result = _apply(name, **cfg)
    rows = ids(2, 48, 10).tolist()
    out = greedy_generate(model, rows, 6, "cpu")
    assert [len(o) for o in out] == [6, 6]
    rep = method.report(model)
    pre, dec = rep["attention_density_prefill_mean"].value, rep["attention_density_decode_mean"].value
    assert 0 < pre <= 1 and 0 < dec <= 1
    if name == "minference":
        assert 0.15 < pre < 0.6 and dec == 1.0  # decode stays dense
        heads = sum(result.metrics[f"minference_heads_{p}"].value
                    for p in ("vertical_slash", "block_sparse"))  # the default candidates
        assert "minference_heads_a_shape" not in result.metrics
        assert heads == 4 * 4
        assert 0 < result.metrics["minference_calibration_recall_mean"].value <= 1
        assert result.kernels["attention_prefill_blocks"].startswith(("block_sparse_attn ref", "block_sparse_prefill"))
    elif name == "quest":
        sparse = rep["attention_density_decode_sparse_layers_mean"].value
        assert pre == 1.0 and 0.15 < sparse < 0.35  # ~ a quarter of ~50 keys, in pages of 4
        assert dec == pytest.approx((2 * 1.0 + 2 * sparse) / 4)  # 2 dense layers of 4
    elif name == "tidaldecode":
        sparse = rep["attention_density_decode_sparse_layers_mean"].value
        # layer 3 attends 8 of 49..53 keys; layers 0, 1 dense, layer 2 selects (dense)
        assert sparse == pytest.approx(sum(8 / n for n in range(49, 54)) / 5)
    else:
        assert pre < 0.5 and dec < 0.25
    greedy_generate(model, rows, 2, "cpu")  # counting stopped at report: nothing new is counted
    assert method.report(model) == rep


def test_minference_short_prompts_prefill_densely():
    method, model, _ = _apply("minference", density=0.3, min_length=40, block_size=8, last_q=8)
    with torch.inference_mode():
        model(input_ids=ids(1, 24, 11))
        model(input_ids=ids(1, 48, 12))
    rep = method.report(model)
    assert rep["attention_prefill_forwards"].value == 2
    assert rep["attention_prefill_dense_forwards"].value == 1


def test_minference_patterns_option_restricts_the_candidates():
    _, model, result = _apply("minference", density=0.3, patterns="vertical_slash", **SMALL_MINF)
    assert result.metrics["minference_heads_vertical_slash"].value == 16
    assert "minference_heads_a_shape" not in result.metrics


def test_report_without_install_and_save_refusal():
    cls = registry.methods().get("quest")
    method = cls(cls.Config())
    assert method.report(tiny_llama()) == {}
    assert "not weights" in method.save_unsupported_reason()
