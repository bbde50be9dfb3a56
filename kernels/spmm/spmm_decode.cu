// Unstructured sparse weight x dense activations for decode (1..8 rows): y[m, n] = sum_k W[n, k] x[m, k],
// W in the bitmask-tile format of kernels/spmm/ref.py (128-column k-tiles).
//
// Compiled at run time by NVRTC (kernels/cuda_rtc.py); includes only kernels/pdl.cuh.
// Defines (kernels/spmm/cuda.py sets them):
//   SP_BF16   1: bf16 operands, 0: fp16
//   SP_M      rows of x compiled for (1, 2, 4, 8); the actual count m <= SP_M is an argument
//   SP_ROWS   weight rows a block owns (divides the format's tile_n)
//   SP_WARPS  warps per block
//   SP_KW     k-tiles a stage holds (divides SP_WARPS): warp w computes k-tile w % SP_KW of each
//             stage for rows (w / SP_KW) * RPW ... + RPW - 1, RPW = SP_ROWS * SP_KW / SP_WARPS;
//             the SP_KW partial sums of a row meet in shared memory at the end
//   SP_D      stages in the shared-memory ring (SP_D - 1 of them in flight while one is computed)
//
// Why this shape. The Triton SpMM gathers every nonzero with its own 2-byte global load and is
// bound by L1/TEX (93% on an H200, DRAM at 13.6%). Here the global side is pure streaming: the
// values of one block's rows in one k-tile are one contiguous run (row-major inside a tile), so
// a stage is a few 16-byte cp.async copies of that run, of the rows' bitmask words and
// row starts, and of x's 128 columns; nothing is held in registers while it is in flight.
// The decode then happens from shared memory: lane l owns columns 4l..4l+3 of the k-tile, takes
// its 4-bit slice of the row's mask, finds its first value by popcounts of the words before it
// and reads up to four values (consecutive lanes read consecutive values: no bank conflicts).
// The products go to fp32 registers (rows x tokens per lane), summed across the warp once at
// the end. One launch, no workspace, no atomics: each output is written by one lane.
//
// Host-made table `bounds [N_pad / SP_ROWS, n_ktiles, 2]`: the first and one-past-last index in
// `values` of block b's run in k-tile t (kernels/spmm/cuda.py: chunk_bounds).

typedef unsigned int u32;
typedef unsigned short u16;
struct __align__(16) U4 { u32 x, y, z, w; };
struct __align__(8) U2 { u32 x, y; };

#include "pdl.cuh"

#ifndef SP_KW
#define SP_KW 1
#endif
#define SP_THREADS (SP_WARPS * 32)
#define SP_RPW (SP_ROWS * SP_KW / SP_WARPS)
#define TILE_K 128
#define VAL_SLOT (SP_ROWS * TILE_K + 16)  // a run, plus the 16-byte alignment slack at both ends
// one ring slot: bitmask words [SP_ROWS][4], row starts [SP_ROWS], x [SP_M][TILE_K], values [VAL_SLOT]
#define SLOT_BITS 0
#define SLOT_RS (SLOT_BITS + SP_ROWS * 16)
#define SLOT_X (SLOT_RS + ((SP_ROWS * 4 + 15) & ~15))
#define SLOT_VALS (SLOT_X + SP_M * TILE_K * 2)
#define SLOT_BYTES (SLOT_VALS + VAL_SLOT * 2)
#define STAGE_BYTES (SP_KW * SLOT_BYTES)

