#pragma once
/// @file gpu.hpp
/// The host side of the CUDA backend at the level of tensors: each function takes and returns
/// loom::Tensor (float on the GPU), allocates its outputs on the inputs' device and calls one
/// kernel of loom::cuda (backend/cuda/cuda_api.hpp). The ops in ops/*.hpp call these when their
/// inputs are on a GPU and record the backward around them, next to the CPU path.
///
/// In a build without CUDA every function here throws backend_error; no op reaches them then,
/// because no tensor can be put on a GPU in such a build.

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "loom/backend/cuda/cuda_api.hpp"
#include "loom/core/tensor.hpp"

/// The body of a function that needs the CUDA backend: the statement in a CUDA build, a
/// backend_error otherwise.
/// (Without CUDA the statement stays in an uncalled lambda: its names are checked and its
/// variables count as used, but nothing calls, or links against, the missing GPU functions.)
#if LOOM_WITH_CUDA
#define LOOM_GPU_ONLY(...) __VA_ARGS__
#else
#define LOOM_GPU_ONLY(...)                                  \
  do {                                                      \
    (void)[&]() { __VA_ARGS__; };                           \
    throw ::loom::backend_error(::loom::no_cuda_message()); \
  } while (0)
#endif

namespace loom {

/// Mixed precision on the GPU. While a guard with bf16 = true lives (on this thread), CUDA
/// matmuls and attention convert their operands to bf16 and multiply on tensor cores with fp32
/// accumulation; their outputs, the other ops, the weights and the optimizer stay fp32. The
/// backward of an op recorded under the guard uses bf16 too, wherever it runs.
class AutocastGuard {
 public:
  /// Turns bf16 autocast on (or off) until the guard is destroyed.
  explicit AutocastGuard(bool bf16 = true) : prev_(flag()) { flag() = bf16; }
  ~AutocastGuard() { flag() = prev_; }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;
  /// True while bf16 autocast is on.
  static bool bf16() { return flag(); }

