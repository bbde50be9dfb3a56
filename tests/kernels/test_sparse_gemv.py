"""The Triton sparse GEMV against its reference: every kernel variant (mask / compact, FMA /
tensor cores, fused / launched split reduction), odd shapes, every dtype, 0 / ~50 / 100%
sparsity, scalar and per-input thresholds, with and without bias.

Every call writes into a NaN-filled output and NaN-filled scratch, so an element the
kernel forgets to write fails the comparison. On CPU these run under the Triton interpreter
(``TRITON_INTERPRET=1``, set by ``nox -s tests``), which runs every program in Python: the
variants use small tiles (several column tiles and K splits on tiny shapes) and the cases
cover the dimensions without a full cross product.
"""

import pytest
import torch

from sparsebench.kernels.dispatch import interpreting, triton_available
from sparsebench.kernels.sparse_gemv import MAX_ROWS, masked_matmul, sparse_gemv, sparse_gemv_ref
from sparsebench.kernels.tolerances import assert_close

from .markers import DEVICE, force_pdl, needs_triton


def _variants():
    from sparsebench.kernels.sparse_gemv.config import GemvConfig

    small = dict(block_n=32, block_k=32, num_stages=2, min_k_blocks=1)
    return {
        "mask": GemvConfig(kind="mask", **small),
        "mask_nopairs": GemvConfig(kind="mask", pairs=False, **small),
        "mask_dot": GemvConfig(kind="mask", dot=True, **small),
        "mask_launch": GemvConfig(kind="mask", reduce="launch", **small),
        "compact": GemvConfig(kind="compact", **small),
        "compact_dot": GemvConfig(kind="compact", dot=True, **small),
        "compact_launch": GemvConfig(kind="compact", reduce="launch", **small),
        "compact_pre": GemvConfig(kind="compact", prepass=True, **small),
        # issue #6: unfenced counter reset, 16-byte x loads in the packing step (K % 8 == 0)
        "compact_xa_rz": GemvConfig(kind="compact", aligned_scan=True, relaxed_reset=True, **small),
        "mask_rz": GemvConfig(kind="mask", relaxed_reset=True, **small),
    }


def _one_split(**kw):
    """A one-split plan (p=1): no partials, y stored directly; chunk=64 packs in several steps."""
    from sparsebench.kernels.sparse_gemv.config import GemvConfig

    return GemvConfig(kind="compact", block_n=32, block_k=32, num_stages=3, programs=1, chunk=64,
                      aligned_scan=True, **kw)


VARIANTS = list(_variants()) if triton_available() else []
# (rows, K inputs, N outputs, dtype, sparsity, per-input threshold, bias): K and N multiples of
# no tile; 300 and 257 inputs make several K splits, 53 / 40 / 77 outputs several column tiles
CASES = [
    (1, 300, 40, torch.bfloat16, 0.5, False, False),
    (1, 37, 53, torch.float32, 0.0, True, True),
    (3, 70, 33, torch.float16, 0.5, True, True),
    (8, 257, 37, torch.bfloat16, 0.5, False, True),
    (1, 300, 40, torch.float16, 1.0, True, True),
    (1, 64, 40, torch.float16, 0.5, True, False),
    (1, 264, 37, torch.bfloat16, 0.5, False, True),  # K % 8 == 0: the aligned packing path (xa)
]


def _case_id(c):
    m, k, n, dtype, s, per_input, bias = c
    return f"{m}x{k}x{n}-{str(dtype)[6:]}-s{s:g}-{'vec' if per_input else 'scalar'}{'-bias' if bias else ''}"


def _operands(m, k, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype).to(DEVICE)
    w_t = (torch.randn(k, n, generator=g) / k ** 0.5).to(dtype).to(DEVICE)
    bias = torch.randn(n, generator=g).to(dtype).to(DEVICE)
    return x, w_t, bias


def _threshold(x, sparsity, per_channel):
    """A threshold zeroing about ``sparsity`` of x (exactly all of it at 1.0)."""
    a = x.float().abs()
    if per_channel:
        if sparsity >= 1.0:
            return a.amax(0)
        return torch.quantile(a, sparsity, dim=0) if sparsity > 0 else torch.zeros_like(a[0])
    if sparsity >= 1.0:
        return float(a.max())
    return float(torch.quantile(a.flatten(), sparsity)) if sparsity > 0 else 0.0


