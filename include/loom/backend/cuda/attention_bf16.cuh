#pragma once
#include "loom/backend/cuda/common.cuh"
// Causal flash attention (FlashAttention-2 structure) on bf16 tensor cores for head size 64:
// mma.sync.m16n8k16 (bf16 inputs, fp32 accumulation) through inline PTX, operands loaded from
// shared memory with ldmatrix, global -> shared copies with cp.async into double buffers.
// Softmax, the D = rowsum(dO * O) term and dS = P * (dP - D) run in fp32. No atomics: every
// output element is written by exactly one thread of one block (deterministic).
//
// Shapes: q, k, v, dout bf16 (B, NH, T, 64) contiguous; out, dq, dk, dv float (B, NH, T, 64);
// lse float (B, NH, T). Element (b, h, t, d) at ((b * NH + h) * T + t) * 64 + d.
// s_ij = q_i . k_j / sqrt(64) for j <= i; lse_i = log sum_{j <= i} exp(s_ij); p_ij = exp(s_ij - lse_i).
// Internally exponentials are base 2 (exp(x) = exp2(x * log2 e)).
//
// Tiles are 64 rows x 64 keys, a block has 4 warps and warp w owns the 16-row strip
// [16w, 16w + 16) of its block's fixed tile for the whole loop, so S, P, dP, dS and the
// accumulators (O, dQ, dK, dV) stay in registers; block barriers only guard the shared tiles.
//
// Register fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = 4 g + t (g = lane / 4,
// t = lane % 4): A (16 x 16, 4 regs of 2 bf16, low half = lower column): a0 = (g, 2t..2t+1),
// a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8, 2t + 8..). B (16 x 8, 2 regs):
// b0 = (k 2t..2t+1, n g), b1 = (k 2t + 8.., n g). C (16 x 8 fp32): c0, c1 = (g, 2t), (g, 2t + 1);
// c2, c3 = (g + 8, 2t), (g + 8, 2t + 1). So the C fragments of two adjacent 8-column tiles are,
// packed to bf16, the A fragment of the 16-wide k-step they cover (P and dS never leave registers).
// ldmatrix.x4: lanes 8m .. 8m + 7 give the row addresses of 8 x 8 matrix m, which lands in reg m:
// lane gets (row g, cols 2t..2t+1), or with .trans (rows 2t..2t+1, col g).
// Shared tiles are (64, 72) bf16: a row is 144 B, so the 8 rows of an ldmatrix hit all 32 banks.

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

