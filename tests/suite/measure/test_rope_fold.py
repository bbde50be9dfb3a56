"""The ``+gemv`` path's RoPE + cache-write fold: greedy steps over a shared static cache give
the logits and caches of the model's own forward, the fold leaves prefill alone, its decode
check undoes it when the kernel is wrong, it needs the shared write position, and the compiled
step (fullgraph) holds one rope_cache call per layer and no RoPE or index_copy of its own."""

import pytest
import torch

from sparsebench.api import kv_cache_arg
from sparsebench.measure.cache_length import shared_lengths
from sparsebench.measure.rope_fold import CHECK_TOL, folded_rope
from sparsebench.registry import attention_kernels

from .static_decode import greedy_steps

PREFILL = [[1, 5, 7, 2]]
STEPS = 3
LAYERS = 3


def _tiny(dtype=torch.float32, family="llama"):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config, model = (LlamaConfig, LlamaForCausalLM) if family == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    cfg = config(vocab_size=32, hidden_size=32, intermediate_size=48, num_hidden_layers=LAYERS,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return model(cfg).to(dtype).eval()


def _decode(model, forward=None):
    """Prefill, share the cache's write position, then greedy steps: (logits per step, cache)."""
    return greedy_steps(model, PREFILL, STEPS, forward, shared=True)


def _kernel():
    return attention_kernels().get("rope_cache")


CHECK = torch.tensor([[3, 1, 4, 1, 5, 9]])


@pytest.mark.parametrize("family,cls", [("llama", "LlamaAttention"), ("qwen2", "Qwen2Attention")])
def test_folded_steps_match_the_models_own_forward(family, cls):
    model = _tiny(family=family)
    with shared_lengths():
        want, plain = _decode(model)
        with folded_rope(model, _kernel(), CHECK) as label:
            assert label == f"RoPE of q, k and the k/v cache write -> rope_cache x{LAYERS}"
            assert type(model.model.layers[0].self_attn).__name__ == f"RopeFolded{cls}"
            got, cache = _decode(model)
    assert type(model.model.layers[0].self_attn).__name__ == cls
    assert not hasattr(model.model.layers[0].self_attn, "_rope_kernel")
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert int(cache.layers[0].cumulative_length) == len(PREFILL[0]) + STEPS
    for a, b in zip(cache.layers, plain.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.values, b.values, rtol=0, atol=0)


def test_prefill_and_unshared_caches_run_the_modules_own_forward():
    from transformers import StaticCache

    model = _tiny()
    ids = torch.tensor(PREFILL)
    with torch.inference_mode():
        want = model(input_ids=ids).logits
        c1 = StaticCache(config=model.config, max_cache_len=8)
        model(input_ids=ids, **{kv_cache_arg(model): c1}, use_cache=True)
        want_step = model(input_ids=ids[:, :1], **{kv_cache_arg(model): c1}, use_cache=True).logits
    with shared_lengths(), folded_rope(model, _kernel(), None), torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=0, atol=0)
        c2 = StaticCache(config=model.config, max_cache_len=8)  # never shared
        model(input_ids=ids, **{kv_cache_arg(model): c2}, use_cache=True)
        torch.testing.assert_close(model(input_ids=ids[:, :1], **{kv_cache_arg(model): c2}, use_cache=True).logits,
                                   want_step, rtol=0, atol=0)


class _NoRotation:
    """Writes the cache but rotates nothing (cos 1, sin 0)."""

    def __call__(self, q, k, v, cos, sin, k_cache, v_cache, position):
        return _kernel()(q, k, v, torch.ones_like(cos), torch.zeros_like(sin), k_cache, v_cache, position)


class _UnrotatedQ:
    """Writes the cache right but hands back q unrotated (a slip the step's logits barely show
    on this tiny model: 1.4e-3)."""

    def __call__(self, q, k, v, cos, sin, k_cache, v_cache, position):
        _kernel()(q, k, v, cos, sin, k_cache, v_cache, position)
        return q.view(q.shape[0], -1, 1, k_cache.shape[-1]).clone()


@pytest.mark.parametrize("wrong", [_NoRotation(), _UnrotatedQ()])
def test_in_situ_check_undoes_a_wrong_kernel(wrong):
    model = _tiny()
    with shared_lengths(), folded_rope(model, wrong, CHECK) as label:
        assert label.startswith("not folded: in a checked decode step the kernel differed from the module's RoPE by")
        assert float(label.rsplit(" ", 1)[1]) > CHECK_TOL
        assert type(model.model.layers[0].self_attn).__name__ == "LlamaAttention"


def test_no_foldable_attention_is_said():
    with folded_rope(torch.nn.Linear(2, 2), _kernel(), None) as label:
        assert label == "not folded: no Llama or Qwen2 (no sliding window) attention module"
    model = _tiny(family="qwen2")
    for layer in model.model.layers:
        layer.self_attn.sliding_window = 4
    with folded_rope(model, _kernel(), None) as label:
        assert label.startswith("not folded")


def test_gemv_decode_needs_the_shared_position(monkeypatch):
    from sparsebench.measure.decode_kernels import gemv_decode

    model = _tiny()
    with gemv_decode(model, "cpu", share_lengths=False) as labels:
        assert labels["decode_rope"] == "not folded: needs the shared cache write position"
    with gemv_decode(model, "cpu", check_ids=CHECK) as labels:
        assert labels["decode_rope"].endswith(f"rope_cache x{LAYERS}")


def test_compiled_step_has_one_rope_cache_call_per_layer_and_no_rope_of_its_own():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model = _tiny()
    torch._dynamo.reset()
    try:
        with shared_lengths():
            want, _ = _decode(model)
            with folded_rope(model, _kernel(), None):
                step = torch.compile(model.forward, backend=backend, fullgraph=True, dynamic=False)
                got, _ = _decode(model, forward=step)
    finally:
        torch._dynamo.reset()
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    nodes = [n for n in graphs[0].graph.nodes if n.op in ("call_function", "call_method")]
    names = [str(n.target) for n in nodes]
    assert sum("rope_cache_write" in t for t in names) == LAYERS
    assert not any("index_copy" in t for t in names)
    assert sum(t.endswith("cat") for t in names) == 0  # rotate_half's cat: no RoPE left in the graph


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_bf16_folded_step_within_the_check_tolerance(dtype):
    model = _tiny(dtype)
    with shared_lengths(), folded_rope(model, _kernel(), CHECK) as label:
        assert label.endswith(f"x{LAYERS}")


def test_on_the_gemv_path_folded_steps_match_unfolded_ones():
    """Through gemv_decode (the decode attention plugin, which reads each sequence's length from
    the position it is given): greedy steps with the fold equal those without it."""
    from sparsebench.measure.decode_kernels import gemv_decode

    model = _tiny()
    with gemv_decode(model, "cpu", fold_rope=False) as labels:
        assert labels["decode_attention"].startswith("static_decode")
        want, plain = _decode(model)
    with gemv_decode(model, "cpu", check_ids=CHECK) as labels:
        assert labels["decode_rope"].endswith(f"rope_cache x{LAYERS}")
        got, cache = _decode(model)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    for a, b in zip(cache.layers, plain.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
