#pragma once
/// @file attention.hpp
/// Fused causal self-attention as one autograd op: no (T, T) matrix is kept for the backward,
/// which recomputes each probability tile from the saved log-sum-exp (kernels in
/// backend/cpu/attention.hpp and backend/cuda/attention*.cuh; the derivation is in
/// docs/05-attention.md). Under AutocastGuard, on CUDA, the bf16 tensor-core kernels run.
///
/// Packed sequences: an optional kv_start (B, Tq) int32 turns the causal mask block-diagonal, so
/// several examples packed into one row do not see each other (TRL's packing with position ids;
/// FlashAttention's varlen kernels): query i of row b sees keys kv_start[b, i] <= j <= i + Tk - Tq.
/// int32 because positions are far below 2^31 (the CUDA kernels index positions with int) and
/// half the bytes of int64. With kv_start, CUDA runs the fp32 kernels even under AutocastGuard:
/// the bf16 tensor-core kernels do not take it.
///
/// Grouped-query attention: k and v may have fewer heads than q (NKV dividing NH; 1 is
/// multi-query attention); query head h reads key/value head h / (NH / NKV). The CPU kernels
/// index the shared head (no repeated copy); on CUDA the op repeats the key/value heads and runs
/// the multi-head kernels (docs/05-attention.md).

#include <vector>

#include "loom/core/tensor.hpp"

namespace loom {

namespace detail {
template <class T>
kernel::AttnStrides attn_strides(const Tensor<T>& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}
// t itself when its last stride is 1 (the kernels' one requirement on strides), else a copy.
template <class T>
Tensor<T> unit_last_stride(const Tensor<T>& t) {
  return (t.stride(-1) == 1 || t.size(-1) <= 1) ? t : t.contiguous();
}
// kv_start checked for queries (B, Tq) against Tk keys on device d, contiguous (undefined stays
// undefined). On the CPU every bound must lie in [0, i + Tk - Tq] (a query must see a key); on
// a GPU the values are not read back (no sync): the kernels clamp them to that range.
inline Tensor<int32_t> check_kv_start(const char* op, const Tensor<int32_t>& kv_start, int64_t B, int64_t Tq,
                                      int64_t Tk, Device d) {
  if (!kv_start.defined()) return kv_start;
  LOOM_CHECK(kv_start.shape() == Shape({B, Tq}), shape_error, op, ": kv_start must be (B, Tq) = ", Shape({B, Tq}),
             ", got ", kv_start.shape());
  LOOM_CHECK(kv_start.device() == d, device_error, op, ": kv_start is on ", kv_start.device(),
             " but the queries are on ", d, "; move it with .to(device)");
  Tensor<int32_t> ks = kv_start.contiguous();
  if (d.is_cpu()) {
    const int32_t* p = ks.data();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t f = p[b * Tq + i];
        LOOM_CHECK(f >= 0 && f <= i + Tk - Tq, value_error, op, ": kv_start[", b, ", ", i, "] = ", f,
                   " must lie in [0, ", i + Tk - Tq, "] (the query's own position)");
      }
  }
  return ks;
}
// A (B, NH, T, HS) tensor whose memory is laid out as (B, T, NH, HS): merging the heads back
// into (B, T, C) is then a free reshape.
template <class T>
Tensor<T> heads_last(int64_t B, int64_t NH, int64_t T_, int64_t HS, Device d) {
  return Tensor<T>::empty({B, T_, NH, HS}, d).transpose(1, 2).detach();
}

// out (B, NH, Tq, HS) and lse (B, NH, Tq) from q, k, v: the bf16 tensor-core kernels when
// `half` (CUDA under autocast; q16, k16, v16 are then filled with the contiguous bf16 copies it
// multiplies), else the fp32/fp64 flash kernels on q, k, v as laid out. `half` comes back false
// when the GPU has no bf16 tensor cores.
// kv_start (B, Tq) contiguous or undefined (then `half` must be false).
template <class T>
void attention_forward(const Tensor<T>& out, const Tensor<T>& lse, const Tensor<T>& q, const Tensor<T>& k,
                       const Tensor<T>& v, bool& half, Tensor<bf16>& q16, Tensor<bf16>& k16, Tensor<bf16>& v16,
                       const Tensor<int32_t>& kv_start) {
  const Device d = q.device();
  const int64_t B = q.size(0), NH = q.size(1), NKV = k.size(1), Tq = q.size(2), HS = q.size(3), Tk = k.size(2);
  if constexpr (std::is_same_v<T, float>) {
    if (half) {
      if (!q16.defined()) q16 = q.contiguous().template to<bf16>(), k16 = k.contiguous().template to<bf16>(),
                          v16 = v.contiguous().template to<bf16>();
      LOOM_ASSERT(out.is_contiguous());  // the bf16 kernel writes a contiguous out
      half = kernel::attention_forward_bf16(d, out.data(), lse.data(), q16.data(), k16.data(), v16.data(), B, NH, Tq, HS);
      if (half) return;
    }
  }
  half = false;
  if (out.numel() > 0 && Tk > 0)
    kernel::attention_forward(d, out.data(), attn_strides(out), lse.data(), q.data(), attn_strides(q), k.data(),
                              attn_strides(k), v.data(), attn_strides(v), B, NH, NKV, Tq, Tk, HS,
                              kv_start.defined() ? kv_start.data() : nullptr);
}

// dq, dk, dv from dout g and the forward's saved tensors (the bf16 copies when `half`).
template <class T>
void attention_backward(const Tensor<T>& dq, const Tensor<T>& dk, const Tensor<T>& dv, const Tensor<T>& g,
                        const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v, const Tensor<T>& o,
                        const Tensor<T>& lse, bool half, const Tensor<bf16>& g16, const Tensor<bf16>& q16,
                        const Tensor<bf16>& k16, const Tensor<bf16>& v16, const Tensor<int32_t>& kv_start) {
  const Device d = g.device();
  const int64_t B = dq.size(0), NH = dq.size(1), NKV = dk.size(1), Tq = dq.size(2), HS = dq.size(3), Tk = dk.size(2);
  if constexpr (std::is_same_v<T, float>) {
    if (half) {  // the bf16 kernel writes contiguous float gradients and reads a contiguous out
      Tensor<float> oc = o.contiguous();
      kernel::attention_backward_bf16(d, dq.data(), dk.data(), dv.data(), g16.data(), q16.data(), k16.data(),
                                      v16.data(), oc.data(), lse.data(), B, NH, Tq, HS);
      return;
    }
  }
  if (dq.numel() > 0 && Tk > 0) {
    kernel::attention_backward(d, dq.data(), attn_strides(dq), dk.data(), attn_strides(dk), dv.data(), attn_strides(dv),
                               g.data(), attn_strides(g), q.data(), attn_strides(q), k.data(), attn_strides(k),
                               v.data(), attn_strides(v), o.data(), attn_strides(o), lse.data(), B, NH, NKV, Tq, Tk,
                               HS, kv_start.defined() ? kv_start.data() : nullptr);
  } else {
    dk.fill_(T(0));
    dv.fill_(T(0));
  }
}

// (B, NKV, T, HS) -> (B, NKV * G, T, HS), each key/value head repeated G times in a row (head h
// of the result is head h / G of t). Differentiable: the backward sums each group's gradients.
template <class T>
Tensor<T> repeat_kv_heads(const Tensor<T>& t, int64_t G) {
  if (G == 1) return t;
  const int64_t B = t.size(0), NKV = t.size(1), T_ = t.size(2), HS = t.size(3);
  return t.unsqueeze(2).expand({B, NKV, G, T_, HS}).reshape({B, NKV * G, T_, HS});
}
}  // namespace detail

