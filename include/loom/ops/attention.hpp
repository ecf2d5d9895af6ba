#pragma once
/// @file attention.hpp
/// Fused causal self-attention as one autograd op (forward and backward in
/// backend/cpu/attention.hpp; the derivation is in docs/05-attention.md).

#include <vector>

#include "loom/backend/cpu/attention.hpp"
#include "loom/ops/common.hpp"
#include "loom/ops/gpu.hpp"

namespace loom {

namespace detail {
template <class T>
cpu::AttnLayout attn_layout(const Tensor<T>& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}
// A (B, NH, T, HS) tensor whose memory is laid out as (B, T, NH, HS): merging the heads back
// into (B, T, C) is then a free reshape.
template <class T>
Tensor<T> heads_last_layout(int64_t B, int64_t NH, int64_t T_, int64_t HS) {
  return Tensor<T>::empty({B, T_, NH, HS}).transpose(1, 2).detach();
}
template <class T>
Tensor<T> unit_last_stride(const Tensor<T>& t) {
  return (t.stride(-1) == 1 || t.size(-1) <= 1) ? t : t.contiguous();
}

// Causal attention on the GPU (shapes checked by the caller). Under bf16 autocast, with Tq ==
// Tk and HS == 64, the tensor-core kernels of attention_bf16.cuh run on bf16 copies of q, k, v
// (and of dout in the backward); otherwise the fp32 flash kernels of attention.cuh.
inline Tensor<float> gpu_causal_attention(const Tensor<float>& q_in, const Tensor<float>& k_in,
                                          const Tensor<float>& v_in) {
  using TF = Tensor<float>;
  const int64_t B = q_in.size(0), NH = q_in.size(1), Tq = q_in.size(2), HS = q_in.size(3), Tk = k_in.size(2);
  const Device d = q_in.device();
  bool half = AutocastGuard::bf16() && Tq == Tk && HS == 64;
  TF lse = TF::empty({B, NH, Tq}, d);
  TF out;
  Tensor<bf16> q16, k16, v16;
  if (half) {
    q16 = q_in.contiguous().template to<bf16>(), k16 = k_in.contiguous().template to<bf16>(),
    v16 = v_in.contiguous().template to<bf16>();
    out = TF::empty({B, NH, Tq, HS}, d);
    // false when the GPU has no bf16 tensor cores (before sm_80): then the fp32 path below
    LOOM_GPU_ONLY(half = cuda::attention_forward_bf16(out.data(), lse.data(), q16.data(), k16.data(), v16.data(), B, NH,
                                                      Tq, HS, d.index));
  }
  if (!half) {
    TF q = unit_last_stride(q_in), k = unit_last_stride(k_in), v = unit_last_stride(v_in);
    out = TF::empty({B, Tq, NH, HS}, d).transpose(1, 2).detach();  // heads last in memory: merging them is free
    LOOM_GPU_ONLY(cuda::attention_forward_f32(out.data(), gpu::attn_strides(out), lse.data(), q.data(), gpu::attn_strides(q),
                                              k.data(), gpu::attn_strides(k), v.data(), gpu::attn_strides(v), B, NH, Tq, Tk,
                                              HS, d.index));
  }
  // backward: recompute each probability tile from the saved log-sum-exp
  record<float>("causal_attention", out, {&q_in, &k_in, &v_in},
                [half, q16, k16, v16, sq = SavedTensor<float>(half ? TF() : q_in), sk = SavedTensor<float>(half ? TF() : k_in),
                 sv = SavedTensor<float>(half ? TF() : v_in), so = SavedTensor<float>(out), lse, B, NH, Tq, Tk,
                 HS](const TF& g) {
    const Device d = g.device();
    TF o = so.get("causal_attention").contiguous();
    TF dq = TF::empty({B, NH, Tq, HS}, d), dk = TF::empty({B, NH, Tk, HS}, d), dv = TF::empty({B, NH, Tk, HS}, d);
    if (half) {
      Tensor<bf16> g16 = g.contiguous().template to<bf16>();
      bool ran = false;
      LOOM_GPU_ONLY(ran = cuda::attention_backward_bf16(dq.data(), dk.data(), dv.data(), g16.data(), q16.data(),
                                                        k16.data(), v16.data(), o.data(), lse.data(), B, NH, Tq, HS,
                                                        d.index));
      LOOM_CHECK(ran, backend_error, "causal_attention backward: the bf16 kernel refused shapes its forward accepted");
    } else {
      TF q = sq.get("causal_attention").contiguous(), k = sk.get("causal_attention").contiguous(),
         v = sv.get("causal_attention").contiguous(), gc = g.contiguous();
      LOOM_GPU_ONLY(cuda::attention_backward_f32(dq.data(), dk.data(), dv.data(), gc.data(), q.data(), k.data(), v.data(),
                                                 o.data(), lse.data(), B, NH, Tq, Tk, HS, d.index));
    }
    return std::vector<TF>{dq, dk, dv};
  });
  return out;
}
}  // namespace detail

/// softmax(q k^T / sqrt(HS) + causal mask) v for q (B, NH, Tq, HS) and k, v (B, NH, Tk, HS),
/// Tk >= Tq, where query i sits at position i + Tk - Tq (so Tq == Tk is ordinary causal
/// self-attention, and Tq < Tk attends over a KV cache). Returns (B, NH, Tq, HS), laid out in
/// memory as (B, Tq, NH, HS). Fused: no (T, T) matrix is stored for backward.
template <class T>
Tensor<T> causal_attention(const Tensor<T>& q_in, const Tensor<T>& k_in, const Tensor<T>& v_in) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "causal_attention: float or double");
  const bool gpu = detail::same_device("causal_attention", q_in, k_in, v_in).is_cuda();
  if (!gpu) detail::check_cpu("causal_attention", q_in, k_in, v_in);
  LOOM_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4, shape_error,
             "causal_attention: q, k, v must be (B, NH, T, HS), got ", q_in.shape(), ", ", k_in.shape(), ", ",
             v_in.shape());
  const int64_t B = q_in.size(0), NH = q_in.size(1), Tq = q_in.size(2), HS = q_in.size(3), Tk = k_in.size(2);
  LOOM_CHECK(k_in.shape() == v_in.shape() && k_in.size(0) == B && k_in.size(1) == NH && k_in.size(3) == HS,
             shape_error, "causal_attention: k ", k_in.shape(), " and v ", v_in.shape(), " do not match q ",
             q_in.shape());
  LOOM_CHECK(Tk >= Tq, shape_error, "causal_attention: fewer keys (", Tk, ") than queries (", Tq, ")");
  if constexpr (std::is_same_v<T, float>)
    if (gpu) return detail::gpu_causal_attention(q_in, k_in, v_in);
  LOOM_CHECK(!gpu, dtype_error, "causal_attention: CUDA tensors must be float");
  Tensor<T> q = detail::unit_last_stride(q_in), k = detail::unit_last_stride(k_in), v = detail::unit_last_stride(v_in);
  Tensor<T> out = detail::heads_last_layout<T>(B, NH, Tq, HS);
  Tensor<T> lse = Tensor<T>::empty({B, NH, Tq});
  if (out.numel() > 0 && Tk > 0) {
    cpu::attention_forward(out.data(), detail::attn_layout(out), lse.data(), q.data(), detail::attn_layout(q), k.data(),
                           detail::attn_layout(k), v.data(), detail::attn_layout(v), B, NH, Tq, Tk, HS);
  }
  // backward: recompute each probability tile from the saved log-sum-exp (see cpu::attention_backward)
  detail::record<T>("causal_attention", out, {&q_in, &k_in, &v_in},
                    [sq = SavedTensor<T>(q), sk = SavedTensor<T>(k), sv = SavedTensor<T>(v), so = SavedTensor<T>(out),
                     lse, B, NH, Tq, Tk, HS](const Tensor<T>& g_in) {
    const Tensor<T>&q = sq.get("causal_attention"), &k = sk.get("causal_attention"), &v = sv.get("causal_attention"),
                   &o = so.get("causal_attention");
    Tensor<T> g = detail::unit_last_stride(g_in);
    Tensor<T> dq = detail::heads_last_layout<T>(B, NH, Tq, HS), dk = detail::heads_last_layout<T>(B, NH, Tk, HS),
              dv = detail::heads_last_layout<T>(B, NH, Tk, HS);
    if (dq.numel() > 0 && Tk > 0) {
      cpu::attention_backward(dq.data(), detail::attn_layout(dq), dk.data(), detail::attn_layout(dk), dv.data(),
                              detail::attn_layout(dv), g.data(), detail::attn_layout(g), q.data(), detail::attn_layout(q),
                              k.data(), detail::attn_layout(k), v.data(), detail::attn_layout(v), o.data(),
                              detail::attn_layout(o), lse.data(), B, NH, Tq, Tk, HS);
    } else {
      dk.detach().fill_(T(0));
      dv.detach().fill_(T(0));
    }
    return std::vector<Tensor<T>>{dq, dk, dv};
  });
  return out;
}

}  // namespace loom
