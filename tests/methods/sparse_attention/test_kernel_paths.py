"""The methods' kernel paths (``kernels.block_sparse_attn``) against their definitions.

Under the Triton interpreter (``TRITON_INTERPRET=1``) the run's kernel choice ``fast`` sends
streaming's fresh prefills and every MInference head through the Triton kernel on the CPU,
so a tiny Llama with head dim 16 (the kernel's smallest) checks what a GPU runs: streaming's
kernel prefill equals its masked reference (token-exact), MInference at density 1.0 equals
the dense model, and its vertical-slash heads compute exactly the blocks their lines touch.
The CPU-only tests check the block layout that path builds and the dense switch-back.
"""

import pytest
import torch

from sparsebench import registry
from sparsebench.api import ApplyContext
from sparsebench.kernels.block_sparse_attn import block_sparse_attention_ref
from sparsebench.kernels.dispatch import interpreting, triton_available
from sparsebench.kernels.tolerances import assert_close
from sparsebench.methods.sparse_attention import ops
from sparsebench.methods.sparse_attention import patterns as P
from sparsebench.methods.sparse_attention.attention import NAME, DensityStats, uninstall
from sparsebench.methods.sparse_attention.layers import MInferenceHandler

from .helpers import ids

needs_interpreter = pytest.mark.skipif(not triton_available() or not interpreting(),
                                       reason="needs triton and TRITON_INTERPRET=1 (the kernel path on CPU)")


def llama16(layers=2, seed=0):
    """A tiny random Llama whose head dim (16) the kernel takes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def _apply(name, kernel, calibration=None, **cfg):
    cls = registry.methods().get(name)
    method = cls(cls.Config(**cfg))
    model = llama16()
    result = method.apply_(model, ApplyContext(kernel=kernel, calibration=calibration))
    return method, model, result


def _logits(model, x):
    with torch.inference_mode():
        return model(input_ids=x, use_cache=False).logits


@needs_interpreter
def test_streaming_kernel_prefill_is_its_reference(monkeypatch):
    monkeypatch.setattr(ops, "STREAM_BLOCK", 32)  # 128 on a GPU; smaller blocks keep the interpreter quick
    x = ids(1, 75, 3)  # sinks inside block 0, window edges inside blocks, a partial last block
    fast, m_fast, r_fast = _apply("streaming", "fast", sinks=3, window=20)
    ref, m_ref, r_ref = _apply("streaming", "ref", sinks=3, window=20)
    assert r_fast.kernels["attention_prefill"].startswith("streaming_prefill: block_sparse_attn triton")
    assert r_ref.kernels["attention_prefill"].startswith("streaming_attention")
    assert_close(_logits(m_fast, x), _logits(m_ref, x))
    got, want = fast.report(m_fast), ref.report(m_ref)  # token-exact: the same density
    assert got.keys() == want.keys()
    assert all(got[k].value == pytest.approx(want[k].value) for k in got)


@needs_interpreter
def test_minference_kernel_at_density_one_is_dense():
    calib = [ids(1, 64, 1)]
    _, model, result = _apply("minference", "fast", calib, density=1.0, min_length=16, block_size=16, last_q=8)
    assert result.kernels["attention_prefill_blocks"].startswith("block_sparse_attn triton")
    x = ids(1, 45, 4)
    assert_close(_logits(model, x), _logits(llama16(), x))


@needs_interpreter
def test_minference_kernel_heads_compute_the_blocks_their_pattern_touches(monkeypatch):
    """One layer's call with vertical-slash heads 0, 2 and block-sparse heads 1, 3: the kernel
    path equals the block reference over the combined block mask, its density is the mask's,
    and the pattern's own (token) density is recorded beside it (the dense switch held off)."""
    monkeypatch.setattr(ops, "DENSE_FROM", 2.0)
    g = torch.Generator().manual_seed(5)
    b, hq, hkv, n, d, bs = 1, 4, 2, 70, 16, 16
    q, k, v = (torch.randn(b, h, n, d, generator=g) for h in (hq, hkv, hkv))
    heads = {"vertical_slash": [0, 2], "block_sparse": [1, 3]}
    stats = DensityStats()
    stats.counting = True
    h = MInferenceHandler(0, stats, heads, 0.3, 8, bs, 16, first=True, impl="triton")
    scale = d ** -0.5
    got = h(None, q, k, v, None, scale)
    kx = ops.expand_kv(k, hq)
    cols, diags = P.estimate_vertical_slash(q[:, [0, 2]], kx[:, [0, 2]], scale, 8, 0.3)
    nb = P.n_blocks(n, bs)
    full = torch.zeros(b, hq, nb, nb, dtype=torch.bool)
    full[:, [0, 2]] = ops.vertical_slash_blocks(cols, diags, bs)
    full[:, [1, 3]] = P.block_sparse_mask(q[:, [1, 3]], kx[:, [1, 3]], bs, 0.3, scale)
    assert_close(got, block_sparse_attention_ref(q, k, v, full, block_m=bs, scale=scale))
    total = P.causal_pairs(n) * hq
    computed = float(P.block_mask_pairs(full, n, bs)) / total
    pattern = float(P.vertical_slash_pairs(cols, diags) + P.block_mask_pairs(full[:, [1, 3]], n, bs)) / total
    assert float(stats.sum["prefill"]) == pytest.approx(computed)
    assert float(stats.pattern_sum["prefill"]) == pytest.approx(pattern)
    assert stats.pattern_given["prefill"] and pattern <= computed


