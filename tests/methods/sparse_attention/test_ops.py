"""Each pattern's attention call equals a dense softmax over its explicit mask (float32), on
odd shapes, with GQA, and with query rows split into several chunks."""

import pytest
import torch

from sparsebench.methods.sparse_attention import ops
from sparsebench.methods.sparse_attention import patterns as P

from .helpers import reference_attention

B, HQ, HKV, N, D = 2, 6, 3, 37, 12
SCALE = D ** -0.5


@pytest.fixture(params=[1 << 24, 700], ids=["one-chunk", "many-chunks"])
def qkv(request, monkeypatch):
    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", request.param)
    g = torch.Generator().manual_seed(3)
    return (torch.randn(B, HQ, N, D, generator=g), torch.randn(B, HKV, N, D, generator=g),
            torch.randn(B, HKV, N, D, generator=g))


def _causal(n=N):
    return torch.ones(n, n, dtype=torch.bool).tril()


@pytest.mark.parametrize("sinks,window", [(0, 1), (2, 5), (4, 100)])
def test_streaming_prefill(qkv, sinks, window):
    q, k, v = qkv
    q_pos = torch.arange(N)[None]
    got = ops.streaming_attention(q, k, v, q_pos, sinks, window, SCALE)
    allowed = P.streaming_allowed(torch.arange(N), N, sinks, window)
    torch.testing.assert_close(got, reference_attention(q, k, v, allowed, SCALE), rtol=1e-5, atol=1e-5)


def test_streaming_decode_with_a_static_cache_mask(qkv):
    q, k, v = qkv
    filled = 30  # cache slots 30.. are still empty
    mask = torch.zeros(1, 1, 1, N, dtype=torch.bool)
    mask[..., :filled] = True
    got = ops.streaming_attention(q[:, :, :1], k, v, torch.tensor([[filled - 1]]), 2, 7, SCALE, mask)
    allowed = P.streaming_allowed(torch.tensor([filled - 1]), N, 2, 7)
    torch.testing.assert_close(got, reference_attention(q[:, :, :1], k, v, allowed, SCALE), rtol=1e-5, atol=1e-5)


def test_block_sparse_prefill(qkv):
    q, k, v = qkv
    block = 5
    nb = P.n_blocks(N, block)
    g = torch.Generator().manual_seed(1)
    bm = (torch.rand(B, HQ, nb, nb, generator=g) > 0.6) | torch.eye(nb, dtype=torch.bool)
    got = ops.block_sparse_prefill(q, k, v, bm, block, SCALE)
    tokens = bm.repeat_interleave(block, -1).repeat_interleave(block, -2)[..., :N, :N] & _causal()
    torch.testing.assert_close(got, reference_attention(q, k, v, tokens, SCALE), rtol=1e-5, atol=1e-5)


def test_vertical_slash_prefill(qkv):
    q, k, v = qkv
    g = torch.Generator().manual_seed(2)
    cols = torch.rand(B, HQ, N, generator=g) > 0.8
    diags = torch.rand(B, HQ, N, generator=g) > 0.8
    diags[..., 0] = True
    got = ops.vertical_slash_prefill(q, k, v, cols, diags, SCALE)
    p = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    tokens = (cols[..., None, :] | diags[..., (p - j).clamp(min=0)]) & _causal()
    torch.testing.assert_close(got, reference_attention(q, k, v, tokens, SCALE), rtol=1e-5, atol=1e-5)


def test_page_decode(qkv):
    q, k, v = qkv
    page = 4
    pages = P.n_blocks(N, page)
    g = torch.Generator().manual_seed(4)
    keep = torch.rand(B, HQ, pages, generator=g) > 0.5
    keep[..., -1] = True
    valid = torch.ones(1, N, dtype=torch.bool)
    valid[:, 35:] = False
    got = ops.page_decode(q[:, :, :1], k, v, keep, page, SCALE, valid)
    tokens = keep.repeat_interleave(page, -1)[..., :N] & valid[:, None]
    want = reference_attention(q[:, :, :1], k, v, tokens[:, :, None], SCALE)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_everything_allowed_is_dense_sdpa(qkv):
    q, k, v = qkv
    want = torch.nn.functional.scaled_dot_product_attention(
        q, ops.expand_kv(k, HQ), ops.expand_kv(v, HQ), is_causal=True, scale=SCALE)
    nb = P.n_blocks(N, 8)
    got = ops.block_sparse_prefill(q, k, v, torch.ones(1, 1, nb, nb, dtype=torch.bool), 8, SCALE)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_the_dtype_and_accumulates_in_float32(qkv):
    q, k, v = (x.bfloat16() for x in qkv)
    got = ops.streaming_attention(q, k, v, torch.arange(N)[None], 2, 6, SCALE)
    assert got.dtype == torch.bfloat16
    allowed = P.streaming_allowed(torch.arange(N), N, 2, 6)
    want = reference_attention(q, k, v, allowed, SCALE)
    torch.testing.assert_close(got.float(), want.float(), rtol=1.6e-2, atol=1e-2)


def test_block_sparse_prefill_local_reference_when_the_kernel_is_missing(qkv, monkeypatch):
    q, k, v = qkv
    block = 6
    nb = P.n_blocks(N, block)
    bm = torch.ones(nb, nb, dtype=torch.bool).tril() & (torch.rand(nb, nb, generator=torch.Generator().manual_seed(5)) > 0.4)
    bm |= torch.eye(nb, dtype=torch.bool)
    with_kernel = ops.block_sparse_prefill(q, k, v, bm, block, SCALE)
    monkeypatch.setattr(ops, "block_sparse_kernel", lambda: None)
    local = ops.block_sparse_prefill(q, k, v, bm, block, SCALE)
    tokens = bm.repeat_interleave(block, -1).repeat_interleave(block, -2)[:N, :N] & _causal()
    want = reference_attention(q, k, v, tokens, SCALE)
    torch.testing.assert_close(local, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_kernel, want, rtol=1e-5, atol=1e-5)
    assert "unavailable" in ops.describe_block_sparse("ref", "cpu", D, block)
