"""The CUDA sparse GEMV (``sparse_gemv.cu`` via NVRTC) against its reference.

On CPU (CI): configurations, plans and refusals, the dispatch's errors without a GPU, and,
where NVRTC can be found (``SPARSEBENCH_NVRTC``), every offered variant compiled for sm_90
and sm_80. On a GPU: every configuration against ``ref`` on odd shapes (N = 8 * odd, K odd,
1 / 3 / 8 rows), 0 / 50 / 90 / 100% sparsity, scalar and per-input thresholds, bias, bf16
and fp16, outputs written into NaN-filled buffers; determinism; CUDA-graph capture.
"""

import pytest
import torch

from sparsebench.kernels.sparse_gemv import cuda, sparse_gemv, sparse_gemv_ref
from sparsebench.kernels.tolerances import assert_close

from .markers import needs_rtc, nvrtc_or_skip

# what the benchmark sweeps (benchmarks/kernels/sparse_gemv.py CUDA_CONFIGS) and the edges
CONFIGS = [cuda.Config(), cuda.Config(unroll=4), cuda.Config(lanes_n=8), cuda.Config(lanes_n=8, unroll=6),
           cuda.Config(warps=4, lanes_n=8, unroll=4), cuda.Config(unroll=4, local=1),
           cuda.Config(warps=16, lanes_n=4, unroll=2, local=1), cuda.Config(warps=2, split=2, local=1), cuda.Config(warps=4, lanes_n=32, unroll=4),
           cuda.Config(warps=16, lanes_n=8, unroll=4), cuda.Config(lanes_n=4, unroll=16),
           cuda.Config(split=1), cuda.Config(split=2, warps=2), cuda.Config(warps=1, lanes_n=16, unroll=1)]


def test_configs_round_trip_and_reject_typos():
    for cfg in CONFIGS:
        assert cuda.Config.parse(cfg.label()) == cfg
    assert cuda.Config().label() == "w=8,ln=16,u=8,s=0"  # labels of records before ``local`` still read
    assert cuda.Config.parse("w=8,ln=16,u=4,s=0,loc=1") == cuda.Config(unroll=4, local=1)
    with pytest.raises(ValueError, match="local"):
        cuda.Config(local=2)
    assert cuda.Config.parse("ln=8") == cuda.Config(lanes_n=8)
    with pytest.raises(ValueError, match="expected e.g."):
        cuda.Config.parse("lanes=8")
    with pytest.raises(ValueError, match="lanes_n"):
        cuda.Config(lanes_n=12)
    with pytest.raises(ValueError, match="split"):
        cuda.Config(split=3)


def test_a_local_list_has_a_whole_slice_per_warp():
    """Each warp packs its slice into its own part of the list: 8 warps over 1000 inputs take
    slices of 128 (whole scan steps of 32), so the list holds 1024 entries, not 1000."""
    assert cuda.list_entries(cuda.Config(), 1000) == 1000
    assert cuda.list_entries(cuda.Config(local=1), 1000) == 1024
    assert cuda.smem_bytes(cuda.Config(local=1), 1, 1000) == max(4 * 1024, 4 * 8 * 128)
    assert cuda.smem_bytes(cuda.Config(local=1, warps=2), 3, 1000) == 4 * (1024 + 1024 * 2)  # 2 warps: 512 + 512


def test_defines_name_one_variant():
    d = cuda.defines(cuda.Config(warps=4, lanes_n=32, unroll=4), torch.float16, 3, 2)
    assert d == {"SG_BF16": 0, "SG_M": 4, "SG_WARPS": 4, "SG_LN": 32, "SG_U": 4, "SG_SPLIT": 2, "SG_LOCAL": 0}
    assert cuda.defines(cuda.Config(local=1), torch.bfloat16, 1, 1)["SG_LOCAL"] == 1
    assert [cuda.compiled_rows(m) for m in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]


@pytest.mark.parametrize("n,k", [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (40, 1000)])
def test_plans_cover_k_and_fill_the_gpu(n, k):
    cfg = cuda.default_config(n, k)
    p = cuda.plan(1, n, k, cfg, 132, clusters=True)
    assert p.kb * p.split >= k > p.kb * (p.split - 1)
    assert p.n_tiles * cfg.tile_n >= n
    if n >= 1024 and k >= 4096:
        assert p.n_tiles * p.split >= 128  # about one block per SM or more
    flat = cuda.plan(1, n, k, cfg, 132, clusters=False)
    assert flat.split == 1 and flat.kb == k
    assert cuda.plan(8, n, k, cfg, 132, True).smem <= cuda.SMEM_LIMIT


@pytest.mark.parametrize("m,n,k,dtype,why", [
    (1, 44, 128, torch.bfloat16, "multiple of 8"),
    (9, 64, 128, torch.bfloat16, "1..8 rows"),
    (1, 64, 128, torch.float32, "bf16 or fp16"),
    (1, 64, 70000, torch.bfloat16, "16 bits"),
    (1, 65536, 40000, torch.float16, "2^31"),
])
def test_shapes_the_kernel_cannot_take_are_refused(m, n, k, dtype, why):
    assert why in cuda.why_not_shape(m, n, k, dtype)


