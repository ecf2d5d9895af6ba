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

// Attention over a packed (B, T, 3C) [q | k | v] projection on the GPU, returning (B, T, C)
// with the heads side by side. One gradient tensor for the packed input is written directly
// (three strided copies), where three slice gradients would each allocate and add a (B, T, 3C).
inline Tensor<float> gpu_attention_packed(const Tensor<float>& qkv_in, int64_t NH) {
  using TF = Tensor<float>;
  const Device d = qkv_in.device();
  const int64_t B = qkv_in.size(0), T = qkv_in.size(1), C = qkv_in.size(2) / 3, HS = C / NH;
  TF qkv = qkv_in.detach().contiguous();
  auto heads = [=](const auto& t, int64_t i) {  // (B, T, 3C) or (B, T, C) (i = 0) -> (B, NH, T, HS) view
    return t.slice(-1, i * C, (i + 1) * C).reshape({B, T, NH, HS}).transpose(1, 2);
  };
  TF y = TF::empty({B, T, C}, d), lse = TF::empty({B, NH, T}, d), o;
  // the bf16 kernels take HS 64, and the head split reads qkv with 16-byte loads
  bool half = AutocastGuard::bf16() && HS == 64 && reinterpret_cast<uintptr_t>(qkv.data()) % 16 == 0;
  Tensor<bf16> q16, k16, v16;
  if (half) {
    // one pass: (B, T, 3C) float -> q, k, v as (B, NH, T, HS) bf16
    q16 = Tensor<bf16>::empty({B, NH, T, HS}, d), k16 = Tensor<bf16>::empty({B, NH, T, HS}, d),
    v16 = Tensor<bf16>::empty({B, NH, T, HS}, d);
    void* parts[3] = {q16.data(), k16.data(), v16.data()};
    LOOM_GPU_ONLY(cuda::split_heads_bf16(parts, qkv.data(), 3, B, T, NH, HS, d.index));
    o = TF::empty({B, NH, T, HS}, d);
    LOOM_GPU_ONLY(half = cuda::attention_forward_bf16(o.data(), lse.data(), q16.data(), k16.data(), v16.data(), B, NH, T,
                                                      HS, d.index));
    const float* heads_in[1] = {o.data()};
    if (half) LOOM_GPU_ONLY(cuda::merge_heads_f32(y.data(), heads_in, 1, B, T, NH, HS, d.index));  // heads side by side
  }
  if (!half) {
    TF yv = heads(y, 0), q = heads(qkv, 0), k = heads(qkv, 1), v = heads(qkv, 2);
    LOOM_GPU_ONLY(cuda::attention_forward_f32(yv.data(), gpu::attn_strides(yv), lse.data(), q.data(), gpu::attn_strides(q),
                                              k.data(), gpu::attn_strides(k), v.data(), gpu::attn_strides(v), B, NH, T, T,
                                              HS, d.index));
  }
  // backward: dq, dk, dv from the saved lse, written into one (B, T, 3C) gradient
  record<float>("causal_attention", y, {&qkv_in},
                [half, q16, k16, v16, o, lse, sqkv = SavedTensor<float>(half ? TF() : qkv),
                 sy = SavedTensor<float>(half ? TF() : y), heads, B, NH, T, C, HS](const TF& g) {
    const Device d = g.device();
    TF dq = TF::empty({B, NH, T, HS}, d), dk = TF::empty({B, NH, T, HS}, d), dv = TF::empty({B, NH, T, HS}, d);
    if (half) {
      Tensor<bf16> g16 = Tensor<bf16>::empty({B, NH, T, HS}, d);
      TF gc = g.contiguous();
      void* parts[1] = {g16.data()};
      LOOM_GPU_ONLY(cuda::split_heads_bf16(parts, gc.data(), 1, B, T, NH, HS, d.index));
      bool ran = false;
      LOOM_GPU_ONLY(ran = cuda::attention_backward_bf16(dq.data(), dk.data(), dv.data(), g16.data(), q16.data(),
                                                        k16.data(), v16.data(), o.data(), lse.data(), B, NH, T, HS,
                                                        d.index));
      LOOM_CHECK(ran, backend_error, "causal_attention backward: the bf16 kernel refused shapes its forward accepted");
    } else {
      const TF &p = sqkv.get("causal_attention"), &yv = sy.get("causal_attention");
      TF q = heads(p, 0).contiguous(), k = heads(p, 1).contiguous(), v = heads(p, 2).contiguous();
      TF oc = heads(yv, 0).contiguous(), gc = heads(g, 0).contiguous();
      LOOM_GPU_ONLY(cuda::attention_backward_f32(dq.data(), dk.data(), dv.data(), gc.data(), q.data(), k.data(), v.data(),
                                                 oc.data(), lse.data(), B, NH, T, T, HS, d.index));
    }
    TF dqkv = TF::empty({B, T, 3 * C}, d);
    if (HS % 4 == 0) {
      const float* parts[3] = {dq.data(), dk.data(), dv.data()};
      LOOM_GPU_ONLY(cuda::merge_heads_f32(dqkv.data(), parts, 3, B, T, NH, HS, d.index));
    } else {
      heads(dqkv, 0).copy_(dq), heads(dqkv, 1).copy_(dk), heads(dqkv, 2).copy_(dv);
    }
    return std::vector<TF>{dqkv};
  });
  return y;
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

/// Causal self-attention over a packed projection qkv (B, T, 3C) = [q | k | v] with n_head heads
/// of size C / n_head: causal_attention on the three head views, with the heads merged back
/// into (B, T, C). On the GPU its backward writes one gradient for qkv instead of three.
template <class T>
Tensor<T> causal_attention_packed(const Tensor<T>& qkv, int64_t n_head) {
  LOOM_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0 && n_head > 0 && (qkv.size(2) / 3) % n_head == 0, shape_error,
             "causal_attention_packed: qkv must be (B, T, 3C) with C a multiple of n_head (", n_head, "), got ",
             qkv.shape());
  const int64_t B = qkv.size(0), T_ = qkv.size(1), C = qkv.size(2) / 3, HS = C / n_head;
  if constexpr (std::is_same_v<T, float>)
    if (qkv.device().is_cuda() && qkv.numel() > 0) return detail::gpu_attention_packed(qkv, n_head);
  auto heads = [&](int64_t i) { return qkv.slice(-1, i * C, (i + 1) * C).reshape({B, T_, n_head, HS}).transpose(1, 2); };
  return causal_attention(heads(0), heads(1), heads(2)).transpose(1, 2).reshape({B, T_, C});
}

}  // namespace loom