 private:
  static bool& flag() {
    thread_local bool on = false;
    return on;
  }
  bool prev_;
};

/// The CUDA allocator's statistics for one GPU (bytes in use, peak, cached).
inline cuda::MemoryStats cuda_memory_stats(int device = 0) { LOOM_GPU_ONLY(return cuda::memory_stats(device)); }
/// The GPU's name and compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)".
inline std::string cuda_device_name(int device = 0) { LOOM_GPU_ONLY(return cuda::device_name(device)); }
/// Waits until the GPU has run everything queued so far (for timing).
inline void cuda_synchronize(int device = 0) { LOOM_GPU_ONLY(cuda::synchronize(device)); }
/// True when loom was built with CUDA and a GPU is present.
inline bool cuda_is_available() {
#if LOOM_WITH_CUDA
  return cuda::is_available();
#else
  return false;
#endif
}

namespace gpu {

using TF = Tensor<float>;

/// The GPU index of a CUDA tensor.
inline int dev(const TF& t) { return t.device().index; }

/// A (B, NH, T, HS) operand's strides for the attention kernels.
template <class T>
cuda::AttnStrides attn_strides(const Tensor<T>& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}

/// out = f(x; alpha) elementwise (any strides; the output is contiguous).
inline TF unary(cuda::Unary op, double alpha, const TF& x) {
  TF out = TF::empty(x.shape(), x.device());
  LOOM_GPU_ONLY(cuda::unary_f32(op, float(alpha), out.data(), x.data(),
                                detail::cuda_layout<2>(x.shape(), {out.strides(), x.strides()}), dev(x)));
  return out;
}

/// dx = g * f'(x, y; alpha) for y = f(x); x and y may be the same tensor when f' needs one.
inline TF unary_backward(cuda::Unary op, double alpha, const TF& g, const TF& x, const TF& y) {
  TF out = TF::empty(x.shape(), x.device());
  Shape gs = broadcast_strides(g.shape(), g.strides(), x.shape());
  LOOM_GPU_ONLY(cuda::unary_backward_f32(op, float(alpha), out.data(), g.data(), x.data(), y.data(),
                                         detail::cuda_layout<4>(x.shape(), {out.strides(), gs, x.strides(), y.strides()}),
                                         dev(x)));
  return out;
}

/// dx = g * f'(x; alpha) for the unary ops whose derivative needs only x (reads g and x).
inline TF unary_backward_x(cuda::Unary op, double alpha, const TF& g, const TF& x) {
  TF out = TF::empty(x.shape(), x.device());
  Shape gs = broadcast_strides(g.shape(), g.strides(), x.shape());
  LOOM_GPU_ONLY(cuda::unary_backward_x_f32(op, float(alpha), out.data(), g.data(), x.data(),
                                           detail::cuda_layout<3>(x.shape(), {out.strides(), gs, x.strides()}), dev(x)));
  return out;
}

/// out = f(a, b) with broadcasting.
inline TF binary(cuda::Binary op, const TF& a, const TF& b, const char* name) {
  Shape s = broadcast_shapes(a.shape(), b.shape(), name);
  TF out = TF::empty(s, a.device());
  LOOM_GPU_ONLY(cuda::binary_f32(op, out.data(), a.data(), b.data(),
                                 detail::cuda_layout<3>(s, {out.strides(), broadcast_strides(a.shape(), a.strides(), s),
                                                            broadcast_strides(b.shape(), b.strides(), s)}),
                                 dev(a)));
  return out;
}

/// out (g's shape) = f(g, a, b) with a and b broadcast to g's shape.
inline TF binary_backward(cuda::BinaryGrad op, const TF& g, const TF& a, const TF& b) {
  const Shape& s = g.shape();
  TF out = TF::empty(s, g.device());
  LOOM_GPU_ONLY(cuda::binary_backward_f32(op, out.data(), g.data(), a.data(), b.data(),
                                          detail::cuda_layout<4>(s, {out.strides(), g.strides(),
                                                                     broadcast_strides(a.shape(), a.strides(), s),
                                                                     broadcast_strides(b.shape(), b.strides(), s)}),
                                          dev(g)));
  return out;
}

/// Sum or mean of x over one axis (all axes when `all`), as reduce() on the CPU does.
inline TF reduce(cuda::Reduce op, const TF& x, int64_t axis, bool all, bool keepdim, const char* name) {
  TF c = x.contiguous();
  const detail::ReduceGeometry geo = detail::reduce_geometry(x.shape(), axis, all, keepdim, name);
  const int64_t outer = geo.outer, R = geo.R, inner = geo.inner;
  const Shape& out_shape = geo.out_shape;
  TF out = TF::empty(out_shape, x.device());
  LOOM_GPU_ONLY(cuda::reduce_f32(op, out.data(), c.data(), outer, R, inner, dev(x)));
  return out;
}

/// A bf16 copy of t on its GPU, in one conversion pass that keeps the layout GEMMs like: a
/// transposed matrix stays transposed (a weight's .t() view), and rows padded to an aligned
/// stride stay padded (a matmul's output with an odd width, such as the logits).
inline Tensor<bf16> to_bf16(const TF& t) {
  if (t.is_contiguous()) return t.template to<bf16>();
  if (t.dim() >= 2) {
    TF tt = t.transpose(-1, -2);
    if (tt.is_contiguous()) return tt.template to<bf16>().transpose(-1, -2);
    const int64_t cols = t.size(-1), rows = t.numel() / std::max<int64_t>(cols, 1);
    Shape st;
    if (t.stride(-1) == 1 && t.numel() > 0 && detail::view_strides(t.shape(), t.strides(), Shape{rows, cols}, st) &&
        st[0] >= cols) {
      Tensor<bf16> full = Tensor<bf16>::empty({rows, st[0]}, t.device());
      Tensor<bf16> out = full.slice(1, 0, cols);
      LOOM_GPU_ONLY(cuda::convert(out.data(), cuda::Elem::bf16, t.data(), cuda::Elem::f32,
                                  detail::cuda_layout<2>(Shape{rows, cols}, {out.strides(), st}), t.device().index));
      return out.view(t.shape());
    }
  }
  return t.contiguous().template to<bf16>();
}

/// A bf16 copy of t (..., N) whose last dimension is padded with zeros to Np (a multiple of 8):
/// (..., Np), of which [..., :N] is the copy proper. A transposed matrix (a weight's .t()) stays
/// transposed. cuBLAS picks fast tensor-core kernels only when every GEMM dimension is a
/// multiple of 8 (measured on an H100: 16384x768 @ 768x50257 ran at 96 TFLOP/s, at 575 with
/// N = 50264), and the zeros change no product.
inline Tensor<bf16> to_bf16_padded(const TF& t, int64_t Np) {
  const int64_t N = t.size(-1);
  const Device d = t.device();
  if (t.dim() == 2 && t.transpose(0, 1).is_contiguous()) {  // t = W^T with W (N, K) contiguous
    TF w = t.transpose(0, 1);
    Tensor<bf16> wp = Tensor<bf16>::empty({Np, w.size(1)}, d);
    wp.slice(0, N, Np).fill_(bf16(0.0f));
    Tensor<bf16> top = wp.slice(0, 0, N);
    LOOM_GPU_ONLY(cuda::convert(top.data(), cuda::Elem::bf16, w.data(), cuda::Elem::f32,
                                detail::cuda_layout<2>(w.shape(), {top.strides(), w.strides()}), d.index));
    return wp.t();
  }
  Shape s = t.shape();
  s[s.size() - 1] = Np;
  Tensor<bf16> full = Tensor<bf16>::empty(s, d);
  full.slice(-1, N, Np).fill_(bf16(0.0f));
  Tensor<bf16> body = full.slice(-1, 0, N);
  LOOM_GPU_ONLY(cuda::convert(body.data(), cuda::Elem::bf16, t.data(), cuda::Elem::f32,
                              detail::cuda_layout<2>(t.shape(), {body.strides(), t.strides()}), d.index));
  return full;
}

/// How cuBLAS reads one operand (element type E), or ok = false when it must be copied first.
template <class E>
cuda::GemmOperand gemm_operand(const Tensor<E>& t, bool& ok) {
  int64_t r = t.size(-2), c = t.size(-1), rs = t.stride(-2), cs = t.stride(-1);
  if (c <= 1) cs = 1;
  if (r <= 1) rs = cs == 1 ? std::max<int64_t>(c, 1) : 1;
  ok = true;
  if (cs == 1 && rs >= c) return {t.data(), false, rs, 0};
  if (rs == 1 && cs >= r) return {t.data(), true, cs, 0};
  ok = false;
  return {nullptr, false, 0, 0};
}

/// c (batch..., M, N) = a (..., M, K) @ b (..., K, N) on the GPU, batch dimensions broadcast;
/// E is float, or bf16 (fp32 accumulation). The result is a new contiguous float tensor.
template <class E>
TF matmul(const Tensor<E>& a_in, const Tensor<E>& b_in, const Shape& batch, const Shape& out_shape) {
  constexpr bool half = std::is_same_v<E, bf16>;
  const int64_t M = a_in.size(-2), K = a_in.size(-1), N = b_in.size(-1);
  // Rows of the output start at 32-byte boundaries: an odd width (the vocabulary, 50257) is
  // padded to a multiple of 8 and the result is a view of the padded buffer. cuBLAS's fast
  // tensor-core kernels need aligned rows (measured: the logits GEMM ran 6x slower unpadded).
  const int64_t ldc = (N % 8 == 0 || M <= 1) ? N : (N + 7) / 8 * 8;
  TF out;
  if (ldc == N) {
    out = TF::empty(out_shape, a_in.device());
  } else {
    Shape padded = out_shape;
    padded[padded.size() - 1] = ldc;
    out = TF::empty(padded, a_in.device()).slice(-1, 0, N);
  }
  if (out.numel() == 0) return out;
  bool oka, okb;
  gemm_operand(a_in, oka);
  gemm_operand(b_in, okb);
  Tensor<E> a = oka ? a_in : a_in.contiguous(), b = okb ? b_in : b_in.contiguous();
  cuda::GemmOperand ga = gemm_operand(a, oka), gb = gemm_operand(b, okb);
  // Batch offsets: one stride per operand when the batch dimensions flatten into one.
  Shape ab(std::vector<int64_t>(a.shape().begin(), a.shape().end() - 2));
  Shape bb(std::vector<int64_t>(b.shape().begin(), b.shape().end() - 2));
  Shape sa = broadcast_strides(ab, Shape(std::vector<int64_t>(a.strides().begin(), a.strides().end() - 2)), batch);
  Shape sb = broadcast_strides(bb, Shape(std::vector<int64_t>(b.strides().begin(), b.strides().end() - 2)), batch);
  const int64_t nbatch = numel_of(batch);
  bool flat = true;  // offset(i) = i * stride for both operands?
  int64_t fa = 0, fb = 0;
  {
    int64_t ea = -1, eb = -1, span = 1;
    for (int d = batch.size() - 1; d >= 0 && flat; --d) {
      if (batch[d] == 1) continue;
      if (ea < 0) {
        ea = sa[d], eb = sb[d], fa = ea, fb = eb;
      } else {
        flat = sa[d] == fa * span && sb[d] == fb * span;
      }
      span *= batch[d];
    }
  }
  LOOM_GPU_ONLY({
    if (flat) {
      ga.batch_stride = fa, gb.batch_stride = fb;
      cuda::gemm(half, ga, gb, out.data(), ldc, M * ldc, M, N, K, nbatch, 0.0f, dev(out));
    } else {
      for (int64_t i = 0; i < nbatch; ++i) {
        int64_t oa = 0, ob = 0, rem = i;
        for (int d = batch.size() - 1; d >= 0; --d) {
          int64_t idx = rem % batch[d];
          rem /= batch[d];
          oa += idx * sa[d], ob += idx * sb[d];
        }
        cuda::GemmOperand xa = ga, xb = gb;
        xa.ptr = a.data() + oa, xb.ptr = b.data() + ob;
        cuda::gemm(half, xa, xb, out.data() + i * M * ldc, ldc, 0, M, N, K, 1, 0.0f, dev(out));
      }
    }
  });
  return out;
}

/// Softmax or log-softmax over the last axis of a contiguous tensor.
inline TF softmax_rows(const TF& in, bool log) {
  TF out = TF::empty(in.shape(), in.device());
  int64_t C = in.dim() ? in.size(-1) : 1;
  if (in.numel() > 0) LOOM_GPU_ONLY(cuda::softmax_f32(out.data(), in.data(), in.numel() / C, C, log, dev(in)));
  return out;
}

}  // namespace gpu

}  // namespace loom
