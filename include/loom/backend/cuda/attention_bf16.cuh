#pragma once
#include <mma.h>
#include "loom/backend/cuda/common.cuh"
// Causal flash attention (FlashAttention-2 structure) on bf16 tensor cores: WMMA 16x16x16 bf16
// fragments with fp32 accumulators, for head size 64. All products (Q K^T, P V, dO V^T, P^T dO,
// dS^T Q, dS K) run on WMMA; softmax, the D = rowsum(dO * O) term and dS = P * (dP - D) run in
// fp32. No atomics: every output element is written by exactly one block (deterministic).
//
// Shapes: q, k, v, dout bf16 (B, NH, T, 64) contiguous; out, dq, dk, dv float (B, NH, T, 64);
// lse float (B, NH, T). Element (b, h, t, d) at ((b * NH + h) * T + t) * 64 + d.
// s_ij = q_i . k_j / sqrt(64) for j <= i; lse_i = log sum_{j <= i} exp(s_ij); p_ij = exp(s_ij - lse_i).
//
// Tiles are 64 query rows x 64 keys. A block has 4 warps; in every 64 x 64 product a block does,
// warp w computes the 16-row strip [16w, 16w + 16) (four 16 x 16 output tiles, four k-steps).
// Shared tiles are padded (bf16 rows of 72, float rows of 68 elements): every WMMA pointer used
// below is then 32-byte aligned and every ldm a multiple of 8 (bf16) / 4 (float).

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace loom::cuda {
namespace attn_bf16 {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr int kHS = 64;        // the one head size handled
constexpr int kTile = 64;      // query rows (and keys) per tile
constexpr int kThreads = 128;  // 4 warps per block (the strip mapping above assumes exactly 4)
constexpr int kLdh = 72;       // bf16 smem row stride (elements): 144 B, a 16-row step is 2304 B
constexpr int kLdf = 68;       // float smem row stride (elements): 272 B, a 16-row step is 4352 B
constexpr size_t kTileH = size_t(kTile) * kLdh * sizeof(bf16);   // 9216 B, one (64, 72) bf16 tile
constexpr size_t kTileF = size_t(kTile) * kLdf * sizeof(float);  // 17408 B, one (64, 68) float tile
constexpr size_t kRowF = size_t(kTile) * sizeof(float);          // 256 B, one per-row vector
constexpr size_t kFwdSmem = 4 * kTileH + 2 * kTileF + 2 * kRowF;   // Q K V P, S O, m l: 72192 B
constexpr size_t kDkDvSmem = 6 * kTileH + 2 * kTileF + 2 * kRowF;  // K V Q dO P dS, S dP, lse D: 90624 B
constexpr size_t kDqSmem = 5 * kTileH + 2 * kTileF + 2 * kRowF;    // Q dO K V dS, S dP, lse D: 81408 B

// bf16 WMMA exists from sm_80 on. Other device passes (e.g. sm_75 in a multi-arch build) get
// empty kernel bodies; the host wrappers never launch them there (they return false).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define LOOM_ATTN_BF16_BODY 1

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAt = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;  // reads A^T of a row-major tile
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;  // reads B^T of a row-major tile
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// dst (64, kLdh) smem <- rows [row0, row0 + 64) of src (T, 64) bf16 row-major; rows >= T become 0.
// src is the (b, h) slice; it is 16-byte aligned whenever the tensor is (the slice offset is a
// multiple of 128 B), so one check decides between 16-byte and scalar loads.
__device__ inline void load_tile(bf16* dst, const bf16* src, int64_t row0, int64_t T) {
  const bool vec = (reinterpret_cast<uintptr_t>(src) & 15) == 0;
  constexpr int chunks = kHS / 8;  // 8 bf16 = 16 B per chunk
  for (int e = threadIdx.x; e < kTile * chunks; e += kThreads) {
    const int r = e / chunks, c = (e % chunks) * 8;
    const int64_t t = row0 + r;
    uint4* to = reinterpret_cast<uint4*>(dst + r * kLdh + c);  // 144 r + 16 (e % 8) bytes: 16-B aligned
    if (t >= T) {
      *to = make_uint4(0, 0, 0, 0);
    } else if (vec) {
      *to = *reinterpret_cast<const uint4*>(src + t * kHS + c);
    } else {
      for (int x = 0; x < 8; ++x) dst[r * kLdh + c + x] = src[t * kHS + c + x];
    }
  }
}

// dst (64) smem <- src[row0 .. row0 + 63] (one float per row); rows >= T become 0.
__device__ inline void load_rows(float* dst, const float* src, int64_t row0, int64_t T) {
  for (int r = threadIdx.x; r < kTile; r += kThreads) dst[r] = row0 + r < T ? src[row0 + r] : 0.f;
}

// C[16w : 16w+16, 0:64] = A[16w : 16w+16, 0:64] @ B[0:64, 0:64]^T.
// A, B: (64, 64) bf16 row-major tiles (ld kLdh); C: (64, 64) float tile (ld kLdf).
__device__ inline void strip_abt(float* C, const bf16* A, const bf16* B, int w) {
  FragA a[4];
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) wmma::load_matrix_sync(a[kk], A + 16 * w * kLdh + 16 * kk, kLdh);
#pragma unroll
  for (int n = 0; n < 4; ++n) {
    FragC c;
    wmma::fill_fragment(c, 0.f);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      FragBt b;  // (B^T)[16kk.., 16n..] = B[16n.., 16kk..] read column-major
      wmma::load_matrix_sync(b, B + 16 * n * kLdh + 16 * kk, kLdh);
      wmma::mma_sync(c, a[kk], b, c);
    }
    wmma::store_matrix_sync(C + 16 * w * kLdf + 16 * n, c, kLdf, wmma::mem_row_major);
  }
}