/// softmax(q k^T / sqrt(HS) + causal mask) v for q (B, NH, Tq, HS) and k, v (B, NKV, Tk, HS),
/// Tk >= Tq, where query i sits at position i + Tk - Tq (so Tq == Tk is ordinary causal
/// self-attention, and Tq < Tk attends over a KV cache). NKV divides NH: query head h reads
/// key/value head h / (NH / NKV) (grouped-query attention; NKV == NH is multi-head, NKV == 1
/// multi-query). Returns (B, NH, Tq, HS), laid out in memory as (B, Tq, NH, HS). Fused: no
/// (T, T) matrix is stored for backward. kv_start (B, Tq) int32 on q's device, optional
/// (undefined: 0 everywhere): query i of row b then sees only keys j >= kv_start[b, i], the
/// block-diagonal mask of packed sequences.
template <class T>
Tensor<T> causal_attention(const Tensor<T>& q_in, const Tensor<T>& k_in, const Tensor<T>& v_in,
                           const Tensor<int32_t>& kv_start_in = Tensor<int32_t>()) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "causal_attention: float or double");
  const Device d = detail::op_device<T>("causal_attention", q_in, k_in, v_in);
  LOOM_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4, shape_error,
             "causal_attention: q, k, v must be (B, NH, T, HS), got ", q_in.shape(), ", ", k_in.shape(), ", ",
             v_in.shape());
  const int64_t B = q_in.size(0), NH = q_in.size(1), Tq = q_in.size(2), HS = q_in.size(3), Tk = k_in.size(2),
                NKV = k_in.size(1);
  LOOM_CHECK(k_in.shape() == v_in.shape() && k_in.size(0) == B && k_in.size(3) == HS, shape_error, "causal_attention: k ",
             k_in.shape(), " and v ", v_in.shape(), " do not match q ", q_in.shape());
  LOOM_CHECK(NKV == NH || (NKV > 0 && NH % NKV == 0), shape_error, "causal_attention: the ", NKV,
             " key/value heads must divide the ", NH, " query heads (q ", q_in.shape(), ", k and v ", k_in.shape(), ")");
  LOOM_CHECK(Tk >= Tq, shape_error, "causal_attention: fewer keys (", Tk, ") than queries (", Tq, ")");
  if (d.is_cuda() && NKV < NH) {
    // The CUDA kernels are multi-head only: repeat each key/value head for its group of query
    // heads (autograd sums the group's gradients back). A native GQA CUDA kernel, which indexes
    // the shared head as the CPU one does, waits for a GPU to be tested on.
    const int64_t G = NH / NKV;
    return causal_attention(q_in, detail::repeat_kv_heads(k_in, G), detail::repeat_kv_heads(v_in, G), kv_start_in);
  }
  const Tensor<int32_t> kv_start = detail::check_kv_start("causal_attention", kv_start_in, B, Tq, Tk, d);
  Tensor<T> q = detail::unit_last_stride(q_in), k = detail::unit_last_stride(k_in), v = detail::unit_last_stride(v_in);
  // the bf16 tensor-core kernels have no kv_start: packed rows run the fp32 kernels
  bool half = AutocastGuard::bf16() && kernel::attention_bf16_supported(d, Tq, Tk, HS) && !kv_start.defined();
  Tensor<bf16> q16, k16, v16;
  // heads last in memory, so that merging them is free; contiguous for the bf16 kernel
  Tensor<T> out = half ? Tensor<T>::empty({B, NH, Tq, HS}, d) : detail::heads_last<T>(B, NH, Tq, HS, d);
  Tensor<T> lse = Tensor<T>::empty({B, NH, Tq}, d);
  detail::attention_forward(out, lse, q, k, v, half, q16, k16, v16, kv_start);
  // backward: recompute each probability tile from the saved log-sum-exp
  const Tensor<T> none;
  detail::record<T>("causal_attention", out, {&q_in, &k_in, &v_in},
                    [half, q16, k16, v16, sq = SavedTensor<T>(half ? none : q), sk = SavedTensor<T>(half ? none : k),
                     sv = SavedTensor<T>(half ? none : v), so = SavedTensor<T>(out), lse, kv_start, B, NH, NKV, Tq,
                     Tk, HS](const Tensor<T>& g_in) {
    const char* op = "causal_attention";
    const Device d = g_in.device();
    Tensor<T> g = detail::unit_last_stride(g_in);
    Tensor<T> dq = detail::heads_last<T>(B, NH, Tq, HS, d), dk = detail::heads_last<T>(B, NKV, Tk, HS, d),
              dv = detail::heads_last<T>(B, NKV, Tk, HS, d);
    Tensor<bf16> g16;
    if (half) {
      g16 = g.contiguous().template to<bf16>();
      dq = Tensor<T>::empty({B, NH, Tq, HS}, d), dk = Tensor<T>::empty({B, NH, Tk, HS}, d),
      dv = Tensor<T>::empty({B, NH, Tk, HS}, d);
    }
    detail::attention_backward(dq, dk, dv, g, sq.get(op), sk.get(op), sv.get(op), so.get(op), lse, half, g16, q16, k16,
                               v16, kv_start);
    return std::vector<Tensor<T>>{dq, dk, dv};
  });
  return out;
}

