"""The CUDA SpMM (``spmm_decode.cu`` via NVRTC) against the reference.

On CPU (CI): configurations and refusals, the run-boundary table against a count by hand and
by brute force, and, where NVRTC can be found (``SPARSEBENCH_NVRTC``), every benchmarked
variant compiled for sm_90 and sm_80. On a GPU: every variant against ``ref`` on odd shapes
(N and K not multiples of the tiles, K not a multiple of 8), 0 / 50 / 90 / 100% sparsity,
1 / 3 / 8 rows, bf16 and fp16, bias, a misaligned view of x, outputs written into NaN-filled
buffers; CUDA-graph capture.
"""

import pytest
import torch

from sparsebench.kernels.spmm import cuda, pack, spmm
from sparsebench.kernels.tolerances import assert_close

from .graphs import graph_replay
from .markers import needs_rtc, nvrtc_or_skip

# what the benchmark sweeps (benchmarks/kernels/spmm.py CUDA_CONFIGS) and the edges
CONFIGS = [cuda.Config(), cuda.Config(rows=16, warps=4, stages=6), cuda.Config(rows=16, warps=4, kw=4, stages=4),
           cuda.Config(rows=16, warps=8, kw=4, stages=4), cuda.Config(rows=32, warps=8, kw=4, stages=3),
           cuda.Config(rows=8, warps=8, kw=2, stages=6), cuda.Config(rows=64, warps=4, stages=3),
           cuda.Config(rows=4, warps=1, stages=2)]


