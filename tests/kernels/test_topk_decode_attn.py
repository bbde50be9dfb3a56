"""Decode attention over a paged KV cache with Quest top-k pages: the Triton page scores and
the split-K decode kernel against their references, the references against plain attention,
and the paging helpers.

The pages are shuffled, spare pages exist, and every slot that holds no token is NaN, so a
kernel that reads past a sequence (or a page table entry past its pages) fails; outputs and
split-K scratch are NaN-filled before each call. On CPU these run under the Triton
interpreter (``TRITON_INTERPRET=1``) on small shapes; ``gpu``-marked tests run the Llama-3-8B
decode shape on a CUDA device.
"""

import pytest
import torch
import torch.nn.functional as F

from sparsebench.kernels.tolerances import assert_close
from sparsebench.kernels.topk_decode_attn import (
    DecodeConfig,
    all_pages,
    budget_pages,
    page_metadata,
    page_scores,
    page_scores_ref,
    paged_decode_attention,
    paged_from_dense,
    pages_used,
    select_pages,
    select_pages_ref,
    topk_decode_attention,
    topk_decode_attention_ref,
)

from .markers import DEVICE, force_pdl, needs_cuda, needs_triton

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
NAN = float("nan")


def _cache(B, hq, hkv, lens, D, ps, dtype, seed=0):
    """q [B, Hq, D] and a shuffled NaN-padded paged cache of ``lens`` tokens per sequence."""
    g = torch.Generator().manual_seed(seed)
    L = max(lens)
    k = torch.randn(B, hkv, L, D, generator=g).to(dtype).to(DEVICE)
    v = torch.randn(B, hkv, L, D, generator=g).to(dtype).to(DEVICE)
    q = torch.randn(B, hq, D, generator=g).to(dtype).to(DEVICE)
    sl = torch.tensor(lens, dtype=torch.int32, device=DEVICE)
    kp, vp, pt, sl = paged_from_dense(k, v, ps, sl, seed=seed, spare_pages=3, fill=NAN)
    return q, k, v, kp, vp, pt, sl


@pytest.fixture
def poisoned(monkeypatch):
    """Split-K scratch filled with NaN."""
    from sparsebench.kernels.topk_decode_attn import triton as kt

    monkeypatch.setattr(kt, "workspace", lambda shape, dtype, device: torch.full(shape, NAN, dtype=dtype, device=device))


def _run(q, kp, vp, pt, sl, sel, cfg=None):
    from sparsebench.kernels.topk_decode_attn.triton import topk_decode_attention_triton

    out = torch.full_like(q, NAN)
    got = topk_decode_attention_triton(q, kp, vp, pt, sl, sel, out=out, config=cfg)
    assert got.data_ptr() == out.data_ptr()
    return got


SMALL = DecodeConfig(block_n=16, num_stages=2, programs=32, min_steps=1)  # one page a step (page 16)
MULTI = DecodeConfig(block_n=32, num_stages=2, min_steps=1)  # two pages a step
ONE = DecodeConfig(block_n=16, programs=1)  # one split: the kernel writes the output itself
FUSED = DecodeConfig(block_n=16, num_stages=2, programs=32, min_steps=1, fused_merge=1)  # last split merges
# (B, Hq, Hkv, seq lens, D, page size, dtype, selection, k, config)
CASES = [
    (2, 4, 1, [1, 37], 64, 16, BF16, "head", 2, SMALL),
    (1, 4, 1, [257], 128, 16, F16, "kv", 5, MULTI),
    (2, 2, 2, [130, 257], 32, 16, F32, "head", 6, MULTI),
    (2, 4, 1, [37, 130], 128, 32, BF16, "dense", 0, SMALL),  # block_n < page: one page a step
    (1, 2, 2, [130], 64, 16, F32, "shared", 9, DecodeConfig(block_n=64, num_stages=3, min_steps=1)),
    (2, 4, 1, [257, 1], 32, 16, F16, "kv", 4, ONE),
    (1, 4, 4, [257], 64, 32, BF16, "dense", 0, DecodeConfig()),  # the default config
    (2, 4, 1, [1, 37], 64, 16, BF16, "head", 2, FUSED),
    (2, 2, 2, [130, 257], 32, 16, F32, "dense", 0, FUSED),
    (1, 4, 4, [257], 64, 32, F16, "kv", 6, DecodeConfig(fused_merge=1)),
]


