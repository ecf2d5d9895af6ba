#pragma once
// Causal flash attention in fp32 (the reference path on the GPU; the bf16 tensor-core path is in
// attention_bf16.cuh). Nothing of size T x T is stored: the forward keeps one running max m and
// sum l per query (the online softmax) and saves lse = m + log l; the backward recomputes
// p = exp(s - lse) tile by tile.
//
// Forward: one block per (b, h, 64 queries), one thread per query. The block walks the key
// tiles up to the diagonal; each tile of K and V (64 x D) sits in shared memory and every thread
// reads it as a broadcast. Within a tile, keys go 16 at a time: scores, their max, one rescale
// of the accumulator o, then o += p v.
// Backward: D_i = dout_i . out_i, then two kernels so that no sum needs atomics:
//   dK/dV: one thread per key j, looping over the queries i >= j:
//     p = exp(q_i.k_j * scale - lse_i), dv_j += p dout_i, ds = p (dout_i.v_j - D_i), dk_j += ds q_i * scale
//   dQ: one thread per query i, looping over the keys j <= i:  dq_i += ds k_j * scale
// Packed sequences: kv_start (B, Tq) int32, when not null, hides the keys j < kv_start[b, i] from
// query i (a block-diagonal causal mask; contract in backend/cpu/attention.hpp). Each block starts
// its key loop at the smallest first key of its queries, and the dK/dV kernel skips query tiles
// whose queries all start after the block's keys, so packed rows also save work.

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/reduce.cuh"

namespace loom::cuda {

namespace detail {

constexpr int attn_tile = 64;  // queries (or keys) per block: one per thread
// Keys per shared-memory tile: 64, or 32 for the widest heads (two 32 KB tiles at most).
template <int D> constexpr int key_tile = D <= 64 ? 64 : 32;

// The first key query i (of a row whose bounds start at ks) sees: kv_start[i] clamped to
// [0, i + shift], or 0 without kv_start.
__device__ inline int first_key(const int32_t* ks, int i, int shift) {
  return ks ? min(max(ks[i], 0), i + shift) : 0;
}
// The smallest first key over the block's threads (a block-wide barrier; 0 without kv_start).
__device__ inline int block_min_first_key(const int32_t* ks, int mine) {
  if (!ks) return 0;
  __shared__ int lo;
  if (threadIdx.x == 0) lo = mine;
  __syncthreads();
  atomicMin(&lo, mine);
  __syncthreads();
  const int r = lo;
  __syncthreads();  // everyone has read lo before a later call rewrites it
  return r;
}

// q (B, NH, Tq, HS) and friends: element (b, h, t, d) at b*s.b + h*s.h + t*s.t + d.
template <int D>
__global__ void __launch_bounds__(attn_tile) attention_forward_kernel(float* out, AttnStrides so, float* lse,
    const float* q, AttnStrides sq, const float* k, AttnStrides sk, const float* v, AttnStrides sv, int NH, int Tq,
    int Tk, int HS, float scale, const int32_t* kv_start) {
  constexpr int KT = key_tile<D>;
  __shared__ float Ks[KT][D], Vs[KT][D];
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int i = blockIdx.x * attn_tile + threadIdx.x;  // this thread's query
  const int shift = Tk - Tq;                           // query i sits at position i + shift
  const int last_key = min(Tk - 1, (blockIdx.x + 1) * attn_tile - 1 + shift);  // the block's last visible key
  const int32_t* ks = kv_start ? kv_start + int64_t(b) * Tq : nullptr;
  const int first = first_key(ks, min(i, Tq - 1), shift);       // this query's first key
  const int first_block = block_min_first_key(ks, first);       // keys before it: no query here sees them
  const float* qr = q + b * sq.b + h * sq.h + int64_t(min(i, Tq - 1)) * sq.t;
  float qv[D], o[D];
#pragma unroll
  for (int d = 0; d < D; ++d) qv[d] = d < HS ? qr[d] * scale : 0.0f, o[d] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const float* kb = k + b * sk.b + h * sk.h;
  const float* vb = v + b * sv.b + h * sv.h;
  for (int j0 = first_block; j0 <= last_key; j0 += KT) {
    __syncthreads();  // the previous tile is no longer read
    for (int e = threadIdx.x; e < KT * D; e += attn_tile) {
      int r = e / D, d = e % D, j = j0 + r;
      bool ok = j < Tk && d < HS;
      Ks[r][d] = ok ? kb[int64_t(j) * sk.t + d] : 0.0f;
      Vs[r][d] = ok ? vb[int64_t(j) * sv.t + d] : 0.0f;
    }
    __syncthreads();
    const int visible = min(i + shift, Tk - 1) - j0 + 1;  // keys of this tile this query sees
    const int hidden = first - j0;                         // keys of this tile before its first (packing)
    // chunks start at the one holding the first key, so each chunk has a visible key (finite max)
    for (int c0 = max(hidden, 0) / 16 * 16; c0 < KT && c0 < visible; c0 += 16) {
      float s[16];
      float mc = -INFINITY;
#pragma unroll
      for (int c = 0; c < 16; ++c) {
        float acc = 0.0f;
#pragma unroll
        for (int d = 0; d < D; ++d) acc += qv[d] * Ks[c0 + c][d];
        s[c] = c0 + c < visible && c0 + c >= hidden ? acc : -INFINITY;
        mc = fmaxf(mc, s[c]);
      }
      const float mn = fmaxf(m, mc);
      const float alpha = expf(m - mn);  // 0 on the first chunk (m = -inf)
      l *= alpha;
#pragma unroll
      for (int d = 0; d < D; ++d) o[d] *= alpha;
#pragma unroll
      for (int c = 0; c < 16; ++c) {
        const float p = expf(s[c] - mn);
        l += p;
#pragma unroll
        for (int d = 0; d < D; ++d) o[d] += p * Vs[c0 + c][d];
      }
      m = mn;
    }
  }
  if (i < Tq) {
    float* orow = out + b * so.b + h * so.h + int64_t(i) * so.t;
    const float inv = 1.0f / l;
#pragma unroll
    for (int d = 0; d < D; ++d)
      if (d < HS) orow[d] = o[d] * inv;
    lse[(int64_t(bh)) * Tq + i] = m + logf(l);
  }
}

// Di = sum_d dout_id out_id for contiguous (rows, HS).
__global__ void attention_delta_kernel(float* delta, const float* dout, const float* out, int64_t rows, int HS) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int d = 0; d < HS; ++d) s += dout[r * HS + d] * out[r * HS + d];
    delta[r] = s;
  }
}

