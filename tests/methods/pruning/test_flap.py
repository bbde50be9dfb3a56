"""FLAP-style structured pruning: the model really shrinks, still runs, and keeps GQA whole."""

import pytest
import torch
from torch import nn

from sparsebench.api import ApplyContext, kv_cache_arg
from sparsebench.methods.layerwise import InputStats
from sparsebench.methods.pruning.flap import FLAP, FLAPConfig, _remove_inputs_

from .test_wanda import _batches


def _llama(seed=0, heads=4, kv=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _stats(x):
    s = InputStats.empty(x.shape[1], "cpu")
    s.add(x)
    return s


def test_bias_compensation_is_exact_for_a_constant_input():
    """Column 1 of the input is always 2: removing it and adding 2 * W[:, 1] to the bias
    leaves every output unchanged."""
    lin = nn.Linear(4, 3, bias=False)
    x = torch.randn(10, 4)
    x[:, 1] = 2.0
    before = lin(x).detach()
    expected_bias = 2.0 * lin.weight[:, 1].detach().clone()
    _remove_inputs_(lin, torch.tensor([0, 2, 3]), torch.tensor([1]), _stats(x), compensate=True)
    assert lin.in_features == 3 and lin.weight.shape == (3, 3)
    assert torch.allclose(lin.bias, expected_bias)
    assert torch.allclose(lin(x[:, [0, 2, 3]]), before, atol=1e-6)


def test_scores_pick_low_fluctuation_channels():
    """With heads left alone, the channels removed are those with the lowest
    Var(x_c) * ||W_down[:, c]||^2 (every channel costs the same)."""
    model = _llama()
    captured = {}
    method = FLAP(FLAPConfig(ratio=0.25, prune_heads=False))
    original = method.shrink_block_

    def spy(block, ratio):
        down = block.linears["mlp.down_proj"]
        s = block.stats["mlp.down_proj"]
        captured[block.index] = (s.var * down.weight.detach().pow(2).sum(0)).argsort()[:24].sort().values
        captured[f"w{block.index}"] = down.weight.detach().clone()
        return original(block, ratio)

    method.shrink_block_ = spy
    result = method.apply_(model, ApplyContext(calibration=_batches()))
    for i, layer in enumerate(model.model.layers):
        gone = captured[i]
        keep = torch.tensor([c for c in range(64) if c not in gone.tolist()])
        assert torch.equal(layer.mlp.down_proj.weight, captured[f"w{i}"][:, keep])
        assert layer.mlp.gate_proj.out_features == layer.mlp.up_proj.out_features == 40
    # 25% of a block's 9216 linear weights (MLP 3 * 32 * 64, attention 2 * 32 * 32 + 2 * 16 * 32)
    # is 2304 = 24 channels of 3 * 32 weights each
    assert result.metrics["mlp_channels_removed"].value == 2 * 24


@pytest.mark.parametrize("ratio,prune_heads", [(0.2, True), (0.45, True), (0.3, False)])
def test_model_shrinks_runs_and_decodes(ratio, prune_heads):
    model = _llama()
    ids = _batches()[0][:, :8]
    before = sum(p.numel() for p in model.parameters())
    block_before = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, nn.Linear))
    result = FLAP(FLAPConfig(ratio=ratio, prune_heads=prune_heads)).apply_(
        model, ApplyContext(calibration=_batches()))
    after = sum(p.numel() for p in model.parameters())
    assert result.metrics["model_parameters_after"].value == after < before
    removed = result.metrics["block_linear_parameters_removed_fraction"].value
    # short of the target by less than one channel (96) plus the compensation biases (2 x 32)
    assert ratio - (96 + 64) / (block_before / 2) <= removed <= ratio
    assert result.metrics["parameters_removed_fraction"].value == pytest.approx((before - after) / before)
    heads = result.metrics["attention_heads_removed"].value
    if not prune_heads:
        assert heads == 0
    for layer in model.model.layers:
        attn = layer.self_attn
        kv = attn.k_proj.out_features // attn.head_dim
        assert kv >= 1 and attn.v_proj.out_features == attn.k_proj.out_features
        assert attn.q_proj.out_features == kv * attn.num_key_value_groups * attn.head_dim == attn.o_proj.in_features
    with torch.inference_mode():
        full = model(ids).logits
        assert torch.isfinite(full).all()
        # decode with a KV cache gives the logits of a full forward
        out = model(ids[:, :7], use_cache=True)
        arg = kv_cache_arg(model)
        step = model(ids[:, 7:], **{arg: getattr(out, arg)}, use_cache=True).logits
        assert torch.allclose(step[:, -1], full[:, -1], atol=1e-4)
        gen = model.generate(ids[:1], max_new_tokens=4, do_sample=False)
    assert gen.shape == (1, 12)


def test_heads_go_by_whole_kv_group():
    model = _llama(heads=4, kv=2)
    result = FLAP(FLAPConfig(ratio=0.9)).apply_(model, ApplyContext(calibration=_batches()))
    assert result.metrics["attention_heads_removed"].value % 2 == 0
    assert result.metrics["attention_heads_removed"].value >= 2  # 90% needs more than the MLP
    for layer in model.model.layers:
        assert layer.self_attn.k_proj.out_features >= layer.self_attn.head_dim  # one group is kept


def test_config_errors():
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\)"):
        FLAPConfig(ratio=1.2)
    with pytest.raises(ValueError, match="layer_ratio"):
        FLAPConfig.from_dict({"layer_ratio": '{"layers.0": 1.5}'})
    model = _llama()
    with pytest.raises(ValueError, match="match no decoder block"):
        FLAP(FLAPConfig.from_dict({"layer_ratio": {"layers.7": 0.1}})).check_model(model)
    assert FLAP(FLAPConfig()).save_unsupported_reason()


def test_layer_ratio_overrides_one_block():
    model = _llama()
    FLAP(FLAPConfig.from_dict({"ratio": 0.2, "layer_ratio": {"layers.1": 0.0}})).apply_(
        model, ApplyContext(calibration=_batches()))
    assert model.model.layers[1].mlp.down_proj.in_features == 64
    assert model.model.layers[0].mlp.down_proj.in_features < 64