namespace loom::cuda {
namespace attn_bf16 {

using bf16 = __nv_bfloat16;

constexpr int kHS = 64;        // the one head size handled
constexpr int kTile = 64;      // rows (and keys) per tile
constexpr int kThreads = 128;  // 4 warps per block (the strip mapping above assumes exactly 4)
constexpr int kLdh = 72;       // bf16 smem row stride (elements): 144 B
constexpr int kTileE = kTile * kLdh;                             // elements of one (64, 72) tile
constexpr size_t kTileH = size_t(kTileE) * sizeof(bf16);         // 9216 B
constexpr size_t kRowF = size_t(kTile) * sizeof(float);          // 256 B, one per-row vector
constexpr size_t kFwdSmem = 5 * kTileH;                          // Q, K x2, V x2: 46080 B
constexpr size_t kDkDvSmem = 6 * kTileH + 4 * kRowF;             // K, V, Q x2, dO x2; lse x2, D x2: 56320 B
constexpr size_t kDqSmem = 6 * kTileH;                           // Q, dO, K x2, V x2: 55296 B
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// mma.sync bf16 exists from sm_80 on. Other device passes (e.g. sm_75 in a multi-arch build) get
// empty kernel bodies; the host wrappers never launch them there (they return false).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define LOOM_ATTN_BF16_BODY 1

// ---- PTX helpers (begin) ----
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// r[m] <- the fragment of the 8 x 8 matrix whose row addresses lanes 8m .. 8m + 7 give (16-B aligned).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
// d (16 x 8) += a (16 x 16) b (16 x 8), fp32 accumulation.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 16-byte global -> shared copy; complete (for this thread) after cp_async_wait_all.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
// ---- PTX helpers (end) ----

// Two floats as a bf16 pair (round to nearest even); lo in the low 16 bits.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Per-lane element offsets into a (., kLdh) tile for ldsm_x4 at the tile's (r0, c0) corner:
//  a_off: matrices (r0, c0), (r0 + 8, c0), (r0, c0 + 8), (r0 + 8, c0 + 8). Non-transposed this is
//   the A fragment of the 16 x 16 block; with .trans on a (k, n) row-major block it is the B
//   fragments of n-tiles c0 (regs 0, 1) and c0 + 8 (regs 2, 3) for the k-step r0 .. r0 + 15.
//  bn_off: matrices (r0, c0), (r0, c0 + 8), (r0 + 8, c0), (r0 + 8, c0 + 8). On an (n, k) row-major
//   block (B^T stored, e.g. K for Q K^T) the B fragments of n-tiles r0 (regs 0, 1) and r0 + 8
//   (regs 2, 3) for the k-step c0 .. c0 + 15.
__device__ __forceinline__ int a_off(int lane) { return (lane & 15) * kLdh + 8 * (lane >> 4); }
__device__ __forceinline__ int bn_off(int lane) { return ((lane & 7) + 8 * (lane >> 4)) * kLdh + 8 * ((lane >> 3) & 1); }

// acc (16 x 64, eight 16 x 8 C tiles) = A (16 rows at a, 64 wide) @ Bt^T, Bt: 64 rows at bt (n-major).
__device__ __forceinline__ void strip_abt(float (&acc)[8][4], const bf16* a, const bf16* bt, int lane) {
#pragma unroll
  for (int n = 0; n < 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    uint32_t af[4];
    ldsm_x4(af, a + 16 * kk + a_off(lane));
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      uint32_t b[4];
      ldsm_x4(b, bt + 16 * np * kLdh + 16 * kk + bn_off(lane));
      mma_bf16(acc[2 * np], af, b[0], b[1]);
      mma_bf16(acc[2 * np + 1], af, b[2], b[3]);
    }
  }
}

// acc (16 x 64) += P (16 x 64, as C tiles p, converted to bf16) @ B (64 rows at b, row-major, k-major).
__device__ __forceinline__ void strip_pb(float (&acc)[8][4], const float (&p)[8][4], const bf16* b, int lane) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint32_t pa[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                            pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                            pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int dp = 0; dp < 4; ++dp) {
      uint32_t bf[4];
      ldsm_x4_trans(bf, b + 16 * kk * kLdh + 16 * dp + a_off(lane));
      mma_bf16(acc[2 * dp], pa, bf[0], bf[1]);
      mma_bf16(acc[2 * dp + 1], pa, bf[2], bf[3]);
    }
  }
}

// dst (64, kLdh) smem <- rows [row0, row0 + 64) of src (T, 64) bf16 row-major; rows >= T become 0.
// src is the (b, h) slice: 16-byte aligned whenever the tensor is (the slice offset is a multiple
// of 128 B). vec: through cp.async (visible after cp_async_wait_all + a barrier), else plain copies.
__device__ inline void load_tile(bf16* dst, const bf16* src, int64_t row0, int64_t T, bool vec) {
  constexpr int chunks = kHS / 8;  // 8 bf16 = 16 B per chunk
#pragma unroll
  for (int e = threadIdx.x; e < kTile * chunks; e += kThreads) {
    const int r = e / chunks, c = (e % chunks) * 8;
    const int64_t t = row0 + r;
    bf16* to = dst + r * kLdh + c;  // 144 r + 16 (e % 8) bytes: 16-B aligned
    if (t >= T) {
      *reinterpret_cast<uint4*>(to) = make_uint4(0, 0, 0, 0);
    } else if (vec) {
      cp_async16(to, src + t * kHS + c);
    } else {
      for (int x = 0; x < 8; ++x) to[x] = src[t * kHS + c + x];
    }
  }
}

