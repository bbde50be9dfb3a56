"""Block-sparse causal prefill attention: the Triton kernel against its reference, the
reference against ordinary causal attention, and the pattern helpers.

Every kernel call writes into a NaN-filled output, so a row the kernel forgets shows. On CPU
these run under the Triton interpreter (``TRITON_INTERPRET=1``), one Python step per tile
op: the shapes are small and the cases cover the dimensions (odd L, head dims, GQA 4:1 and
1:1, batch 1 and 2, every dtype, densities 1 / ~0.1 / diagonal only, square and unequal
blocks, tiles smaller than blocks, TMA descriptors and pointer loads) without a full cross
product. ``gpu``-marked tests run larger shapes on a CUDA device.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from sparsebench.kernels.block_sparse_attn import (
    BsaConfig,
    block_sparse_attention,
    block_sparse_attention_ref,
    causal_block_mask,
    density,
    diagonal,
    index_to_mask,
    mask_to_index,
    num_blocks,
    random_block_mask,
    reachable,
    streaming_block_index,
    streaming_block_mask,
    streaming_max_count,
    vertical_slash_block_mask,
    vertical_slash_mask,
)
from sparsebench.kernels.tolerances import assert_close

from .markers import DEVICE, needs_cuda, needs_triton

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


def _qkv(B, H, hkv, L, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, h, L, D, generator=g).to(dtype).to(DEVICE) for h in (H, hkv, hkv))
    return q, k, v


def _pattern(kind, B, H, L, bm, bn, seed=0):
    if kind == "dense":
        return causal_block_mask(L, bm, bn, DEVICE).expand(B, H, *num_blocks(L, bm, bn))
    if kind == "diag":
        nq, nk = num_blocks(L, bm, bn)
        return (diagonal(nq, nk, bm, bn, DEVICE) & reachable(nq, nk, bm, bn, DEVICE)).expand(B, H, nq, nk)
    return random_block_mask(B, H, L, bm, bn, density=float(kind), seed=seed, device=DEVICE)


def _run(q, k, v, idx, cnt, bm, bn, cfg, scale=None):
    from sparsebench.kernels.block_sparse_attn.triton import block_sparse_attention_triton

    out = torch.full_like(q, float("nan"))
    got = block_sparse_attention_triton(q, k, v, idx, cnt, block_m=bm, block_n=bn, scale=scale, out=out, config=cfg)
    assert got.data_ptr() == out.data_ptr()
    return got


# (B, Hq, Hkv, L, D, dtype, block_m, block_n, tile_m, tile_n, pattern, tma)
CASES = [
    (1, 4, 1, 1, 64, BF16, 16, 16, 16, 16, "dense", True),
    (2, 2, 2, 37, 32, F32, 16, 16, 16, 16, "dense", False),
    (1, 4, 1, 130, 64, F16, 32, 32, 32, 16, "0.1", True),  # two key steps per block
    (1, 4, 1, 257, 128, BF16, 32, 32, 32, 32, "0.1", False),
    (2, 2, 2, 257, 32, F32, 64, 32, 32, 32, "0.3", True),  # block_m > block_n, two programs a block
    (1, 4, 1, 130, 128, F16, 16, 16, 16, 16, "diag", False),
    (2, 1, 1, 130, 64, BF16, 32, 64, 32, 32, "0.5", True),  # block_m < block_n
    (1, 4, 1, 37, 128, F32, 16, 32, 16, 16, "diag", True),
    (2, 4, 4, 37, 64, F16, 16, 16, 16, 16, "dense", True),
]


def _case_id(c):
    B, H, hkv, L, D, dt, bm, bn, tm, tn, pat, tma = c
    return f"B{B}-{H}:{hkv}-L{L}-D{D}-{str(dt)[6:]}-b{bm}x{bn}-t{tm}x{tn}-{pat}{'-tma' if tma else ''}"


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_kernel_matches_ref(case):
    B, H, hkv, L, D, dtype, bm, bn, tm, tn, pat, tma = case
    q, k, v = _qkv(B, H, hkv, L, D, dtype, seed=L + D)
    mask = _pattern(pat, B, H, L, bm, bn, seed=L)
    idx, cnt = mask_to_index(mask, bm, bn)
    got = _run(q, k, v, idx, cnt, bm, bn, BsaConfig(tile_m=tm, tile_n=tn, num_warps=4, num_stages=2, tma=tma))
    want = block_sparse_attention_ref(q, k, v, idx, cnt, block_m=bm, block_n=bn)
    assert got.dtype == dtype and got.shape == q.shape
    assert torch.isfinite(got).all()
    assert_close(got, want)
    if pat == "dense":  # density 1 is ordinary causal attention
        assert density(cnt, L, bm, bn) == 1.0
    elif pat != "diag" and L > 2 * bm:  # the pattern matters at this tolerance
        with pytest.raises(AssertionError):
            assert_close(got, block_sparse_attention_ref(q, k, v, _pattern("dense", B, H, L, bm, bn), None,
                                                         block_m=bm, block_n=bn))


@needs_triton
@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_public_function_with_defaults_and_a_mask(dtype):
    """``impl="triton"`` with the head dim's default config (fitted to the blocks), a boolean
    mask instead of lists, a custom scale, and a pattern broadcast over the batch."""
    B, H, hkv, L, D, bm = 2, 2, 1, 70, 32, 32
    q, k, v = _qkv(B, H, hkv, L, D, dtype, seed=3)
    mask = random_block_mask(1, H, L, bm, density=0.4, seed=5, device=DEVICE)  # [1, H, ...]
    got = block_sparse_attention(q, k, v, mask, block_m=bm, scale=0.3, impl="triton")
    want = block_sparse_attention(q, k, v, mask, block_m=bm, scale=0.3, impl="ref")
    assert_close(got, want)
    idx, cnt = mask_to_index(mask, bm, bm)
    assert idx.shape[0] == 1
    assert torch.equal(block_sparse_attention(q, k, v, idx, cnt, block_m=bm, scale=0.3, impl="triton"), got)


@needs_triton
def test_rows_without_live_keys_are_zero():
    """A pattern that leaves out the diagonal: early rows of a block see nothing (zeros), and
    a query block with an empty list (count 0) is all zeros."""
    B, H, L, D, bm = 1, 2, 64, 32, 16
    q, k, v = _qkv(B, H, H, L, D, F32, seed=4)
    nq, nk = num_blocks(L, bm, bm)
    mask = torch.zeros(B, H, nq, nk, dtype=torch.bool, device=DEVICE)
    mask[..., 2, 0] = True  # query block 2 sees only key block 0
    idx, cnt = mask_to_index(mask, bm, bm)
    assert int(cnt[0, 0, 0]) == 0
    got = _run(q, k, v, idx, cnt, bm, bm, BsaConfig(tile_m=16, tile_n=16, num_warps=4, num_stages=2))
    want = block_sparse_attention_ref(q, k, v, idx, cnt, block_m=bm, block_n=bm)
    assert_close(got, want)
    assert not got[:, :, :32].any() and not got[:, :, 48:].any()
    assert got[:, :, 32:48].abs().sum() > 0


@needs_triton
def test_vertical_slash_pattern():
    B, H, hkv, L, D, bm = 1, 2, 1, 160, 32, 32
    q, k, v = _qkv(B, H, hkv, L, D, BF16, seed=6)
    g = torch.Generator().manual_seed(1)
    vertical = torch.randint(0, L, (B, H, 3), generator=g).to(DEVICE)
    slash = torch.randint(0, L, (B, H, 2), generator=g).to(DEVICE)
    mask = vertical_slash_mask(L, bm, bm, vertical, slash)
    idx, cnt = mask_to_index(mask, bm, bm)
    assert 0 < density(cnt, L, bm) < 1
    got = _run(q, k, v, idx, cnt, bm, bm, BsaConfig(tile_m=32, tile_n=32, num_warps=4, num_stages=2, tma=True))
    assert_close(got, block_sparse_attention_ref(q, k, v, idx, cnt, block_m=bm, block_n=bm))


@needs_triton
def test_repeated_calls_are_identical():
    q, k, v = _qkv(1, 2, 1, 70, 32, BF16, seed=7)
    idx, cnt = mask_to_index(random_block_mask(1, 2, 70, 16, density=0.5, seed=2, device=DEVICE), 16, 16)
    cfg = BsaConfig(tile_m=16, tile_n=16, num_warps=4, num_stages=2)
    assert torch.equal(_run(q, k, v, idx, cnt, 16, 16, cfg), _run(q, k, v, idx, cnt, 16, 16, cfg))


@pytest.mark.parametrize("L,hkv", [(1, 1), (37, 2), (130, 1), (257, 2)])
def test_ref_at_density_one_is_sdpa_causal(L, hkv):
    B, H, D, bm = 2, 2, 32, 32
    q, k, v = _qkv(B, H, hkv, L, D, F32, seed=L)
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(H // hkv, 1), v.repeat_interleave(H // hkv, 1),
                                          is_causal=True)
    mask = causal_block_mask(L, bm, 16, DEVICE)
    assert_close(block_sparse_attention_ref(q, k, v, mask, block_m=bm, block_n=16), want)
    idx, cnt = mask_to_index(mask, bm, 16)
    assert_close(block_sparse_attention(q, k, v, idx, cnt, block_m=bm, block_n=16, impl="ref"), want)


def test_ref_is_the_definition():
    """Token mask = block mask AND causal, softmax over it, by hand for one row."""
    B, H, L, D, bm = 1, 1, 8, 4, 2
    q, k, v = _qkv(B, H, H, L, D, F32, seed=9)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool, device=DEVICE)
    mask[0, 0, 3, 0] = mask[0, 0, 3, 3] = True  # query block 3 (rows 6, 7) sees keys 0, 1 and 6, 7 (causal)
    out = block_sparse_attention_ref(q, k, v, mask, block_m=bm, scale=0.5)
    live = [0, 1, 6]  # row 6
    p = torch.softmax(0.5 * q[0, 0, 6] @ k[0, 0, live].T, -1)
    assert torch.allclose(out[0, 0, 6], p @ v[0, 0, live], atol=1e-6)
    assert not out[0, 0, :6].any()  # query blocks 0..2 list nothing: zeros
    rows = block_sparse_attention_ref(q, k, v, mask, block_m=bm, scale=0.5, rows=(5, 8))
    assert torch.equal(rows, out[:, :, 5:8])


def test_layout_helpers():
    L, bm, bn = 257, 32, 16
    nq, nk = num_blocks(L, bm, bn)
    assert (nq, nk) == (9, 17)
    dense = causal_block_mask(L, bm, bn)
    idx, cnt = mask_to_index(dense, bm, bn)
    assert density(cnt, L, bm, bn) == 1.0
    assert cnt[0, 0].tolist() == [min(2 * (i + 1), nk) for i in range(nq)]
    assert torch.equal(index_to_mask(idx, cnt, nk), dense)
    m = random_block_mask(2, 3, L, bm, bn, density=0.3, seed=11)
    assert torch.equal(m, random_block_mask(2, 3, L, bm, bn, density=0.3, seed=11))
    assert not torch.equal(m, random_block_mask(2, 3, L, bm, bn, density=0.3, seed=12))
    idx, cnt = mask_to_index(m, bm, bn)
    assert abs(density(cnt, L, bm, bn) - 0.3) < 0.02
    assert (idx[..., 1:] > idx[..., :-1])[torch.arange(idx.shape[-1] - 1) < cnt[..., None] - 1].all()  # ascending
    assert torch.equal(index_to_mask(idx, cnt, nk), m & reachable(nq, nk, bm, bn))
    assert (m | ~(diagonal(nq, nk, bm, bn) & reachable(nq, nk, bm, bn))).all()  # diagonal always live
    assert m[..., 0].all()  # the sink block
    # a mask that lists blocks in the future loses them
    full = torch.ones(1, 1, nq, nk, dtype=torch.bool)
    assert torch.equal(mask_to_index(full, bm, bn)[1], mask_to_index(dense, bm, bn)[1])


def test_vertical_slash_covers_its_tokens():
    L, bm, bn = 200, 32, 16
    vertical = torch.tensor([[[5, 150]]])
    slash = torch.tensor([[[0, 40, 199]]])
    mask = vertical_slash_mask(L, bm, bn, vertical, slash)[0, 0]
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    tok = ((j == 5) | (j == 150) | (i - j == 0) | (i - j == 40) | (i - j == 199)) & (j <= i)
    covered = mask[i // bm, j // bn]
    assert covered[tok].all()
    assert mask.sum() < mask.numel()


@needs_triton
def test_bad_inputs_are_refused():
    q, k, v = _qkv(1, 3, 2, 16, 32, F32)
    idx, cnt = mask_to_index(causal_block_mask(16, 16, 16, DEVICE), 16, 16)
    with pytest.raises(ValueError, match="GQA"):
        block_sparse_attention(q, k, v, idx, cnt, block_m=16, impl="triton")
    q, k, v = _qkv(1, 2, 2, 16, 24, F32)
    with pytest.raises(ValueError, match="head dims"):
        block_sparse_attention(q, k, v, idx, cnt, block_m=16, impl="triton")
    q, k, v = _qkv(1, 2, 2, 40, 32, F32)
    with pytest.raises(ValueError, match="query blocks"):
        block_sparse_attention(q, k, v, idx, cnt, block_m=16, impl="triton")
    with pytest.raises(ValueError, match="divide"):
        BsaConfig(tile_m=32, tile_n=32).fit(48, 32)
    with pytest.raises(ValueError, match="expected e.g."):
        BsaConfig.parse("tm=128,tx=3")
    assert BsaConfig.parse(BsaConfig(tile_m=64, tile_n=32, num_warps=4, num_stages=4, tma=True).label()) == \
        BsaConfig(tile_m=64, tile_n=32, num_warps=4, num_stages=4, tma=True)


# ---- sinks / window: StreamingLLM's token pattern inside the listed blocks ----

def _streaming_tokens(L, sinks, window):
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    return (j <= i) & ((j < sinks) | (i - j < window))


def _masked_softmax_ref(q, k, v, tokens, scale=None):
    g = q.shape[1] // k.shape[1]
    kf, vf = k.repeat_interleave(g, 1).float(), v.repeat_interleave(g, 1).float()
    s = (q.float() @ kf.transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
    return torch.softmax(s.masked_fill(~tokens.to(s.device), float("-inf")), -1) @ vf


# (B, Hq, Hkv, L, D, dtype, block_m, block_n, tile_m, tile_n, sinks, window, tma)
WINDOW_CASES = [
    (1, 4, 1, 130, 32, F32, 32, 32, 32, 16, 3, 20, True),  # sinks inside block 0, edge inside blocks, tiles < blocks
    (2, 2, 2, 77, 16, BF16, 16, 16, 16, 16, 0, 9, False),  # no sinks, a window shorter than a block
    (1, 4, 2, 100, 32, F16, 16, 32, 16, 16, 5, 7, True),  # block_m < block_n
    (1, 2, 1, 97, 32, BF16, 32, 16, 16, 16, 17, 40, False),  # block_m > block_n, sinks past one block
    (1, 2, 2, 37, 16, F32, 16, 16, 16, 16, 0, 1, True),  # window 1: each row sees only itself
]


def _wcase_id(c):
    B, H, hkv, L, D, dt, bm, bn, tm, tn, sinks, window, tma = c
    return f"B{B}-{H}:{hkv}-L{L}-D{D}-{str(dt)[6:]}-b{bm}x{bn}-t{tm}x{tn}-s{sinks}-w{window}{'-tma' if tma else ''}"


@needs_triton
@pytest.mark.parametrize("case", WINDOW_CASES, ids=_wcase_id)
def test_kernel_with_sinks_and_window_matches_ref(case):
    B, H, hkv, L, D, dtype, bm, bn, tm, tn, sinks, window, tma = case
    q, k, v = _qkv(B, H, hkv, L, D, dtype, seed=L + window)
    idx, cnt = streaming_block_index(L, bm, bn, sinks=sinks, window=window, device=DEVICE)
    cfg = BsaConfig(tile_m=tm, tile_n=tn, num_warps=4, num_stages=2, tma=tma)
    out = torch.full_like(q, float("nan"))
    from sparsebench.kernels.block_sparse_attn.triton import block_sparse_attention_triton

    got = block_sparse_attention_triton(q, k, v, idx, cnt, block_m=bm, block_n=bn, out=out, config=cfg,
                                        sinks=sinks, window=window)
    # the definition: every causal block, the token mask doing all the work
    want = block_sparse_attention_ref(q, k, v, causal_block_mask(L, bm, bn, DEVICE), block_m=bm, block_n=bn,
                                      sinks=sinks, window=window)
    assert torch.isfinite(got).all()
    assert_close(got, want)
    assert_close(block_sparse_attention_ref(q, k, v, idx, cnt, block_m=bm, block_n=bn, sinks=sinks,
                                            window=window), want)  # the lists lose no visible pair
    if window == 1 and sinks == 0:
        assert_close(got, v.repeat_interleave(H // hkv, 1))


@needs_triton
@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_window_at_least_the_length_is_plain_causal(dtype):
    B, H, hkv, L, D, bm = 1, 2, 1, 45, 32, 16
    q, k, v = _qkv(B, H, hkv, L, D, dtype, seed=2)
    mask = causal_block_mask(L, bm, bm, DEVICE)
    plain = block_sparse_attention(q, k, v, mask, block_m=bm, impl="triton")
    want = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(2, 1),
                                          v.float().repeat_interleave(2, 1), is_causal=True)
    assert_close(plain, want)
    for window in (L, L + 1, 1000):
        idx, cnt = streaming_block_index(L, bm, bm, sinks=4, window=window, device=DEVICE)
        assert torch.equal(cnt, mask_to_index(mask, bm, bm)[1])  # every causal block
        for impl in ("triton", "ref"):
            assert_close(block_sparse_attention(q, k, v, idx, cnt, block_m=bm, impl=impl, sinks=4, window=window),
                         want)


def test_ref_sinks_and_window_are_the_definition():
    B, H, L, D = 1, 2, 29, 8
    q, k, v = _qkv(B, H, 1, L, D, F32, seed=4)
    for sinks, window in [(0, 1), (2, 5), (3, 29), (40, 3)]:
        got = block_sparse_attention_ref(q, k, v, causal_block_mask(L, 8, 8, DEVICE), block_m=8, sinks=sinks,
                                         window=window)
        assert_close(got, _masked_softmax_ref(q, k, v, _streaming_tokens(L, sinks, window)).to(got.dtype))


@pytest.mark.parametrize("L,bm,bn,sinks,window", [(1, 16, 16, 4, 1), (130, 32, 32, 3, 20), (257, 32, 16, 17, 40),
                                                  (100, 16, 32, 5, 7), (77, 16, 16, 0, 200), (300, 64, 64, 64, 64)])
def test_streaming_blocks_are_the_blocks_of_the_token_pattern(L, bm, bn, sinks, window):
    tokens = _streaming_tokens(L, sinks, window)
    nq, nk = num_blocks(L, bm, bn)
    i, j = torch.arange(L), torch.arange(L)
    want = torch.zeros(nq, nk, dtype=torch.long).index_put_(
        (i[:, None].expand(L, L)[tokens] // bm, j[None, :].expand(L, L)[tokens] // bn),
        torch.tensor(1), accumulate=True) > 0
    mask = streaming_block_mask(L, bm, bn, sinks=sinks, window=window)
    assert torch.equal(mask[0, 0], want)
    idx, cnt = streaming_block_index(L, bm, bn, sinks=sinks, window=window)
    assert idx.shape[-1] == streaming_max_count(L, bm, bn, sinks=sinks, window=window) >= int(cnt.max())
    assert torch.equal(index_to_mask(idx, cnt, nk), mask)


@pytest.mark.parametrize("L,bm,bn", [(1, 16, 16), (70, 16, 16), (130, 32, 16), (101, 16, 32), (64, 64, 64)])
def test_vertical_slash_block_mask_is_the_blocks_of_the_token_pattern(L, bm, bn):
    g = torch.Generator().manual_seed(L)
    cols = torch.rand(2, 3, L, generator=g) > 0.9
    diags = torch.rand(2, 3, L, generator=g) > 0.9
    diags[0, 0] = False  # a head with columns only
    cols[1, 2] = False  # and one with diagonals only
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    tokens = (cols[..., None, :] | diags[..., (i - j).clamp(min=0)]) & (j <= i)  # [2, 3, L, L]
    nq, nk = num_blocks(L, bm, bn)
    want = torch.nn.functional.pad(tokens, (0, nk * bn - L, 0, nq * bm - L)).view(2, 3, nq, bm, nk, bn).any(5).any(3)
    assert torch.equal(vertical_slash_block_mask(cols, diags, bm, bn), want)
    # every pair of the token pattern lies in a live block: a superset
    assert want[..., i // bm, j // bn][tokens].all()


def test_mask_to_index_lists_ascending_and_cuts_at_max_count():
    g = torch.Generator().manual_seed(3)
    m = torch.rand(2, 3, 9, 17, generator=g) > 0.5
    live = m & reachable(9, 17, 32, 16)
    idx, cnt = mask_to_index(m, 32, 16)
    assert torch.equal(cnt, live.sum(-1, dtype=torch.int32))
    for row_mask, row_idx, c in zip(live.view(-1, 17), idx.view(-1, idx.shape[-1]), cnt.view(-1), strict=True):
        assert row_idx[:c].tolist() == row_mask.nonzero().flatten().tolist()
        assert (row_idx[c:] == -1).all()
    idx3, cnt3 = mask_to_index(m, 32, 16, max_count=3)
    assert idx3.shape[-1] == 3 and torch.equal(cnt3, cnt)
    assert torch.equal(idx3, idx[..., :3])


def test_bad_windows_are_refused():
    q, k, v = _qkv(1, 2, 1, 16, 16, F32)
    mask = causal_block_mask(16, 16, 16, DEVICE)
    for kw, msg in [({"window": 0}, "window must be"), ({"window": 4, "sinks": -1}, "sinks must be"),
                    ({"window": 2.5}, "window must be")]:
        with pytest.raises(ValueError, match=msg):
            block_sparse_attention(q, k, v, mask, block_m=16, impl="ref", **kw)


# ---- on a CUDA device: the benchmark's head layout, longer sequences, graph capture ----

@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("L,dens,dtype", [(4096, 1.0, BF16), (4097, 0.1, BF16), (2500, 0.2, F16), (1031, 0.3, F32)])
def test_gpu_llama_shape_matches_ref(L, dens, dtype):
    B, H, hkv, D, bm = 1, 32, 8, 128, 128
    q, k, v = _qkv(B, H, hkv, L, D, dtype, seed=L)
    idx, cnt = mask_to_index(random_block_mask(B, H, L, bm, density=dens, seed=1, device=DEVICE), bm, bm)
    out = torch.full_like(q, float("nan"))
    got = block_sparse_attention(q, k, v, idx, cnt, block_m=bm, impl="triton", out=out)
    assert_close(got, block_sparse_attention_ref(q, k, v, idx, cnt, block_m=bm))
    if dens == 1.0:
        want = F.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), is_causal=True)
        assert_close(got, want)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["tm=128,tn=64,w=8,s=3,tma=1", "tm=128,tn=64,w=8,s=3,tma=0",
                                  "tm=128,tn=128,w=8,s=2,tma=1", "tm=64,tn=64,w=4,s=3,tma=0"])
def test_gpu_configs_match_ref_and_capture_in_a_graph(spec):
    from .graphs import graph_replay

    B, H, hkv, L, D, bm = 1, 8, 2, 3001, 128, 128
    q, k, v = _qkv(B, H, hkv, L, D, BF16, seed=2)
    idx, cnt = mask_to_index(random_block_mask(B, H, L, bm, density=0.3, seed=3, device=DEVICE), bm, bm)
    cfg = BsaConfig.parse(spec)
    want = block_sparse_attention_ref(q, k, v, idx, cnt, block_m=bm)
    assert_close(block_sparse_attention(q, k, v, idx, cnt, block_m=bm, impl="triton", config=cfg), want)
    got = graph_replay(lambda: block_sparse_attention(q, k, v, idx, cnt, block_m=bm, impl="triton", config=cfg))
    assert_close(got, want)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("L,sinks,window", [(4097, 4, 1024), (3001, 4, 4096), (8192, 0, 1000)])
def test_gpu_sinks_and_window_match_ref(L, sinks, window):
    B, H, hkv, D, bm = 1, 32, 8, 128, 128
    q, k, v = _qkv(B, H, hkv, L, D, BF16, seed=L)
    idx, cnt = streaming_block_index(L, bm, bm, sinks=sinks, window=window, device=DEVICE)
    got = block_sparse_attention(q, k, v, idx, cnt, block_m=bm, impl="triton", sinks=sinks, window=window)
    for r0 in (0, L // 2, L - 256):
        want = block_sparse_attention_ref(q, k, v, idx, cnt, block_m=bm, rows=(r0, r0 + 256), sinks=sinks,
                                          window=window)
        assert_close(got[:, :, r0:r0 + 256], want)


@needs_cuda
@pytest.mark.gpu
def test_gpu_long_sequence_rows_match_ref():
    """32k tokens: the kernel on the whole sequence, the reference on its last 256 rows."""
    B, H, hkv, L, D, bm = 1, 8, 2, 32768, 128, 128
    q, k, v = _qkv(B, H, hkv, L, D, BF16, seed=5)
    idx, cnt = mask_to_index(random_block_mask(B, H, L, bm, density=0.1, seed=4, device=DEVICE), bm, bm)
    got = block_sparse_attention(q, k, v, idx, cnt, block_m=bm, impl="triton")
    assert_close(got[:, :, L - 256:], block_sparse_attention_ref(q, k, v, idx, cnt, block_m=bm, rows=(L - 256, L)))
    assert math.isclose(density(cnt, L, bm), 0.1, abs_tol=0.01)


def test_default_configs_follow_head_dim_block_and_gpu_generation(monkeypatch):
    """The measured D=128 default at 128-token blocks, its small-block entry below that, the
    key tile capped at 64 off Hopper, fp32's own table, and the environment's spec first."""
    from sparsebench.kernels.block_sparse_attn.config import ENV, BsaConfig, default_config

    monkeypatch.delenv(ENV, raising=False)
    assert default_config(128).label() == "tm=128,tn=128,w=8,s=3,tma=1"
    assert default_config(128, block_m=128).label() == "tm=128,tn=128,w=8,s=3,tma=1"
    assert default_config(128, block_m=64).label() == "tm=64,tn=64,w=4,s=3,tma=0"
    assert default_config(128, hopper=False).tile_n == 64
    assert default_config(64, block_m=64).label() == "tm=128,tn=64,w=4,s=3,tma=1"  # fitted by the caller
    assert default_config(64, block_m=64).fit(64, 64).label() == "tm=64,tn=64,w=4,s=3,tma=1"
    assert default_config(128, fp32=True, block_m=64).label() == "tm=64,tn=32,w=8,s=2,tma=1"
    monkeypatch.setenv(ENV, "tm=32,tn=32,w=4,s=2,tma=0")
    assert default_config(128, block_m=64) == BsaConfig.parse("tm=32,tn=32,w=4,s=2,tma=0")
