// Thresholded sparse GEMV for decode (1..8 rows): y[m, n] = sum_k W_t[k, n] x[m, k] [|x[m, k]| > t_k].
//
// Compiled at run time by NVRTC (kernels/cuda_rtc.py); includes only kernels/pdl.cuh.
// Defines (kernels/sparse_gemv/cuda.py sets them):
//   SG_BF16   1: bf16 operands, 0: fp16
//   SG_M      rows compiled for (1, 2, 4, 8); the actual row count m <= SG_M is an argument
//   SG_WARPS  warps per block
//   SG_LN     lanes across N (8, 16, 32): a block owns TILE_N = 8 * SG_LN columns, each lane
//             eight of them (one 16-byte load per live row); the other 32 / SG_LN lanes of a
//             warp take further live rows at the same time
//   SG_U      live rows each lane has in flight (independent 16-byte loads per loop step)
//   SG_SPLIT  K split over the blocks of one thread-block cluster (1: no split, any GPU;
//             2, 4, 8: sm_90, the partial sums meet through distributed shared memory)
//   SG_LOCAL  1: each warp gathers the live rows of its own slice (one scan pass, no block
//             barrier between scan and gather, rows not balanced across the warps); 0: one
//             block list shared out to a row
//
// A block owns one column tile and one K range (grid: column tiles x SG_SPLIT). Its warps
// scan the range's x in contiguous slices, threshold it, and pack the live inputs into one
// list in shared memory, in ascending order (a count pass, a barrier for the warps' offsets,
// a write pass that reads x again from L1): no global workspace, no host synchronisation, so
// a launch can be captured in a CUDA graph. Then every warp takes every WARPS-th group of
// live rows of that list (balanced to a row whatever the warps' slices held) and streams
// their 16-byte weight segments, SG_U loads in flight per lane, accumulating in fp32. The
// lanes that shared a column fold by shuffles, the warps through shared memory, the blocks
// of a cluster through distributed shared memory (each block sums a share of the tile's
// outputs over the cluster's ranks in rank order): deterministic, one launch.
//
// List entries: one row: a 32-bit word, the index in the low half and x's 16 bits in the
// high half (K <= 65536); more rows: the index, and the rows' kept x values (zero where a
// row drops the input that another row keeps) as 16-bit pairs in SG_XW words.

typedef unsigned int u32;
typedef unsigned short u16;
struct __align__(16) U4 { u32 x, y, z, w; };
struct __align__(8) U2 { u32 x, y; };

#ifndef SG_LOCAL
#define SG_LOCAL 0
#endif
#define SG_THREADS (SG_WARPS * 32)
#define SG_TILE_N (8 * SG_LN)
#define SG_RW (32 / SG_LN)  // live rows one warp load instruction covers
#define SG_SCAN_U 4          // scan steps (32 inputs each) whose x loads are issued together
#if SG_M == 1
#define SG_XW 0
#elif SG_M == 2
#define SG_XW 1
#elif SG_M == 4
#define SG_XW 2
#else
#define SG_XW 4
#endif

// A weight segment (read once: kept out of L1), or zeros where `on` is false. One predicated
// instruction with no branch around it, so that all of a lane's loads can be issued together.
__device__ __forceinline__ U4 load_stream(const u16* p, bool on) {
    U4 v;
    asm("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %5, 0;\n\t"
        "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
        "@q ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n\t}"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "r"((int)on));
    return v;
}

// &w[k * ldw] as one wide multiply-add (IMAD.WIDE.U32)
__device__ __forceinline__ const u16* row(const u16* w, u32 k, int ldw) {
    return reinterpret_cast<const u16*>(reinterpret_cast<const char*>(w) + (unsigned long long)k * (u32)(2 * ldw));
}

__device__ __forceinline__ u16 load_x(const u16* p) {  // L1-cached: the write pass reads it again
    u16 v;
    asm("ld.global.nc.u16 %0, [%1];" : "=h"(v) : "l"(p));
    return v;
}

