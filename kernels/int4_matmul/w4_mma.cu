// int4 weight-only matmul for decode-sized M (1..16) on tensor cores: y[M, N] = x[M, K] W^T.
//
// Compiled at run time by NVRTC (kernels/cuda_rtc.py); includes only kernels/pdl.cuh.
// Layout (made by tc_layout.py): the weight is cut into 16-row tiles and 16-column k-tiles;
// for each k-tile a thread of the warp holds exactly the eight codes of its mma.m16n8k16 A
// fragment in one 32-bit word, so one 16-byte load per thread brings four k-tiles (a
// "chunk" of 64 columns) and a warp's load is 512 contiguous bytes. Word bits 4j..4j+3 and
// 16+4j..19+4j are the two halves of A register j, so `lop3(w >> 4j, 0x000F000F, MAGIC)`
// turns them into (BIAS + q) pairs in one instruction (0x4300 is bf16 128, 0x6400 fp16 1024:
// OR-ing a code into the mantissa adds it exactly).
//
// With A = BIAS + q the mma sums (BIAS + q) x; a second mma with A = 1 sums x itself, so
// per group   y += s * acc + c * sum(x)   with c = offset - BIAS * s  (W = q s + offset),
// all in fp32. Tokens are the mma's N = 8 columns (two n8 tiles for M <= 16). With W4_SX
// each warp instead sums x over its groups once, right after the wait (while its first
// weights are still on their way), and the second mma goes: half the mma of the main loop,
// and its accumulators take the odd k-tiles (two dependent chains of half the length).
//
// A block owns one 16-row tile and all of K: its warps split the groups, each streams its
// chunks with the next S chunks' loads in flight while it computes the current S, and the
// warps' partial sums meet in shared memory. No atomics, no workspace, no second launch.
// Launched with programmatic dependent launch, a block issues its weight and scale loads
// before it waits for the kernel that writes x.

typedef unsigned int u32;
typedef unsigned short u16;
struct __align__(16) U4 { u32 x, y, z, w; };
struct __align__(8) F2 { float x, y; };