// dst (64) smem <- mul * src[row0 .. row0 + 63] (one float per row); rows >= T become 0.
__device__ inline void load_rows(float* dst, const float* src, int64_t row0, int64_t T, float mul) {
  for (int r = threadIdx.x; r < kTile; r += kThreads) dst[r] = row0 + r < T ? mul * src[row0 + r] : 0.f;
}

__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
#endif  // bf16 mma available

// Forward. One block = one (b, h) (blockIdx.x) and one tile of 64 query rows i0 .. i0 + 63
// (heaviest tiles first); warp w owns rows i0 + 16w .. + 15. Loop over key tiles j0 = 0, 64, ...,
// i0 (the last is the diagonal), K/V tile kt + 1 copied in while tile kt is used:
//   S (16, 64) = Q K^T                    mma, registers
//   online softmax of the strip's rows    fp32 registers (a row lives in the 4 lanes of a quad)
//   O (16, 64) = O * exp2(m_old - m_new) + P V    mma, registers
// Then out_i = O_i / l_i and lse_i = (m_i + log2 l_i) ln 2 (m in base-2 units).
__global__ void __launch_bounds__(kThreads)
    forward_kernel(float* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int64_t T, float scale) {
#ifdef LOOM_ATTN_BF16_BODY
  extern __shared__ __align__(128) unsigned char attn_bf16_smem[];
  bf16* Qs = reinterpret_cast<bf16*>(attn_bf16_smem);  // (64, kLdh)
  bf16* Ks = Qs + kTileE;                              // 2 x (64, kLdh)
  bf16* Vs = Ks + 2 * kTileE;                          // 2 x (64, kLdh)

  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int64_t bh = blockIdx.x;
  const int qt = int(gridDim.y - 1 - blockIdx.y);
  const int64_t i0 = int64_t(qt) * kTile;
  const int64_t base = bh * T * kHS;  // the (b, h) slice of q, k, v, out
  const bool vq = aligned16(q), vk = aligned16(k), vv = aligned16(v);
  const float sl2 = scale * kLog2e;

  load_tile(Qs, q + base, i0, T, vq);
  load_tile(Ks, k + base, 0, T, vk);
  load_tile(Vs, v + base, 0, T, vv);
  cp_async_commit();

  uint32_t qa[4][4];  // the warp's Q strip as A fragments (k-steps of 16 dims)
  float o[8][4];      // O strip: C tiles of dims 8n .. 8n + 7
#pragma unroll
  for (int n = 0; n < 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m_r[2] = {-INFINITY, -INFINITY};  // running max (base 2) of rows g, g + 8 of the strip
  float l_r[2] = {0.f, 0.f};              // this lane's part of the running sum of those rows

  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt & 1;
    cp_async_wait_all();
    __syncthreads();  // tile kt (and Q) landed for all threads; everyone is done with tile kt - 1
    if (kt < qt) {    // prefetch tile kt + 1 into the buffer tile kt - 1 used
      const int64_t jn = int64_t(kt + 1) * kTile;
      load_tile(Ks + (buf ^ 1) * kTileE, k + base, jn, T, vk);
      load_tile(Vs + (buf ^ 1) * kTileE, v + base, jn, T, vv);
      cp_async_commit();
    }
    if (kt == 0) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) ldsm_x4(qa[kk], Qs + 16 * w * kLdh + 16 * kk + a_off(lane));
    }
    const bf16* Kb = Ks + buf * kTileE;
    const bf16* Vb = Vs + buf * kTileE;

    float s[8][4];  // S strip, then P: element (row 16w + g + 8 (e / 2), key 8n + 2 t4 + e % 2)
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        ldsm_x4(b, Kb + 16 * np * kLdh + 16 * kk + bn_off(lane));
        mma_bf16(s[2 * np], qa[kk], b[0], b[1]);
        mma_bf16(s[2 * np + 1], qa[kk], b[2], b[3]);
      }
    }
    // Scale to base-2 units and mask. Only the diagonal tile (j0 = i0) has keys j > i; earlier
    // tiles hold keys < i0 < T only. Rows i >= T (never written) see finite zero-filled keys.
    const bool diag = kt == qt;
    float mx[2] = {m_r[0], m_r[1]};
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * sl2;
        if (diag && 8 * n + 2 * t4 + (e & 1) > 16 * w + g + 8 * (e >> 1)) x = -INFINITY;
        s[n][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    }
    // Every row sees key j0 <= i unmasked, so the new max is finite: no -inf - -inf.
    float corr[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      corr[h] = exp2f(m_r[h] - mx[h]);  // 0 on the first tile (m_old = -inf)
      m_r[h] = mx[h];
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(s[n][e] - mx[e >> 1]);  // masked: exp2(-inf) = 0
        s[n][e] = p;
        rs[e >> 1] += p;
        o[n][e] *= corr[e >> 1];
      }
    }
    l_r[0] = l_r[0] * corr[0] + rs[0];
    l_r[1] = l_r[1] * corr[1] + rs[1];
    strip_pb(o, s, Vb, lane);  // O += P V
  }
  // The full row sums: add the 4 lanes of the quad.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l_r[h] += __shfl_xor_sync(0xffffffffu, l_r[h], 1);
    l_r[h] += __shfl_xor_sync(0xffffffffu, l_r[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t i = i0 + 16 * w + g + 8 * h;
    if (i < T) {
      const float inv = 1.f / l_r[h];
      float* dst = out + base + i * kHS + 2 * t4;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        dst[8 * n] = o[n][2 * h] * inv;
        dst[8 * n + 1] = o[n][2 * h + 1] * inv;
      }
      if (t4 == 0) lse[bh * T + i] = (m_r[h] + log2f(l_r[h])) * kLn2;
    }
  }