// c[n] += A[16w : 16w+16, 0:64] @ B[0:64, 16n : 16n+16] for n = 0..3 (c: the 16 x 64 strip).
// B: (64, 64) bf16 row-major tile; A: the (64, 64) bf16 row-major tile, or with TransA the
// transpose of it (A^T[16w.., 16kk..] = A[16kk.., 16w..], read column-major).
template <bool TransA>
__device__ inline void strip_ab(FragC (&c)[4], const bf16* A, const bf16* B, int w) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    std::conditional_t<TransA, FragAt, FragA> a;
    wmma::load_matrix_sync(a, TransA ? A + 16 * kk * kLdh + 16 * w : A + 16 * w * kLdh + 16 * kk, kLdh);
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      FragB b;
      wmma::load_matrix_sync(b, B + 16 * kk * kLdh + 16 * n, kLdh);
      wmma::mma_sync(c[n], a, b, c[n]);
    }
  }
}

// From S = Q K^T and dP = dO V^T (64 queries x 64 keys, float, unscaled S) of the tile at
// (i0, j0): p = exp(scale * s - lse_i) where key j <= query i and i < T (else 0; j >= T with
// i < T implies j > i), ds = p * (dp - D_i). Written as bf16 to Ps (skipped when null) and dSs.
__device__ inline void p_and_ds(bf16* Ps, bf16* dSs, const float* Ss, const float* dPs, const float* lse_s,
                                const float* D_s, int64_t i0, int64_t j0, int64_t T, float scale) {
  for (int e = threadIdx.x; e < kTile * kTile; e += kThreads) {
    const int r = e / kTile, c = e % kTile;
    const int64_t i = i0 + r, j = j0 + c;
    const float p = (j > i || i >= T) ? 0.f : expf(Ss[r * kLdf + c] * scale - lse_s[r]);
    const float ds = p * (dPs[r * kLdf + c] - D_s[r]);
    if (Ps) Ps[r * kLdh + c] = __float2bfloat16(p);
    dSs[r * kLdh + c] = __float2bfloat16(ds);
  }
}
#endif  // bf16 WMMA available