/// Causal self-attention over a packed projection qkv (B, T, 3C) = [q | k | v] with n_head heads
/// of size C / n_head, returning (B, T, C) with the heads side by side: causal_attention on the
/// three head views as one op, whose backward writes one gradient for qkv (not three slices).
/// kv_start (B, T) int32, optional: the block-diagonal mask of packed sequences, as in
/// causal_attention.
template <class T>
Tensor<T> causal_attention_packed(const Tensor<T>& qkv, int64_t n_head,
                                  const Tensor<int32_t>& kv_start_in = Tensor<int32_t>()) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "causal_attention_packed: float or double");
  const Device d = detail::op_device<T>("causal_attention_packed", qkv);
  LOOM_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0 && n_head > 0 && (qkv.size(2) / 3) % n_head == 0, shape_error,
             "causal_attention_packed: qkv must be (B, T, 3C) with C a multiple of n_head (", n_head, "), got ",
             qkv.shape());
  const int64_t B = qkv.size(0), T_ = qkv.size(1), C = qkv.size(2) / 3, NH = n_head, HS = C / n_head;
  const Tensor<int32_t> kv_start = detail::check_kv_start("causal_attention_packed", kv_start_in, B, T_, T_, d);
  // (B, T, 3C) or (B, T, C) (i = 0) -> the (B, NH, T, HS) view of part i
  auto heads = [=](const Tensor<T>& t, int64_t i) {
    return t.slice(-1, i * C, (i + 1) * C).reshape({B, T_, NH, HS}).transpose(1, 2);
  };
  Tensor<T> x = qkv.detach().contiguous();
  Tensor<T> y = Tensor<T>::empty({B, T_, C}, d), lse = Tensor<T>::empty({B, NH, T_}, d);
  // bf16 on CUDA: one pass splits (B, T, 3C) float into q, k, v (B, NH, T, HS) bf16 (16-byte loads)
  // (the bf16 kernels have no kv_start: packed rows run the fp32 kernels)
  bool half = AutocastGuard::bf16() && kernel::attention_bf16_supported(d, T_, T_, HS) &&
              reinterpret_cast<uintptr_t>(x.data()) % 16 == 0 && x.numel() > 0 && !kv_start.defined();
  Tensor<bf16> q16, k16, v16;
  if constexpr (std::is_same_v<T, float>) {
    if (half) {
      q16 = Tensor<bf16>::empty({B, NH, T_, HS}, d), k16 = Tensor<bf16>::empty({B, NH, T_, HS}, d),
      v16 = Tensor<bf16>::empty({B, NH, T_, HS}, d);
      bf16* parts[3] = {q16.data(), k16.data(), v16.data()};
      kernel::split_heads_bf16(d, parts, x.data(), 3, B, T_, NH, HS);
    }
  }
  Tensor<T> o = half ? Tensor<T>::empty({B, NH, T_, HS}, d) : heads(y, 0);
  detail::attention_forward(o, lse, heads(x, 0), heads(x, 1), heads(x, 2), half, q16, k16, v16, kv_start);
  if (half) {  // heads side by side: (B, NH, T, HS) -> (B, T, C)
    const T* from[1] = {o.data()};
    if constexpr (std::is_same_v<T, float>) kernel::merge_heads(d, y.data(), from, 1, B, T_, NH, HS);
  }
  // backward: dq, dk, dv from the saved lse, written into one (B, T, 3C) gradient
  const Tensor<T> none;
  detail::record<T>("causal_attention", y, {&qkv},
                    [half, q16, k16, v16, o, lse, sx = SavedTensor<T>(half ? none : x), sy = SavedTensor<T>(half ? none : y),
                     heads, kv_start, B, NH, T_, C, HS](const Tensor<T>& g) {
    const char* op = "causal_attention";
    const Device d = g.device();
    Tensor<T> dqkv = Tensor<T>::empty({B, T_, 3 * C}, d);
    if (half) {  // contiguous (B, NH, T, HS) gradients, then one merge into (B, T, 3C)
      Tensor<T> gc = g.contiguous();
      Tensor<bf16> g16 = Tensor<bf16>::empty({B, NH, T_, HS}, d);
      bf16* parts[1] = {g16.data()};
      if constexpr (std::is_same_v<T, float>) kernel::split_heads_bf16(d, parts, gc.data(), 1, B, T_, NH, HS);
      Tensor<T> dq = Tensor<T>::empty({B, NH, T_, HS}, d), dk = Tensor<T>::empty({B, NH, T_, HS}, d),
                dv = Tensor<T>::empty({B, NH, T_, HS}, d);
      detail::attention_backward(dq, dk, dv, g, Tensor<T>(), Tensor<T>(), Tensor<T>(), o, lse, true, g16, q16, k16, v16,
                                 kv_start);
      const T* from[3] = {dq.data(), dk.data(), dv.data()};
      if constexpr (std::is_same_v<T, float>) kernel::merge_heads(d, dqkv.data(), from, 3, B, T_, NH, HS);
    } else {  // the gradients are written straight into their slices of dqkv
      const Tensor<T>&xv = sx.get(op), &yv = sy.get(op);
      detail::attention_backward(heads(dqkv, 0), heads(dqkv, 1), heads(dqkv, 2), heads(detail::unit_last_stride(g), 0),
                                 heads(xv, 0), heads(xv, 1), heads(xv, 2), heads(yv, 0), lse, false, Tensor<bf16>(),
                                 q16, k16, v16, kv_start);
    }
    return std::vector<Tensor<T>>{dqkv};
  });
  return y;
}

}  // namespace loom