@pytest.fixture
def poisoned(monkeypatch):
    """Kernel scratch filled with NaN (fp32 partials) or ``state['index']`` (live-index lists)."""
    from sparsebench.kernels.sparse_gemv import triton as kt

    state = {"index": 0}

    def workspace(shape, dtype, device):
        fill = float("nan") if dtype.is_floating_point else state["index"]
        return torch.full(shape, fill, dtype=dtype, device=device)

    monkeypatch.setattr(kt, "workspace", workspace)
    return state


def _run(x, w_t, t, bias, cfg):
    """The kernel writing into a NaN-filled output."""
    from sparsebench.kernels.sparse_gemv.triton import sparse_gemv_triton

    out = torch.full((x.shape[0], w_t.shape[1]), float("nan"), dtype=x.dtype, device=x.device)
    got = sparse_gemv_triton(x, w_t, t, bias, config=cfg, out=out)
    assert got.data_ptr() == out.data_ptr()
    return got


@needs_triton
@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_matches_ref(variant, case, poisoned):
    from sparsebench.kernels.sparse_gemv.config import REDUCE_NONE
    from sparsebench.kernels.sparse_gemv.triton import launch_plan

    m, k, n, dtype, sparsity, per_input, with_bias = case
    cfg = _variants()[variant]
    x, w_t, bias = _operands(m, k, n, dtype, seed=k + m)
    b = bias if with_bias else None
    t = _threshold(x, sparsity, per_input)
    p = launch_plan(m, n, k, x.device, cfg, x.element_size())
    assert p.n_tiles > 1 and p.splits > 1 and p.reduce != REDUCE_NONE  # the case exercises the reduction
    got = _run(x, w_t, t, b, cfg)
    want = sparse_gemv_ref(x, w_t, t, b)
    assert got.dtype == dtype and got.shape == (m, n)
    assert_close(got, want)
    if sparsity == 1.0:  # nothing survives: the bias alone
        assert torch.equal(got, bias.expand(m, n).to(dtype))
    elif sparsity == 0.5:  # the threshold matters at this tolerance: ignoring it would fail
        with pytest.raises(AssertionError):
            assert_close(got, sparse_gemv_ref(x, w_t, 0.0, b))


@needs_triton
@pytest.mark.parametrize("variant,m", [("mask", 1), ("compact", 1), ("mask_dot", 1), ("compact", 3)])
def test_one_split_stores_directly(variant, m, poisoned):
    from dataclasses import replace

    from sparsebench.kernels.sparse_gemv.config import REDUCE_NONE
    from sparsebench.kernels.sparse_gemv.triton import launch_plan

    cfg = replace(_variants()[variant], programs=1)
    x, w_t, bias = _operands(m, 100, 77, torch.bfloat16, seed=7)
    assert launch_plan(m, 77, 100, x.device, cfg, 2).reduce == REDUCE_NONE
    t = _threshold(x, 0.5, per_channel=True)
    assert_close(_run(x, w_t, t, bias, cfg), sparse_gemv_ref(x, w_t, t, bias))


@needs_triton
@pytest.mark.parametrize("variant", VARIANTS)
def test_nothing_survives_gives_zeros_without_bias(variant, poisoned):
    x, w_t, _ = _operands(1, 70, 33, torch.bfloat16)
    got = _run(x, w_t, float(x.float().abs().max()), None, _variants()[variant])
    assert torch.equal(got, torch.zeros_like(got))


@needs_triton
@pytest.mark.parametrize("variant,m", [(v, 1) for v in VARIANTS] + [("mask", 3), ("compact", 3)])
def test_weight_rows_of_dropped_inputs_are_never_read(variant, m, poisoned):
    """Rows of inputs dropped in every row are NaN, and so is every unwritten list slot."""
    x, w_t, _ = _operands(m, 300, 40, torch.bfloat16, seed=2)
    x[:, 0] = 0.0  # input 0 dead: a masked-off slot that still read its (index 0) row would see NaN
    t = _threshold(x, 0.6, per_channel=False)
    dead = (x.float().abs() <= t).all(0)
    assert dead.any() and not dead.all()
    poisoned["index"] = int(dead.nonzero()[0])
    nan_rows, zero_rows = w_t.clone(), w_t.clone()
    nan_rows[dead] = float("nan")
    zero_rows[dead] = 0.0
    got = _run(x, nan_rows, t, None, _variants()[variant])
    assert torch.isfinite(got).all()
    assert_close(got, sparse_gemv_ref(x, zero_rows, t))


