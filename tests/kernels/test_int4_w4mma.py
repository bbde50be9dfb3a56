"""The CUDA tensor-core int4 kernel (``w4_mma.cu``) and its fragment layout.

On CPU (CI): the layout is checked word by word against a hand-derived example, packed and
unpacked back on odd shapes, and the kernel's arithmetic (``tc_layout.emulate``: biased codes,
a per-group sum of x, fp32) against ``ref``. On a GPU: every configuration of the kernel
against ``ref`` on odd shapes (N a multiple of 16 only, K with a few groups, M 1 .. 16),
including warps whose share of the groups is not a multiple of a stage, and groups larger
than a stage.
"""

import pytest
import torch

from sparsebench.kernels.int4_matmul import ref, tc_layout
from sparsebench.kernels.tolerances import assert_close

from .markers import needs_rtc, nvrtc_or_skip


def _layer(n, k, group, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    scales = (torch.rand(n, k // group, generator=g) * 0.02 + 0.001).to(dtype)
    offsets = (-8 * scales.float() + torch.randn(n, k // group, generator=g) * 0.01).to(dtype)
    return q, packed, scales, offsets


def test_one_word_holds_what_the_mma_fragment_needs():
    """Lane 5 (fragment row group 1, column group 1), k-tile 2 of chunk 0: its word holds rows
    1 and 9 at chunk columns 16*1 + 4*2 + (0..3), in the bit order of the four A registers."""
    q = torch.arange(32 * 64, dtype=torch.int64).reshape(32, 64) % 16
    q = q.flip(0).to(torch.uint8)  # distinct-looking rows
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    ones = torch.ones(32, 1)
    words, _ = tc_layout.pack(packed, ones, ones * 0, 64, torch.bfloat16)
    got = int(words[0, 0, 5, 2]) & 0xFFFFFFFF
    c = 16 + 8

    def code(r, col):
        return int(q[r, col])

    want = (code(1, c) | code(9, c) << 4 | code(1, c + 2) << 8 | code(9, c + 2) << 12
            | code(1, c + 1) << 16 | code(9, c + 1) << 20 | code(1, c + 3) << 24 | code(9, c + 3) << 28)
    assert got == want


@pytest.mark.parametrize("n,k,group", [(16, 64, 64), (48, 192, 64), (32, 1024, 256), (80, 384, 384)])
def test_pack_then_unpack_gives_the_codes_back(n, k, group):
    q, packed, scales, offsets = _layer(n, k, group, torch.bfloat16)
    words, sc = tc_layout.pack(packed, scales, offsets, group, torch.bfloat16)
    assert words.shape == (n // 16, k // 64, 32, 4) and words.dtype == torch.int32
    assert sc.shape == (n // 16, k // group, 16, 2)
    assert torch.equal(tc_layout.unpack(words, k), q)
    # (s, c) of row 17, group 1 sit at tile 1, group 1, row 1
    if k // group > 1:
        assert sc[1, 1, 1, 0] == scales[17, 1].float()
        assert sc[1, 1, 1, 1] == offsets[17, 1].float() - 128 * scales[17, 1].float()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 5, 16])
def test_the_kernels_arithmetic_matches_ref(dtype, m):
    _, packed, scales, offsets = _layer(48, 384, 128, dtype, seed=3)
    x = torch.randn(m, 384, generator=torch.Generator().manual_seed(4)).to(dtype)
    words, sc = tc_layout.pack(packed, scales, offsets, 128, dtype)
    assert_close(tc_layout.emulate(x, words, sc, 128), ref.int4_matmul(x, packed, scales, offsets, 128))


@pytest.mark.parametrize("n,k,group,dtype,why", [
    (40, 128, 64, torch.bfloat16, "multiple of 16"),
    (32, 128, 32, torch.bfloat16, "multiple of 64"),
    (32, 320, 128, torch.bfloat16, "divides K"),
    (32, 128, 64, torch.float32, "bf16 or fp16"),
])
def test_shapes_the_layout_cannot_hold_are_refused(n, k, group, dtype, why):
    assert why in tc_layout.check(n, k, group, dtype)
    _, packed, scales, offsets = _layer(n, k, group if k % group == 0 else 64, torch.bfloat16)
    with pytest.raises(ValueError, match=why):
        tc_layout.pack(packed, scales, offsets, group, dtype)


def test_several_tiles_a_block_take_the_register_pipeline():
    from sparsebench.kernels.int4_matmul import cuda

    for bad in ({"pipe": 4, "tiles": 2}, {"tiles": 3}):
        with pytest.raises(ValueError, match="more than 1 only with pipe 0"):
            cuda.Config(8, 4, **bad)
    assert cuda.Config(8, 4, tiles=8).tiles == 8


def test_the_tuner_offers_the_cuda_kernel_only_where_it_can_run():
    from sparsebench.kernels.int4_matmul import triton as fast

    assert fast.cuda_plans(1, 4096, 4096, 128, torch.bfloat16, None) == []
    assert fast.cuda_plans(1, 4096, 4096, 128, torch.bfloat16, torch.device("cpu")) == []
    assert fast.Plan("w4mma", warps=8, stages=4).label() == "w4mma[w8 s4]"
    assert fast.Plan("w4mma", warps=4, stages=4, pipe=8, l2=True).label() == "w4mma[w4 s4 p8 l2]"


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_every_offered_variant_compiles(arch):
    """NVRTC needs no GPU: every configuration the tuner offers at a Llama shape (one and
    sixteen tokens), in both dtypes, with the defines ``cuda.run`` would give it."""
    from sparsebench.kernels.int4_matmul import cuda
    from sparsebench.kernels.int4_matmul import triton as fast

    cuda_rtc = nvrtc_or_skip()
    source = cuda.SOURCE_PATH.read_text()
    seen = set()
    for m, group, n in ((1, 128, 4096), (16, 128, 4096), (1, 64, 4096), (1, 128, 28672), (16, 128, 28672)):
        configs = fast.cuda_configs(m, group, n, 132)
        assert any(c.sx for c in configs) == (m <= 8)
        assert any(c.tiles > 1 for c in configs) == (n // 16 >= 2 * 2 * 132)
        for config in configs:
            for dtype in (torch.bfloat16, torch.float16):
                defines = cuda.defines(dtype, 1 if m <= 8 else 2, config, 2 if group == 128 else 1, True,
                                       config.threads_limit(m), group)
                key = tuple(sorted(defines.items()))
                if key in seen:
                    continue
                seen.add(key)
                image = cuda_rtc.compile_cubin(source, arch, [f"-D{k}={v}" for k, v in defines.items()])
                assert len(image) > 1000, defines


# ---- on a GPU ---------------------------------------------------------------------------


CONFIGS = [(4, 4, 0, False, False), (8, 4, 0, False, False), (16, 4, 0, False, False), (4, 8, 0, False, False),
           (8, 8, 0, False, False), (3, 4, 0, False, False), (5, 8, 0, False, False),  # 3, 5 warps: uneven shares
           (4, 4, 4, False, False), (8, 4, 2, False, False), (16, 4, 3, True, False), (5, 4, 8, True, False),
           (3, 8, 3, False, False),  # cp.async rings
           (4, 4, 0, False, True), (5, 2, 0, False, True), (8, 4, 2, False, True)]  # L2 bulk prefetch first
CONFIGS = [(*c, False, 1) for c in CONFIGS] + [  # sum(x) from the prologue instead of the second mma
    (8, 4, 0, False, False, True, 1), (3, 8, 0, False, True, True, 1), (5, 4, 3, False, False, True, 1),
    (16, 2, 0, False, True, True, 1),
    # blocks working through several tiles (a last block with fewer when N/16 does not divide)
    (8, 2, 0, False, True, False, 2), (4, 4, 0, False, False, True, 4), (3, 8, 0, False, False, False, 8)]
GPU_CASES = [  # m, n, k, group
    (1, 48, 192, 64), (3, 48, 192, 64), (8, 64, 1024, 128), (9, 64, 1024, 128), (16, 32, 1024, 128),
    (1, 1024, 4096, 128), (2, 4096, 14336, 128), (1, 32, 2048, 1024), (1, 16, 64, 64),
]


@needs_rtc
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k,group", GPU_CASES, ids=[f"m{c[0]}-n{c[1]}-k{c[2]}-g{c[3]}" for c in GPU_CASES])
def test_cuda_kernel_matches_ref(m, n, k, group, dtype):
    from sparsebench.kernels.int4_matmul import cuda

    _, packed, scales, offsets = (t.cuda() for t in _layer(n, k, group, dtype, seed=m + n))
    x = torch.randn(m, k, device="cuda").to(dtype)
    want = ref.int4_matmul(x, packed, scales, offsets, group)
    for warps, stage, pipe, l2, prefetch, sx, tiles in CONFIGS:
        config = cuda.Config(warps, stage, pipe, l2, prefetch, sx, tiles)
        if 32 * warps > config.threads_limit(m):
            continue
        if sx and group not in cuda.SX_GROUPS:
            with pytest.raises(ValueError, match="sums x by groups of 64, 128, 256"):
                cuda.run(x, packed, scales, offsets, group, config)
            continue
        got = cuda.run(x, packed, scales, offsets, group, config)
        assert got.shape == (m, n) and got.dtype == dtype
        assert_close(got, want)


@needs_rtc
@pytest.mark.gpu
def test_cuda_kernel_repacks_a_modified_weight_and_runs_in_a_graph():
    from sparsebench.kernels.int4_matmul import cuda

    _, packed, scales, offsets = (t.cuda() for t in _layer(64, 512, 128, torch.bfloat16))
    x = torch.randn(1, 512, device="cuda").bfloat16()
    first = cuda.run(x, packed, scales, offsets, 128)
    scales.mul_(2)  # in place: the repacked copy must follow
    assert_close(cuda.run(x, packed, scales, offsets, 128), ref.int4_matmul(x, packed, scales, offsets, 128))
    assert not torch.equal(first, cuda.run(x, packed, scales, offsets, 128))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = cuda.run(x, packed, scales, offsets, 128)
    x.copy_(torch.randn_like(x))
    graph.replay()
    assert_close(out, ref.int4_matmul(x, packed, scales, offsets, 128))
    fresh = packed.clone()
    with pytest.raises(RuntimeError, match="before capturing"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            cuda.run(x, fresh, scales, offsets, 128)


@needs_rtc
@pytest.mark.gpu
def test_compile_errors_carry_the_nvrtc_log():
    from sparsebench.kernels import cuda_rtc

    with pytest.raises(cuda_rtc.RtcError, match="undefined|identifier"):
        cuda_rtc.compile_cubin('extern "C" __global__ void k() { nope(); }', "sm_80")


@needs_rtc
@pytest.mark.gpu
def test_cuda_kernel_with_pdl_waits_for_the_kernel_that_writes_x(monkeypatch):
    from sparsebench.kernels import launch
    from sparsebench.kernels.int4_matmul import cuda

    if not launch.hopper_or_newer(torch.device("cuda")):
        pytest.skip("programmatic dependent launch needs sm_90")
    monkeypatch.setenv(launch.PDL_ENV, "1")
    _, packed, scales, offsets = (t.cuda() for t in _layer(256, 4096, 128, torch.bfloat16))
    x = torch.randn(1, 4096, device="cuda").bfloat16()
    cuda.run(x, packed, scales, offsets, 128, cuda.Config(4, 4, prefetch=True))  # repack: an ordinary launch
    scales.mul_(0.5)  # in place, then at once a PDL-eligible call: the repack must finish first
    got = cuda.run(x, packed, scales, offsets, 128, cuda.Config(4, 4, prefetch=True))
    assert_close(got, ref.int4_matmul(x, packed, scales, offsets, 128))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        xs = x * 3 + 1  # the kernel this launch overlaps; its output is what the int4 kernel reads
        out = cuda.run(xs, packed, scales, offsets, 128, cuda.Config(8, 4))
        out2 = cuda.run(out[:, :128].repeat(1, 32).contiguous(), packed, scales, offsets, 128, cuda.Config(8, 2))
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        graph.replay()
        want = ref.int4_matmul(x * 3 + 1, packed, scales, offsets, 128)
        assert_close(out, want)
        assert_close(out2, ref.int4_matmul(want[:, :128].repeat(1, 32).contiguous(), packed, scales, offsets, 128))
