"""Fused q/k/v and gate/up projections: same logits, same bytes, never silently wrong."""

import pytest
import torch
from torch import nn

from sparsebench.api import kv_cache_arg
from sparsebench.measure.ceilings import decode_bytes_per_token
from sparsebench.measure.fuse import (
    compact_paths,
    fuse_checked_,
    fuse_projections_,
    fused_groups,
    unfuse_projections_,
)
from sparsebench.measure.memory import stored_bytes


def _llama(layers=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # Qwen2 has q/k/v biases, zero at init: make them count
        for layer in model.model.layers:
            for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                p.bias.normal_()
    return model


def _static_decode(model, ids, steps=4):
    """Prefill logits and ``steps`` greedy decode logits over a static cache (the GPU path's calls)."""
    from transformers import StaticCache

    n = ids.shape[1]
    cache = StaticCache(config=model.config, max_cache_len=n + steps)
    out = []
    with torch.inference_mode():
        logits = model(input_ids=ids, **{kv_cache_arg(model): cache}, use_cache=True,
                       cache_position=torch.arange(n)).logits
        out.append(logits)
        nxt = logits[:, -1:].argmax(-1)
        for t in range(steps):
            logits = model(input_ids=nxt, **{kv_cache_arg(model): cache}, use_cache=True,
                           cache_position=torch.tensor([n + t])).logits
            out.append(logits)
            nxt = logits[:, -1:].argmax(-1)
    return out


@pytest.mark.parametrize("make", [_llama, _qwen2], ids=["llama", "qwen2"])
def test_fused_logits_equal_prefill_and_decode(make):
    model = make()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    ref = _static_decode(model, ids)
    report = fuse_projections_(model)
    assert report.summary() == "qkv x2, gate_up x2" and not report.skipped
    got = _static_decode(model, ids)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    # every sibling read the fused product: 2 layers x (k, v, up) x (prefill + 4 steps)
    served = sum(h.served for h in fused_groups(model))
    computed = sum(h.computed for h in fused_groups(model))
    assert (served, computed) == (2 * 3 * 5, 0)


def test_bytes_and_parameters_unchanged_and_unfuse_restores():
    model = _qwen2()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    nbytes, nparams = stored_bytes(model), sum(p.numel() for p in model.parameters())
    decode_bytes = decode_bytes_per_token(model, 1, 16)
    fuse_projections_(model)
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.weight.untyped_storage().data_ptr() == attn.q_proj.weight.untyped_storage().data_ptr()
    assert stored_bytes(model) == nbytes  # the fused weight replaced the separate ones
    assert sum(p.numel() for p in model.parameters()) == nparams
    assert decode_bytes_per_token(model, 1, 16) == decode_bytes
    assert unfuse_projections_(model) == 4
    assert stored_bytes(model) == nbytes
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size(), n  # its own storage again
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert not any("fused" in n for n, _ in model.named_buffers())


def test_sibling_falls_back_on_another_input():
    model = _llama(layers=1)
    attn = model.model.layers[0].self_attn
    fuse_projections_(model)
    x = torch.randn(1, 3, 32)
    other = x.clone()  # equal values, another tensor: must not be taken for the same input
    with torch.no_grad():
        q = attn.q_proj(x)
        assert torch.equal(q, x @ attn.q_proj.weight.T)
        k_other = attn.k_proj(other)
        k = attn.k_proj(x)
        y = torch.randn(1, 3, 32)
        v_y = attn.v_proj(y)
    h = attn.q_proj._handoff
    assert (h.served, h.computed) == (1, 2)
    torch.testing.assert_close(k, x @ attn.k_proj.weight.T)
    torch.testing.assert_close(k_other, other @ attn.k_proj.weight.T)
    torch.testing.assert_close(v_y, y @ attn.v_proj.weight.T)


class _Wrapped(nn.Module):
    """Stands in for a method's replacement layer (packed, sparse): not a plain nn.Linear."""

    def __init__(self, lin):
        super().__init__()
        self.lin = lin
        self.in_features, self.out_features = lin.in_features, lin.out_features

    def forward(self, x):
        return self.lin(x)


class _SubLinear(nn.Linear):
    pass


def test_replaced_or_hooked_layers_are_left_alone():
    model = _llama(layers=3)
    l0, l1, l2 = model.model.layers
    l0.self_attn.k_proj = _Wrapped(l0.self_attn.k_proj)
    sub = _SubLinear(32, 48, bias=False)
    l1.mlp.up_proj = sub
    l2.mlp.gate_proj.register_forward_pre_hook(lambda m, a: None)
    ids = torch.randint(0, 64, (1, 5))
    with torch.inference_mode():
        ref = model(input_ids=ids).logits
    report = fuse_projections_(model)
    assert report.groups == {"qkv": ["model.layers.1.self_attn", "model.layers.2.self_attn"],
                             "gate_up": ["model.layers.0.mlp"]}
    assert set(report.skipped) == {"model.layers.0.self_attn:qkv", "model.layers.1.mlp:gate_up",
                                   "model.layers.2.mlp:gate_up"}
    assert type(l0.self_attn.q_proj) is nn.Linear and type(l0.self_attn.k_proj.lin) is nn.Linear
    assert l1.mlp.up_proj is sub and type(l1.mlp.gate_proj) is nn.Linear
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=1e-5, atol=1e-6)