__device__ __forceinline__ U4 load_stream(const U4* p) {
    U4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

__device__ __forceinline__ U4 load_x(const U4* p) {  // eight activations (L1-cached: every block reads them)
    U4 v;
    asm("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

__device__ __forceinline__ u32 shared_address(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

__device__ __forceinline__ void copy_async16(u32 dst, const U4* src) {  // global -> shared, bypassing L1
#if W4_L2
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
#endif
}

// Ask the L2 for a contiguous range of global memory (sm_90 bulk prefetch: one instruction,
// no registers or shared memory held, so a warp's later chunks are on their way from DRAM
// while its first ones are computed and its own loads then meet them in the L2).
__device__ __forceinline__ void prefetch_l2(const void* p, u32 bytes) {
#if __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// Programmatic dependent launch (pdl.cuh): the previous kernel's results are only x (weights,
// scales and the zero row are written by no kernel of this stream), so those loads come
// before wait_for_inputs().
#include "pdl.cuh"

__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int N> __device__ __forceinline__ void wait_copies() {  // all but the newest N groups landed
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ U4 load_shared(u32 a) {
    U4 v;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a) : "memory");
    return v;
}

// Each warp copies the (s, c) pairs of its own groups into the block's table: one latency for
// all of them, in flight with the first weights (a plain load-then-store loop waits one DRAM
// round trip per iteration, several microseconds on a long K).
__device__ __forceinline__ void copy_scales(F2* s_sc, const F2* sc, int tile, int groups, int g0, int g1,
                                            int lane) {
    const U4* src = reinterpret_cast<const U4*>(sc + ((size_t)tile * groups + g0) * 16);
    const u32 dst = shared_address(s_sc + g0 * 16);
    for (int i = lane; i < (g1 - g0) * 8; i += 32) copy_async16(dst + i * 16, src + i);
}

template <bool BF16> __device__ __forceinline__ u32 biased_pair(u32 w) {
    u32 r;
    if (BF16) asm("lop3.b32 %0, %1, 0x000F000F, 0x43004300, 0xEA;" : "=r"(r) : "r"(w));
    else asm("lop3.b32 %0, %1, 0x000F000F, 0x64006400, 0xEA;" : "=r"(r) : "r"(w));
    return r;
}

template <bool BF16> __device__ __forceinline__ void mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    if (BF16)
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <bool BF16> __device__ __forceinline__ u16 to_half(float v) {
    u16 h;
    if (BF16) asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
    else asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}

// Configuration, set by the launcher with -D (one small module per configuration):
//   W4_BF16 (1: bf16, 0: fp16), W4_MT (n8 token tiles: 1 for M <= 8, 2 for M <= 16),
//   W4_S (chunks per stage), W4_CPG (chunks per group; 0: given at run time),
//   W4_EVEN (1: every warp's chunk count is a multiple of W4_S, no tail checks), W4_THREADS,
//   W4_PIPE (0: the next stage's loads go to registers; D >= 2: a ring of D stages per warp in
//   shared memory filled by cp.async, D - 1 of them in flight, no registers held for them),
//   W4_L2 (1: cp.async asks the L2 to fetch 256 bytes at a time),
//   W4_PF (1: each warp first asks the L2 to prefetch all of its chunks past the first stage),
//   W4_SX (1: sum(x) per group from a prologue of 16-byte loads and shuffles, not a second
//   mma per k-tile; W4_SXG, the group size, is 64, 128 or 256),
//   W4_T (16-row tiles a block works through in turn, 1 by default; with W4_T > 1, registers
//   only: a tile's first weights and its scales go out before the previous tile's epilogue).
#ifndef W4_BF16
#define W4_BF16 1
#define W4_MT 1
#define W4_S 4
#define W4_CPG 2
#define W4_EVEN 1
#define W4_THREADS 256
#endif
#ifndef W4_PIPE
#define W4_PIPE 0
#endif
#ifndef W4_L2
#define W4_L2 0
#endif
#ifndef W4_PF
#define W4_PF 0
#endif
#ifndef W4_SX
#define W4_SX 0
#define W4_SXG 128
#endif
#ifndef W4_T
#define W4_T 1
#endif
#if W4_T > 1 && W4_PIPE
#error "W4_T > 1 takes the register pipeline (W4_PIPE 0)"
#endif
#define BF16 (W4_BF16 != 0)
#define MT W4_MT
#define S W4_S
#define STATIC_GROUPS (W4_CPG > 0 && S % W4_CPG == 0)

struct State {
    float tot[MT][4], acc[MT][4], accx[MT][4];
    int in_group, g;
    const float* sx;  // W4_SX: this thread's two tokens' sums of group 0 (s_sx + 2 * tig)
};

#define SX_ROW (8 * MT)  // s_sx floats a group: one sum a token tile column

__device__ __forceinline__ void fold_group(State& st, const F2* s_sc, int g, int gid) {
    // group done: scale its sums into the total (W = q s + offset, c = offset - BIAS s)
    const F2 s0 = s_sc[g * 16 + gid], s1 = s_sc[g * 16 + gid + 8];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#if W4_SX
        // C fragment: c0, c1 are tokens 2 tig, 2 tig + 1 of row gid; c2, c3 the same of row gid + 8
        // (accx holds the odd k-tiles' sums there)
        const F2 sx = *reinterpret_cast<const F2*>(st.sx + g * SX_ROW + mt * 8);
        const float x0 = sx.x, x1 = sx.y, x2 = sx.x, x3 = sx.y;
        float a[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) a[e] = st.acc[mt][e] + st.accx[mt][e];
#else
        const float x0 = st.accx[mt][0], x1 = st.accx[mt][1], x2 = st.accx[mt][2], x3 = st.accx[mt][3];
        const float* a = st.acc[mt];
#endif
        st.tot[mt][0] = fmaf(s0.y, x0, fmaf(s0.x, a[0], st.tot[mt][0]));
        st.tot[mt][1] = fmaf(s0.y, x1, fmaf(s0.x, a[1], st.tot[mt][1]));
        st.tot[mt][2] = fmaf(s1.y, x2, fmaf(s1.x, a[2], st.tot[mt][2]));
        st.tot[mt][3] = fmaf(s1.y, x3, fmaf(s1.x, a[3], st.tot[mt][3]));
#pragma unroll
        for (int e = 0; e < 4; ++e) st.acc[mt][e] = st.accx[mt][e] = 0.f;
    }
}

#if W4_SX
template <bool IS_BF16> __device__ __forceinline__ float pair_sum(u32 w) {  // the two 16-bit values of w
    if (IS_BF16) return __uint_as_float(w << 16) + __uint_as_float(w & 0xFFFF0000u);
    float lo, hi;
    asm("{ .reg .b16 l, h; mov.b32 {l, h}, %2; cvt.f32.f16 %0, l; cvt.f32.f16 %1, h; }" : "=f"(lo), "=f"(hi) : "r"(w));
    return lo + hi;
}

// The warp's groups g0 .. g1 - 1: s_sx[g * SX_ROW + tok] = sum of x[tok, g * G .. g * G + G - 1]
// (zero for tokens past M). A (group, token) unit is G / 8 lanes of one 16-byte load each,
// summed by a shuffle tree within them; XU steps' loads are issued together.
__device__ __forceinline__ void sum_x(float* s_sx, const u16* x, int ldx, int M, int g0, int g1, int lane) {
    constexpr int G = W4_SXG, L = G / 8, UPS = 32 / L, XU = 4;
    static_assert(G == 64 || G == 128 || G == 256, "W4_SXG is 64, 128 or 256");
    const int units = (g1 - g0) * M, sub = lane / L, part = lane % L;
    for (int u0 = 0; u0 < units; u0 += UPS * XU) {
        U4 v[XU];
#pragma unroll
        for (int j = 0; j < XU; ++j) {
            const int u = u0 + j * UPS + sub;
            v[j] = U4{0, 0, 0, 0};
            if (u < units)
                v[j] = load_x(reinterpret_cast<const U4*>(x + (size_t)(u % M) * ldx + (size_t)(g0 + u / M) * G) + part);
        }
#pragma unroll
        for (int j = 0; j < XU; ++j) {
            float t = (pair_sum<BF16>(v[j].x) + pair_sum<BF16>(v[j].y)) + (pair_sum<BF16>(v[j].z) + pair_sum<BF16>(v[j].w));
#pragma unroll
            for (int off = L / 2; off; off >>= 1) t += __shfl_xor_sync(0xFFFFFFFFu, t, off);
            const int u = u0 + j * UPS + sub;
            if (part == 0 && u < units) s_sx[(g0 + u / M) * SX_ROW + u % M] = t;
        }
    }
    for (int i = lane; i < (g1 - g0) * SX_ROW; i += 32)
        if (i % SX_ROW >= M) s_sx[g0 * SX_ROW + i] = 0.f;
    __syncwarp();
}
#endif

__device__ __forceinline__ void load_stage(U4 (&buf)[S], const U4* wq, int cs, int c1) {
#pragma unroll
    for (int i = 0; i < S; ++i) {
        const int c = cs + i;
        if (W4_EVEN) buf[i] = load_stream(wq + (size_t)c * 32);
        else buf[i] = c < c1 ? load_stream(wq + (size_t)c * 32) : U4{0, 0, 0, 0};
    }
}

__device__ __forceinline__ void compute_stage(State& st, const U4 (&buf)[S], const U4* const (&xr)[MT], int cs,
                                              int c0, int c1, int cpg, const F2* s_sc, int gid) {
    const u32 ONE = BF16 ? 0x3F803F80u : 0x3C003C00u;
    U4 xb[S][MT][2];  // this stage's activations, all loaded before the first mma
#pragma unroll
    for (int i = 0; i < S; ++i) {
        const int c = (W4_EVEN || cs + i < c1) ? cs + i : c0;  // past the warp's range: any valid address
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            xb[i][mt][0] = load_x(xr[mt] + (size_t)c * 8);
            xb[i][mt][1] = load_x(xr[mt] + (size_t)c * 8 + 1);
        }
    }
#pragma unroll
    for (int i = 0; i < S; ++i) {
        // (a chunk past the range has zero codes here and is never folded into the total)
        const u32 words[4] = {buf[i].x, buf[i].y, buf[i].z, buf[i].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u32 w = words[j];
            const u32 a0 = biased_pair<BF16>(w), a1 = biased_pair<BF16>(w >> 4);
            const u32 a2 = biased_pair<BF16>(w >> 8), a3 = biased_pair<BF16>(w >> 12);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const U4& v = xb[i][mt][j >> 1];
                const u32 b0 = (j & 1) ? v.z : v.x, b1 = (j & 1) ? v.w : v.y;
#if W4_SX
                // accx is free: odd k-tiles go there, two dependent mma chains of half the length
                mma<BF16>((j & 1) ? st.accx[mt] : st.acc[mt], a0, a1, a2, a3, b0, b1);
#else
                mma<BF16>(st.acc[mt], a0, a1, a2, a3, b0, b1);
                mma<BF16>(st.accx[mt], ONE, ONE, ONE, ONE, b0, b1);
#endif
            }
        }
        if (STATIC_GROUPS) {
            if ((i + 1) % (STATIC_GROUPS ? W4_CPG : 1) == 0 && (W4_EVEN || cs + i < c1))
                fold_group(st, s_sc, (cs + i) / (STATIC_GROUPS ? W4_CPG : 1), gid);
        } else if (++st.in_group == cpg && (W4_EVEN || cs + i < c1)) {
            fold_group(st, s_sc, st.g, gid);
            st.in_group = 0;
            ++st.g;
        }
    }
}

// x [M, ldx] (K used), xz: K zeros, qw [N/16, K/64, 32, 4] words, sc [N/16, K/G, 16] (s, c)
// pairs, y [M, ldy]. cpg: 64-column chunks per group; tiles: N/16 (block b takes tiles
// b * W4_T .. b * W4_T + W4_T - 1). Block: 32 * warps threads; dynamic
// shared memory: K/G * 16 * 8 bytes of (s, c), then warps * MT * 512 bytes for the reduction,
// then (W4_PIPE) warps * W4_PIPE * S * 512 bytes of weight ring, then (W4_SX) K/G * 8 * MT
// floats of sum(x) a group and token.
extern "C" __global__ void __launch_bounds__(W4_THREADS)
w4_mma(const u16* __restrict__ x, const u16* __restrict__ xz, const U4* __restrict__ qw,
       const F2* __restrict__ sc, u16* __restrict__ y, int M, int K, int cpg, int ldx, int ldy, int tiles) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int gid = lane >> 2;
    const int tile0 = blockIdx.x * W4_T, tile1 = min(tile0 + W4_T, tiles);
    int tile = tile0;
    const int chunks = K >> 6, groups = chunks / cpg;
    const int c0 = (warp * groups / warps) * cpg, c1 = ((warp + 1) * groups / warps) * cpg;
    const U4* wq = qw + (size_t)tile * chunks * 32 + lane;

    allow_dependents();
#if W4_PF
    if (lane == 0 && c0 + S < c1) prefetch_l2(wq + (size_t)(c0 + S) * 32, (u32)(c1 - c0 - S) * 512u);
#endif

    F2* s_sc = reinterpret_cast<F2*>(smem);
    float* s_red = reinterpret_cast<float*>(smem + (size_t)groups * 16 * sizeof(F2));
#if W4_PIPE
    // each thread copies and later reads only its own 16 bytes of every chunk, so its own
    // cp.async.wait_group is all the synchronisation the ring needs
    constexpr int D = W4_PIPE;
    const u32 ring = shared_address(s_red + warps * MT * 128) + (u32)(warp * D * S * 512 + lane * 16);
    const int stages = (c1 - c0 + S - 1) / S;
    auto issue = [&](int st) {
        const int cs = c0 + st * S;
        const u32 dst = ring + (u32)((st % D) * S * 512);
#pragma unroll
        for (int i = 0; i < S; ++i)
            if (W4_EVEN || cs + i < c1) copy_async16(dst + i * 512, wq + (size_t)(cs + i) * 32);
    };
    copy_scales(s_sc, sc, tile, groups, c0 / cpg, c1 / cpg, lane);  // in stage 0's group
#pragma unroll
    for (int d = 0; d < D - 1; ++d) {  // the first D - 1 stages go out before anything else
        if (d < stages) issue(d);
        commit_copies();
    }
#else
    U4 bufa[S], bufb[S];
    if (c0 < c1) load_stage(bufa, wq, c0, c1);  // the first loads go out before anything else
    copy_scales(s_sc, sc, tile, groups, c0 / cpg, c1 / cpg, lane);
    commit_copies();
#endif

    // B fragments. The layout gives thread (gid, tig) the 16 columns 16 tig .. 16 tig + 15 of
    // each chunk (k-tile j: 4j .. 4j + 3), so its activations for a chunk are two 16-byte
    // loads. Token rows past M read a zero row (xz), so no load sits behind a branch.
    const U4* xr[MT];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        const int tok = mt * 8 + gid;
        xr[mt] = reinterpret_cast<const U4*>(tok < M ? x + (size_t)tok * ldx : xz) + 2 * (lane & 3);
    }
    State st;
    auto reset = [&]() {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int e = 0; e < 4; ++e) st.tot[mt][e] = st.acc[mt][e] = st.accx[mt][e] = 0.f;
        st.in_group = 0;
        st.g = c0 / cpg;
    };
    reset();
    // the warps' sums meet in shared memory; one thread writes each output (fixed order:
    // deterministic)
    auto finish = [&]() {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int e = 0; e < 4; ++e) s_red[((warp * MT + mt) * 4 + e) * 32 + lane] = st.tot[mt][e];
        __syncthreads();
        for (int i = threadIdx.x; i < MT * 128; i += blockDim.x) {
            float v = 0.f;
            for (int w = 0; w < warps; ++w) v += s_red[w * MT * 128 + i];
            const int mt = i >> 7, e = (i >> 5) & 3, ln = i & 31;
            const int row = tile * 16 + (ln >> 2) + (e >= 2 ? 8 : 0);
            const int tok = mt * 8 + 2 * (ln & 3) + (e & 1);
            if (tok < M) y[(size_t)tok * ldy + row] = to_half<BF16>(v);
        }
    };

    wait_for_inputs();  // x comes from the kernel before (weights and scales are already on their way)
