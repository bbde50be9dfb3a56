"""The KV-cache family's pieces on tensors small enough to check by hand: which positions
each policy keeps, KIVI's codes and packed bytes, pruning, the attention function, configs."""

import pytest
import torch
from pydantic import ValidationError

from sparsebench.methods.kv_cache import attention
from sparsebench.methods.kv_cache.attention import attend
from sparsebench.methods.kv_cache.cache import EvictingLayer
from sparsebench.methods.kv_cache.config import (
    H2OConfig,
    KiviConfig,
    MustafarConfig,
    SnapKVConfig,
    StreamingKVConfig,
    budget_tokens,
)
from sparsebench.methods.kv_cache.policies import (
    H2OPolicy,
    SnapKVPolicy,
    snapkv_keep,
    streaming_keep,
    top_with_window,
)
from sparsebench.methods.kv_cache.quant import (
    dequantize_keys,
    dequantize_values,
    pack,
    quantize,
    quantize_keys,
    quantize_values,
    unpack,
)
from sparsebench.methods.kv_cache.storage import (
    KiviLayer,
    SparseLayer,
    prune_rows,
    sparse_row_bytes,
)


def _kv(n, heads=1, d=4, start=0):
    """Keys whose first channel is the position, so what is kept can be read back."""
    k = torch.zeros(1, heads, n, d)
    k[..., 0] = torch.arange(start, start + n, dtype=torch.float32)
    return k, k.clone()


def _kept(layer):
    return layer.positions[0].tolist()


# ----------------------------------------------------------------------------- policies


def test_streaming_keeps_the_sinks_and_the_most_recent():
    assert streaming_keep(8, budget=5, sinks=2)[0, 0].tolist() == [0, 1, 5, 6, 7]
    assert streaming_keep(5, budget=5, sinks=2) is None  # everything fits
    assert streaming_keep(9, budget=3, sinks=0)[0, 0].tolist() == [6, 7, 8]


def test_top_with_window_keeps_the_window_and_the_best_of_the_rest_per_head():
    scores = torch.tensor([[[0.1, 0.9, 0.3, 0.8, 0.2, 0.05, 0.5],
                            [0.7, 0.1, 0.6, 0.0, 0.9, 0.05, 0.0]]])
    assert top_with_window(scores, budget=4, window=2)[0].tolist() == [[1, 3, 5, 6], [0, 4, 5, 6]]
    assert top_with_window(scores, budget=7, window=2) is None


def test_h2o_accumulates_attention_over_steps_and_evicts_after_each():
    layer = EvictingLayer(H2OPolicy(H2OConfig(budget=3, window=1)))
    layer.update(*_kv(4), 0)
    layer.after_attention(torch.tensor([[[1.0, 4.0, 2.0, 3.0]]]))  # prefill votes, summed
    # window: position 3; heavy hitters among 0..2: 4.0 (pos 1) and 2.0 (pos 2)
    assert _kept(layer) == [[1, 2, 3]]
    assert layer.scores[0].tolist() == [[4.0, 2.0, 3.0]]
    assert layer.keys[0, 0, :, 0].tolist() == [1.0, 2.0, 3.0]
    keys, _ = layer.update(*_kv(1, start=4), 0)
    assert keys[0, 0, :, 0].tolist() == [1.0, 2.0, 3.0, 4.0]  # the step attends held + new
    layer.after_attention(torch.tensor([[[0.5, 0.0, 3.0, 1.0]]]))
    # accumulated [4.5, 2.0, 6.0, 1.0]: window pos 4, heavy pos 1 (4.5) and pos 3 (6.0)
    assert _kept(layer) == [[1, 3, 4]]
    assert layer.scores[0].tolist() == [[4.5, 6.0, 1.0]]
    assert layer.get_seq_length() == 5 and layer.tokens_held() == 3