#endif
}

// Backward, step 1: D_i = sum_d dout_id * out_id for all rows = B * NH * T (one warp per row).
__global__ void rowdot_kernel(float* D, const bf16* dout, const float* out, int64_t rows) {
#ifdef LOOM_ATTN_BF16_BODY
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
    const bf16* g = dout + row * kHS;
    const float* o = out + row * kHS;
    float s = __bfloat162float(g[lane]) * o[lane] + __bfloat162float(g[lane + 32]) * o[lane + 32];
    s = warp_sum(s);  // row is the same for the whole warp, so all 32 lanes are here
    if (lane == 0) D[row] = s;
  }
#endif
}

// Backward, step 2: dK and dV. One block = one (b, h) (blockIdx.x) and one tile of 64 keys
// j0 .. j0 + 63 (blockIdx.y); warp w owns keys j0 + 16w .. + 15. K, V stay in smem; loop over
// query tiles i0 = j0, ..., the last (earlier queries see none of these keys), the Q/dO/lse/D
// tile qt + 1 copied in while tile qt is used. Per query tile, in registers:
//   S^T (16k, 64q) = K Q^T, P^T = exp2(S^T scale log2e - lse_q log2e)    (masked: 0)
//   dV (16k, 64) += P^T dO
//   dP^T (16k, 64q) = V dO^T, dS^T = P^T * (dP^T - D_q)
//   dK (16k, 64) += dS^T Q
// At the end dk = scale * dK, dv = dV.
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(float* dk, float* dv, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                const float* lse, const float* D, int64_t T, float scale) {
#ifdef LOOM_ATTN_BF16_BODY
  extern __shared__ __align__(128) unsigned char attn_bf16_smem[];
  bf16* Ks = reinterpret_cast<bf16*>(attn_bf16_smem);  // (64, kLdh)
  bf16* Vs = Ks + kTileE;                              // (64, kLdh)
  bf16* Qs = Vs + kTileE;                              // 2 x (64, kLdh)
  bf16* dOs = Qs + 2 * kTileE;                         // 2 x (64, kLdh)
  float* lse_s = reinterpret_cast<float*>(dOs + 2 * kTileE);  // 2 x (64): lse * log2e of the query tile
  float* D_s = lse_s + 2 * kTile;                             // 2 x (64): D of the query tile

  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int64_t bh = blockIdx.x;
  const int kt = int(blockIdx.y);  // small kt has the most query tiles: scheduled first
  const int nt = int(gridDim.y);
  const int64_t j0 = int64_t(kt) * kTile;
  const int64_t base = bh * T * kHS;
  const bool vq = aligned16(q), vk = aligned16(k), vv = aligned16(v), vg = aligned16(dout);
  const float sl2 = scale * kLog2e;

  load_tile(Ks, k + base, j0, T, vk);
  load_tile(Vs, v + base, j0, T, vv);
  load_tile(Qs, q + base, j0, T, vq);  // the first query tile is qt = kt
  load_tile(dOs, dout + base, j0, T, vg);
  load_rows(lse_s, lse + bh * T, j0, T, kLog2e);
  load_rows(D_s, D + bh * T, j0, T, 1.f);
  cp_async_commit();

  float dK[8][4], dV[8][4];  // (keys 16w + g + 8 (e / 2), dims 8n + 2 t4 + e % 2)
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    dK[n][0] = dK[n][1] = dK[n][2] = dK[n][3] = 0.f;
    dV[n][0] = dV[n][1] = dV[n][2] = dV[n][3] = 0.f;
  }

  for (int qt = kt; qt < nt; ++qt) {
    const int buf = (qt - kt) & 1;
    const int64_t i0 = int64_t(qt) * kTile;
    cp_async_wait_all();
    __syncthreads();  // tile qt landed for all threads; everyone is done with tile qt - 1
    if (qt + 1 < nt) {
      const int64_t in = i0 + kTile;
      load_tile(Qs + (buf ^ 1) * kTileE, q + base, in, T, vq);
      load_tile(dOs + (buf ^ 1) * kTileE, dout + base, in, T, vg);
      load_rows(lse_s + (buf ^ 1) * kTile, lse + bh * T, in, T, kLog2e);
      load_rows(D_s + (buf ^ 1) * kTile, D + bh * T, in, T, 1.f);
      cp_async_commit();
    }
    const bf16* Qb = Qs + buf * kTileE;
    const bf16* dOb = dOs + buf * kTileE;
    const float* lb = lse_s + buf * kTile;
    const float* Db = D_s + buf * kTile;

    // P^T: element (key 16w + g + 8 (e / 2), query 8n + 2 t4 + e % 2). Masked (0) where the
    // query is before the key (only in the diagonal tile qt = kt) or past T (only in the last
    // tile); other tiles need neither.
    float pt[8][4];
    strip_abt(pt, Ks + 16 * w * kLdh, Qb, lane);
    const bool mask = qt == kt || i0 + kTile > T;
    const int dji = int(j0 - i0);                            // key tile start - query tile start (<= 0)
    const int qlim = T - i0 < kTile ? int(T - i0) : kTile;  // queries cq >= qlim are past T
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int c = 8 * n + 2 * t4;
      const float l0 = lb[c], l1 = lb[c + 1];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float p = exp2f(pt[n][e] * sl2 - ((e & 1) ? l1 : l0));
        const int cq = c + (e & 1), rk = 16 * w + g + 8 * (e >> 1);
        if (mask && (dji + rk > cq || cq >= qlim)) p = 0.f;
        pt[n][e] = p;
      }
    }
    strip_pb(dV, pt, dOb, lane);  // dV += P^T dO

    float dst[8][4];  // dP^T, then dS^T
    strip_abt(dst, Vs + 16 * w * kLdh, dOb, lane);
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int c = 8 * n + 2 * t4;
      const float d0 = Db[c], d1 = Db[c + 1];
