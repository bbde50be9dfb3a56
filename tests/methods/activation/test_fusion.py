"""TEAL's sparse linears fuse like plain ones for latency: q/k/v (one threshold per input
site) become one sparse GEMV over the concatenated transposed weights, gate/up another.

The harness finds this through ``SparseInputLinear.fuse_siblings_`` only (it imports no
method). The Triton path runs under the interpreter.
"""

import torch

from sparsebench.measure import fuse
from sparsebench.measure.fuse import (
    fuse_checked_,
    fuse_projections_,
    fused_groups,
    unfuse_projections_,
)
from sparsebench.methods.activation.modules import SparseInputLinear, install
from sparsebench.methods.layerwise import block_linears, decoder_blocks

from ...kernels.markers import needs_triton

SITES = {"self_attn.q_proj": 0.03, "self_attn.k_proj": 0.03, "self_attn.v_proj": 0.03, "self_attn.o_proj": 0.05,
         "mlp.gate_proj": 0.02, "mlp.up_proj": 0.02, "mlp.down_proj": 0.04}


def _teal(thresholds=SITES, impl="triton", bias=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      attention_bias=bias, mlp_bias=bias)
    model = LlamaForCausalLM(cfg).eval()
    if bias:  # zero at init: make them count
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.normal_(0, 0.1)
    for block in decoder_blocks(model):
        assert set(block_linears(block)) == set(thresholds)
        install(block, dict(thresholds), impl=impl)
    return model


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits


IDS = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(4))


@needs_triton
def test_fused_sparse_groups_match_separate_and_undo():
    model = _teal()
    attn = model.model.layers[0].self_attn
    before = [(m, m.weight_t.clone()) for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    one_row = IDS[:, :1]
    want, want_row = _logits(model, IDS), _logits(model, one_row)  # 6 rows: masked GEMM; 1 row: the GEMV
    report = fuse_projections_(model)
    assert report.summary() == "qkv x2, gate_up x2" and not report.skipped
    q, k = attn.q_proj, attn.k_proj
    lead = fused_groups(model)[0].product.w_t
    assert lead.shape == (32, 32 + 16 + 16)
    assert q.weight_t.data_ptr() == lead.data_ptr() and k.weight_t.stride() == (64, 1)  # views: no new bytes
    assert isinstance(q, SparseInputLinear) and type(q).__name__ == "LeadFusedSparseInputLinear"
    torch.testing.assert_close(_logits(model, IDS), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_logits(model, one_row), want_row, rtol=1e-5, atol=1e-6)
    h = fused_groups(model)[0]
    assert h.served > 0 and h.computed == 0
    assert unfuse_projections_(model) == 4
    for m, w in before:
        assert type(m) is SparseInputLinear and m.weight_t.is_contiguous() and torch.equal(m.weight_t, w)
    torch.testing.assert_close(_logits(model, IDS), want, rtol=1e-5, atol=1e-6)


@needs_triton
def test_biased_siblings_fuse_and_undo():
    """q/k/v with biases (Qwen2-style): the biases are concatenated too and given back."""
    model = _teal(bias=True)
    attn = model.model.layers[0].self_attn
    biases = [m.bias.clone() for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    want, want_row = _logits(model, IDS), _logits(model, IDS[:, :1])
    assert fuse_projections_(model).summary() == "qkv x2, gate_up x2"
    assert fused_groups(model)[0].product.bias.shape == (64,)
    torch.testing.assert_close(_logits(model, IDS), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_logits(model, IDS[:, :1]), want_row, rtol=1e-5, atol=1e-6)
    unfuse_projections_(model)
    for m, b in zip((attn.q_proj, attn.k_proj, attn.v_proj), biases, strict=True):
        assert isinstance(m.bias, torch.nn.Parameter) and m.bias.is_contiguous() and torch.equal(m.bias, b)
    torch.testing.assert_close(_logits(model, IDS), want, rtol=1e-5, atol=1e-6)


@needs_triton
def test_different_thresholds_or_the_reference_layout_stay_separate():
    model = _teal({**SITES, "self_attn.k_proj": 0.5})
    report = fuse_projections_(model)
    assert report.summary() == "gate_up x2"
    assert report.skipped["model.layers.0.self_attn:qkv"] == "different thresholds"
    unfuse_projections_(model)
    ref = fuse_projections_(_teal(impl="ref"))
    assert ref.count == 0
    assert ref.skipped["model.layers.0.mlp:gate_up"].startswith("the reference layout")


@needs_triton
def test_the_check_keeps_sparse_groups_and_judges_a_chaotic_model_by_its_own_spread(monkeypatch):
    model = _teal()
    check = fuse_checked_(model, IDS)
    assert check.label == "fused(qkv x2, gate_up x2)" and check.spread is None and not check.undone
    unfuse_projections_(model)
    # fused logits far from the separate ones: undone, unless the model's own logits move as far
    # under the other cuBLAS library (thresholds on random weights), when the slice check decides
    real = fuse.check_logits
    calls = iter([False, True])
    monkeypatch.setattr(fuse, "check_logits", lambda m, ids: real(m, ids) * (2.0 if next(calls, False) else 1.0))
    monkeypatch.setattr(fuse, "other_blas_spread", lambda call, ref: 3e-3)
    strict = fuse_checked_(model, IDS)
    assert strict.label == "separate" and strict.spread == 3e-3
    assert set(strict.undone.values()) == {"logits moved by 1.00e+00 relative"}
    calls = iter([False, True])
    monkeypatch.setattr(fuse, "other_blas_spread", lambda call, ref: 0.8)
    kept = fuse_checked_(model, IDS)
    assert kept.label == "fused(qkv x2, gate_up x2)" and kept.spread == 0.8
    assert "inconclusive: the model's own logits move by 8.0e-01" in kept.note()
    unfuse_projections_(model)


@needs_triton
def test_counting_modules_are_not_fused():
    """While dropped inputs are being counted (the evaluation text), each module must see its own input."""
    model = _teal()
    for m in model.modules():
        if isinstance(m, SparseInputLinear):
            m.counting = True
    report = fuse_projections_(model)
    assert report.count == 0 and report.skipped["model.layers.0.mlp:gate_up"] == "counting dropped inputs"