def _case_id(c):
    B, hq, hkv, lens, D, ps, dt, per, kk, cfg = c
    return f"B{B}-{hq}:{hkv}-L{'_'.join(map(str, lens))}-D{D}-p{ps}-{str(dt)[6:]}-{per}{kk or ''}-{cfg.label()}"


def _selection(per, q, kp, pt, sl, kk, ps):
    if per == "dense":
        return None
    kmin, kmax = page_metadata(kp, pt, sl)
    sel = select_pages_ref(q, kmin, kmax, pt, sl, kk, ps, "kv" if per == "kv" else "head")
    return sel[:, :1] if per == "shared" else sel


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_decode_kernel_matches_ref(case, poisoned):
    from sparsebench.kernels.topk_decode_attn.triton import launch_plan

    B, hq, hkv, lens, D, ps, dtype, per, kk, cfg = case
    q, _, _, kp, vp, pt, sl = _cache(B, hq, hkv, lens, D, ps, dtype, seed=sum(lens) + D)
    sel = _selection(per, q, kp, pt, sl, kk, ps)
    n = pt.shape[1] if sel is None else sel.shape[-1]
    p, _, _ = launch_plan(q, n, ps, 1 if sel is None else sel.shape[1], hkv, cfg)
    assert (p.splits == 1) == (cfg == ONE)  # the other cases exercise the split-K merge
    got = _run(q, kp, vp, pt, sl, sel, cfg)
    want = topk_decode_attention_ref(q, kp, vp, pt, sl, sel)
    assert got.dtype == dtype and got.shape == q.shape
    assert torch.isfinite(got).all()
    assert_close(got, want)


@needs_triton
def test_padding_entries_are_skipped_and_empty_rows_are_zero(poisoned):
    q, _, _, kp, vp, pt, sl = _cache(2, 2, 1, [37, 130], 32, 16, F32, seed=3)
    sel = torch.tensor([[[2, -1, 0, -1]], [[-1, -1, -1, -1]]], dtype=torch.int32, device=DEVICE)
    got = _run(q, kp, vp, pt, sl, sel, SMALL)
    want = topk_decode_attention_ref(q, kp, vp, pt, sl, sel)
    assert_close(got, want)
    assert not got[1].any()  # nothing selected: zeros
    only = topk_decode_attention_ref(q, kp, vp, pt, sl, torch.tensor([[[0, 2]], [[0, 1]]], dtype=torch.int32,
                                                                      device=DEVICE))
    assert_close(got[0], only[0])


@needs_triton
def test_fused_merge_is_deterministic_and_resets_its_counters(poisoned):
    """The last split to arrive merges in split order (so repeated calls agree bit for bit)
    and zeroes its counter (so the next call, or graph replay, counts from zero)."""
    from sparsebench.kernels import launch

    q, _, _, kp, vp, pt, sl = _cache(2, 4, 1, [130, 257], 32, 16, F32, seed=4)
    first = _run(q, kp, vp, pt, sl, None, FUSED)
    assert torch.equal(_run(q, kp, vp, pt, sl, None, FUSED), first)
    assert_close(first, topk_decode_attention_ref(q, kp, vp, pt, sl, None))
    for buf in launch._COUNTERS[(q.device.type, q.device.index)]:
        assert not buf.any()


@needs_triton
def test_repeated_calls_are_identical():
    q, _, _, kp, vp, pt, sl = _cache(1, 4, 1, [257], 64, 16, BF16, seed=4)
    assert torch.equal(_run(q, kp, vp, pt, sl, None, SMALL), _run(q, kp, vp, pt, sl, None, SMALL))