#if W4_SX
    float* s_sx = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(s_red + warps * MT * 128)
                                           + (W4_PIPE ? warps * W4_PIPE * S * 512 : 0));
    sum_x(s_sx, x, ldx, M, c0 / cpg, c1 / cpg, lane);
    st.sx = s_sx + 2 * (lane & 3);
#else
    st.sx = nullptr;
#endif

#if W4_PIPE
    for (int s = 0; s < stages; ++s) {
        if (s + D - 1 < stages) issue(s + D - 1);  // into the slot stage s - 1 used (already read)
        commit_copies();
        wait_copies<D - 1>();  // stage s (and, with stage 0, the warp's scales) has landed
        __syncwarp();  // ... for every lane of the warp: the scales were copied by all of them
        const int cs = c0 + s * S;
        const u32 src = ring + (u32)((s % D) * S * 512);
        U4 buf[S];
#pragma unroll
        for (int i = 0; i < S; ++i)
            buf[i] = (W4_EVEN || cs + i < c1) ? load_shared(src + i * 512) : U4{0, 0, 0, 0};
        compute_stage(st, buf, xr, cs, c0, c1, cpg, s_sc, gid);
    }
    finish();
#else
    for (;;) {
        wait_copies<0>();  // the scales, while stage 0's weights are still on their way
        __syncwarp();
        for (int cs = c0; cs < c1; cs += 2 * S) {  // two register buffers in turn: no copies
            if (cs + S < c1) load_stage(bufb, wq, cs + S, c1);
            compute_stage(st, bufa, xr, cs, c0, c1, cpg, s_sc, gid);
            if (cs + S >= c1) break;
            if (cs + 2 * S < c1) load_stage(bufa, wq, cs + 2 * S, c1);
            compute_stage(st, bufb, xr, cs + S, c0, c1, cpg, s_sc, gid);
        }
        const bool more = W4_T > 1 && tile + 1 < tile1;  // W4_T 1: the one-tile kernel as it was
        if (more) {
            // the next tile's first weights and scales go out now, before this tile's epilogue
            // (a warp reads only the scales of its own groups, which it copies itself)
            __syncwarp();
            const U4* wn = qw + (size_t)(tile + 1) * chunks * 32 + lane;
#if W4_PF
            if (lane == 0 && c0 + S < c1) prefetch_l2(wn + (size_t)(c0 + S) * 32, (u32)(c1 - c0 - S) * 512u);
#endif
            if (c0 < c1) load_stage(bufa, wn, c0, c1);
            copy_scales(s_sc, sc, tile + 1, groups, c0 / cpg, c1 / cpg, lane);
            commit_copies();
            wq = wn;
        }
        finish();
        if (!more) break;
        __syncthreads();  // every thread has read s_red before the next tile writes it
        ++tile;
        reset();
    }
#endif
}