// dK, dV: one block per (b, h, 64 keys), one thread per key; contiguous (B, NH, T, HS) tensors.
template <int D>
__global__ void __launch_bounds__(attn_tile) attention_dkdv_kernel(float* dk, float* dv, const float* q,
    const float* k, const float* v, const float* dout, const float* lse, const float* delta, int NH, int Tq, int Tk,
    int HS, float scale, const int32_t* kv_start) {
  extern __shared__ float smem[];
  float* Qs = smem;                      // [64][D]
  float* Os = Qs + attn_tile * D;        // [64][D] (dout)
  float* Ls = Os + attn_tile * D;        // [64]
  float* Ds = Ls + attn_tile;            // [64]
  __shared__ int Fs[attn_tile];          // the first key of each query of the tile
  const int64_t bh = blockIdx.y;
  const int32_t* ks = kv_start ? kv_start + (bh / NH) * Tq : nullptr;
  const int last_key = min(Tk - 1, int(blockIdx.x + 1) * attn_tile - 1);  // the block's last key
  const int j = blockIdx.x * attn_tile + threadIdx.x;  // this thread's key
  const int shift = Tk - Tq;
  const int jj = min(j, Tk - 1);
  float kv[D], vv[D], dkv[D], dvv[D];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    kv[d] = d < HS ? k[(bh * Tk + jj) * HS + d] : 0.0f;
    vv[d] = d < HS ? v[(bh * Tk + jj) * HS + d] : 0.0f;
    dkv[d] = dvv[d] = 0.0f;
  }
  // queries that see any key of this block: i + shift >= first key
  const int first_query = max(0, int(blockIdx.x) * attn_tile - shift);
  for (int i0 = first_query / attn_tile * attn_tile; i0 < Tq; i0 += attn_tile) {
    // packed rows: a query tile whose queries all start after this block's keys adds nothing
    // (the barrier also means the previous tile is no longer read)
    const int iq = i0 + threadIdx.x;
    const int fq = iq < Tq ? first_key(ks, iq, shift) : Tk;
    if (__syncthreads_and(fq > last_key)) continue;
    for (int e = threadIdx.x; e < attn_tile * D; e += attn_tile) {
      int r = e / D, d = e % D, i = i0 + r;
      bool ok = i < Tq && d < HS;
      Qs[e] = ok ? q[(bh * Tq + i) * HS + d] : 0.0f;
      Os[e] = ok ? dout[(bh * Tq + i) * HS + d] : 0.0f;
    }
    {
      int i = i0 + threadIdx.x;
      Ls[threadIdx.x] = i < Tq ? lse[bh * Tq + i] : 0.0f;
      Ds[threadIdx.x] = i < Tq ? delta[bh * Tq + i] : 0.0f;
      Fs[threadIdx.x] = fq;
    }
    __syncthreads();
    if (j >= Tk) continue;
    for (int r = 0; r < attn_tile; ++r) {
      const int i = i0 + r;
      if (i >= Tq || j > i + shift || j < Fs[r]) continue;  // (uniform per row r except on the diagonal)
      const float* qi = Qs + r * D;
      const float* oi = Os + r * D;
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) s += qi[d] * kv[d], dp += oi[d] * vv[d];
      const float p = expf(s * scale - Ls[r]);
      const float ds = p * (dp - Ds[r]) * scale;
#pragma unroll
      for (int d = 0; d < D; ++d) dvv[d] += p * oi[d], dkv[d] += ds * qi[d];
    }
  }
  if (j < Tk) {
#pragma unroll
    for (int d = 0; d < D; ++d)
      if (d < HS) dk[(bh * Tk + j) * HS + d] = dkv[d], dv[(bh * Tk + j) * HS + d] = dvv[d];
  }
}