def test_snapkv_pooling_keeps_the_neighbours_of_a_strong_vote():
    prefix = [1.0, 0.0, 0.0, 6.0, 0.0, 0.0, 0.0, 2.0]
    votes = torch.tensor([[prefix + [9.0, 9.0]]])  # 8 prefix tokens + an observation window of 2
    # max pooling (k=3): [1, 1, 6, 6, 6, 0, 2, 2] -> top 3 are positions 2, 3, 4
    assert snapkv_keep(votes, budget=5, window=2, kernel_size=3, pooling="max")[0, 0].tolist() == [2, 3, 4, 8, 9]
    # average pooling (k=3, zero padding counted): [1/3, 1/3, 2, 2, 2, 0, 2/3, 2/3] -> same
    assert snapkv_keep(votes, budget=5, window=2, kernel_size=3, pooling="avg")[0, 0].tolist() == [2, 3, 4, 8, 9]
    # no pooling: the three largest raw votes (6, 2, 1)
    assert snapkv_keep(votes, budget=5, window=2, kernel_size=1, pooling="max")[0, 0].tolist() == [0, 3, 7, 8, 9]


def test_snapkv_layer_votes_once_at_prefill_then_appends():
    layer = EvictingLayer(SnapKVPolicy(SnapKVConfig(budget=0.5, window=2, kernel_size=1)))
    layer.update(*_kv(8, heads=2), 0)
    assert layer.budget == 4 and layer.votes_needed(8) == 2
    votes = torch.tensor([[[5.0, 0, 0, 4, 0, 0, 1, 1], [0, 0, 3, 0, 7, 0, 1, 1]]])
    layer.after_attention(votes)
    assert _kept(layer) == [[0, 3, 6, 7], [2, 4, 6, 7]]  # per KV head
    layer.update(*_kv(1, heads=2, start=8), 0)
    assert layer.votes_needed(1) == 0
    layer.after_attention(None)
    assert _kept(layer) == [[0, 3, 6, 7, 8], [2, 4, 6, 7, 8]]  # decode appends
    assert layer.get_seq_length() == 9


def test_fractional_budget_resolves_at_prefill_and_is_checked_there():
    assert budget_tokens(0.25, 1000) == 250 and budget_tokens(0.3, 10) == 3 and budget_tokens(1.0, 7) == 7
    assert budget_tokens(0.01, 10) == 1 and budget_tokens(64, 10) == 64
    layer = EvictingLayer(H2OPolicy(H2OConfig(budget=0.1, window=8)))
    with pytest.raises(ValueError, match=r"budget of 4 tokens \(budget 0.1 of a 40-token prompt\) cannot "
                                         r"hold window=8.*at least 8 tokens"):
        layer.update(*_kv(40), 0)


# ----------------------------------------------------------------------------- KIVI


def test_quantize_dequantize_by_hand():
    x = torch.tensor([0.0, 1.0, 2.9, 3.0])
    codes, scale, zero = quantize(x, bits=2, dim=-1)
    assert codes.tolist() == [0, 1, 3, 3] and scale.item() == 1.0 and zero.item() == 0.0
    assert pack(codes, 2).tolist() == [0 | 1 << 2 | 3 << 4 | 3 << 6]  # 244
    assert unpack(pack(codes, 2), 2).tolist() == [0, 1, 3, 3]
    codes, scale, zero = quantize(torch.tensor([0.0, 0.4, 3.0, 1.0]), bits=4, dim=-1)
    assert codes.tolist() == [0, 2, 15, 5] and scale.item() == pytest.approx(0.2)
    assert pack(codes, 4).tolist() == [0 | 2 << 4, 15 | 5 << 4]
    const, s, z = quantize(torch.full((3,), 7.0), bits=2, dim=-1)  # constant group: scale 1, codes 0
    assert const.tolist() == [0, 0, 0] and s.item() == 1.0 and z.item() == 7.0


