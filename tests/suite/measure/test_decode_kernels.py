"""The ``+gemv`` decode path: one-row linear products go to the GEMV plugin and one-token
attention over the static cache to the decode attention plugin (both found through their
entry points), everything else stays as it was, and all of it is undone after the block.
Runs the real kernels under the Triton interpreter on a tiny Llama (head dim 16)."""

import pytest
import torch
import torch.nn.functional as F

from sparsebench.api import DECODE_PATHS, MeasureSpec
from sparsebench.measure import decode_kernels
from sparsebench.measure.decode_kernels import ATTENTION, gemv_decode, one_row, seq_lens_from_mask
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
    model(input_ids=torch.tensor([[1, 5, 7, 2]]), past_key_values=cache, use_cache=True,
          cache_position=torch.arange(4))
    return model(input_ids=torch.tensor([[3]]), past_key_values=cache, use_cache=True,
                 cache_position=torch.tensor([4])).logits


def test_the_path_is_a_spec_value():
    assert "compile-tuned+gemv+graph" in DECODE_PATHS
    assert MeasureSpec(decode_path="compile-tuned+gemv+graph").decode_path == "compile-tuned+gemv+graph"


def test_plugins_found_through_their_entry_points():
    assert "dense_gemv" in linear_kernels().names()
    assert linear_kernels().get("dense_gemv").describe().startswith("dense_gemv triton (bn=")
    assert "static_decode" in attention_kernels().names()


def test_lengths_from_a_causal_mask():
    mask = torch.zeros(2, 1, 1, 8, dtype=torch.bool)
    mask[0, ..., :5] = True
    mask[1, ..., :8] = True
    assert seq_lens_from_mask(mask).tolist() == [5, 8]


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

    def __call__(self, *args):
        self.calls.append(tuple(args[1].shape))
        return self.plugin(*args)

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
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert labels["decode_attention"].startswith("static_decode: topk_decode_attn split-K paged kernel")
    assert labels["decode_linear"].startswith("dense_gemv: dense_gemv triton")


def test_other_attention_kept_and_restored_after_an_error():
    model = _tiny(attn="eager")
    original = F.linear
    with pytest.raises(RuntimeError, match="boom"), gemv_decode(model, "cpu") as labels:
        assert labels["decode_attention"] == "eager (as installed)"
        raise RuntimeError("boom")
    assert F.linear is original and model.config._attn_implementation == "eager"
    assert decode_kernels.KERNEL == "dense_gemv"
