"""RTN, GPTQ and AWQ applied to a tiny Llama: packed layers, sizes, errors, save/load."""

import pytest
import torch

from sparsebench.api import ApplyContext
from sparsebench.measure.memory import stored_bytes
from sparsebench.methods.quantization.awq import Awq, AwqConfig
from sparsebench.methods.quantization.gptq import Gptq, GptqConfig
from sparsebench.methods.quantization.load import load_quantized
from sparsebench.methods.quantization.qlinear import QuantLinear
from sparsebench.methods.quantization.rtn import Rtn, RtnConfig


def _tiny_llama(seed=0, heads=2, kv=1):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _batches():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 64, (2, 16), generator=g) for _ in range(2)]


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("method", [Rtn(RtnConfig(bits=4, group_size=16)),
                                    Gptq(GptqConfig(bits=4, group_size=16)),
                                    Awq(AwqConfig(bits=4, group_size=16))])
def test_every_decoder_linear_is_packed_and_close(method):
    model = _tiny_llama()
    ids = _batches()[0]
    dense_logits = _logits(model, ids)
    dense_bytes = stored_bytes(model)
    linear_bytes = sum(m.weight.numel() * 4 for n, m in model.model.layers.named_modules()
                       if isinstance(m, torch.nn.Linear))
    result = method.apply_(model, ApplyContext(calibration=_batches()))
    packed = [m for m in model.model.layers.modules() if isinstance(m, QuantLinear)]
    assert len(packed) == 2 * 7 == result.metrics["quantized_linear_layers"].value
    assert not any(isinstance(m, torch.nn.Linear) for m in model.model.layers.modules())
    # 4-bit codes + two fp16 parameters per 16 weights = 6 bits/weight instead of 32
    assert dense_bytes - stored_bytes(model) == pytest.approx(linear_bytes * (1 - 6 / 32), rel=1e-6)
    assert result.metrics["bits_per_weight"].value == 6.0
    assert 0 < result.metrics["weight_relative_error"].value < 0.15
    rel = (_logits(model, ids) - dense_logits).norm() / dense_logits.norm()
    assert rel < 0.2


def test_gptq_reconstructs_layer_outputs_better_than_rtn():
    errs = {}
    for name, method in [("rtn", Rtn(RtnConfig(bits=3, group_size=16))), ("gptq", Gptq(GptqConfig(bits=3, group_size=16)))]:
        model = _tiny_llama()
        ref = _tiny_llama()
        method.apply_(model, ApplyContext(calibration=_batches()))
        ids = torch.cat(_batches())
        errs[name] = float((_logits(model, ids) - _logits(ref, ids)).pow(2).mean())
    assert errs["gptq"] < errs["rtn"]


def test_group_wider_than_a_layer_is_refused_before_any_change():
    model = _tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="group size 48 is larger than the input width 32"):
        Rtn(RtnConfig(group_size=48)).apply_(model, ApplyContext())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_awq_on_a_model_without_gqa_scales_o_proj_too():
    model = _tiny_llama(heads=2, kv=2)
    Awq(AwqConfig(bits=4, group_size=16)).apply_(model, ApplyContext(calibration=_batches()))
    assert isinstance(model.model.layers[0].self_attn.o_proj, QuantLinear)


def test_save_and_load_packed_and_dequantized(tmp_path):
    model = _tiny_llama()
    method = Gptq(GptqConfig(bits=4, group_size=16))
    method.apply_(model, ApplyContext(calibration=_batches()))
    method.save_model(model, None, tmp_path)
    ids = _batches()[0]
    want = _logits(model, ids)
    packed = load_quantized(tmp_path)
    assert isinstance(packed.model.layers[1].mlp.down_proj, QuantLinear)
    assert torch.equal(_logits(packed, ids), want)
    plain = load_quantized(tmp_path, dequantize=True)
    assert isinstance(plain.model.layers[1].mlp.down_proj, torch.nn.Linear)
    assert torch.allclose(_logits(plain, ids), want, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="quantization.json"):
        load_quantized(tmp_path / "nowhere")


def test_reference_weight_is_cached_until_a_buffer_changes():
    from sparsebench.methods.quantization.grid import Grid, quantize_rtn

    lin = torch.nn.Linear(32, 4)
    grid = Grid(4, 16, False)
    mod = QuantLinear.from_codes(lin, *quantize_rtn(lin.weight.detach(), grid), grid)
    x = torch.randn(3, 32)
    y = mod(x)
    first = mod.reference_weight(torch.float32)
    assert mod.reference_weight(torch.float32) is first  # no second unpack
    with torch.no_grad():
        mod.scales.mul_(2)  # in-place change: the cache must notice
    assert not torch.equal(mod(x), y)
    assert torch.allclose(mod(x), torch.nn.functional.linear(x, mod.dequantized(), mod.bias), atol=1e-5)