__device__ __forceinline__ float load_f32(const float* p) {
    float v;
    asm("ld.global.nc.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

__device__ __forceinline__ float to_f32(u16 h) {
#if SG_BF16
    return __uint_as_float(((u32)h) << 16);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

__device__ __forceinline__ void pair_f32(u32 w, float& lo, float& hi) {  // two packed 16-bit values
#if SG_BF16
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xFFFF0000u);
#else
    asm("{ .reg .b16 l, h; mov.b32 {l, h}, %2; cvt.f32.f16 %0, l; cvt.f32.f16 %1, h; }"
        : "=f"(lo), "=f"(hi) : "r"(w));
#endif
}

__device__ __forceinline__ u16 from_f32(float f) {  // round to nearest even, as torch's .to()
    u16 h;
#if SG_BF16
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
#endif
    return h;
}

#if SG_SPLIT > 1
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

__device__ __forceinline__ u32 cluster_rank() {
    u32 r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}

__device__ __forceinline__ float load_cluster(const float* local, u32 rank) {  // that rank's copy of *local
    u32 a, remote;
    float v;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(local));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(a), "r"(rank));
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
    return v;
}
#endif

// Programmatic dependent launch (pdl.cuh): the launch, the blocks' start and their set-up
// overlap the previous kernel's drain; every global read and write of this kernel comes
// after wait_for_inputs() (x, and a threshold vector or bias converted just before, may be
// the previous kernel's output).
#include "pdl.cuh"

// Input k of the rows: whether some row keeps it, and (more rows) the kept 16-bit values.
__device__ __forceinline__ bool scan_input(const u16* __restrict__ x, int ldx, int m, int k, bool ok,
                                           const float* __restrict__ t_vec, float t_scalar, u16 (&xs)[SG_M]) {
    bool live = false;
    if (ok) {
        const float th = t_vec ? load_f32(t_vec + k) : t_scalar;
#pragma unroll
        for (int r = 0; r < SG_M; ++r) {
            u16 v = 0;
            if (r < m) v = load_x(x + (long long)r * ldx + k);
            const bool keep = fabsf(to_f32(v)) > th;  // NaN is dropped, as in ref (NaN > t is false)
            xs[r] = keep ? v : (u16)0;
            live |= keep;
        }
    } else {
#pragma unroll
        for (int r = 0; r < SG_M; ++r) xs[r] = 0;
    }
    return live;
}