// Forward. One block = one (b, h) (blockIdx.x) and one tile of 64 query rows i0 .. i0 + 63
// (heaviest tiles first). Loop over key tiles j0 = 0, 64, ..., i0 (the last is the diagonal):
//   S (64, 64)  = Q (64, 64) K^T (64, 64)     WMMA -> Ss, float
//   online softmax on S (fp32), per row        -> P bf16 (64, 64) in Ps; O rows *= exp(m_old - m_new)
//   O (64, 64) += P (64, 64) V (64, 64)        WMMA, O kept in smem as float (Os)
// Then out_i = O_i / l_i and lse_i = m_i + log l_i.
__global__ void __launch_bounds__(kThreads)
    forward_kernel(float* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int64_t T, float scale) {
#ifdef LOOM_ATTN_BF16_BODY
  extern __shared__ __align__(128) unsigned char attn_bf16_smem[];
  bf16* Qs = reinterpret_cast<bf16*>(attn_bf16_smem);  // (64, kLdh) bf16 each
  bf16* Ks = Qs + kTile * kLdh;
  bf16* Vs = Ks + kTile * kLdh;
  bf16* Ps = Vs + kTile * kLdh;
  float* Ss = reinterpret_cast<float*>(Ps + kTile * kLdh);  // (64, kLdf) float each
  float* Os = Ss + kTile * kLdf;
  float* m_s = Os + kTile * kLdf;  // (64) running max of the scaled scores
  float* l_s = m_s + kTile;        // (64) running sum of exp(s - m)

  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.x;
  const int qt = int(gridDim.y - 1 - blockIdx.y);
  const int64_t i0 = int64_t(qt) * kTile;
  const int64_t base = bh * T * kHS;  // the (b, h) slice of q, k, v, out

  load_tile(Qs, q + base, i0, T);
  for (int e = threadIdx.x; e < kTile * kLdf; e += kThreads) Os[e] = 0.f;
  for (int r = threadIdx.x; r < kTile; r += kThreads) {
    m_s[r] = -INFINITY;
    l_s[r] = 0.f;
  }

  for (int kt = 0; kt <= qt; ++kt) {
    const int64_t j0 = int64_t(kt) * kTile;
    __syncthreads();  // Qs/Os/m/l initialised; the previous tile's reads of Ks, Vs, Ps are done
    load_tile(Ks, k + base, j0, T);
    load_tile(Vs, v + base, j0, T);
    __syncthreads();
    strip_abt(Ss, Qs, Ks, w);  // S[16w.., :] = Q[16w.., :] K^T
    __syncthreads();
    // Online softmax: warp w updates rows 16w .. 16w + 15; a lane covers columns lane, lane + 32.
    // Every row sees key j0 (j0 <= i0 <= i and j0 < T), so m_new is finite: no -inf - -inf.
    for (int rr = 0; rr < 16; ++rr) {
      const int r = 16 * w + rr;
      const int64_t i = i0 + r;
      float s[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c = lane + 32 * h;
        const int64_t j = j0 + c;
        s[h] = (j > i || j >= T) ? -INFINITY : Ss[r * kLdf + c] * scale;
      }
      const float m_old = m_s[r];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(s[0], s[1])));
      const float corr = expf(m_old - m_new);  // 0 on the first tile (m_old = -inf)
      float sum = 0.f;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c = lane + 32 * h;
        const float p = expf(s[h] - m_new);  // masked: exp(-inf) = 0
        sum += p;
        Ps[r * kLdh + c] = __float2bfloat16(p);
        Os[r * kLdf + c] *= corr;
      }
      sum = warp_sum(sum);
      __syncwarp();  // every lane has read m_s[r] before lane 0 replaces it
      if (lane == 0) {
        l_s[r] = l_s[r] * corr + sum;
        m_s[r] = m_new;
      }
    }
    __syncthreads();
    // O[16w.., :] += P[16w.., :] (16, 64) @ V (64, 64), through fragments
    FragC o[4];
#pragma unroll
    for (int n = 0; n < 4; ++n) wmma::load_matrix_sync(o[n], Os + 16 * w * kLdf + 16 * n, kLdf, wmma::mem_row_major);
    strip_ab<false>(o, Ps, Vs, w);