@needs_triton
@pytest.mark.parametrize("dot", [False, True])
@pytest.mark.parametrize("m,k,n,per_input", [(1, 264, 37, False), (1, 300, 77, True), (3, 264, 40, True),
                                             (1, 8, 70, False)])
def test_one_split_plans_match_ref(m, k, n, per_input, dot, poisoned):
    """p=1: one program per column tile walks all of K (several packing steps of 64 inputs,
    aligned when K % 8 == 0) and stores y itself: no partials, no counters."""
    from sparsebench.kernels.sparse_gemv.config import REDUCE_NONE
    from sparsebench.kernels.sparse_gemv.triton import launch_plan

    cfg = _one_split(dot=dot)
    x, w_t, bias = _operands(m, k, n, torch.bfloat16, seed=k + n)
    p = launch_plan(m, n, k, x.device, cfg, 2)
    assert p.splits == 1 and p.reduce == REDUCE_NONE and p.n_tiles > 1
    assert p.chunk == min(64, max(64, 1 << (k - 1).bit_length()))
    t = _threshold(x, 0.5, per_input)
    assert_close(_run(x, w_t, t, bias, cfg), sparse_gemv_ref(x, w_t, t, bias))


@needs_triton
def test_one_split_plan_on_a_hand_checkable_case():
    """y = W[:, keep] @ x[keep] written out for 8 inputs, 3 outputs: inputs 0, 1, 3, 6 pass."""
    x = torch.tensor([[0.5, -2.0, 0.25, 3.0, 0.0, -0.375, 1.5, 0.125]]).to(DEVICE)
    w_t = torch.arange(24, dtype=torch.float32).reshape(8, 3).to(DEVICE)  # w_t[j] = [3j, 3j+1, 3j+2]
    got = _run(x, w_t, 0.4, None, _one_split())
    want = 0.5 * w_t[0] - 2.0 * w_t[1] + 3.0 * w_t[3] + 1.5 * w_t[6]  # [48, 51, 54]
    assert torch.equal(want.cpu(), torch.tensor([48.0, 51.0, 54.0]))
    assert torch.allclose(got[0], want)


@needs_triton
@pytest.mark.parametrize("variant", ["mask", "compact", "compact_xa_rz", "mask_rz"])
def test_fused_reduction_is_deterministic_and_resets_its_counters(variant):
    from sparsebench.kernels import launch

    x, w_t, bias = _operands(1, 300, 40, torch.float32, seed=3)
    t = _threshold(x, 0.5, per_channel=False)
    cfg = _variants()[variant]
    first = _run(x, w_t, t, bias, cfg)
    again = _run(x, w_t, t, bias, cfg)
    assert torch.equal(first, again)
    for buf in launch._COUNTERS[(x.device.type, x.device.index)]:
        assert not buf.any()


@needs_triton
@pytest.mark.parametrize("m,k,n", [(1, 1000, 77), (3, 300, 40)])
def test_default_configs_match_ref(m, k, n):
    """``sparse_gemv`` with the per-shape default (the table's tiles, not the test ones)."""
    x, w_t, bias = _operands(m, k, n, torch.bfloat16, seed=4)
    t = _threshold(x, 0.5, per_channel=True)
    assert_close(sparse_gemv(x, w_t, t, impl="triton", bias=bias), sparse_gemv_ref(x, w_t, t, bias))