def test_keys_are_quantized_per_channel_over_tokens_values_per_token_over_channels():
    # 1 row, 1 head, 2 tokens, 4 channels; key channels: [0, 3], [1, 2], [5, 5], [0, -3]
    k = torch.tensor([[[[0.0, 1.0, 5.0, 0.0], [3.0, 2.0, 5.0, -3.0]]]])
    packed, scale, zero = quantize_keys(k, bits=2, group=2)
    assert scale.flatten().tolist() == pytest.approx([1.0, 1 / 3, 1.0, 1.0])  # constant channel: 1
    assert zero.flatten().tolist() == [0.0, 1.0, 5.0, -3.0]
    assert unpack(packed, 2).flatten().tolist() == [0, 0, 0, 3, 3, 3, 0, 0]
    torch.testing.assert_close(dequantize_keys(packed, scale, zero, 2, 2), k)
    # values: per token, groups of 2 channels: [0, 1], [5, 0] and [3, 2], [5, -3]
    packed, scale, zero = quantize_values(k, bits=2, group=2)
    assert scale.flatten().tolist() == pytest.approx([1 / 3, 5 / 3, 1 / 3, 8 / 3])
    assert zero.flatten().tolist() == [0.0, 0.0, 2.0, -3.0]
    torch.testing.assert_close(dequantize_values(packed, scale, zero, 2, 2), k)


def test_kivi_layer_quantizes_whole_groups_outside_the_residual_and_counts_packed_bytes():
    layer = KiviLayer(bits=2, group=4, residual=2)
    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(1, 2, 11, 8, generator=g), torch.randn(1, 2, 11, 8, generator=g)
    keys, values = layer.update(k, v, 0)
    assert torch.equal(keys, k)  # prefill attends full precision
    layer.after_attention(None)
    assert layer.tokens_quantized() == 8 and layer.rk.shape[-2] == 3  # (11 - 2) // 4 * 4 = 8
    # codes 2 x (1*2*8 tokens*8 ch*2 bits/8) + key scale/zero 2 x (1*2*2 groups*8) x 4 B
    # + value scale/zero 2 x (1*2*8*2 groups) x 4 B + residual 2 x (1*2*3*8) x 4 B
    assert layer.bytes_held() == 2 * 32 + 256 + 256 + 384 == 960
    assert layer.bytes_full() == 2 * 2 * 11 * 8 * 4 == 1408
    new_k, new_v = torch.randn(1, 2, 1, 8, generator=g), torch.randn(1, 2, 1, 8, generator=g)
    keys, values = layer.update(new_k, new_v, 0)
    want_k = torch.cat([dequantize_keys(*quantize_keys(k[..., :8, :], 2, 4), 2, 4), k[..., 8:, :], new_k], 2)
    want_v = torch.cat([dequantize_values(*quantize_values(v[..., :8, :], 2, 4), 2, 4), v[..., 8:, :], new_v], 2)
    torch.testing.assert_close(keys, want_k)
    torch.testing.assert_close(values, want_v)
    assert layer.get_seq_length() == 12 and layer.tokens_held() == 12


# ----------------------------------------------------------------------------- pruning


def test_pruning_keeps_the_largest_magnitudes_of_each_vector():
    x = torch.tensor([[3.0, -5.0, 1.0, 0.5], [0.125, -0.25, 0.5, -0.75]])
    assert prune_rows(x, 2).tolist() == [[3.0, -5.0, 0.0, 0.0], [0.0, 0.0, 0.5, -0.75]]
    assert sparse_row_bytes(128, 64, 2) == 64 * 2 + 16  # bf16 values + a 128-bit bitmap


def test_sparse_layer_prunes_tokens_leaving_the_window():
    layer = SparseLayer(density=0.5, window=2)
    k = torch.tensor([[[[4.0, -1.0, 0.5, 3.0]] * 5]])
    layer.update(k, k.clone(), 0)
    layer.after_attention(None)
    assert layer.pruned == 3
    assert layer.keys[0, 0, :3].tolist() == [[4.0, 0.0, 0.0, 3.0]] * 3
    assert layer.keys[0, 0, 3:].tolist() == [[4.0, -1.0, 0.5, 3.0]] * 2
    # 3 pruned tokens x (2 values x 4 B + 1 bitmap byte) + 2 dense x 4 x 4 B, for K and for V
    assert layer.bytes_held() == 2 * (3 * 9 + 2 * 16)