// dQ: one block per (b, h, 64 queries), one thread per query.
template <int D>
__global__ void __launch_bounds__(attn_tile) attention_dq_kernel(float* dq, const float* q, const float* k,
    const float* v, const float* dout, const float* lse, const float* delta, int NH, int Tq, int Tk, int HS, float scale,
    const int32_t* kv_start) {
  constexpr int KT = key_tile<D>;
  __shared__ float Ks[KT][D], Vs[KT][D];
  const int64_t bh = blockIdx.y;
  const int i = blockIdx.x * attn_tile + threadIdx.x;
  const int shift = Tk - Tq;
  const int ii = min(i, Tq - 1);
  const int32_t* ks = kv_start ? kv_start + (bh / NH) * Tq : nullptr;
  const int first = first_key(ks, ii, shift), first_block = block_min_first_key(ks, first);
  float qv[D], ov[D], dqv[D];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    qv[d] = d < HS ? q[(bh * Tq + ii) * HS + d] : 0.0f;
    ov[d] = d < HS ? dout[(bh * Tq + ii) * HS + d] : 0.0f;
    dqv[d] = 0.0f;
  }
  const float L = lse[bh * Tq + ii], Dl = delta[bh * Tq + ii];
  const int last_key = min(Tk - 1, (blockIdx.x + 1) * attn_tile - 1 + shift);
  for (int j0 = first_block; j0 <= last_key; j0 += KT) {
    __syncthreads();
    for (int e = threadIdx.x; e < KT * D; e += attn_tile) {
      int r = e / D, d = e % D, j = j0 + r;
      bool ok = j < Tk && d < HS;
      Ks[r][d] = ok ? k[(bh * Tk + j) * HS + d] : 0.0f;
      Vs[r][d] = ok ? v[(bh * Tk + j) * HS + d] : 0.0f;
    }
    __syncthreads();
    const int visible = min(ii + shift, Tk - 1) - j0 + 1;
    for (int c = max(first - j0, 0); c < KT && c < visible; ++c) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) s += qv[d] * Ks[c][d], dp += ov[d] * Vs[c][d];
      const float p = expf(s * scale - L);
      const float ds = p * (dp - Dl) * scale;
#pragma unroll
      for (int d = 0; d < D; ++d) dqv[d] += ds * Ks[c][d];
    }
  }
  if (i < Tq) {
#pragma unroll
    for (int d = 0; d < D; ++d)
      if (d < HS) dq[(bh * Tq + i) * HS + d] = dqv[d];
  }
}