#pragma unroll
      for (int e = 0; e < 4; ++e) dst[n][e] = pt[n][e] * (dst[n][e] - ((e & 1) ? d1 : d0));
    }
    strip_pb(dK, dst, Qb, lane);  // dK += dS^T Q
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t j = j0 + 16 * w + g + 8 * h;
    if (j < T) {
      float* dkr = dk + base + j * kHS + 2 * t4;
      float* dvr = dv + base + j * kHS + 2 * t4;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        dkr[8 * n] = scale * dK[n][2 * h];
        dkr[8 * n + 1] = scale * dK[n][2 * h + 1];
        dvr[8 * n] = dV[n][2 * h];
        dvr[8 * n + 1] = dV[n][2 * h + 1];
      }
    }
  }
#endif
}

// Backward, step 3: dQ. One block = one (b, h) (blockIdx.x) and one tile of 64 query rows
// i0 .. i0 + 63 (heaviest first); warp w owns rows i0 + 16w .. + 15. Q, dO stay in smem; loop
// over key tiles j0 = 0, ..., i0, K/V tile kt + 1 copied in while tile kt is used:
//   S (16q, 64k) = Q K^T, P = exp2(S scale log2e - lse_i log2e)    (masked: 0)
//   dP (16q, 64k) = dO V^T, dS = P * (dP - D_i)
//   dQ (16q, 64) += dS K
// At the end dq = scale * dQ.
__global__ void __launch_bounds__(kThreads)
    dq_kernel(float* dq, const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,
              const float* D, int64_t T, float scale) {
#ifdef LOOM_ATTN_BF16_BODY
  extern __shared__ __align__(128) unsigned char attn_bf16_smem[];
  bf16* Qs = reinterpret_cast<bf16*>(attn_bf16_smem);  // (64, kLdh)
  bf16* dOs = Qs + kTileE;                             // (64, kLdh)
  bf16* Ks = dOs + kTileE;                             // 2 x (64, kLdh)
  bf16* Vs = Ks + 2 * kTileE;                          // 2 x (64, kLdh)

  const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int64_t bh = blockIdx.x;
  const int qt = int(gridDim.y - 1 - blockIdx.y);
  const int64_t i0 = int64_t(qt) * kTile;
  const int64_t base = bh * T * kHS;
  const bool vq = aligned16(q), vk = aligned16(k), vv = aligned16(v), vg = aligned16(dout);
  const float sl2 = scale * kLog2e;

  load_tile(Qs, q + base, i0, T, vq);
  load_tile(dOs, dout + base, i0, T, vg);
  load_tile(Ks, k + base, 0, T, vk);
  load_tile(Vs, v + base, 0, T, vv);
  cp_async_commit();

  float lr[2], Dr[2];  // lse * log2e and D of rows g, g + 8 of the strip (0 past T)
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t i = i0 + 16 * w + g + 8 * h;
    lr[h] = i < T ? lse[bh * T + i] * kLog2e : 0.f;
    Dr[h] = i < T ? D[bh * T + i] : 0.f;
  }
  float dQ[8][4];  // (rows 16w + g + 8 (e / 2), dims 8n + 2 t4 + e % 2)