#pragma unroll
    for (int n = 0; n < 4; ++n) wmma::store_matrix_sync(Os + 16 * w * kLdf + 16 * n, o[n], kLdf, wmma::mem_row_major);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kTile * kHS; e += kThreads) {
    const int r = e / kHS, c = e % kHS;
    const int64_t i = i0 + r;
    if (i < T) out[base + i * kHS + c] = Os[r * kLdf + c] / l_s[r];
  }
  for (int r = threadIdx.x; r < kTile; r += kThreads) {
    if (i0 + r < T) lse[bh * T + i0 + r] = m_s[r] + logf(l_s[r]);
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
// j0 .. j0 + 63 (blockIdx.y). K, V tiles stay in smem; loop over query tiles i0 = j0, ..., the
// last (earlier queries see none of these keys):
//   S (64q, 64k) = Q K^T, dP (64q, 64k) = dO V^T                  WMMA -> Ss, dPs (float)
//   P = exp(scale S - lse), dS = P * (dP - D)                     fp32 -> Ps, dSs (bf16)
//   dV (64k, 64) += P^T (64k, 64q) dO (64q, 64)                    WMMA
//   dK (64k, 64) += dS^T (64k, 64q) Q (64q, 64)                    WMMA
// dV and dK accumulate in registers: warp w owns key rows [16w, 16w + 16), four 16 x 16
// fragments each. At the end dk = scale * dK, dv = dV.
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(float* dk, float* dv, const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                const float* lse, const float* D, int64_t T, float scale) {
#ifdef LOOM_ATTN_BF16_BODY
  extern __shared__ __align__(128) unsigned char attn_bf16_smem[];
  bf16* Ks = reinterpret_cast<bf16*>(attn_bf16_smem);  // (64, kLdh) bf16 each
  bf16* Vs = Ks + kTile * kLdh;
  bf16* Qs = Vs + kTile * kLdh;
  bf16* dOs = Qs + kTile * kLdh;
  bf16* Ps = dOs + kTile * kLdh;
  bf16* dSs = Ps + kTile * kLdh;
  float* Ss = reinterpret_cast<float*>(dSs + kTile * kLdh);  // (64, kLdf) float each
  float* dPs = Ss + kTile * kLdf;
  float* lse_s = dPs + kTile * kLdf;  // (64) lse of the current query tile
  float* D_s = lse_s + kTile;         // (64) D of the current query tile

  const int w = threadIdx.x / 32;
  const int64_t bh = blockIdx.x;
  const int kt = int(blockIdx.y);  // small kt has the most query tiles: scheduled first
  const int nt = int(gridDim.y);
  const int64_t j0 = int64_t(kt) * kTile;
  const int64_t base = bh * T * kHS;

  load_tile(Ks, k + base, j0, T);
  load_tile(Vs, v + base, j0, T);
  FragC dK[4], dV[4];  // dK/dV[16w.., 16n..]
#pragma unroll
  for (int n = 0; n < 4; ++n) {
    wmma::fill_fragment(dK[n], 0.f);
    wmma::fill_fragment(dV[n], 0.f);
  }

  for (int qt = kt; qt < nt; ++qt) {
    const int64_t i0 = int64_t(qt) * kTile;
    __syncthreads();  // K, V loaded; the previous tile's reads of Qs, dOs, Ps, dSs, lse_s, D_s are done
    load_tile(Qs, q + base, i0, T);
    load_tile(dOs, dout + base, i0, T);
    load_rows(lse_s, lse + bh * T, i0, T);
    load_rows(D_s, D + bh * T, i0, T);
    __syncthreads();
    strip_abt(Ss, Qs, Ks, w);    // S[16w.., :]  = Q[16w.., :] K^T
    strip_abt(dPs, dOs, Vs, w);  // dP[16w.., :] = dO[16w.., :] V^T
    __syncthreads();
    p_and_ds(Ps, dSs, Ss, dPs, lse_s, D_s, i0, j0, T, scale);
    __syncthreads();
    strip_ab<true>(dV, Ps, dOs, w);  // dV[16w.., :] += P^T[16w.., :] (16k, 64q) dO (64q, 64)
    strip_ab<true>(dK, dSs, Qs, w);  // dK[16w.., :] += dS^T[16w.., :] (16k, 64q) Q (64q, 64)
  }
  __syncthreads();  // done with Ss, dPs: reuse them to stage dK, dV
#pragma unroll
  for (int n = 0; n < 4; ++n) {
    wmma::store_matrix_sync(Ss + 16 * w * kLdf + 16 * n, dK[n], kLdf, wmma::mem_row_major);
    wmma::store_matrix_sync(dPs + 16 * w * kLdf + 16 * n, dV[n], kLdf, wmma::mem_row_major);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kTile * kHS; e += kThreads) {
    const int r = e / kHS, c = e % kHS;
    const int64_t j = j0 + r;
    if (j < T) {
      dk[base + j * kHS + c] = scale * Ss[r * kLdf + c];
      dv[base + j * kHS + c] = dPs[r * kLdf + c];
    }
  }
#endif
}

// Backward, step 3: dQ. One block = one (b, h) (blockIdx.x) and one tile of 64 query rows
// i0 .. i0 + 63 (heaviest first). Q, dO, lse, D stay in smem; loop over key tiles j0 = 0, ..., i0:
//   S (64q, 64k) = Q K^T, dP (64q, 64k) = dO V^T                  WMMA -> Ss, dPs (float)
//   dS = P * (dP - D), P = exp(scale S - lse)                     fp32 -> dSs (bf16)
//   dQ (64q, 64) += dS (64q, 64k) K (64k, 64)                      WMMA
// dQ accumulates in registers (warp w: query rows [16w, 16w + 16)); at the end dq = scale * dQ.
__global__ void __launch_bounds__(kThreads)
    dq_kernel(float* dq, const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,
              const float* D, int64_t T, float scale) {
#ifdef LOOM_ATTN_BF16_BODY
  extern __shared__ __align__(128) unsigned char attn_bf16_smem[];
  bf16* Qs = reinterpret_cast<bf16*>(attn_bf16_smem);  // (64, kLdh) bf16 each
  bf16* dOs = Qs + kTile * kLdh;
  bf16* Ks = dOs + kTile * kLdh;
  bf16* Vs = Ks + kTile * kLdh;
  bf16* dSs = Vs + kTile * kLdh;
  float* Ss = reinterpret_cast<float*>(dSs + kTile * kLdh);  // (64, kLdf) float each
  float* dPs = Ss + kTile * kLdf;
  float* lse_s = dPs + kTile * kLdf;  // (64)
  float* D_s = lse_s + kTile;         // (64)

  const int w = threadIdx.x / 32;
  const int64_t bh = blockIdx.x;
  const int qt = int(gridDim.y - 1 - blockIdx.y);
  const int64_t i0 = int64_t(qt) * kTile;
  const int64_t base = bh * T * kHS;

  load_tile(Qs, q + base, i0, T);
  load_tile(dOs, dout + base, i0, T);
  load_rows(lse_s, lse + bh * T, i0, T);
  load_rows(D_s, D + bh * T, i0, T);
  FragC dQ[4];  // dQ[16w.., 16n..]
#pragma unroll
  for (int n = 0; n < 4; ++n) wmma::fill_fragment(dQ[n], 0.f);

  for (int kt = 0; kt <= qt; ++kt) {
    const int64_t j0 = int64_t(kt) * kTile;
    __syncthreads();  // Q, dO, lse, D loaded; the previous tile's reads of Ks, Vs, dSs are done
    load_tile(Ks, k + base, j0, T);
    load_tile(Vs, v + base, j0, T);
    __syncthreads();
    strip_abt(Ss, Qs, Ks, w);    // S[16w.., :]  = Q[16w.., :] K^T
    strip_abt(dPs, dOs, Vs, w);  // dP[16w.., :] = dO[16w.., :] V^T
    __syncthreads();
    p_and_ds(nullptr, dSs, Ss, dPs, lse_s, D_s, i0, j0, T, scale);
    __syncthreads();
    strip_ab<false>(dQ, dSs, Ks, w);  // dQ[16w.., :] += dS[16w.., :] (16q, 64k) K (64k, 64)
  }
  __syncthreads();  // done with Ss: reuse it to stage dQ
#pragma unroll
  for (int n = 0; n < 4; ++n) wmma::store_matrix_sync(Ss + 16 * w * kLdf + 16 * n, dQ[n], kLdf, wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < kTile * kHS; e += kThreads) {
    const int r = e / kHS, c = e % kHS;
    const int64_t i = i0 + r;
    if (i < T) dq[base + i * kHS + c] = scale * Ss[r * kLdf + c];
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

// bf16 WMMA needs compute capability 8.0 or newer.
inline bool device_has_bf16_mma(int device) {
  int major = 0;
  LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major >= 8;
}

// A loom::cuda::malloc buffer returned to the cache when it goes out of scope (stream-ordered:
// safe right after queueing the kernels that use it).
struct Scratch {
  void* ptr;
  size_t bytes;
  int device;
  Scratch(size_t n, int dev) : ptr(loom::cuda::malloc(n, dev)), bytes(n), device(dev) {}
  ~Scratch() { loom::cuda::free(ptr, bytes, device); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

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
  Scratch D(size_t(rows) * sizeof(float), device);  // D_i = dout_i . out_i, (B, NH, T)
  float* Dp = static_cast<float*>(D.ptr);
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