def test_a_split_needs_clusters_and_large_k_needs_a_split():
    assert "clusters" in cuda.why_not_shape(1, 64, 4096, torch.bfloat16, cuda.Config(split=4), clusters=False)
    assert "shared memory" in cuda.why_not_shape(8, 4096, 14336, torch.bfloat16, clusters=False)
    assert cuda.why_not_shape(8, 4096, 14336, torch.bfloat16, clusters=True) is None


def test_without_a_gpu_impl_cuda_is_refused_and_auto_is_unchanged():
    x = torch.randn(1, 64).bfloat16()
    w_t = torch.randn(64, 32).bfloat16()
    assert "CUDA tensors" in cuda.why_not(1, 32, 64, torch.bfloat16, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="impl='cuda' needs CUDA tensors"):
        sparse_gemv(x, w_t, 0.5, impl="cuda")
    with pytest.raises(ValueError, match="cuda"):
        sparse_gemv(x, w_t, 0.5, impl="cudaa")
    assert torch.equal(sparse_gemv(x, w_t, 0.5, impl="auto"), sparse_gemv_ref(x, w_t, 0.5))
    from sparsebench.kernels.sparse_gemv import describe

    assert describe("auto", "cpu").startswith("sparse_gemv ref")


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_every_offered_variant_compiles(arch):
    """NVRTC needs no GPU: each configuration (one and eight rows), and the default one in both
    dtypes at every compiled row count."""
    rtc = nvrtc_or_skip()
    source = cuda.SOURCE_PATH.read_text()
    splits = (1, 8) if arch == "sm_90" else (1,)
    variants = [(cfg, torch.bfloat16, m, s) for cfg in CONFIGS for m in (1, 8) for s in splits]
    variants += [(cuda.Config(), dtype, m, splits[-1]) for dtype in (torch.bfloat16, torch.float16) for m in (2, 3)]
    variants += [(cuda.Config(), torch.float16, 1, 1)]
    for cfg, dtype, m, split in variants:
        d = cuda.defines(cfg, dtype, m, split)
        image = rtc.compile_cubin(source, arch, [f"-D{k}={v}" for k, v in d.items()])
        assert len(image) > 1000, d


# ---- on a GPU ---------------------------------------------------------------------------


# m, k, n: N = 8 * odd, K odd or off every tile, a Llama shape
GPU_CASES = [(1, 1000, 40), (3, 1000, 40), (8, 4104, 328), (1, 4104, 1032), (3, 37, 8), (8, 300, 2056),
             (1, 4096, 4096), (2, 14336, 520)]


def _threshold(x, sparsity, per_channel):
    a = x.float().abs()
    if sparsity >= 1.0:
        t = a.max().item() + 1.0
        return torch.full((x.shape[-1],), t, device=x.device) if per_channel else t
    if per_channel:
        q = torch.quantile(a, sparsity, dim=0) if sparsity > 0 else torch.zeros(x.shape[-1], device=x.device)
        return q + 1e-3 * torch.rand(x.shape[-1], device=x.device)
    return float(torch.quantile(a.flatten(), sparsity)) if sparsity > 0 else 0.0