#pragma unroll
  for (int n = 0; n < 8; ++n) dQ[n][0] = dQ[n][1] = dQ[n][2] = dQ[n][3] = 0.f;

  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt & 1;
    cp_async_wait_all();
    __syncthreads();  // tile kt (and Q, dO) landed for all threads; everyone is done with tile kt - 1
    if (kt < qt) {
      const int64_t jn = int64_t(kt + 1) * kTile;
      load_tile(Ks + (buf ^ 1) * kTileE, k + base, jn, T, vk);
      load_tile(Vs + (buf ^ 1) * kTileE, v + base, jn, T, vv);
      cp_async_commit();
    }
    const bf16* Kb = Ks + buf * kTileE;
    const bf16* Vb = Vs + buf * kTileE;

    // P: element (row 16w + g + 8 (e / 2), key 8n + 2 t4 + e % 2). Masked (0) for keys after the
    // row (only in the diagonal tile, where j0 = i0) and rows past T.
    float p[8][4];
    strip_abt(p, Qs + 16 * w * kLdh, Kb, lane);
    const bool diag = kt == qt;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ck = 8 * n + 2 * t4 + (e & 1), rq = 16 * w + g + 8 * (e >> 1);
        float x = exp2f(p[n][e] * sl2 - lr[e >> 1]);
        if (diag && (ck > rq || i0 + rq >= T)) x = 0.f;
        p[n][e] = x;
      }
    }
    float ds[8][4];  // dP, then dS
    strip_abt(ds, dOs + 16 * w * kLdh, Vb, lane);
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - Dr[e >> 1]);
    }
    strip_pb(dQ, ds, Kb, lane);  // dQ += dS K
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t i = i0 + 16 * w + g + 8 * h;
    if (i < T) {
      float* dqr = dq + base + i * kHS + 2 * t4;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        dqr[8 * n] = scale * dQ[n][2 * h];
        dqr[8 * n + 1] = scale * dQ[n][2 * h + 1];
      }
    }
  }