extern "C" __global__ void
#if SG_SPLIT > 1
__cluster_dims__(1, SG_SPLIT, 1)
#endif
// min blocks 1: without it ptxas aims at 8 blocks per SM (32 registers) and issues the
// weight loads one at a time, each consumed before the next
__launch_bounds__(SG_THREADS, 1)
sparse_gemv(const u16* __restrict__ x, int ldx, int m, const u16* __restrict__ w, int ldw,
            const float* __restrict__ t_vec, float t_scalar, const u16* __restrict__ bias,
            u16* __restrict__ y, int N, int K, int kb) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ int s_count[SG_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int k_lo = blockIdx.y * kb;
    const int k_hi = min(K, k_lo + kb);
    // this warp's slice of the block's inputs (whole steps of 32)
    const int kw = ((kb + SG_WARPS - 1) / SG_WARPS + 31) & ~31;
    const int s0 = k_lo + warp * kw;
    const int s1 = min(k_hi, s0 + kw);
    const u32 below = (1u << lane) - 1u;
    allow_dependents();
    wait_for_inputs();

#if SG_LOCAL
    // one pass: the warp packs its slice's live inputs into its own part of the list (kw
    // entries) and gathers them itself: no count pass, no block barrier before the gather
    const int list_base = warp * kw, cap = SG_WARPS * kw;
    int pos = 0;
#else
    // count pass: how many inputs of the slice live in some row
    int count = 0;
    for (int base = s0; base < s1; base += 32 * SG_SCAN_U) {
        bool live[SG_SCAN_U];
#pragma unroll
        for (int i = 0; i < SG_SCAN_U; ++i) {
            u16 xs[SG_M];
            const int k = base + 32 * i + lane;
            live[i] = scan_input(x, ldx, m, k, k < s1, t_vec, t_scalar, xs);
        }
#pragma unroll
        for (int i = 0; i < SG_SCAN_U; ++i) count += __popc(__ballot_sync(0xFFFFFFFFu, live[i]));
    }
    if (lane == 0) s_count[warp] = count;
    __syncthreads();
    int pos = 0, total = 0;
#pragma unroll
    for (int v = 0; v < SG_WARPS; ++v) {
        const int c = s_count[v];
        pos += v < warp ? c : 0;
        total += c;
    }
    const int list_base = 0, cap = kb;
    // write pass: the same inputs again (x now in L1), each live one at its place in the block list
#endif
#if SG_M == 1
    u32* list = reinterpret_cast<u32*>(smem) + list_base;
#else
    u32* list_idx = reinterpret_cast<u32*>(smem) + list_base;
    // [cap][SG_XW] words, 16-byte aligned rows
    u32* list_x = reinterpret_cast<u32*>(smem) + ((cap + 3) & ~3) + list_base * SG_XW;
#endif
    for (int base = s0; base < s1; base += 32 * SG_SCAN_U) {
        bool live[SG_SCAN_U];
        u16 xs[SG_SCAN_U][SG_M];
#pragma unroll
        for (int i = 0; i < SG_SCAN_U; ++i) {
            const int k = base + 32 * i + lane;
            live[i] = scan_input(x, ldx, m, k, k < s1, t_vec, t_scalar, xs[i]);
        }
#pragma unroll
        for (int i = 0; i < SG_SCAN_U; ++i) {
            const u32 mask = __ballot_sync(0xFFFFFFFFu, live[i]);
            if (live[i]) {
                const int at = pos + __popc(mask & below);
                const u32 k = (u32)(base + 32 * i + lane);
#if SG_M == 1
                list[at] = k | ((u32)xs[i][0] << 16);
#else
                list_idx[at] = k;
#pragma unroll
                for (int j = 0; j < SG_XW; ++j) {
                    const u32 lo = 2 * j < SG_M ? xs[i][2 * j] : 0u;
                    const u32 hi = 2 * j + 1 < SG_M ? xs[i][2 * j + 1] : 0u;
                    list_x[at * SG_XW + j] = lo | (hi << 16);
                }
#endif
            }
            pos += __popc(mask);
        }
    }
#if SG_LOCAL
    const int total = pos;  // this warp's live inputs
    __syncwarp();
    const int first = 0, step = SG_RW;
#else
    __syncthreads();
    const int first = warp * SG_RW, step = SG_WARPS * SG_RW;
#endif

    // gather: warp `warp` takes list rows warp * RW + r + WARPS * RW * j (SG_LOCAL: rows
    // r + RW * j of its own list); lane (r, c) reads eight columns of each
    const int r = lane / SG_LN, c = lane % SG_LN;
    const int n = blockIdx.x * SG_TILE_N + c * 8;
    const bool col_ok = n < N;  // N % 8 == 0: a lane's eight columns are all in or all out
    const u16* wcol = w + n;  // row offsets k * ldw fit 32 bits (the host checks K * N < 2^31)
    float acc[SG_M][8];
#pragma unroll
    for (int q = 0; q < SG_M; ++q)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[q][j] = 0.f;
    for (int p0 = first + r; p0 - r < total; p0 += step * SG_U) {
        U4 wv[SG_U];
        float xv[SG_U][SG_M];
        // every list read first (a row past the end reads entry 0, its load is predicated off)
        // then every weight load, then the arithmetic: SG_U loads in flight per lane
#if SG_M == 1
        u32 e[SG_U];
#pragma unroll
        for (int u = 0; u < SG_U; ++u) e[u] = list[p0 + u * step < total ? p0 + u * step : 0];
#pragma unroll
        for (int u = 0; u < SG_U; ++u)
            wv[u] = load_stream(row(wcol, e[u] & 0xFFFFu, ldw), col_ok && p0 + u * step < total);
#pragma unroll
        for (int u = 0; u < SG_U; ++u) xv[u][0] = p0 + u * step < total ? to_f32((u16)(e[u] >> 16)) : 0.f;
#else
        u32 e[SG_U];
        u32 xw[SG_U][SG_XW];
#pragma unroll
        for (int u = 0; u < SG_U; ++u) {
            const int p = p0 + u * step < total ? p0 + u * step : 0;
            e[u] = list_idx[p];
#if SG_XW == 4
            const U4 t = *reinterpret_cast<const U4*>(list_x + p * 4);
            xw[u][0] = t.x; xw[u][1] = t.y; xw[u][2] = t.z; xw[u][3] = t.w;
#elif SG_XW == 2
            const U2 t = *reinterpret_cast<const U2*>(list_x + p * 2);
            xw[u][0] = t.x; xw[u][1] = t.y;
#else
            xw[u][0] = list_x[p];
#endif
        }
#pragma unroll
        for (int u = 0; u < SG_U; ++u) wv[u] = load_stream(row(wcol, e[u], ldw), col_ok && p0 + u * step < total);
#pragma unroll
        for (int u = 0; u < SG_U; ++u) {
            const bool in = p0 + u * step < total;
#pragma unroll
            for (int j = 0; j < SG_XW; ++j) {
                float lo, hi;
                pair_f32(in ? xw[u][j] : 0u, lo, hi);
                if (2 * j < SG_M) xv[u][2 * j] = lo;
                if (2 * j + 1 < SG_M) xv[u][2 * j + 1] = hi;
            }
        }
#endif
#pragma unroll
        for (int u = 0; u < SG_U; ++u) {
            float wf[8];
            pair_f32(wv[u].x, wf[0], wf[1]);
            pair_f32(wv[u].y, wf[2], wf[3]);
            pair_f32(wv[u].z, wf[4], wf[5]);
            pair_f32(wv[u].w, wf[6], wf[7]);
#pragma unroll
            for (int q = 0; q < SG_M; ++q)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[q][j] = fmaf(xv[u][q], wf[j], acc[q][j]);
        }
    }

    // fold the lanes of one column (same c), then the warps
#pragma unroll
    for (int off = SG_LN; off < 32; off <<= 1)
#pragma unroll
        for (int q = 0; q < SG_M; ++q)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[q][j] += __shfl_xor_sync(0xFFFFFFFFu, acc[q][j], off);
    __syncthreads();  // every warp is done with the list: its memory holds the partial sums now
    float* red = reinterpret_cast<float*>(smem);  // [WARPS][SG_M][TILE_N]
    if (r == 0) {
#pragma unroll
        for (int q = 0; q < SG_M; ++q) {
            float4* d = reinterpret_cast<float4*>(red + (warp * SG_M + q) * SG_TILE_N + c * 8);
            d[0] = make_float4(acc[q][0], acc[q][1], acc[q][2], acc[q][3]);
            d[1] = make_float4(acc[q][4], acc[q][5], acc[q][6], acc[q][7]);
        }
    }
    __syncthreads();
    const int outs = SG_M * SG_TILE_N;
    const int n0 = blockIdx.x * SG_TILE_N;
    for (int o = threadIdx.x; o < outs; o += SG_THREADS) {
        float s = 0.f;
#pragma unroll
        for (int v = 0; v < SG_WARPS; ++v) s += red[v * outs + o];
#if SG_SPLIT == 1
        const int q = o / SG_TILE_N, col = n0 + o % SG_TILE_N;
        if (q < m && col < N) {
            if (bias) s += to_f32(bias[col]);
            y[(long long)q * N + col] = from_f32(s);
        }
#else
        red[o] = s;  // the block's partial (only this thread reads slot o)
#endif
    }
#if SG_SPLIT > 1
    cluster_sync();  // every block's partial is in its shared memory
    const u32 rank = cluster_rank();
    for (int o = rank * SG_THREADS + threadIdx.x; o < outs; o += SG_SPLIT * SG_THREADS) {
        float s = 0.f;
#pragma unroll
        for (int v = 0; v < SG_SPLIT; ++v) s += load_cluster(red + o, (u32)v);
        const int q = o / SG_TILE_N, col = n0 + o % SG_TILE_N;
        if (q < m && col < N) {
            if (bias) s += to_f32(bias[col]);
            y[(long long)q * N + col] = from_f32(s);
        }
    }
    cluster_sync();  // no block leaves while another may still read its shared memory
#endif
}
