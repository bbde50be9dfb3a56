"""The ``+gemv`` path's shared write position: all layers of a static cache write where each
wrote with its own counter, one counter advances once a step, and a compiled step holds one
counter update instead of one per layer."""

import pytest
import torch

from sparsebench.measure import decode_graph
from sparsebench.measure.cache_length import LABEL, share, shared_lengths

from .static_decode import greedy_steps

PREFILL = [[1, 5, 7, 2]]
STEPS = 3


def _tiny(layers=3):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1)
    return LlamaForCausalLM(cfg).eval()


def _decode(model, forward=None, shared=False):
    """Prefill, optionally share the cache's counter, then greedy steps: (logits, cache)."""
    return greedy_steps(model, PREFILL, STEPS, forward, shared)


def test_shared_position_writes_where_each_layer_did():
    from transformers.cache_utils import StaticLayer

    model = _tiny()
    want, plain = _decode(model)
    original = StaticLayer.update
    with shared_lengths() as label:
        assert label == LABEL and share in decode_graph.CACHE_PREPARERS
        got, cache = _decode(model, shared=True)
    assert StaticLayer.update is original and share not in decode_graph.CACHE_PREPARERS
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    counters = {id(layer.cumulative_length) for layer in cache.layers}
    assert len(counters) == 1 and int(cache.layers[0].cumulative_length) == len(PREFILL[0]) + STEPS
    assert int(plain.layers[-1].cumulative_length) == len(PREFILL[0]) + STEPS
    for a, b in zip(cache.layers, plain.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def _count_counter_updates(model, shared):
    """Counter updates (``add_``) in the compiled step's graph, and the compiled step's logits."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    try:
        step = torch.compile(model.forward, backend=backend, fullgraph=True, dynamic=False)
        logits, _ = _decode(model, forward=step, shared=shared)
    finally:
        torch._dynamo.reset()
    adds = sum(1 for gm in graphs[:1] for n in gm.graph.nodes
               if n.op == "call_method" and n.target == "add_"
               or n.op == "call_function" and getattr(n.target, "__name__", "") == "add_")
    return adds, logits


def test_a_compiled_step_updates_one_counter_instead_of_one_per_layer():
    model = _tiny(layers=3)
    want, _ = _decode(model)
    per_layer, plain = _count_counter_updates(model, shared=False)
    with shared_lengths():
        once, got = _count_counter_updates(model, shared=True)
    assert per_layer >= 3 and once == per_layer - 2  # three layers' counters, then one
    for g, p, w in zip(got, plain, want, strict=True):
        torch.testing.assert_close(p, w, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_what_cannot_be_shared_is_left_alone():
    from transformers import StaticCache

    model = _tiny()
    empty = StaticCache(config=model.config, max_cache_len=8)
    assert not share(empty)  # not filled yet: no tensors to share
    _, cache = _decode(model)
    cache.layers[1].cumulative_length.fill_(2)  # counters that disagree
    before = [layer.cumulative_length for layer in cache.layers]
    assert not share(cache)
    assert [layer.cumulative_length for layer in cache.layers] == before
    assert not any(hasattr(layer, "_shared_length") for layer in cache.layers)


def test_reset_of_a_shared_counter_sets_every_layer():
    model = _tiny()
    with shared_lengths():
        _, cache = _decode(model, shared=True)
        decode_graph._set_length(cache, 5)
    assert all(int(layer.cumulative_length) == 5 for layer in cache.layers)


@pytest.mark.parametrize("tokens", [2, 3])
def test_multi_token_updates_keep_transformers_update(tokens):
    """A prefill-sized update on a shared cache runs transformers' own update (each layer adds
    its token count to the shared counter), so nothing of the one-token path applies."""
    model = _tiny(layers=2)
    with shared_lengths():
        _, cache = _decode(model, shared=True)
        decode_graph._set_length(cache, 2)  # room for the tokens
        layer = cache.layers[0]
        n = int(layer.cumulative_length)
        k = torch.zeros(1, 1, tokens, 16)
        with torch.inference_mode():
            layer.update(k, k)
        assert int(layer.cumulative_length) == n + tokens