class _OddOrder(nn.Module):
    """Calls k before q: the handoff never serves k, so the check must undo the group."""

    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(8, 8) for _ in range(3))

    def forward(self, x):
        return self.k_proj(x) + self.q_proj(x) + self.v_proj(x)


class _OddModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.block = _OddOrder()

    def forward(self, input_ids, use_cache=False):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.block(self.emb(input_ids)))


def test_check_undoes_a_group_whose_siblings_never_read_it():
    model = _OddModel()
    check = fuse_checked_(model, torch.arange(6).view(1, 6))
    assert check.report.count == 0 and check.label == "separate"
    assert check.undone == {"block:qkv": "siblings read the fused product 1x, computed their own 1x"}
    assert check.rel_err is not None and check.rel_err < 1e-6
    assert all(type(m) is nn.Linear for m in model.block.children())


def test_check_keeps_the_fused_llama_and_says_so():
    model = _llama()
    check = fuse_checked_(model, torch.arange(8).view(1, 8))
    assert check.label == "fused(qkv x2, gate_up x2)" and not check.undone
    assert check.rel_err < 1e-6
    assert "qkv: model.layers.{0-1}.self_attn; gate_up: model.layers.{0-1}.mlp" in check.note()


def test_compact_paths():
    assert compact_paths(["m.layers.0.mlp", "m.layers.1.mlp", "m.layers.2.mlp", "m.layers.5.mlp"]) == \
        "m.layers.{0-2,5}.mlp"
    assert compact_paths(["block"]) == "block"


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_decode_step_has_no_graph_break(backend):
    """fullgraph=True raises on a graph break; aot_eager keeps the fast test fast (no codegen)
    while still going through dynamo's handling of the handoff state and AOT's alias analysis;
    inductor (C++ codegen on a CPU, about a minute) is the path the GPU takes."""
    from transformers import StaticCache

    model = _llama()
    ids = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(2))
    ref = _static_decode(model, ids, steps=2)
    fuse_projections_(model)
    torch._dynamo.reset()
    step = torch.compile(model.forward, backend=backend, fullgraph=True, dynamic=False)
    cache = StaticCache(config=model.config, max_cache_len=8)
    with torch.inference_mode():
        model(input_ids=ids, **{kv_cache_arg(model): cache}, use_cache=True, cache_position=torch.arange(6))
        nxt = ref[0][:, -1:].argmax(-1)
        for t in range(2):
            logits = step(input_ids=nxt, **{kv_cache_arg(model): cache}, use_cache=True,
                          cache_position=torch.tensor([6 + t])).logits
            torch.testing.assert_close(logits, ref[1 + t], rtol=1e-5, atol=1e-6)
            nxt = logits[:, -1:].argmax(-1)
    h = fused_groups(model)[0]
    assert h.input is None and h.outputs is None  # nothing of the trace left behind
    torch._dynamo.reset()