@needs_triton
def test_unaligned_x_skips_the_pair_loads():
    from sparsebench.kernels.sparse_gemv.triton import launch_plan

    base, w_t, _ = _operands(1, 301, 40, torch.bfloat16, seed=5)
    x = base[:, 1:]  # starts 2 bytes past an aligned address
    assert x.data_ptr() % 4 == 2
    assert launch_plan(1, 40, 300, x.device, _variants()["mask"], 2, x_aligned=True).pairs
    assert not launch_plan(1, 40, 300, x.device, _variants()["mask"], 2, x_aligned=False).pairs
    t = _threshold(x, 0.5, per_channel=False)
    assert_close(_run(x, w_t[1:], t, None, _variants()["mask"]), sparse_gemv_ref(x, w_t[1:], t))


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs a CUDA device")
@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["mask", "compact", "mask_launch", "compact_pre"])
def test_cuda_graph_replay_matches_eager(variant):
    """No host synchronisation: the call captures in a CUDA graph and replays correctly."""
    from sparsebench.kernels.sparse_gemv.triton import sparse_gemv_triton

    from .graphs import graph_replay

    x, w_t, bias = _operands(1, 4096, 1024, torch.bfloat16, seed=6)
    cfg = _variants()[variant]
    t = _threshold(x, 0.5, per_channel=False)
    sparse_gemv_triton(x, w_t, t, bias, config=cfg)  # compile outside the capture
    static_x = x.clone()
    y = graph_replay(lambda: sparse_gemv_triton(static_x, w_t, t, bias, config=cfg))
    assert_close(y, sparse_gemv_ref(x, w_t, t, bias))


def test_ref_is_the_definition():
    """y = W[:, keep] @ x[keep] on a hand-checkable case."""
    x = torch.tensor([[0.5, -2.0, 0.1, 3.0]])
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)  # W [N=3, K=4]
    y = sparse_gemv_ref(x, w.t(), 0.4)
    keep = torch.tensor([0, 1, 3])
    assert torch.allclose(y[0], w[:, keep] @ x[0, keep])
    per_input = torch.tensor([0.6, 0.0, 0.0, 5.0])  # drops inputs 0 (0.5) and 3 (3.0)
    assert torch.allclose(sparse_gemv_ref(x, w.t(), per_input)[0], w[:, [1, 2]] @ x[0, [1, 2]])


def test_many_rows_take_the_masked_gemm_and_match_ref():
    x, w_t, bias = _operands(MAX_ROWS + 5, 37, 53, torch.float32)
    t = _threshold(x, 0.5, per_channel=False)
    assert_close(masked_matmul(x, w_t, t, bias), sparse_gemv_ref(x, w_t, t, bias))
    if DEVICE == "cpu" and triton_available() and interpreting():
        assert_close(sparse_gemv(x, w_t, t, impl="triton", bias=bias), sparse_gemv_ref(x, w_t, t, bias))


@needs_triton
def test_bad_operands_are_refused():
    x, w_t, _ = _operands(1, 37, 53, torch.float32)
    with pytest.raises(ValueError, match="inputs but w_t"):
        sparse_gemv(x[:, :30], w_t, 0.1, impl="triton")
    with pytest.raises(ValueError, match="contiguous rows"):
        sparse_gemv(x, w_t.t().contiguous().t(), 0.1, impl="triton")
    with pytest.raises(ValueError, match="per-input threshold"):
        sparse_gemv(x, w_t, torch.zeros(5), impl="triton")
    from sparsebench.kernels.sparse_gemv.triton import sparse_gemv_triton

    with pytest.raises(ValueError, match="out must be"):
        sparse_gemv_triton(x, w_t, 0.1, out=torch.empty(1, 52, device=DEVICE))


def test_config_specs_round_trip_and_reject_typos():
    from sparsebench.kernels.sparse_gemv.config import GemvConfig

    cfg = GemvConfig(kind="compact", block_n=128, block_k=64, num_warps=8, num_stages=4, programs=264,
                     reduce="launch", dot=True, pairs=False)
    assert GemvConfig.parse(cfg.label()) == cfg
    for variant in [*_variants().values(), _one_split(dot=True)]:
        assert GemvConfig.parse(variant.label()) == variant
    assert GemvConfig.parse("kind=compact,p=1,ch=2048,xa=1,rz=1") == GemvConfig(
        kind="compact", programs=1, chunk=2048, aligned_scan=True, relaxed_reset=True)
    with pytest.raises(ValueError, match="chunk must be"):
        GemvConfig(chunk=1000)
    assert GemvConfig.parse("bn=128,bk=16,w=8,p=64") == GemvConfig(block_n=128, block_k=16, num_warps=8,
                                                                    programs=64)
    for bad in ("bn=128,bq=3", "kind=dense", "bn=96", "r=atomic", "bn"):
        with pytest.raises(ValueError, match="expected e.g."):
            GemvConfig.parse(bad)