__device__ __forceinline__ u32 shared_address(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global -> shared, of which the first `bytes` are read (the rest zero-filled)
__device__ __forceinline__ void copy16(u32 dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}

__device__ __forceinline__ void copy4(u32 dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int N> __device__ __forceinline__ void wait_copies() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ float to_float(u16 h) {
#if SP_BF16
    return __uint_as_float((u32)h << 16);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

__device__ __forceinline__ u16 from_float(float v) {
    u16 h;
#if SP_BF16
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
#endif
    return h;
}

struct Args {
    const u16* x;       // [m, ldx], ldx * 2 and x 16-byte aligned, columns >= k never read
    int ldx, m;
    const u16* values;  // [nnz], 16-byte aligned
    int nnz;
    const u32* bits;    // [N_pad, wpr]
    int wpr;
    const int* row_start;  // [N_pad, n_ktiles]
    const int* bounds;     // [N_pad / SP_ROWS, n_ktiles, 2]
    int n_ktiles;
    const u16* bias;  // [n] or null
    u16* out;         // [m, ldo]
    int ldo, n, k;
};

// Issue the copies of k-tile t into one slot of a stage (every thread takes its share).
__device__ __forceinline__ void issue(const Args& a, unsigned char* slot, const int* s_bounds, int n0, int t) {
    const int tid = threadIdx.x;
    const u32 base = shared_address(slot);
    const int start = s_bounds[2 * t], end = s_bounds[2 * t + 1];
    const int a0 = start & ~7;
    const int chunks = (end - a0 + 7) >> 3;  // 16-byte pieces of the run from a0
    for (int i = tid; i < chunks; i += SP_THREADS) {
        const int e = a0 + 8 * i;
        const int bytes = min(16, 2 * (a.nnz - e));  // the last piece of `values` may be short
        copy16(base + SLOT_VALS + 16 * i, a.values + (bytes > 0 ? e : 0), bytes > 0 ? bytes : 0);
    }
    if (tid < SP_ROWS) {
        copy16(base + SLOT_BITS + 16 * tid, a.bits + (size_t)(n0 + tid) * a.wpr + 4 * t, 16);
    } else if (tid < 2 * SP_ROWS) {
        const int r = tid - SP_ROWS;
        copy4(base + SLOT_RS + 4 * r, a.row_start + (size_t)(n0 + r) * a.n_ktiles + t);
    }
    // x: SP_M rows of 128 columns, 16 pieces each; columns past k (and rows past m) read as zeros
    for (int i = tid; i < SP_M * 16; i += SP_THREADS) {
        const int row = i >> 4, col = t * TILE_K + 8 * (i & 15);
        const int bytes = (row < a.m && col < a.k) ? min(16, 2 * (a.k - col)) : 0;
        copy16(base + SLOT_X + 16 * i, bytes ? a.x + (size_t)row * a.ldx + col : a.x, bytes);
    }
}

extern "C" __global__ void __launch_bounds__(SP_THREADS)
spmm_decode(const u16* x, int ldx, int m, const u16* values, int nnz, const u32* bits, int wpr,
            const int* row_start, const int* bounds, int n_ktiles, const u16* bias, u16* out, int ldo, int n, int k) {
    const Args a{x, ldx, m, values, nnz, bits, wpr, row_start, bounds, n_ktiles, bias, out, ldo, n, k};
    extern __shared__ __align__(16) unsigned char smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n0 = blockIdx.x * SP_ROWS;
    const int kt_count = a.n_ktiles;
    int* s_bounds = reinterpret_cast<int*>(smem + SP_D * STAGE_BYTES);
    const int stages = (kt_count + SP_KW - 1) / SP_KW;
    {  // this block's run boundaries, all k-tiles (one latency)
        const int* src = a.bounds + (size_t)blockIdx.x * kt_count * 2;
        for (int i = threadIdx.x; i < 2 * kt_count; i += SP_THREADS) s_bounds[i] = src[i];
    }
    __syncthreads();
    wait_for_inputs();  // x may come from the kernel before this one
#pragma unroll
    for (int s = 0; s < SP_D - 1; ++s) {
#pragma unroll
        for (int j = 0; j < SP_KW; ++j)
            if (s * SP_KW + j < kt_count) issue(a, smem + s * STAGE_BYTES + j * SLOT_BYTES, s_bounds, n0, s * SP_KW + j);
        commit_copies();
    }

    float acc[SP_RPW][SP_M];
#pragma unroll
    for (int i = 0; i < SP_RPW; ++i)
#pragma unroll
        for (int j = 0; j < SP_M; ++j) acc[i][j] = 0.f;

    const int q = lane >> 3;          // which of the row's four mask words holds this lane's columns
    const int sh = (lane & 7) * 4;    // and where in it
    const u32 below = (1u << sh) - 1u;
    const int kw = warp % SP_KW, row0 = (warp / SP_KW) * SP_RPW;
    for (int st = 0; st < stages; ++st) {
        wait_copies<SP_D - 2>();
        __syncthreads();  // stage st landed for every thread; stage (st - 1) % D is free again
        const int nx = st + SP_D - 1;
        unsigned char* next = smem + (nx % SP_D) * STAGE_BYTES;
#pragma unroll
        for (int j = 0; j < SP_KW; ++j)
            if (nx * SP_KW + j < kt_count) issue(a, next + j * SLOT_BYTES, s_bounds, n0, nx * SP_KW + j);
        commit_copies();

        const int t = st * SP_KW + kw;
        if (t >= kt_count) continue;  // the last stage may hold fewer k-tiles (no barrier below)
        const unsigned char* slot = smem + (st % SP_D) * STAGE_BYTES + kw * SLOT_BYTES;
        const int a0 = s_bounds[2 * t] & ~7;
        float xv[SP_M][4];
#pragma unroll
        for (int j = 0; j < SP_M; ++j) {
            const U2 p = *reinterpret_cast<const U2*>(slot + SLOT_X + j * TILE_K * 2 + 8 * lane);
            xv[j][0] = to_float((u16)(p.x & 0xFFFF));
            xv[j][1] = to_float((u16)(p.x >> 16));
            xv[j][2] = to_float((u16)(p.y & 0xFFFF));
            xv[j][3] = to_float((u16)(p.y >> 16));
        }
        const u16* vals = reinterpret_cast<const u16*>(slot + SLOT_VALS);
        const int* rs = reinterpret_cast<const int*>(slot + SLOT_RS);
#pragma unroll
        for (int i = 0; i < SP_RPW; ++i) {
            const int r = row0 + i;
            const U4 wd = *reinterpret_cast<const U4*>(slot + SLOT_BITS + 16 * r);
            const int c0 = __popc(wd.x), c1 = c0 + __popc(wd.y), c2 = c1 + __popc(wd.z);
            const u32 w = q == 0 ? wd.x : q == 1 ? wd.y : q == 2 ? wd.z : wd.w;
            const int before = (q == 0 ? 0 : q == 1 ? c0 : q == 2 ? c1 : c2) + __popc(w & below);
            const u32 nib = (w >> sh) & 0xFu;
            const int at = rs[r] - a0 + before;
            // branch-free: the b-th column's value sits at `at` + (set bits below b); a clear bit
            // reads some neighbour (inside the slot: at + 3 < VAL_SLOT) and multiplies it by zero,
            // so every row's loads can be issued together
#pragma unroll
            for (int b = 0; b < 4; ++b) {
                const float raw = to_float(vals[at + __popc(nib & ((1u << b) - 1u))]);
                const float v = (nib >> b) & 1u ? raw : 0.f;
#pragma unroll
                for (int j = 0; j < SP_M; ++j) acc[i][j] = fmaf(v, xv[j][b], acc[i][j]);
            }
        }
    }
    allow_dependents();

    // sum each (row, token) over the warp; lane (i * SP_M + j) % 32 holds it, and writes it (SP_KW 1)
    // or leaves it in shared memory for the sum over the warps that took the other k-tiles
#if SP_KW > 1
    float* red = reinterpret_cast<float*>(smem);  // [SP_KW][SP_ROWS][SP_M], over the ring
    __syncthreads();  // every warp is done with the ring
#endif
#pragma unroll
    for (int i = 0; i < SP_RPW; ++i) {
        const int r = row0 + i, n = n0 + r;
#pragma unroll
        for (int j = 0; j < SP_M; ++j) {
            float v = acc[i][j];
#pragma unroll
            for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
            if (lane == ((i * SP_M + j) & 31)) {
#if SP_KW > 1
                red[(kw * SP_ROWS + r) * SP_M + j] = v;
#else
                if (n < a.n && j < a.m) {
                    if (a.bias) v += to_float(a.bias[n]);
                    a.out[(size_t)j * a.ldo + n] = from_float(v);
                }
#endif
            }
        }
    }
#if SP_KW > 1
    __syncthreads();
    for (int e = threadIdx.x; e < SP_ROWS * SP_M; e += SP_THREADS) {
        const int r = e / SP_M, j = e % SP_M, n = n0 + r;
        if (n >= a.n || j >= a.m) continue;
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < SP_KW; ++w) v += red[w * SP_ROWS * SP_M + e];  // in k order: deterministic
        if (a.bias) v += to_float(a.bias[n]);
        a.out[(size_t)j * a.ldo + n] = from_float(v);
    }
#endif
}
