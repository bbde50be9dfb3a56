"""The Triton int4 matmul against its reference (CPU: under TRITON_INTERPRET=1).

Every plan variant (gemv, mma pairs with one, two and four row blocks, fold in both operand
orders, dequantize + matmul) runs with and without split-K on odd shapes: N not a multiple
of the tile, K a multiple of the group but not of large tiles, short last groups, K not a
multiple of 8, every activation dtype. Outputs and workspaces are poisoned with NaN, so an
element a kernel forgets to write fails the comparison.
"""

import pytest
import torch

from sparsebench.kernels import int4_matmul as op
from sparsebench.kernels.int4_matmul import ref
from sparsebench.kernels.tolerances import assert_close

from .markers import DEVICE, needs_triton


def _random_layer(n, k, group, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    groups = -(-k // group)
    scales = (torch.rand(n, groups, generator=g) * 0.02 + 0.001).to(dtype)
    offsets = (-8 * scales.float() + torch.randn(n, groups, generator=g) * 0.01).to(dtype)
    return q, packed, scales, offsets


def _args(m, n, k, group, dtype, seed=0):
    _, packed, scales, offsets = _random_layer(n, k, group, dtype, seed)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    return [t.to(DEVICE) for t in (x, packed, scales, offsets)]


@pytest.fixture
def fast(monkeypatch):
    """The launch module, with every output and workspace it allocates filled with NaN."""
    from sparsebench.kernels.int4_matmul import triton as fast

    def poisoned(shape, device, dtype):
        return torch.full(shape, float("nan"), device=device, dtype=dtype)

    monkeypatch.setattr(fast, "_alloc", poisoned)
    return fast


def _plans(fast, group):
    """One plan per variant and split choice, sized for the interpreter or for a GPU."""
    P = fast.Plan
    bk = 64 if group % 64 == 0 else 32
    if fast.INTERPRET:  # few, large programs: the interpreter's cost is per program and op
        mma1, mma2, mma4, tile, rows = dict(bn=16), dict(bn=32), dict(bn=64), dict(bn=32, bm=32), 32
    else:
        mma1, mma2, mma4, tile, rows = dict(bn=64), dict(bn=128), dict(bn=256), dict(bn=64, bm=32), 256
    return {
        "mma": P("mma", **mma1, bm=16, bk=128 if group % 128 == 0 else 64, stages=1),  # K=320: a partial tile
        "mma2_split": P("mma", **mma2, bm=16, bk=64, split=2, stages=1),
        "mma4": P("mma", **mma4, bm=16, bk=64, stages=1),
        "fold": P("fold", **tile, bk=bk, stages=1),
        "fold_noswap_split": P("fold", **tile, bk=bk, split=2, swap=False, stages=1),
        "gemv": P("gemv", bn=rows, bk=bk, stages=1), "gemv_split": P("gemv", bn=rows, bk=bk, split=2, stages=1),
        "dequant": P("dequant", bn=32, bk=bk),
        "dequant_wide": P("dequant", bn=16, bk=bk, wide=True),
        "dequant_wide_chunks": P("dequant", bn=16, bk=bk, split=2, wide=True),
        "dequant_wide_span": P("dequant", bn=16, bk=2 * group, wide=True),  # a tile of two groups
    }


def _applies(name, m, group):
    if name.startswith("mma"):
        return group % 64 == 0
    return m == 1 if name.startswith("gemv") else True


SHAPES = [(1, 37, 384, 128), (3, 100, 256, 64), (16, 37, 256, 32), (70, 20, 256, 64),
          (1, 24, 320, 128),  # groups 128, 128, 64: a short last group inside whole tiles
          (2, 19, 80, 32)]  # K=80: a partial K-tile and a short last group
# every shape in bf16; fp16 and fp32 on the shapes that reach every variant
CASES = ([(*shape, torch.bfloat16) for shape in SHAPES]
         + [(*SHAPES[i], dt) for i in (0, 3) for dt in (torch.float16, torch.float32)])


def test_ref_on_a_hand_checkable_layer():
    # one row, K=4, group 2: codes [1, 2 | 15, 0], scales [0.5 | 2], offsets [-1 | 1]
    packed = torch.tensor([[1 | (2 << 4), 15 | (0 << 4)]], dtype=torch.uint8)
    scales = torch.tensor([[0.5, 2.0]])
    offsets = torch.tensor([[-1.0, 1.0]])
    w = ref.dequantize_int4(packed, scales, offsets, 2)
    assert w.tolist() == [[-0.5, 0.0, 31.0, 1.0]]
    x = torch.tensor([[1.0, 2.0, 0.0, 3.0]])
    assert ref.int4_matmul(x, packed, scales, offsets, 2).tolist() == [[-0.5 + 0 + 0 + 3.0]]
    # groups of 3 over K=4: the last group is the single column 3
    assert ref.dequantize_int4(packed, scales, offsets, 3).tolist() == [[-0.5, 0.0, 6.5, 1.0]]


@needs_triton
@pytest.mark.parametrize("m,n,k,group,dtype", CASES, ids=[f"m{c[0]}-n{c[1]}-k{c[2]}-g{c[3]}-{str(c[4])[6:]}" for c in CASES])
def test_every_plan_matches_ref(fast, m, n, k, group, dtype):
    x, packed, scales, offsets = _args(m, n, k, group, dtype)
    want = ref.int4_matmul(x, packed, scales, offsets, group)
    ran = 0
    for name, plan in _plans(fast, group).items():
        if not _applies(name, m, group):
            continue
        got = fast.int4_matmul(x, packed, scales, offsets, group, plan=plan)
        assert got.dtype == dtype and got.shape == (m, n), name
        assert not got.isnan().any(), f"{plan.label()} left outputs unwritten"
        assert_close(got, want)
        ran += 1
    assert ran >= 3


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_k_not_a_multiple_of_eight_is_padded(fast, dtype):
    x, packed, scales, offsets = _args(3, 21, 100, 32, dtype)  # groups 32, 32, 32, 4
    want = ref.int4_matmul(x, packed, scales, offsets, 32)
    for name in ("fold", "dequant", "dequant_wide", "dequant_wide_span"):
        assert_close(fast.int4_matmul(x, packed, scales, offsets, 32, plan=_plans(fast, 32)[name]), want)


@needs_triton
def test_split_k_is_deterministic_and_resets_its_locks(fast):
    x, packed, scales, offsets = _args(1, 37, 256, 128, torch.bfloat16)
    plans = _plans(fast, 128)
    for name in ("mma2_split", "gemv_split", "fold_noswap_split"):
        a = fast.int4_matmul(x, packed, scales, offsets, 128, plan=plans[name])
        b = fast.int4_matmul(x, packed, scales, offsets, 128, plan=plans[name])
        assert torch.equal(a, b), name
    assert int(fast._locks[x.device].abs().sum()) == 0


@needs_triton
@pytest.mark.parametrize("m", [1, 3, 16, 70])
def test_public_entry_point_matches_ref(m, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_INT4_TUNE", "0")  # the default plans (the tuner is tested below)
    x, packed, scales, offsets = _args(m, 37, 256, 64, torch.bfloat16, seed=m)
    got = op.int4_matmul(x, packed, scales, offsets, 64, impl="triton")
    assert_close(got, ref.int4_matmul(x, packed, scales, offsets, 64))


@needs_triton
def test_public_entry_is_one_registered_op_under_compile(monkeypatch):
    """The fast path is ``torch.ops.sparsebench.int4_matmul``: ``torch.compile`` keeps it
    whole (``fullgraph`` raises on a graph break), so plan choice and tuning are never traced."""
    import sparsebench.kernels.int4_matmul.triton  # noqa: F401  (registers the op)

    monkeypatch.setenv("SPARSEBENCH_INT4_TUNE", "0")
    x, packed, scales, offsets = _args(2, 37, 256, 64, torch.bfloat16, seed=5)
    want = ref.int4_matmul(x, packed, scales, offsets, 64)
    assert_close(torch.ops.sparsebench.int4_matmul(x, packed, scales, offsets, 64), want)
    compiled = torch.compile(lambda a: op.int4_matmul(a, packed, scales, offsets, 64, impl="triton") * 2,
                             backend="aot_eager", fullgraph=True)
    assert_close(compiled(x), want * 2)


@needs_triton
def test_triton_keeps_leading_dims_and_refuses_bad_inputs():
    _, packed, scales, offsets = _random_layer(16, 64, 32, torch.float32)
    x = torch.randn(2, 3, 64)
    args = [t.to(DEVICE) for t in (x, packed, scales, offsets)]
    got = op.int4_matmul(*args, 32, impl="triton")
    assert got.shape == (2, 3, 16)
    assert_close(got, ref.int4_matmul(*args, 32))
    bad = [t.to(DEVICE) for t in (torch.randn(1, 48), packed[:, :24], scales[:, :3], offsets[:, :3])]
    with pytest.raises(ValueError, match="multiple of 32"):
        op.int4_matmul(*bad, 16, impl="triton")
    odd = [t.to(DEVICE) for t in (torch.randn(1, 63), packed[:, :32], scales[:, :2], offsets[:, :2])]
    with pytest.raises(ValueError, match="even input width"):
        op.int4_matmul(*odd, 32, impl="triton")


@needs_triton
def test_the_tuner_skips_broken_plans_and_keeps_the_fastest(fast, monkeypatch):
    x, packed, scales, offsets = _args(1, 37, 256, 64, torch.bfloat16)
    plans = _plans(fast, 64)
    slow, quick, broken = plans["mma"], plans["gemv"], fast.Plan("mma", bn=48)
    monkeypatch.setattr(fast, "candidates", lambda *a: [slow, broken, quick])
    monkeypatch.setattr(fast, "_steady_time_ms", lambda fns: 2.0 if fns[0].__defaults__[0] is slow else 1.0)
    key = ("test", 37, 256)
    try:
        assert fast._tune(key, x, packed, scales, offsets, 64) == quick
        report = fast._chosen[key]
        assert set(report["timings_ms"]) == {slow.label(), quick.label()}
        assert broken.label() in report["rejected"]
    finally:
        fast._chosen.pop(key, None)


def test_split_options_divide_the_k_tiles():
    from sparsebench.kernels.int4_matmul.triton import split_options

    for n_prog, k_tiles in [(1, 32), (16, 32), (64, 112), (224, 32), (300, 7)]:
        opts = split_options(n_prog, k_tiles, 132)
        assert opts and all(k_tiles % s == 0 for s in opts)
    assert split_options(16, 32, 132) == [8, 16]  # 1 and 2 waves of 132 SMs (4 would leave < 2 tiles)
    assert split_options(64, 112, 132) == [2, 4, 8]
    assert split_options(1000, 32, 132) == [1]


def test_candidates_cover_every_bucket():
    from sparsebench.kernels.int4_matmul.triton import candidates

    for m in (1, 2, 16, 64, 2048):
        for group in (32, 64, 128):
            plans = candidates(m, 4096, 4096, group, torch.bfloat16, 132)
            assert plans and len(plans) <= 16
            assert len({p.label() for p in plans}) == len(plans)
            # a tile lies within one group, or (the wide decode) spans whole groups
            assert all(group % p.bk == 0 or (p.wide and p.bk % group == 0) for p in plans)


def test_impl_choice_is_validated():
    with pytest.raises(ValueError, match="impl must be one of"):
        op.int4_matmul(torch.randn(1, 4), torch.zeros(1, 2, dtype=torch.uint8), torch.ones(1, 1),
                       torch.zeros(1, 1), 4, impl="cuda")


@needs_triton
def test_dequant_plan_in_row_chunks(fast):
    x, packed, scales, offsets = _args(5, 300, 64, 32, torch.bfloat16)
    assert fast.dequant_chunks(300, 64) == 1 and fast.dequant_chunks(14336, 4096) == 5
    # 3 chunks of 128, 128 and 44 rows: y is written in column blocks
    got = fast.int4_matmul(x, packed, scales, offsets, 32, plan=fast.Plan("dequant", bn=32, bk=32, split=3))
    assert not got.isnan().any()
    assert_close(got, ref.int4_matmul(x, packed, scales, offsets, 32))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [100, 256])
def test_the_wide_dequant_writes_the_same_weight(fast, dtype, k):
    """The wide kernel, with tiles of one group, part of one and two or four groups, and the
    join-tree one decode every weight to the same bits (N off the tiles; K=100: a partial
    last tile and a short last group), and all match ref's weight rounded to dtype."""
    _, packed, scales, offsets = _args(1, 37, k, 32, dtype)
    q32, kp = fast.as_words(packed, k)
    args = (q32, scales.contiguous(), offsets.contiguous(), 32, kp, dtype, 16)
    tree = fast._dequant_words(*args, 32)[:, :k]
    assert_close(tree, ref.dequantize_int4(packed, scales, offsets, 32).to(dtype))
    for bk in (16, 32, 64, 128):
        assert torch.equal(fast._dequant_words(*args, bk, wide=True)[:, :k], tree), f"bk={bk}"