def sparse(n, k, sparsity, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    w[torch.rand(n, k, generator=g) < sparsity] = 0
    return w.to(dtype)


def test_configs_round_trip_and_reject_bad_values():
    for cfg in CONFIGS:
        assert cuda.Config.parse(cfg.label()) == cfg
    assert cuda.Config.parse("r=8,w=2") == cuda.Config(rows=8, warps=2)
    assert cuda.Config.parse("k=2,w=8") == cuda.Config(kw=2, warps=8)
    with pytest.raises(ValueError, match="divide warps"):
        cuda.Config(warps=4, kw=8)
    with pytest.raises(ValueError, match="must divide rows"):
        cuda.Config(rows=4, warps=16, kw=2)
    with pytest.raises(ValueError, match="expected e.g."):
        cuda.Config.parse("rows=8")
    with pytest.raises(ValueError, match="divide rows"):
        cuda.Config(rows=4, warps=8)
    assert cuda.smem_bytes(cuda.Config(kw=4, stages=3), 1, 32) == 3 * 4 * cuda.slot_bytes(cuda.Config(), 1) + 8 * 32
    assert cuda.Config().label() == "r=16,w=8,k=1,d=8"
    with pytest.raises(ValueError, match="stages"):
        cuda.Config(stages=1)
    with pytest.raises(ValueError, match="64 rows need at least 4 warps"):
        cuda.Config(rows=64, warps=2)


def test_run_boundaries_by_hand():
    """One 8x128 tile, two blocks of 4 rows. Row r holds r + 1 nonzeros, so the runs of rows
    0-3 and 4-7 hold 1+2+3+4 = 10 and 5+6+7+8 = 26 values: block 0 reads [0, 10), block 1
    [10, 36)."""
    w = torch.zeros(8, 128)
    for r in range(8):
        w[r, : r + 1] = 1.0
    p = pack(w, tile_n=8, tile_k=128)
    assert cuda.chunk_bounds(p, 4).tolist() == [[[0, 10]], [[10, 36]]]


@pytest.mark.parametrize("rows", [4, 16, 64])
def test_run_boundaries_match_the_rows_counts(rows):
    """Each block's run in each k-tile starts at its first row's start and holds exactly the
    nonzeros of its rows there (counted from the dense weight, tile by tile)."""
    w = sparse(150, 333, 0.6, torch.float32)
    p = pack(w)
    b = cuda.chunk_bounds(p, rows)
    np_, kt = p.row_start.shape
    assert b.shape == (np_ // rows, kt, 2)
    dense = torch.zeros(np_, kt * 128)
    dense[:150, :333] = w
    counts = (dense != 0).reshape(np_ // rows, rows, kt, 128).sum((1, 3))
    assert torch.equal(b[..., 0], p.row_start[::rows])
    assert torch.equal(b[..., 1] - b[..., 0], counts.to(torch.int32))
    assert int(b[..., 1].max()) == p.values.numel()


def test_refusals_say_what_is_allowed():
    p = pack(sparse(64, 128, 0.5, torch.bfloat16))
    assert "bf16 or fp16" in cuda.why_not_shape(1, 64, 128, torch.float32, p)
    assert "1..8 rows" in cuda.why_not_shape(9, 64, 128, torch.bfloat16, p)
    assert "tile_k=64" in cuda.why_not_shape(1, 64, 128, torch.bfloat16, pack(sparse(64, 128, 0.5, torch.bfloat16),
                                                                             tile_k=64))
    assert "divide" in cuda.why_not_shape(1, 64, 128, torch.bfloat16, pack(sparse(40, 128, 0.5, torch.bfloat16),
                                                                          tile_n=40))
    assert "shared memory" in cuda.why_not_shape(8, 64, 4096, torch.bfloat16, None, cuda.Config(rows=64, warps=8, stages=12))
    assert cuda.why_not_shape(8, 14336, 4096, torch.bfloat16, p) is None
    assert "CUDA tensors" in cuda.why_not(torch.ones(1, 128, dtype=torch.bfloat16), p)


def test_slot_layout_follows_the_source():
    """Host and kernel agree on a slot: 16 mask bytes and 4 start bytes a row (padded to 16),
    x's 128 columns a compiled row, the values run with 16 values of slack."""
    assert cuda.slot_bytes(cuda.Config(rows=16), 1) == 16 * 16 + 64 + 256 + (16 * 128 + 16) * 2
    assert cuda.slot_bytes(cuda.Config(rows=4, warps=1), 3) == 4 * 16 + 16 + 4 * 256 + (4 * 128 + 16) * 2
    assert [cuda.compiled_rows(m) for m in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_every_variant_compiles(arch):
    rtc = nvrtc_or_skip()
    src = cuda.SOURCE_PATH.read_text()
    for cfg in CONFIGS:
        for dtype in (torch.bfloat16, torch.float16):
            for m in (1, 2, 4, 8):
                opts = [f"-D{k}={v}" for k, v in cuda.defines(cfg, dtype, m).items()]
                assert rtc.compile_cubin(src, arch, opts, name="spmm_decode.cu")


@needs_rtc
@pytest.mark.gpu
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.label())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,k", [(37, 70), (200, 333), (64, 128), (1000, 1300)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_cuda_matches_reference(cfg, dtype, n, k, sparsity):
    p = pack(sparse(n, k, sparsity, dtype).cuda())
    bounds = cuda.chunk_bounds(p, cfg.rows)
    for m in (1, 3, 8):
        x = torch.randn(m, k, device="cuda").to(dtype)
        want = spmm(x, p, impl="ref")
        out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
        assert_close(cuda.spmm_cuda(x, p, config=cfg, bounds=bounds, out=out), want)
        assert_close(out, want)


@needs_rtc
@pytest.mark.gpu
def test_bias_views_and_graph_capture():
    p = pack(sparse(300, 520, 0.7, torch.bfloat16).cuda())
    bias = torch.randn(300, device="cuda").to(torch.bfloat16)
    wide = torch.randn(2, 521, device="cuda").to(torch.bfloat16)
    x = wide[:, 1:]  # a view two bytes off 16-byte alignment: the launcher copies it
    want = spmm(x, p, bias, impl="ref")
    assert_close(cuda.spmm_cuda(x, p, bias), want)
    assert_close(graph_replay(lambda: cuda.spmm_cuda(x, p, bias)), want)