@needs_interpreter
def test_minference_report_gives_the_computed_and_the_pattern_density():
    calib = [ids(1, 96, 1)]
    method, model, _ = _apply("minference", "fast", calib, density=0.2, min_length=16, block_size=16, last_q=8,
                              patterns="vertical_slash")
    _logits(model, ids(1, 96, 6))
    rep = method.report(model)
    computed = rep["attention_density_prefill_mean"].value
    pattern = rep["attention_density_prefill_pattern_mean"].value
    assert 0 < pattern <= computed <= 1


def test_the_reference_path_reports_no_pattern_density():
    calib = [ids(1, 64, 1)]
    method, model, result = _apply("minference", "auto", calib, density=0.3, min_length=16, block_size=16,
                                   last_q=8)
    _logits(model, ids(1, 64, 7))
    rep = method.report(model)
    assert "attention_density_prefill_pattern_mean" not in rep
    assert result.kernels["attention_prefill_blocks"].startswith("block_sparse_attn ref")


def test_kernel_fast_on_a_head_dim_the_kernel_cannot_take_runs_the_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if not triton_available():
        pytest.skip("needs triton")
    from .helpers import tiny_llama  # head dim 8

    cls = registry.methods().get("streaming")
    result = cls(cls.Config(window=8)).apply_(tiny_llama(), ApplyContext(kernel="fast"))
    assert any("head dims 16..256" in n for n in result.notes)
    assert result.kernels["attention_prefill"].startswith("streaming_attention")


def test_uninstall_gives_back_the_dense_model():
    x = ids(1, 40, 8)
    dense = _logits(llama16(), x)
    _, model, _ = _apply("streaming", "auto", window=8)
    assert not torch.allclose(_logits(model, x), dense, atol=1e-3)
    uninstall(model)
    assert model.config._attn_implementation == "sdpa" != NAME
    torch.testing.assert_close(_logits(model, x), dense, rtol=0, atol=0)


def test_causal_block_fraction_on_hand_made_masks():
    full = torch.ones(3, 3, dtype=torch.bool).tril()  # 6 causal blocks
    assert ops.causal_block_fraction(full) == 1.0
    assert ops.causal_block_fraction(torch.ones(1, 2, 3, 3, dtype=torch.bool)) == 1.0  # above-diagonal ignored
    gap = full.clone()
    gap[2, 0] = False
    assert ops.causal_block_fraction(gap) == pytest.approx(5 / 6)
    assert ops.causal_block_fraction(torch.stack([full, gap])) == pytest.approx(11 / 12)


def _mask_calls(monkeypatch):
    """Kernel path forced on the CPU; the kernel records that it ran instead of running."""
    kernel = ops.block_sparse_kernel()
    ran = []
    monkeypatch.setattr(ops, "choose_impl", lambda impl, q: "triton")
    monkeypatch.setattr(kernel, "block_sparse_attention", lambda *a, **k: ran.append(1) or a[0].clone())
    return ran


def test_a_mask_of_nearly_every_causal_block_runs_dense_sdpa_not_the_kernel(monkeypatch):
    """On the kernel path a mask holding DENSE_FROM of the causal blocks or more is computed as
    plain causal attention (all of them: the same result) by SDPA; below it the kernel runs."""
    ran = _mask_calls(monkeypatch)
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 40, 16), torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 16)
    nb = P.n_blocks(40, 16)  # 3 blocks: 6 causal per head, 24 in all
    mask = torch.ones(1, 4, nb, nb, dtype=torch.bool).tril()
    got = ops.block_sparse_prefill(q, k, v, mask, 16, 0.25, impl="triton")
    assert_close(got, block_sparse_attention_ref(q, k, v, mask, None, block_m=16, block_n=16, scale=0.25))
    mask[0, 1, 2, 0] = False  # 23 / 24 >= 0.8: still dense
    assert ops.runs_dense(mask, "triton", q)
    ops.block_sparse_prefill(q, k, v, mask, 16, 0.25, impl="triton")
    assert ran == []
    mask[0, :, 2, :2] = False  # 15 / 24 < 0.8: the kernel's turn
    assert not ops.runs_dense(mask, "triton", q)
    ops.block_sparse_prefill(q, k, v, mask, 16, 0.25, impl="triton")
    assert ran == [1]
    assert not ops.runs_dense(mask.tril(), "ref", q)  # the reference path never switches


def test_a_layer_that_runs_dense_records_density_one(monkeypatch):
    """MInference's kernel path on a mask above DENSE_FROM computes every causal pair, and its
    recorded density says so (1.0), beside the pattern's own."""
    ran = _mask_calls(monkeypatch)
    monkeypatch.setattr(ops, "DENSE_FROM", 0.0)  # any mask: dense
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, h, 70, 16, generator=g) for h in (4, 2, 2))
    stats = DensityStats()
    stats.counting = True
    h = MInferenceHandler(0, stats, {"block_sparse": [0, 1, 2, 3]}, 0.3, 8, 16, 16, first=True, impl="triton")
    got = h(None, q, k, v, None, 16 ** -0.5)
    assert ran == []
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.25, enable_gqa=True)
    assert_close(got, want)
    assert float(stats.sum["prefill"]) == pytest.approx(1.0)
    assert float(stats.pattern_sum["prefill"]) < 1.0