# ----------------------------------------------------------------------------- attention


def _reference(q, k, v, scale):
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    n, m = q.shape[-2], k.shape[-2]
    logits = q @ k.transpose(-1, -2) * scale
    allowed = torch.arange(m)[None, :] <= (m - n + torch.arange(n))[:, None]  # bottom-right causal
    p = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    return p @ v, p


@pytest.mark.parametrize("q_len,past", [(3, 4), (1, 6), (5, 0)])
@pytest.mark.parametrize("n_votes", [0, 2, 99])
@pytest.mark.parametrize("chunk", [1 << 24, 40])
def test_attention_sees_every_held_entry_and_is_causal_among_new_tokens(monkeypatch, q_len, past, n_votes, chunk):
    monkeypatch.setattr(attention, "CHUNK_ELEMS", chunk)  # 40: one or two query rows per chunk
    g = torch.Generator().manual_seed(q_len * 10 + past)
    q = torch.randn(2, 4, q_len, 8, generator=g)
    k, v = torch.randn(2, 2, past + q_len, 8, generator=g), torch.randn(2, 2, past + q_len, 8, generator=g)
    out, votes = attend(q, k, v, 0.3, n_votes)
    want, p = _reference(q, k, v, 0.3)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    if n_votes == 0:
        assert votes is None
    else:
        rows = min(n_votes, q_len)
        want_votes = p[:, :, q_len - rows:].reshape(2, 2, 2, rows, -1).sum(dim=(2, 3))
        torch.testing.assert_close(votes, want_votes, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("cls,data,needle", [
    (H2OConfig, {"budget": 0}, "budget 0 is not allowed: an integer budget is a token count >= 1"),
    (H2OConfig, {"budget": -3}, "budget -3 is not allowed"),
    (H2OConfig, {"budget": 0.0}, "a float budget is a fraction of the prompt length in (0, 1]"),
    (H2OConfig, {"budget": 1.5}, "write an integer for a number of tokens"),
    (H2OConfig, {"budget": -0.5}, "in (0, 1]"),
    (H2OConfig, {"budget": "abc"}, "budget must be a fraction in (0, 1]"),
    (H2OConfig, {"budget": True}, "budget must be a fraction"),
    (H2OConfig, {"budget": 16, "window": 32}, "a budget of 16 tokens cannot hold window=32"),
    (SnapKVConfig, {"budget": 8, "window": 9}, "cannot hold window=9 (the observation window"),
    (SnapKVConfig, {"kernel_size": 4}, "kernel_size must be odd"),
    (SnapKVConfig, {"pooling": "median"}, "pooling"),
    (StreamingKVConfig, {"budget": 4, "sinks": 4}, "cannot hold sinks=4 plus at least 1 recent token"),
    (StreamingKVConfig, {"sinks": -1}, "sinks"),
    (KiviConfig, {"bits": 3}, "bits"),
    (KiviConfig, {"residual": -1}, "residual"),
    (MustafarConfig, {"density": 0}, "density must be in (0, 1]"),
    (MustafarConfig, {"density": 1.5}, "density must be in (0, 1]"),
    (H2OConfig, {"sparsity": 0.5}, "sparsity"),
])
def test_bad_configs_are_refused_naming_the_field_and_what_is_allowed(cls, data, needle):
    with pytest.raises(ValidationError) as err:
        cls(**data)
    assert needle in str(err.value)


def test_budget_forms_are_unambiguous_and_round_trip():
    assert H2OConfig(budget="0.25").budget == 0.25 and H2OConfig(budget="256").budget == 256
    assert isinstance(H2OConfig(budget="1.0").budget, float) and isinstance(H2OConfig(budget="32").budget, int)
    for b in (0.25, 1.0, 64):
        cfg = SnapKVConfig(budget=b)
        back = SnapKVConfig.from_dict(cfg.to_dict())
        assert back == cfg and type(back.budget) is type(b)
    assert SnapKVConfig().to_dict() == {"budget": 0.25, "window": 32, "kernel_size": 7, "pooling": "max",
                                        "version": 1}