def test_environment_overrides_the_per_shape_defaults(monkeypatch):
    from sparsebench.kernels.sparse_gemv.config import (
        DEFAULTS,
        ENV,
        GemvConfig,
        overrides,
        shape_class,
    )

    shapes = {"q_o": (4096, 4096), "k_v": (1024, 4096), "gate_up": (14336, 4096), "down": (4096, 14336)}
    assert [shape_class(n, k) for n, k in shapes.values()] == ["square", "narrow", "wide", "deep"]
    assert set(DEFAULTS) == {"square", "narrow", "wide", "deep"}
    monkeypatch.setenv(ENV, "bn=128,bk=16,w=8,p=64")
    assert GemvConfig.from_env() == GemvConfig(block_n=128, block_k=16, num_warps=8, programs=64)
    assert set(overrides().values()) == {GemvConfig.from_env()}
    per_class = overrides("wide:kind=compact,bn=512; narrow:bn=64")
    assert per_class == {"wide": GemvConfig(kind="compact", block_n=512), "narrow": GemvConfig(block_n=64)}
    with pytest.raises(ValueError, match="unknown shape class"):
        overrides("tall:bn=64")


def test_plan_covers_k_once_and_fills_the_gpu():
    from sparsebench.kernels.sparse_gemv.config import DEFAULTS, GemvConfig, default_config, plan

    for (n, k) in [(4096, 4096), (4096, 14336), (14336, 4096), (1024, 4096), (53, 37)]:
        for m in (1, 3, 8):
            for cfg in [*DEFAULTS.values(), GemvConfig(kind="compact", block_n=512, programs=132)]:
                p = plan(m, n, k, 132, cfg)
                assert p.k_per_split % p.block_k == 0
                assert p.splits * p.k_per_split >= k > (p.splits - 1) * p.k_per_split
                assert p.n_tiles * p.block_n >= n and (p.block_m == 16) == (m > 1 or cfg.dot)
                fold_rows = p.block_k // 2 if p.pairs else p.block_k
                assert fold_rows % p.fold == 0
                if n >= 1024 and cfg == default_config(n, k):
                    assert p.n_tiles * p.splits >= 1.5 * 132  # more programs than SMs, with room to spare


@needs_triton
@pytest.mark.parametrize("per_input", [False, True])
def test_the_public_entry_is_one_registered_op_under_compile(per_input):
    """``sparse_gemv(impl="triton")`` for a few rows is ``torch.ops.sparsebench.sparse_gemv``:
    ``torch.compile`` keeps it whole (``fullgraph`` raises on a graph break)."""
    import sparsebench.kernels.sparse_gemv.triton  # noqa: F401  (registers the op)

    g = torch.Generator().manual_seed(3)
    w_t = torch.randn(70, 37, generator=g).to(DEVICE)
    bias = torch.randn(37, generator=g).to(DEVICE)
    x = torch.randn(2, 70, generator=g).to(DEVICE)
    t = torch.rand(70, generator=g).to(DEVICE) if per_input else 0.5
    want = sparse_gemv_ref(x, w_t, t, bias)
    assert_close(torch.ops.sparsebench.sparse_gemv(x, w_t, t if per_input else None, 0.0 if per_input else 0.5,
                                                   bias), want)
    compiled = torch.compile(lambda a: sparse_gemv(a, w_t, t, impl="triton", bias=bias) * 2, backend="aot_eager",
                             fullgraph=True)
    assert_close(compiled(x), want * 2)


@needs_triton
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_on_the_programmatic_dependent_launch_path(variant, poisoned, monkeypatch):
    """Each kernel of a variant (pre-pass, GEMV, launched reduction) waits for the kernel
    before it first thing; on a Hopper GPU two calls back to back share the arrival counters
    and scratch, so the second must still match."""
    from sparsebench.kernels.sparse_gemv import triton as kt

    force_pdl(monkeypatch, kt)
    cfg = _variants()[variant]
    x, w_t, bias = _operands(3, 257, 37, torch.bfloat16, seed=11)
    x2 = x.flip(0)
    t = _threshold(x, 0.5, False)
    first, second = _run(x, w_t, t, bias, cfg), _run(x2, w_t, t, bias, cfg)
    assert_close(first, sparse_gemv_ref(x, w_t, t, bias))
    assert_close(second, sparse_gemv_ref(x2, w_t, t, bias))
