"""The ``+gemv`` decode path: one-row linear products go to the GEMV plugin and one-token
attention over the static cache to the decode attention plugin (both found through their
entry points), everything else stays as it was, and all of it is undone after the block.
Runs the real kernels under the Triton interpreter on a tiny Llama (head dim 16)."""

import pytest
import torch
import torch.nn.functional as F

from sparsebench.api import DECODE_PATHS, MeasureSpec, kv_cache_arg
from sparsebench.measure import decode_kernels
from sparsebench.measure.decode_kernels import ATTENTION, gemv_decode, length_rows, one_row
from sparsebench.registry import attention_kernels, linear_kernels

from ...kernels.markers import needs_triton


def _tiny(attn="sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, attn_implementation=attn)
    return LlamaForCausalLM(cfg).eval()


def _decode_step(model):
    """Prefill 4 tokens into a static cache of 8, then the logits of one decode step."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=8)
    model(input_ids=torch.tensor([[1, 5, 7, 2]]), **{kv_cache_arg(model): cache}, use_cache=True,
          cache_position=torch.arange(4))
    return model(input_ids=torch.tensor([[3]]), **{kv_cache_arg(model): cache}, use_cache=True,
                 cache_position=torch.tensor([4])).logits


def test_the_path_is_a_spec_value():
    for path in ("compile-tuned+gemv+graph", "compile-tuned+gemv+pdl+graph"):
        assert path in DECODE_PATHS
        assert MeasureSpec(decode_path=path).decode_path == path


def test_compile_modes_and_their_inductor_options():
    from sparsebench.measure.decode_graph import compile_options

    assert compile_options(None) is None and compile_options("default") is None
    assert compile_options("tuned") == {"coordinate_descent_tuning": True}
    assert compile_options("tuned-pdl") == {"coordinate_descent_tuning": True, "triton.enable_pdl": True}
    with pytest.raises(ValueError, match="compile must be one of"):
        compile_options("fast")


def test_pdl_switched_on_for_the_block_only(monkeypatch):
    """``pdl=True`` sets the kernels' switch while the block runs and puts back what was there."""
    import os

    monkeypatch.setenv("SPARSEBENCH_PDL", "0")
    with gemv_decode(_tiny(attn="eager"), "cpu", pdl=True) as labels:
        assert os.environ["SPARSEBENCH_PDL"] == "1"
        assert labels["decode_launch"].endswith("the plugins' kernels and inductor's")
    assert os.environ["SPARSEBENCH_PDL"] == "0"
    monkeypatch.delenv("SPARSEBENCH_PDL")
    with gemv_decode(_tiny(attn="eager"), "cpu") as labels:
        assert "decode_launch" not in labels and "SPARSEBENCH_PDL" not in os.environ


def test_plugins_found_through_their_entry_points():
    assert "dense_gemv" in linear_kernels().names()
    assert linear_kernels().get("dense_gemv").describe().startswith("dense_gemv triton (bn=")
    assert "static_decode" in attention_kernels().names()


def test_last_positions_or_none():
    from sparsebench.measure.decode_kernels import last_positions

    pos = torch.tensor([[4, 9], [2, 7]])
    assert last_positions(pos, 2, "cpu").tolist() == [9, 7]
    assert last_positions(pos, 3, "cpu") is None and last_positions(None, 2, "cpu") is None
    assert last_positions(pos.float(), 2, "cpu") is None and last_positions(pos, 2, "cuda") is None


def test_lengths_from_a_causal_mask():
    mask = torch.zeros(2, 1, 1, 8, dtype=torch.bool)
    mask[0, ..., :5] = True
    mask[1, ..., :8] = True
    assert length_rows(mask).sum(-1).tolist() == [5, 8] and length_rows(mask).shape == (2, 8)


def test_which_products_qualify():
    w = torch.randn(8, 16)
    assert one_row(torch.randn(1, 1, 16), w, "cpu")
    assert not one_row(torch.randn(2, 16), w, "cpu")  # a prefill: a GEMM
    assert not one_row(torch.randn(1, 16), w, "cuda")  # another device
    assert not one_row(torch.randn(1, 8), w.t(), "cpu")  # column-major weight
    assert not one_row(torch.randn(1, 16, dtype=torch.float64), w, "cpu")  # dtypes differ


class _Counting:
    """A plugin, really run, with its calls counted."""

    def __init__(self, plugin, calls):
        self.plugin, self.calls = plugin, calls

    def __call__(self, *args, **kw):
        self.calls.append(tuple(args[1].shape))
        self.kw = kw
        return self.plugin(*args, **kw)

    def describe(self):
        return self.plugin.describe()


@needs_triton
def test_decode_step_through_the_kernels_and_undone(monkeypatch):
    linear_calls, attention_calls = [], []
    gemv = _Counting(linear_kernels().get("dense_gemv"), linear_calls)
    attn = _Counting(attention_kernels().get("static_decode"), attention_calls)
    monkeypatch.setattr(linear_kernels(), "get", lambda name: gemv)
    monkeypatch.setattr(attention_kernels(), "get", lambda name: attn)
    model = _tiny()
    with torch.no_grad():
        want = _decode_step(model)
        original = F.linear
        with gemv_decode(model, "cpu") as labels:
            assert model.config._attn_implementation == ATTENTION
            got = _decode_step(model)  # the 4-token prefill stays on F.linear and SDPA
        assert F.linear is original and model.config._attn_implementation == "sdpa"
    # the decode step only: 2 layers x 7 projections + the LM head, each one row; 2 attentions
    assert len(linear_calls) == 15 and (32, 32) in linear_calls
    assert attention_calls == [(1, 1, 8, 16)] * 2
    assert attn.kw == {"positions": True}  # lengths read from the position ids, not from the mask
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert labels["decode_attention"].startswith("static_decode: topk_decode_attn split-K paged kernel")
    assert labels["decode_linear"].startswith("dense_gemv: dense_gemv triton")
    assert labels["decode_cache"].startswith("one write position for all layers")
    from sparsebench.measure import decode_graph

    assert not decode_graph.CACHE_PREPARERS  # the shared write position is undone too


def test_other_attention_kept_and_restored_after_an_error():
    model = _tiny(attn="eager")
    original = F.linear
    with pytest.raises(RuntimeError, match="boom"), gemv_decode(model, "cpu") as labels:
        assert labels["decode_attention"] == "eager (as installed)"
        raise RuntimeError("boom")
    assert F.linear is original and model.config._attn_implementation == "eager"
    assert decode_kernels.KERNEL == "dense_gemv"


class _CountingNormed(_Counting):
    def __init__(self, plugin, calls, normed_calls):
        super().__init__(plugin, calls)
        self.normed_calls = normed_calls

    def normed(self, x, weight, bias, norm_weight, eps):
        self.normed_calls.append((tuple(weight.shape), eps))
        return self.plugin.normed(x, weight, bias, norm_weight, eps)


def _layer_types(model):
    return [(type(lay.input_layernorm).__name__, type(lay.post_attention_layernorm).__name__,
             type(lay.self_attn.q_proj).__name__, type(lay.mlp.gate_proj).__name__) for lay in model.model.layers]


@needs_triton
def test_norms_folded_into_the_fused_gemvs_and_undone(monkeypatch):
    """On fused groups the two RMSNorms of each layer run inside the q/k/v and gate/up GEMVs
    (the norm modules become the identity), the decode step's logits do not move, the prefill
    still normalises explicitly, and everything is put back on exit."""
    from sparsebench.measure.fuse import fuse_projections_, unfuse_projections_

    linear_calls, normed_calls = [], []
    gemv = _CountingNormed(linear_kernels().get("dense_gemv"), linear_calls, normed_calls)
    monkeypatch.setattr(linear_kernels(), "get", lambda name: gemv)
    model = _tiny()
    with torch.no_grad():
        want = _decode_step(model)
        fuse_projections_(model)
        before = _layer_types(model)
        # fold_rope off: its decode-step check would add GEMV calls to the ones counted here
        with gemv_decode(model, "cpu", check_ids=torch.tensor([[1, 5, 7, 2, 3, 9]]), fold_rope=False) as labels:
            assert labels["decode_norms"] == "input + post-attention RMSNorm -> qkv / gate_up GEMV x4"
            assert _layer_types(model) == [("Deferred", "Deferred", "_NormFoldedLead", "_NormFoldedLead")] * 2
            got = _decode_step(model)
        assert _layer_types(model) == before == [("LlamaRMSNorm", "LlamaRMSNorm", "_FusedLead", "_FusedLead")] * 2
        unfuse_projections_(model)
    eps = model.config.rms_norm_eps
    assert normed_calls == [((64, 32), eps), ((96, 32), eps)] * 2  # decode step only: q/k/v 32+16+16, gate/up 48+48
    assert len(linear_calls) == 2 * 1 + 2 * 1 + 1  # o_proj and down_proj per layer, and the LM head
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_norm_fold_refuses_other_norms_and_undoes_a_failed_check(monkeypatch):
    from torch import nn
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from sparsebench.measure import fuse, norm_fold
    from sparsebench.measure.fuse import fuse_projections_

    assert norm_fold.rms_eps(LlamaRMSNorm(8, eps=1e-5)) == 1e-5

    class OnePlus(LlamaRMSNorm):  # Gemma-style: (1 + weight) * x / rms(x)
        def forward(self, x):
            return super().forward(x) + x / x.pow(2).mean(-1, keepdim=True).add(self.variance_epsilon).sqrt()

    assert norm_fold.rms_eps(OnePlus(8)) is None
    assert norm_fold.rms_eps(nn.LayerNorm(8)) is None

    model = _tiny()
    fuse_projections_(model)
    before = _layer_types(model)
    outputs = iter([torch.ones(1, 2, 3), torch.zeros(1, 2, 3)])  # the check forward: logits moved
    monkeypatch.setattr(fuse, "check_logits", lambda m, ids: next(outputs))  # what checked_fold calls
    plugin = linear_kernels().get("dense_gemv")
    with norm_fold.folded_norms(model, plugin, "cpu", torch.tensor([[1, 2]])) as label:
        assert label == "not folded: the check forward moved the logits by 1.0e+00 (relative)"
        assert _layer_types(model) == before
    with norm_fold.folded_norms(_tiny(), plugin, "cpu", None) as label:  # nothing fused
        assert label.startswith("not folded: no Llama-style RMSNorm")


def test_graph_replay_judged_against_the_models_own_eager_spread():
    """A replay within tolerance passes without a second eager call; one off by more fails
    unless eager under the other cuBLAS library moves as far (then it is returned, for the
    caller to note the check as inconclusive)."""
    from sparsebench.measure.decode_graph import GRAPH_CHECK_TOL, judge_replay

    def never():
        raise AssertionError("the spread is only measured when the replay is off")

    assert judge_replay(1e-3, never) == 1e-3
    with pytest.raises(RuntimeError, match=r"relative error 9\.30e-01; eager under another cuBLAS library "
                                           r"differs by 2\.00e-03"):
        judge_replay(0.93, lambda: 2e-3)
    with pytest.raises(RuntimeError):
        judge_replay(0.93, lambda: 0.0)  # a torch that cannot switch libraries: strict
    assert judge_replay(0.93, lambda: 0.91) == 0.93 >= GRAPH_CHECK_TOL