// Head layout changes for the packed attention op, 8 (split) or 4 (merge) elements per thread:
// (B, T, P, NH, HS) <-> P x (B, NH, T, HS).
struct HeadPtrs {
  void* p[3];
};
// For element e of a (B, T, P, NH, HS) tensor: its part p and its offset in that part's
// (B, NH, T, HS) tensor.
__device__ inline int64_t head_offset(int64_t e, int P, uint32_t T, uint32_t NH, uint32_t HS, int& p) {
  const uint32_t d = uint32_t(e % HS);
  int64_t r = e / HS;
  const uint32_t h = uint32_t(r % NH);
  r /= NH;
  p = int(r % P);
  const int64_t bt = r / P, b = bt / T, t = bt % T;
  return ((b * NH + h) * T + t) * HS + d;
}
__global__ void split_heads_bf16_kernel(HeadPtrs out, const float* in, int P, uint32_t T, uint32_t NH, uint32_t HS,
                                        int64_t n8) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = i * 8;  // element index in (B, T, P, NH, HS)
    int p;
    const int64_t to = head_offset(e, P, T, NH, HS, p);
    const float4 x0 = reinterpret_cast<const float4*>(in + e)[0], x1 = reinterpret_cast<const float4*>(in + e)[1];
    __nv_bfloat162 v[4] = {__floats2bfloat162_rn(x0.x, x0.y), __floats2bfloat162_rn(x0.z, x0.w),
                           __floats2bfloat162_rn(x1.x, x1.y), __floats2bfloat162_rn(x1.z, x1.w)};
    __nv_bfloat16* dst = static_cast<__nv_bfloat16*>(out.p[p]) + to;
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
  }
}
__global__ void merge_heads_f32_kernel(float* out, HeadPtrs in, int P, uint32_t T, uint32_t NH, uint32_t HS,
                                       int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = i * 4;  // element index in (B, T, P, NH, HS)
    int p;
    const int64_t from = head_offset(e, P, T, NH, HS, p);
    const float* src = static_cast<const float*>(in.p[p]) + from;
    reinterpret_cast<float4*>(out)[i] = *reinterpret_cast<const float4*>(src);
  }
}

inline void check_attention_shape(int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS) {
  LOOM_CHECK(HS >= 1 && HS <= 128, value_error, "causal_attention on CUDA: head size ", HS,
             " is not supported (1 to 128)");
  LOOM_CHECK(Tq <= Tk && Tk < (int64_t(1) << 30) && B * NH < 65536, value_error,
             "causal_attention on CUDA: unsupported sizes B*NH ", B * NH, ", Tq ", Tq, ", Tk ", Tk);
}

template <int D>
void attention_forward_launch(float* out, AttnStrides so, float* lse, const float* q, AttnStrides sq, const float* k,
                              AttnStrides sk, const float* v, AttnStrides sv, int64_t B, int64_t NH, int64_t Tq,
                              int64_t Tk, int64_t HS, const int32_t* kv_start, cudaStream_t s) {
  dim3 grid(unsigned((Tq + attn_tile - 1) / attn_tile), unsigned(B * NH));
  attention_forward_kernel<D><<<grid, attn_tile, 0, s>>>(out, so, lse, q, sq, k, sk, v, sv, int(NH), int(Tq), int(Tk),
                                                         int(HS), float(1.0 / std::sqrt(double(HS))), kv_start);
  LOOM_CUDA_CHECK_LAUNCH();
}