@pytest.mark.parametrize("L,hkv", [(1, 1), (37, 4), (130, 1), (257, 4)])
def test_dense_ref_is_sdpa_on_the_contiguous_cache(L, hkv):
    B, hq, D, ps = 2, 4, 32, 16
    q, k, v, kp, vp, pt, sl = _cache(B, hq, hkv, [L, L], D, ps, F32, seed=L)
    want = F.scaled_dot_product_attention(q[:, :, None], k.repeat_interleave(hq // hkv, 1),
                                          v.repeat_interleave(hq // hkv, 1))[:, :, 0]
    assert_close(topk_decode_attention_ref(q, kp, vp, pt, sl, None), want)
    assert_close(topk_decode_attention_ref(q, kp, vp, pt, sl, all_pages(pt, sl, ps)), want)
    assert_close(paged_decode_attention(q, kp, vp, pt, sl, impl="ref"), want)


def test_ref_selection_attends_only_the_selected_tokens():
    B, hq, hkv, D, ps = 1, 2, 1, 8, 4
    q, k, v, kp, vp, pt, sl = _cache(B, hq, hkv, [10], D, ps, F32, seed=5)
    sel = torch.tensor([[[0, 2], [1, -1]]], dtype=torch.int32, device=DEVICE)  # head 0: pages 0, 2; head 1: page 1
    out = topk_decode_attention_ref(q, kp, vp, pt, sl, sel)
    for h, toks in ((0, [0, 1, 2, 3, 8, 9]), (1, [4, 5, 6, 7])):  # page 2 holds tokens 8, 9 only
        p = torch.softmax(q[0, h] @ k[0, 0, toks].T / D ** 0.5, -1)
        assert torch.allclose(out[0, h], p @ v[0, 0, toks], atol=1e-6)


@needs_triton
@pytest.mark.parametrize("per", ["head", "kv"])
@pytest.mark.parametrize("hq,hkv,lens,D,dtype", [(4, 1, [1, 130], 64, BF16), (2, 2, [257, 37], 32, F32),
                                                  (8, 2, [77], 128, F16)])
def test_page_scores_and_selection_match_ref(per, hq, hkv, lens, D, dtype):
    ps = 16
    B = len(lens)
    q, _, _, kp, vp, pt, sl = _cache(B, hq, hkv, lens, D, ps, dtype, seed=D)
    kmin, kmax = page_metadata(kp, pt, sl)
    want = page_scores_ref(q, kmin, kmax, pt, sl, ps, per)
    got = page_scores(q, kmin, kmax, pt, sl, page_size=ps, per=per, impl="triton")
    for edge in (float("inf"), float("-inf")):  # the last page, pages past the sequence
        assert torch.equal(got == edge, want == edge)
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-5, atol=1e-4)
    for kk in (1, 3, pt.shape[1] + 2):
        fast = select_pages(q, kmin, kmax, pt, sl, kk, page_size=ps, per=per, impl="triton")
        ref = select_pages_ref(q, kmin, kmax, pt, sl, kk, ps, per)
        assert fast.shape == ref.shape
        # the same pages up to near-ties at the k-th score
        kth = want.sort(-1, descending=True).values[..., min(kk, want.shape[-1]) - 1:min(kk, want.shape[-1])]
        for b in range(B):
            for r in range(fast.shape[1]):
                a = {int(x) for x in fast[b, r] if x >= 0}
                c = {int(x) for x in ref[b, r] if x >= 0}
                for j in a ^ c:
                    assert abs(float(want[b, r, j] - kth[b, r, 0])) < 1e-3, (b, r, j)
                assert len(a) == len(c)


def test_selection_rules():
    """The last page is always kept; -1 pads short sequences; pages ascend; past pages never."""
    q, _, _, kp, vp, pt, sl = _cache(2, 4, 1, [37, 257], 32, 16, F32, seed=6)
    kmin, kmax = page_metadata(kp, pt, sl)
    n = pages_used(sl, 16)
    sel = select_pages(q, kmin, kmax, pt, sl, 4, page_size=16, impl="ref")
    assert sel.shape == (2, 4, 4) and sel.dtype == torch.int32
    assert (sel[0, :, 3] == -1).all() and (sel[0, :, :3] == torch.arange(3, device=DEVICE)).all()
    assert (sel[1] == n[1] - 1).any(-1).all()
    assert (sel[1, :, 1:] > sel[1, :, :-1]).all()
    assert int(sel.max()) < int(n.max())
    assert budget_pages(1 / 16, 17) == 1 and budget_pages(0.5, 17) == 8 and budget_pages(1.0, 17) == 17


def test_page_metadata():
    ps = 16
    q, k, _, kp, vp, pt, sl = _cache(2, 2, 2, [37, 130], 32, ps, BF16, seed=7)
    kmin, kmax = page_metadata(kp, pt, sl)
    for b, L in enumerate([37, 130]):
        for j in range(-(-L // ps)):
            toks = k[b, :, j * ps:min(L, (j + 1) * ps)]  # [Hkv, n, D]
            p = int(pt[b, j])
            assert torch.equal(kmin[p], toks.amin(1)) and torch.equal(kmax[p], toks.amax(1))
    # appending a token to the last page of sequence 0 and updating that page only
    p = int(pt[0, 37 // ps])
    kp[p, :, 37 % ps] = 5.0
    sl2 = sl.clone()
    sl2[0] += 1
    page_metadata(kp, pt, sl2, pages=torch.tensor([p]), out=(kmin, kmax))
    assert (kmax[p] == 5.0).all()
    assert torch.equal(kmin[p], torch.minimum(k[0, :, 32:37].amin(1), torch.full_like(kmin[p], 5.0)))


@needs_triton
def test_bad_inputs_are_refused():
    q, _, _, kp, vp, pt, sl = _cache(1, 3, 2, [20], 32, 16, F32)
    with pytest.raises(ValueError, match="do not match"):
        topk_decode_attention(q, kp, vp, pt, sl, impl="triton")
    q, _, _, kp, vp, pt, sl = _cache(1, 4, 2, [20], 32, 16, F32)
    with pytest.raises(ValueError, match="selection rows"):
        topk_decode_attention(q, kp, vp, pt, sl, torch.zeros(1, 3, 2, dtype=torch.int32, device=DEVICE), impl="triton")
    with pytest.raises(ValueError, match="expected e.g."):
        DecodeConfig.parse("bn=64,x=1")
    assert DecodeConfig.parse(DecodeConfig(block_n=128, num_stages=4, programs=264).label()) == \
        DecodeConfig(block_n=128, num_stages=4, programs=264)
    fm = DecodeConfig(block_n=64, min_steps=1, fused_merge=1)
    assert DecodeConfig.parse(fm.label()) == fm and fm.label().endswith(",fm=1")
    with pytest.raises(ValueError, match="fused_merge must be 0 or 1"):
        DecodeConfig.parse("fm=2")
    with pytest.raises(ValueError, match="positions must be"):
        topk_decode_attention(q, kp, vp, pt, sl.float(), impl="triton", positions=True)
    with pytest.raises(ValueError, match="as a mask must be"):
        topk_decode_attention(q, kp, vp, pt, torch.ones(2, 20, dtype=torch.bool, device=DEVICE), impl="triton")


# ---- on a CUDA device: the Llama-3-8B decode shape, long contexts, graph capture ----

@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("ctx,ps,budget,per", [(8192, 32, 1 / 8, "kv"), (32768, 16, 1 / 4, "head"),
                                               (32768 + 5, 32, 1.0, "dense"), (65536, 32, 1 / 16, "kv")])
def test_gpu_llama_decode_matches_ref(ctx, ps, budget, per, poisoned):
    B, hq, hkv, D = 1, 32, 8, 128
    q, _, _, kp, vp, pt, sl = _cache(B, hq, hkv, [ctx], D, ps, BF16, seed=1)
    if per == "dense":
        sel = None
    else:
        kmin, kmax = page_metadata(kp, pt, sl)
        sel = select_pages(q, kmin, kmax, pt, sl, budget_pages(budget, pt.shape[1]), page_size=ps, per=per)
    got = _run(q, kp, vp, pt, sl, sel)
    assert_close(got, topk_decode_attention_ref(q, kp, vp, pt, sl, sel))


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["bn=64,w=4,s=3", "bn=128,w=4,s=2", "bn=32,w=4,s=4,p=264", "bn=128,w=8,s=2,ms=1,fm=1"])
def test_gpu_configs_capture_in_a_graph(spec):
    from .graphs import graph_replay

    q, _, _, kp, vp, pt, sl = _cache(2, 32, 8, [5000, 12345], 128, 32, BF16, seed=2)
    kmin, kmax = page_metadata(kp, pt, sl)
    cfg = DecodeConfig.parse(spec)

    def step():
        sel = select_pages(q, kmin, kmax, pt, sl, 64, page_size=32, per="kv")
        return topk_decode_attention(q, kp, vp, pt, sl, sel, config=cfg)

    want = step()
    sel = select_pages_ref(q, kmin, kmax, pt, sl, 64, 32, "kv")
    assert_close(want, topk_decode_attention_ref(q, kp, vp, pt, sl, sel))
    assert torch.equal(graph_replay(step), want)


# ---- decode attention straight over a contiguous static cache ------------------------------

def _static_ref(q, k, v, lens, scale):
    """Softmax attention of each sequence's one query over its first lens[b] tokens, in fp32."""
    g = q.shape[1] // k.shape[1]
    out = []
    for b in range(q.shape[0]):
        n = int(lens[b])
        kk = k[b, :, :n].float().repeat_interleave(g, 0)
        vv = v[b, :, :n].float().repeat_interleave(g, 0)
        p = ((q[b, :, 0].float()[:, None, :] * kk).sum(-1) * scale).softmax(-1)
        out.append((p[:, :, None] * vv).sum(1))
    return torch.stack(out).to(q.dtype)


@needs_triton
@pytest.mark.parametrize("L,lens", [(24, (13, 24)), (40, (1, 33)), (7, (7, 3))])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_static_cache_decode_matches_ref(L, lens, dtype):
    from sparsebench.kernels.topk_decode_attn.static_cache import (
        page_size_for,
        static_decode_attention,
    )

    g = torch.Generator().manual_seed(L)
    B, hq, hkv, D = 2, 4, 2, 16
    q = torch.randn(B, hq, 1, D, generator=g).to(DEVICE, dtype)
    k = torch.randn(B, hkv, L, D, generator=g).to(DEVICE, dtype)
    v = torch.randn(B, hkv, L, D, generator=g).to(DEVICE, dtype)
    seq = torch.tensor(lens, dtype=torch.int32, device=DEVICE)
    want = _static_ref(q, k, v, seq, 0.3)
    for b, n in enumerate(lens):  # the unfilled end of the cache is never read
        k[b, :, n:] = float("nan")
        v[b, :, n:] = float("nan")
    got = static_decode_attention(q, k, v, seq, 0.3, impl="triton")
    assert got.shape == (B, hq, D) and L % page_size_for(L) == 0
    assert_close(got, want)
    rows = torch.arange(L, device=DEVICE)[None, :] < seq[:, None]  # lengths as mask rows, counted in the kernel
    assert_close(static_decode_attention(q, k, v, rows, 0.3, impl="triton"), want)
    assert_close(static_decode_attention(q, k, v, rows, 0.3, impl="ref"), want)
    position_ids = torch.stack([seq - 3, seq - 1], 1).long()  # [B, 2]: the last column is the new token's
    for impl in ("triton", "ref"):
        assert_close(static_decode_attention(q, k, v, position_ids[:, -1], 0.3, impl=impl, positions=True), want)


@needs_triton
def test_static_cache_lengths_from_long_strided_mask_rows():
    """Mask rows longer than the kernel's 1024-wide count step, read through a strided view
    (the last query row of a ``[B, 1, q, L]`` mask), fused merge and plain combine alike."""
    from sparsebench.kernels.topk_decode_attn.static_cache import static_decode_attention

    g = torch.Generator().manual_seed(5)
    B, hq, hkv, D, L = 2, 2, 1, 16, 1100
    q = torch.randn(B, hq, 1, D, generator=g).to(DEVICE)
    k, v = (torch.randn(B, hkv, L, D, generator=g).to(DEVICE) for _ in range(2))
    lens = torch.tensor([1030, 77], dtype=torch.int32, device=DEVICE)
    mask = torch.zeros(B, 1, 3, L, dtype=torch.bool, device=DEVICE)
    mask[:, 0, -1] = torch.arange(L, device=DEVICE)[None, :] < lens[:, None]
    want = _static_ref(q, k, v, lens, 0.25)
    for cfg in (DecodeConfig(block_n=64, min_steps=4, fused_merge=1), DecodeConfig(block_n=64, min_steps=4)):
        got = static_decode_attention(q, k, v, mask[:, 0, -1, :], 0.25, impl="triton", config=cfg)
        assert_close(got, want)


@needs_triton
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[5], CASES[7]], ids=_case_id)  # split-K, one split, fused merge
def test_decode_kernel_with_pdl_matches_ref(case, poisoned, monkeypatch):
    """The programmatic-dependent-launch variant: the decode kernel and the combine wait first."""
    from sparsebench.kernels.topk_decode_attn import triton as kt

    force_pdl(monkeypatch, kt)
    B, hq, hkv, lens, D, ps, dtype, per, kk, cfg = case
    q, _, _, kp, vp, pt, sl = _cache(B, hq, hkv, lens, D, ps, dtype, seed=sum(lens) + D)
    sel = _selection(per, q, kp, pt, sl, kk, ps)
    assert_close(_run(q, kp, vp, pt, sl, sel, cfg), topk_decode_attention_ref(q, kp, vp, pt, sl, sel))


@needs_triton
def test_static_cache_op_and_plugin_under_compile():
    from sparsebench.kernels.topk_decode_attn.static_cache import static_decode

    q = torch.randn(1, 4, 1, 16, device=DEVICE)
    k, v = torch.randn(1, 2, 16, 16, device=DEVICE), torch.randn(1, 2, 16, 16, device=DEVICE)
    seq = torch.tensor([9], dtype=torch.int32, device=DEVICE)
    want = _static_ref(q, k, v, seq, 0.25)
    assert_close(static_decode(q, k, v, seq, 0.25), want)
    compiled = torch.compile(lambda *a: static_decode(*a, 0.25) + 1, backend="aot_eager", fullgraph=True)
    assert_close(compiled(q, k, v, seq), want + 1)


def test_static_cache_pages_view_and_refusals():
    from sparsebench.kernels.topk_decode_attn.static_cache import (
        cache_pages,
        page_table,
        static_decode_attention,
    )

    cache = torch.arange(2 * 3 * 8 * 4, dtype=torch.float32).reshape(2, 3, 8, 4)
    pages = cache_pages(cache, 4)
    table = page_table(2, 3, 2, torch.device("cpu"))
    for b in range(2):
        for p in range(2):  # logical page p of sequence b, head h == tokens 4p..4p+3 of the cache
            for h in range(3):
                assert torch.equal(pages[table[b, p], h], cache[b, h, 4 * p:4 * p + 4])
    with pytest.raises(ValueError, match="contiguous"):
        cache_pages(cache.transpose(1, 2), 4)
    with pytest.raises(ValueError, match="one query token"):
        static_decode_attention(torch.randn(2, 3, 2, 4), cache, cache, torch.tensor([3, 3]))
