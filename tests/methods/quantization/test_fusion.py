"""RTN/GPTQ/AWQ's packed linears fuse like plain ones for latency: q/k/v become one int4
kernel call over the concatenated codes, scales and offsets, gate/up another.

The harness finds this through ``QuantLinear.fuse_siblings_`` only (it imports no method).
The int4 kernel path runs under the interpreter on CPU.
"""

import pytest
import torch

from sparsebench.measure.fuse import fuse_projections_, fused_groups, unfuse_projections_
from sparsebench.methods.quantization.grid import Grid, quantize_rtn
from sparsebench.methods.quantization.qlinear import QuantLinear, set_submodule

from ...kernels.markers import needs_triton

G4 = Grid(bits=4, group_size=32, symmetric=False)
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _quantized(grid=G4, kernel="auto", bias=False, grids=None):
    """A tiny Llama whose decoder linears are all ``QuantLinear`` (``grids``: per projection)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      attention_bias=bias)
    model = LlamaForCausalLM(cfg).eval()
    for layer in model.model.layers:
        for name in PROJECTIONS:
            lin = layer.get_submodule(name)
            if lin.bias is not None:
                with torch.no_grad():
                    lin.bias.normal_(0, 0.1)  # zero at init: make them count
            g = (grids or {}).get(name, grid)
            q, s, o = quantize_rtn(lin.weight.detach().float(), g)
            set_submodule(layer, name, QuantLinear.from_codes(lin, q, s, o, g, kernel=kernel))
    return model


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits


IDS = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("bias", [False, True])
def test_fused_quantized_groups_match_separate_and_undo(bias):
    model = _quantized(bias=bias)
    attn = model.model.layers[0].self_attn
    before = {n: [(b, getattr(m, b).clone()) for b in ("qweight", "scales", "offsets")]
              for n, m in (("q", attn.q_proj), ("k", attn.k_proj), ("v", attn.v_proj))}
    want = _logits(model, IDS)
    report = fuse_projections_(model)
    assert report.summary() == "qkv x2, gate_up x2" and not report.skipped
    packed = fused_groups(model)[0].product.packed
    assert packed["qweight"].shape == (64 + 32 + 32, 64 * 4 // 8) and packed["scales"].shape == (128, 2)
    q, k = attn.q_proj, attn.k_proj
    # row slices of the concatenated buffers: no new bytes
    assert q.qweight.data_ptr() == packed["qweight"].data_ptr()
    assert k.scales.data_ptr() == packed["scales"][64:].data_ptr()
    assert isinstance(q, QuantLinear) and type(q).__name__ == "LeadFusedQuantLinear"
    torch.testing.assert_close(_logits(model, IDS), want, rtol=0, atol=0)  # the reference: the layers' own
    h = fused_groups(model)[0]
    assert h.served > 0 and h.computed == 0
    assert unfuse_projections_(model) == 4
    for m, saved in zip((attn.q_proj, attn.k_proj, attn.v_proj), before.values(), strict=True):
        assert type(m) is QuantLinear
        for b, t in saved:
            assert getattr(m, b).data_ptr() != packed[b].data_ptr() and torch.equal(getattr(m, b), t)
    torch.testing.assert_close(_logits(model, IDS), want, rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize("rows", [1, 5])
def test_fused_int4_kernel_matches_the_separate_kernel_calls(monkeypatch, rows):
    """The fused product on the int4 kernel (forced on CPU, under the interpreter) equals the
    three separate kernel calls, at one row (decode) and several."""
    from sparsebench.kernels.tolerances import assert_close

    monkeypatch.setenv("SPARSEBENCH_INT4_TUNE", "0")
    monkeypatch.setattr(QuantLinear, "uses_fast_kernel", lambda self, x: True)
    model = _quantized(bias=True)
    attn = model.model.layers[0].self_attn
    x = torch.randn(rows, 64, generator=torch.Generator().manual_seed(1))
    mods = (attn.q_proj, attn.k_proj, attn.v_proj)
    want = torch.cat([m(x) for m in mods], dim=-1)
    fuse_projections_(model)
    got = fused_groups(model)[0].product(x)
    assert got.shape == (rows, 128)
    assert_close(got, want)


def test_what_does_not_fuse_says_why():
    assert "int4 kernel" in next(iter(fuse_projections_(_quantized(kernel="ref")).skipped.values()))
    eight = Grid(bits=8, group_size=0, symmetric=True)
    assert "int4 kernel" in next(iter(fuse_projections_(_quantized(grid=eight)).skipped.values()))
    mixed = _quantized(grids={"self_attn.k_proj": Grid(bits=4, group_size=64, symmetric=False)})
    report = fuse_projections_(mixed)
    assert report.summary() == "gate_up x2"
    assert set(report.skipped) == {"model.layers.0.self_attn:qkv", "model.layers.1.self_attn:qkv"}
    assert all("different grids" in why for why in report.skipped.values())


@needs_triton
@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused"])
def test_the_int4_decode_step_compiles_without_a_graph_break(monkeypatch, fused):
    """As the GPU decode path runs it (compiled, one graph): the int4 kernel forced on CPU."""
    from ..test_compiled_decode import assert_compiled_steps_match_eager

    monkeypatch.setenv("SPARSEBENCH_INT4_TUNE", "0")
    monkeypatch.setattr(QuantLinear, "uses_fast_kernel", lambda self, x: True)
    model = _quantized()
    if fused:
        assert fuse_projections_(model).summary() == "qkv x2, gate_up x2"
    assert_compiled_steps_match_eager(model, IDS)