template <int D>
void attention_backward_launch(float* dq, float* dk, float* dv, const float* q, const float* k, const float* v,
                               const float* dout, const float* lse, const float* delta, int64_t B, int64_t NH,
                               int64_t Tq, int64_t Tk, int64_t HS, const int32_t* kv_start, cudaStream_t s) {
  const float scale = float(1.0 / std::sqrt(double(HS)));
  const size_t smem = (2 * attn_tile * D + 2 * attn_tile) * sizeof(float);
  LOOM_CUDA_CHECK(cudaFuncSetAttribute(attention_dkdv_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  dim3 gk(unsigned((Tk + attn_tile - 1) / attn_tile), unsigned(B * NH));
  attention_dkdv_kernel<D><<<gk, attn_tile, smem, s>>>(dk, dv, q, k, v, dout, lse, delta, int(NH), int(Tq), int(Tk),
                                                    int(HS), scale, kv_start);
  LOOM_CUDA_CHECK_LAUNCH();
  dim3 gq(unsigned((Tq + attn_tile - 1) / attn_tile), unsigned(B * NH));
  attention_dq_kernel<D><<<gq, attn_tile, 0, s>>>(dq, q, k, v, dout, lse, delta, int(NH), int(Tq), int(Tk), int(HS),
                                                 scale, kv_start);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace detail

void split_heads_bf16(void* const* out, const float* in, int P, int64_t B, int64_t T, int64_t NH, int64_t HS,
                      int device) {
  LOOM_CHECK(P >= 1 && P <= 3 && HS % 8 == 0, value_error, "split_heads_bf16: P ", P, ", HS ", HS);
  const int64_t n8 = B * T * P * NH * HS / 8;
  if (n8 == 0) return;
  detail::HeadPtrs o{{out[0], P > 1 ? out[1] : nullptr, P > 2 ? out[2] : nullptr}};
  detail::split_heads_bf16_kernel<<<detail::grid_for(n8, 256, device), 256, 0, detail::use(device)>>>(
      o, in, P, uint32_t(T), uint32_t(NH), uint32_t(HS), n8);
  LOOM_CUDA_CHECK_LAUNCH();
}

void merge_heads_f32(float* out, const float* const* in, int P, int64_t B, int64_t T, int64_t NH, int64_t HS,
                     int device) {
  LOOM_CHECK(P >= 1 && P <= 3 && HS % 4 == 0, value_error, "merge_heads_f32: P ", P, ", HS ", HS);
  const int64_t n4 = B * T * P * NH * HS / 4;
  if (n4 == 0) return;
  detail::HeadPtrs i{{const_cast<float*>(in[0]), P > 1 ? const_cast<float*>(in[1]) : nullptr,
                      P > 2 ? const_cast<float*>(in[2]) : nullptr}};
  detail::merge_heads_f32_kernel<<<detail::grid_for(n4, 256, device), 256, 0, detail::use(device)>>>(
      out, i, P, uint32_t(T), uint32_t(NH), uint32_t(HS), n4);
  LOOM_CUDA_CHECK_LAUNCH();
}

void attention_forward_f32(float* out, AttnStrides so, float* lse, const float* q, AttnStrides sq, const float* k,
                           AttnStrides sk, const float* v, AttnStrides sv, int64_t B, int64_t NH, int64_t Tq,
                           int64_t Tk, int64_t HS, const int32_t* kv_start, int device) {
  if (B * NH * Tq == 0) return;
  detail::check_attention_shape(B, NH, Tq, Tk, HS);
  cudaStream_t s = detail::use(device);
  if (HS <= 32)
    return detail::attention_forward_launch<32>(out, so, lse, q, sq, k, sk, v, sv, B, NH, Tq, Tk, HS, kv_start, s);
  if (HS <= 64)
    return detail::attention_forward_launch<64>(out, so, lse, q, sq, k, sk, v, sv, B, NH, Tq, Tk, HS, kv_start, s);
  detail::attention_forward_launch<128>(out, so, lse, q, sq, k, sk, v, sv, B, NH, Tq, Tk, HS, kv_start, s);
}

void attention_backward_f32(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                            const float* v, const float* out, const float* lse, int64_t B, int64_t NH, int64_t Tq,
                            int64_t Tk, int64_t HS, const int32_t* kv_start, int device) {
  if (B * NH * Tk == 0) return;
  detail::check_attention_shape(B, NH, Tq, Tk, HS);
  cudaStream_t s = detail::use(device);
  const int64_t rows = B * NH * Tq;
  detail::Scratch delta(size_t(std::max<int64_t>(rows, 1)) * sizeof(float), device);
  if (rows > 0) {
    detail::attention_delta_kernel<<<detail::grid_for(rows, 256, device), 256, 0, s>>>(delta.as<float>(), dout, out,
                                                                                      rows, int(HS));
    LOOM_CUDA_CHECK_LAUNCH();
  }
  if (Tq == 0) {  // no queries: nothing flows back to the keys
    LOOM_CUDA_CHECK(cudaMemsetAsync(dk, 0, size_t(B * NH * Tk * HS) * 4, s));
    LOOM_CUDA_CHECK(cudaMemsetAsync(dv, 0, size_t(B * NH * Tk * HS) * 4, s));
    return;
  }
  if (HS <= 32)
    return detail::attention_backward_launch<32>(dq, dk, dv, q, k, v, dout, lse, delta.as<float>(), B, NH, Tq, Tk, HS,
                                                     kv_start, s);
  if (HS <= 64)
    return detail::attention_backward_launch<64>(dq, dk, dv, q, k, v, dout, lse, delta.as<float>(), B, NH, Tq, Tk, HS,
                                                     kv_start, s);
  detail::attention_backward_launch<128>(dq, dk, dv, q, k, v, dout, lse, delta.as<float>(), B, NH, Tq, Tk, HS,
                                                     kv_start, s);
}

}  // namespace loom::cuda