#endif
}

#undef LOOM_ATTN_BF16_BODY

// The attention grid: (B * NH, number of 64-row tiles). False when it exceeds CUDA's limits.
inline bool attention_grid(int64_t B, int64_t NH, int64_t T, dim3& grid) {
  const int64_t bh = B * NH, tiles = (T + kTile - 1) / kTile;
  if (bh > INT_MAX || tiles > 65535) return false;
  grid = dim3(unsigned(bh), unsigned(tiles));
  return true;
}

inline const bf16* as_bf16(const void* p) { return static_cast<const bf16*>(p); }

// bf16 mma.sync (and cp.async, ldmatrix) need compute capability 8.0 or newer.
inline bool device_has_bf16_mma(int device) {
  int major = 0;
  LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major >= 8;
}

}  // namespace attn_bf16

bool attention_forward_bf16(float* out, float* lse, const void* q, const void* k, const void* v, int64_t B,
                            int64_t NH, int64_t T, int64_t HS, int device) {
  using namespace attn_bf16;
  if (HS != kHS) return false;
  if (B <= 0 || NH <= 0 || T <= 0) return true;  // nothing to compute
  dim3 grid;
  if (!attention_grid(B, NH, T, grid) || !device_has_bf16_mma(device)) return false;
  cudaStream_t stream = detail::use(device);
  const float scale = 1.0f / std::sqrt(float(HS));
  LOOM_CUDA_CHECK(cudaFuncSetAttribute(forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kFwdSmem)));
  forward_kernel<<<grid, kThreads, kFwdSmem, stream>>>(out, lse, as_bf16(q), as_bf16(k), as_bf16(v), T, scale);
  LOOM_CUDA_CHECK_LAUNCH();
  return true;
}

bool attention_backward_bf16(float* dq, float* dk, float* dv, const void* dout, const void* q, const void* k,
                             const void* v, const float* out, const float* lse, int64_t B, int64_t NH, int64_t T,
                             int64_t HS, int device) {
  using namespace attn_bf16;
  if (HS != kHS) return false;
  if (B <= 0 || NH <= 0 || T <= 0) return true;  // nothing to compute
  dim3 grid;
  if (!attention_grid(B, NH, T, grid) || !device_has_bf16_mma(device)) return false;
  cudaStream_t stream = detail::use(device);
  const float scale = 1.0f / std::sqrt(float(HS));
  const bf16 *qb = as_bf16(q), *kb = as_bf16(k), *vb = as_bf16(v), *gb = as_bf16(dout);

  const int64_t rows = B * NH * T;
  detail::Scratch D(size_t(rows) * sizeof(float), device);  // D_i = dout_i . out_i, (B, NH, T)
  float* Dp = D.as<float>();
  const int row_blocks = int(std::min<int64_t>((rows + 7) / 8, int64_t(1) << 20));  // 8 rows (warps) per block
  rowdot_kernel<<<row_blocks, 256, 0, stream>>>(Dp, gb, out, rows);
  LOOM_CUDA_CHECK_LAUNCH();

  LOOM_CUDA_CHECK(cudaFuncSetAttribute(dkdv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kDkDvSmem)));
  dkdv_kernel<<<grid, kThreads, kDkDvSmem, stream>>>(dk, dv, qb, kb, vb, gb, lse, Dp, T, scale);
  LOOM_CUDA_CHECK_LAUNCH();

  LOOM_CUDA_CHECK(cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kDqSmem)));
  dq_kernel<<<grid, kThreads, kDqSmem, stream>>>(dq, qb, kb, vb, gb, lse, Dp, T, scale);
  LOOM_CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace loom::cuda