def _operands(m, k, n, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(m, k, device="cuda", generator=g).to(dtype)
    w_t = (torch.randn(k, n, device="cuda", generator=g) / k ** 0.5).to(dtype)
    bias = torch.randn(n, device="cuda", generator=g).to(dtype)
    return x, w_t, bias


@needs_rtc
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,k,n", GPU_CASES, ids=[f"m{c[0]}-k{c[1]}-n{c[2]}" for c in GPU_CASES])
def test_cuda_kernel_matches_ref(m, k, n, dtype):
    x, w_t, bias = _operands(m, k, n, dtype, seed=m * 7 + k + n)
    clusters = torch.cuda.get_device_capability()[0] >= 9
    for sparsity in (0.0, 0.5, 0.9, 1.0):
        for per_channel in (False, True):
            t = _threshold(x, sparsity, per_channel)
            for b in (None, bias):
                want = sparse_gemv_ref(x, w_t, t, b)
                for cfg in CONFIGS:
                    if cuda.why_not_shape(m, n, k, dtype, cfg, clusters):
                        continue
                    out = torch.full((m, n), float("nan"), dtype=dtype, device="cuda")
                    got = cuda.sparse_gemv_cuda(x, w_t, t, b, config=cfg, out=out)
                    assert got.shape == (m, n) and got.dtype == dtype
                    assert_close(got, want)


@needs_rtc
@pytest.mark.gpu
def test_nothing_survives_gives_bias_or_zeros_and_is_deterministic():
    x, w_t, bias = _operands(3, 1000, 40, torch.bfloat16, seed=1)
    assert torch.equal(cuda.sparse_gemv_cuda(x, w_t, 1e9), torch.zeros(3, 40, dtype=torch.bfloat16, device="cuda"))
    assert torch.equal(cuda.sparse_gemv_cuda(x, w_t, 1e9, bias), bias.expand(3, 40))
    t = _threshold(x, 0.5, False)
    first = cuda.sparse_gemv_cuda(x, w_t, t, config=cuda.Config(split=8))
    for _ in range(5):
        assert torch.equal(cuda.sparse_gemv_cuda(x, w_t, t, config=cuda.Config(split=8)), first)


@needs_rtc
@pytest.mark.gpu
def test_dispatch_and_the_registered_op():
    x, w_t, bias = _operands(1, 4096, 1024, torch.bfloat16, seed=2)
    t = _threshold(x, 0.5, False)
    want = sparse_gemv_ref(x, w_t, t, bias)
    assert_close(sparse_gemv(x, w_t, t, impl="cuda", bias=bias), want)
    assert_close(torch.ops.sparsebench.sparse_gemv_cuda(x, w_t, None, t, bias), want)
    with pytest.raises(ValueError, match="multiple of 8"):
        sparse_gemv(x, w_t[:, :1020].contiguous(), t, impl="cuda")
    many = torch.randn(20, 4096, device="cuda").bfloat16()  # more than 8 rows: the masked GEMM
    assert_close(sparse_gemv(many, w_t, t, impl="cuda"), sparse_gemv_ref(many, w_t, t))


@needs_rtc
@pytest.mark.gpu
@pytest.mark.parametrize("cfg", [cuda.Config(), cuda.Config(split=1)], ids=lambda c: c.label())
def test_cuda_graph_replay_matches_ref(cfg):
    x, w_t, bias = _operands(2, 4104, 1032, torch.float16, seed=3)
    t = _threshold(x, 0.5, True)
    cuda.sparse_gemv_cuda(x, w_t, t, bias, config=cfg)  # compiles outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = cuda.sparse_gemv_cuda(x, w_t, t, bias, config=cfg)
    for seed in range(3):
        x.copy_(torch.randn(x.shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(seed)))
        graph.replay()
        torch.cuda.synchronize()
        assert_close(out, sparse_gemv_ref(x, w_t, t, bias))


@needs_rtc
@pytest.mark.gpu
@pytest.mark.parametrize("cfg", [cuda.Config(unroll=4), cuda.Config(lanes_n=8, split=1)], ids=lambda c: c.label())
def test_with_pdl_each_call_waits_for_the_kernel_that_writes_its_input(monkeypatch, cfg):
    """A chain of square layers, each reading the output of the call before it (a kernel that
    lets its dependents start at once), the first behind a threshold converted to fp32 by a
    kernel just before the launch: eager, then replayed in a CUDA graph on new inputs."""
    from sparsebench.kernels import launch

    if not launch.hopper_or_newer(torch.device("cuda")):
        pytest.skip("programmatic dependent launch needs sm_90")
    monkeypatch.setenv(launch.PDL_ENV, "1")
    g = torch.Generator(device="cuda").manual_seed(5)
    ws = [(torch.randn(2048, 2048, device="cuda", generator=g) / 2048 ** 0.5).bfloat16() for _ in range(4)]
    x = torch.randn(1, 2048, device="cuda", generator=g).bfloat16()
    t64 = torch.full((2048,), 0.4, device="cuda", dtype=torch.float64)  # the first call converts it
    t = 0.4

    def chain(h, gemv):
        outs = [gemv(h, ws[0], t64)]
        for w in ws[1:]:
            outs.append(gemv(outs[-1], w, t))
        return outs

    def ours(h, w, th):
        return cuda.sparse_gemv_cuda(h, w, th, config=cfg)

    def ref_gemv(h, w, th):
        return sparse_gemv_ref(h, w, th.float() if isinstance(th, torch.Tensor) else th)

    def check(outs):  # each call against the reference on what the call before it wrote
        prev = x
        for i, (got, w) in enumerate(zip(outs, ws, strict=True)):
            assert_close(got, ref_gemv(prev, w, t64 if i == 0 else t))
            prev = got

    check(chain(x, ours))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = chain(x, ours)
    for seed in range(3):
        x.copy_(torch.randn(x.shape, device="cuda", generator=torch.Generator(device="cuda").manual_seed(seed)))
        graph.replay()
        torch.cuda.synchronize()
        check(outs)


def test_the_fast_path_of_auto_is_named_by_the_environment(monkeypatch):
    import sparsebench.kernels.sparse_gemv as sg

    monkeypatch.delenv(sg.IMPL_ENV, raising=False)
    assert sg.fast_impl() == "cuda"
    monkeypatch.setenv(sg.IMPL_ENV, "triton")
    assert sg.fast_impl() == "triton"
    x, w_t = torch.randn(1, 64), torch.randn(64, 8)
    assert torch.equal(sg.sparse_gemv(x, w_t, 0.5), sg.sparse_gemv_ref(x, w_t, 0.5))  # CPU: auto is the reference
    assert sg.describe("auto", "cpu").startswith("sparse_gemv ref")
    monkeypatch.setenv(sg.IMPL_ENV, "cutlass")
    with pytest.raises(ValueError, match="SPARSEBENCH_SPARSE_GEMV_IMPL='cutlass': expected one of triton, cuda"):
        sg.fast_impl()
