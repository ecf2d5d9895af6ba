#pragma once
/// @file kernels.hpp
/// The seam between the ops and the backends. Every op in ops/ has one body: it checks its
/// inputs, allocates its outputs on the inputs' device, records its backward, and calls the
/// kernels below, which run the CPU kernel (backend/cpu/) or the CUDA kernel (loom::cuda,
/// backend/cuda/cuda_api.hpp) of that device. The two kernels of one function take the same
/// arguments in the same order and keep the same contract, which is stated once, at the top of
/// the CPU kernel's file (and repeated in the CUDA one).
///
///   op body (ops/*.hpp)                      kernel::layer_norm_forward(device, out, ...)
///     checks, allocates, records backward  ──> device.is_cpu() ? cpu::layer_norm_forward(...)
///                                                              : cuda::layer_norm_forward_f32(...)
///
/// Pointers are raw element pointers on the given device. The CUDA kernels compute in float: a
/// CUDA call with another element type throws dtype_error, and in a build without CUDA every
/// CUDA call throws backend_error. Ops without a CUDA kernel raise device_error before they get
/// here (detail::check_cpu).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "loom/backend/cpu/attention.hpp"
#include "loom/backend/cpu/dropout.hpp"
#include "loom/backend/cpu/elementwise.hpp"
#include "loom/backend/cpu/embedding.hpp"
#include "loom/backend/cpu/layer_norm.hpp"
#include "loom/backend/cpu/loss.hpp"
#include "loom/backend/cpu/matmul.hpp"
#include "loom/backend/cpu/reduce.hpp"
#include "loom/backend/cpu/rms_norm.hpp"
#include "loom/backend/cpu/rope.hpp"
#include "loom/backend/cpu/softmax.hpp"
#include "loom/backend/cuda/cuda_api.hpp"  // plain declarations; defined by loom::cuda
#include "loom/backend/op_codes.hpp"
#include "loom/core/device.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/parallel.hpp"
#include "loom/core/shape.hpp"

/// The body of a call that needs the CUDA backend: the statement in a CUDA build, a
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

/// A CUDA kernel call for element type T: the call when T is float, a dtype_error naming `op`
/// otherwise (the GPU kernels compute in float).
#define LOOM_CUDA_F32(T, op, ...)                                  \
  do {                                                             \
    if constexpr (std::is_same_v<T, float>) {                      \
      LOOM_GPU_ONLY(__VA_ARGS__);                                  \
    } else {                                                       \
      ::loom::kernel::detail::not_float<T>(op);                    \
    }                                                              \
  } while (0)

namespace loom {

/// Mixed precision on the GPU. While a guard with bf16 = true lives (on this thread), CUDA
/// matmuls and attention convert their operands to bf16 and multiply on tensor cores with fp32
/// accumulation; their outputs, the other ops, the weights and the optimizer stay fp32. The
/// backward of an op recorded under the guard uses bf16 too, wherever it runs. CPU ops ignore it.
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

namespace detail {
/// The CUDA kernels' copy of a StridedLayout over `shape` for N operands' strides.
template <int N>
cuda::Layout cuda_layout(const Shape& shape, const std::array<Shape, N>& strides) {
  static_assert(N <= 4, "cuda::Layout holds at most 4 operands");
  static_assert(max_dims == cuda::layout_dims, "cuda::Layout and Shape disagree on the rank limit");
  StridedLayout<N> L(shape, strides);
  cuda::Layout out;
  out.ndim = L.ndim;
  for (int d = 0; d < L.ndim; ++d) {
    out.size[d] = L.size[d];
    for (int k = 0; k < N; ++k) out.stride[k][d] = L.stride[k][d];
  }
  return out;
}
}  // namespace detail

namespace kernel {

namespace detail {
template <class T>
[[noreturn]] void not_float(const char* op) {
  throw dtype_error(::loom::detail::concat(op, ": CUDA tensors of ", dtype_name(dtype_of_v<T>),
                                           " are not supported; the GPU kernels compute in float (use .to<float>())"));
}
}  // namespace detail

// --- Elementwise --------------------------------------------------------------------------------
// Operands are strided views of `shape` (broadcast inputs have stride 0); outputs are written.

/// out = f(x; alpha) for the unary map `op`; strides of (out, x).
template <class T>
void unary(Device d, UnaryOp op, double alpha, T* out, const T* x, const Shape& shape, const std::array<Shape, 2>& st) {
  if (d.is_cpu()) return cpu::unary(op, alpha, out, x, StridedLayout<2>(shape, st));
  LOOM_CUDA_F32(T, "unary op", cuda::unary_f32(op, float(alpha), out, x, loom::detail::cuda_layout<2>(shape, st), d.index));
}

/// dx = g * f'(s; alpha), s = y for the maps of grad_needs_output(op), else x; strides of (dx, g, s).
template <class T>
void unary_backward(Device d, UnaryOp op, double alpha, T* dx, const T* g, const T* s, const Shape& shape,
                    const std::array<Shape, 3>& st) {
  if (d.is_cpu()) return cpu::unary_backward(op, alpha, dx, g, s, StridedLayout<3>(shape, st));
  if (grad_needs_output(op)) {
    LOOM_CUDA_F32(T, "unary op backward",
                  cuda::unary_backward_f32(op, float(alpha), dx, g, s, s,
                                           loom::detail::cuda_layout<4>(shape, {st[0], st[1], st[2], st[2]}), d.index));
  } else {
    LOOM_CUDA_F32(T, "unary op backward",
                  cuda::unary_backward_x_f32(op, float(alpha), dx, g, s, loom::detail::cuda_layout<3>(shape, st), d.index));
  }
}

/// out = f(a, b) for the binary map `op`; strides of (out, a, b).
template <class T>
void binary(Device d, BinaryOp op, T* out, const T* a, const T* b, const Shape& shape, const std::array<Shape, 3>& st) {
  if (d.is_cpu()) return cpu::binary(op, out, a, b, StridedLayout<3>(shape, st));
  LOOM_CUDA_F32(T, "binary op", cuda::binary_f32(op, out, a, b, loom::detail::cuda_layout<3>(shape, st), d.index));
}

/// SwiGLU forward, out = silu(gate) * up over n contiguous elements (CPU only: on CUDA the op
/// composes silu and mul); contract in backend/cpu/elementwise.hpp.
template <class T>
void swiglu_forward(Device d, T* out, const T* gate, const T* up, int64_t n) {
  LOOM_CHECK(d.is_cpu(), device_error, "swiglu: the fused kernel runs on the CPU only");
  cpu::swiglu_forward(out, gate, up, n);
}
/// SwiGLU backward: writes dgate and dup (CPU only).
template <class T>
void swiglu_backward(Device d, T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
  LOOM_CHECK(d.is_cpu(), device_error, "swiglu backward: the fused kernel runs on the CPU only");
  cpu::swiglu_backward(dgate, dup, dout, gate, up, n);
}

/// out = f(g, a, b) for the gradient map `op`; strides of (out, g, a, b).
template <class T>
void binary_backward(Device d, BinaryGradOp op, T* out, const T* g, const T* a, const T* b, const Shape& shape,
                     const std::array<Shape, 4>& st) {
  if (d.is_cpu()) return cpu::binary_backward(op, out, g, a, b, StridedLayout<4>(shape, st));
  LOOM_CUDA_F32(T, "binary op backward",
                cuda::binary_backward_f32(op, out, g, a, b, loom::detail::cuda_layout<4>(shape, st), d.index));
}

// --- Dropout ------------------------------------------------------------------------------------

/// out = x * scale where element i's draw from (seed, first) is >= p, else 0, over n contiguous
/// elements; the same elements on both backends. Contract in backend/cpu/dropout.hpp.
template <class T>
void dropout(Device d, T* out, const T* x, int64_t n, uint64_t seed, uint64_t first, double p, double scale) {
  if (d.is_cpu()) return cpu::dropout(out, x, n, seed, first, p, scale);
  LOOM_CUDA_F32(T, "dropout", cuda::dropout_f32(out, x, n, seed, first, p, scale, d.index));
}

// --- Reductions ---------------------------------------------------------------------------------

/// The accumulator type of a sum on the CPU: double for floating types, int64 for integers.
template <class T>
using sum_acc_t = std::conditional_t<is_floating_v<T>, double, int64_t>;

/// out[o, i] = sum (or mean) over r of in[o, r, i] for a contiguous (outer, R, inner) input.
/// Both backends sum in a fixed order: the same bits on every run and thread count.
template <class T>
void sum(Device d, bool mean, T* out, const T* in, int64_t outer, int64_t R, int64_t inner) {
  if (d.is_cpu()) {
    using A = std::conditional_t<is_floating_v<T>, double, sum_acc_t<T>>;
    cpu::reduce_axis<A>(
        in, outer, R, inner, A(0), [](A a, T v, int64_t) { return a + A(compute_t<T>(v)); },
        [](A a, A b) { return a + b; },
        [&](int64_t i, const A& acc) {
          out[i] = loom::detail::convert<T>(mean ? double(acc) / double(R) : acc);
        });
    return;
  }
  LOOM_CUDA_F32(T, mean ? "mean" : "sum",
                cuda::reduce_f32(mean ? ReduceOp::mean : ReduceOp::sum, out, in, outer, R, inner, d.index));
}

// --- Row-wise kernels ---------------------------------------------------------------------------

/// Softmax (or log-softmax) of each of N contiguous rows of C (backend/cpu/softmax.hpp).
template <class T>
void softmax(Device d, T* out, const T* in, int64_t N, int64_t C, bool log) {
  if (d.is_cpu()) return cpu::softmax_rows(out, in, N, C, log);
  LOOM_CUDA_F32(T, log ? "log_softmax" : "softmax", cuda::softmax_f32(out, in, N, C, log, d.index));
}

namespace detail {
/// out (n) = a + b over n contiguous elements: the residual norms' add where a device has no
/// kernel that fuses it (out may be a).
template <class T>
void add_rows(Device d, T* out, const T* a, const T* b, int64_t n) {
  const Shape all{n}, unit{1};
  binary(d, BinaryOp::add, out, a, b, all, {unit, unit, unit});
}
}  // namespace detail

/// LayerNorm forward over N rows of C, of x or (with a residual) of sum = x + residual, which it
/// writes; contract in backend/cpu/layer_norm.hpp. CUDA adds first, in a pass of its own.
template <class T>
void layer_norm_forward(Device d, T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, int64_t N, int64_t C,
                        double eps, const T* residual = nullptr, T* sum = nullptr) {
  if (d.is_cpu()) return cpu::layer_norm_forward(out, mean, rstd, x, w, b, N, C, eps, residual, sum);
  if (residual) {
    detail::add_rows(d, sum, x, residual, N * C);
    x = sum;
  }
  LOOM_CUDA_F32(T, "layer_norm", cuda::layer_norm_forward_f32(out, mean, rstd, x, w, b, N, C, float(eps), d.index));
}

/// LayerNorm backward: writes dx (+ dsum, when given), dw, db (dw and db may be null); contract in
/// backend/cpu/layer_norm.hpp. CUDA adds dsum in a pass of its own.
template <class T>
void layer_norm_backward(Device d, T* dx, T* dw, T* db, const T* g, const T* x, const T* w, const T* mean,
                         const T* rstd, int64_t N, int64_t C, const T* dsum = nullptr) {
  if (d.is_cpu()) return cpu::layer_norm_backward(dx, dw, db, g, x, w, mean, rstd, N, C, dsum);
  LOOM_CUDA_F32(T, "layer_norm backward", cuda::layer_norm_backward_f32(dx, dw, db, g, x, w, mean, rstd, N, C, d.index));
  if (dsum) detail::add_rows(d, dx, dx, dsum, N * C);
}

/// RMSNorm forward over N rows of C, of x or (with a residual) of sum = x + residual, which it
/// writes; contract in backend/cpu/rms_norm.hpp. CUDA adds first, in a pass of its own.
template <class T>
void rms_norm_forward(Device d, T* out, T* rstd, const T* x, const T* w, int64_t N, int64_t C, double eps,
                      const T* residual = nullptr, T* sum = nullptr) {
  if (d.is_cpu()) return cpu::rms_norm_forward(out, rstd, x, w, N, C, eps, residual, sum);
  if (residual) {
    detail::add_rows(d, sum, x, residual, N * C);
    x = sum;
  }
  LOOM_CUDA_F32(T, "rms_norm", cuda::rms_norm_forward_f32(out, rstd, x, w, N, C, float(eps), d.index));
}

/// RMSNorm backward: writes dx (+ dsum, when given) and dw (dw may be null); contract in
/// backend/cpu/rms_norm.hpp. CUDA adds dsum in a pass of its own.
template <class T>
void rms_norm_backward(Device d, T* dx, T* dw, const T* g, const T* x, const T* w, const T* rstd, int64_t N, int64_t C,
                       const T* dsum = nullptr) {
  if (d.is_cpu()) return cpu::rms_norm_backward(dx, dw, g, x, w, rstd, N, C, dsum);
  LOOM_CUDA_F32(T, "rms_norm backward", cuda::rms_norm_backward_f32(dx, dw, g, x, w, rstd, N, C, d.index));
  if (dsum) detail::add_rows(d, dx, dx, dsum, N * C);
}

/// out (N, C) = w[idx] for a (V, C) table; contract in backend/cpu/embedding.hpp.
template <class T>
void embedding_forward(Device d, T* out, const int64_t* idx, const T* w, int64_t N, int64_t C, int64_t V) {
  if (d.is_cpu()) return cpu::embedding_forward(out, idx, w, N, C, V);
  LOOM_CUDA_F32(T, "embedding", cuda::embedding_forward_f32(out, idx, w, N, C, V, d.index));
}

/// dw (V, C) = the scatter-add of g by idx, written whole; contract in backend/cpu/embedding.hpp.
template <class T>
void embedding_backward(Device d, T* dw, const T* g, const int64_t* idx, int64_t N, int64_t C, int64_t V) {
  if (d.is_cpu()) return cpu::embedding_backward(dw, g, idx, N, C, V);
  LOOM_CUDA_F32(T, "embedding backward", cuda::embedding_backward_f32(dw, g, idx, N, C, V, d.index));
}

/// Cross-entropy losses and log-sum-exp of N rows (row stride ld); contract in backend/cpu/loss.hpp.
template <class T>
void cross_entropy_forward(Device d, T* losses, T* lse, const T* logits, int64_t ld, const int64_t* targets, int64_t N,
                           int64_t V, int64_t ignore_index) {
  if (d.is_cpu()) return cpu::cross_entropy_forward(losses, lse, logits, ld, targets, N, V, ignore_index);
  LOOM_CUDA_F32(T, "cross_entropy",
                cuda::cross_entropy_forward_f32(losses, lse, logits, ld, targets, N, V, ignore_index, d.index));
}

/// The sum or mean of the losses and the count of rows not ignored, as scalars on the device.
template <class T>
void cross_entropy_reduce(Device d, T* out, T* count, const T* losses, const int64_t* targets, int64_t N,
                          int64_t ignore_index, bool mean) {
  if (d.is_cpu()) return cpu::cross_entropy_reduce(out, count, losses, targets, N, ignore_index, mean);
  LOOM_CUDA_F32(T, "cross_entropy",
                cuda::cross_entropy_reduce_f32(out, count, losses, targets, N, ignore_index, mean, d.index));
}

/// dlogits from the saved log-sum-exp; contract in backend/cpu/loss.hpp.
template <class T>
void cross_entropy_backward(Device d, T* dlogits, const T* dloss, bool per_row, const T* count, const T* logits,
                            const T* lse, int64_t ld, const int64_t* targets, int64_t N, int64_t V,
                            int64_t ignore_index) {
  if (d.is_cpu())
    return cpu::cross_entropy_backward(dlogits, dloss, per_row, count, logits, lse, ld, targets, N, V, ignore_index);
  LOOM_CUDA_F32(T, "cross_entropy backward",
                cuda::cross_entropy_backward_f32(dlogits, dloss, per_row, count, logits, lse, ld, targets, N, V,
                                                 ignore_index, d.index));
}

/// The same gradient written in bf16 with rows ld_out apart and the columns [V, V_out) set to 0
/// (linear_cross_entropy's backward GEMMs read it); CUDA only.
inline void cross_entropy_backward_bf16(Device d, bf16* dlogits, int64_t ld_out, int64_t V_out, const float* dloss,
                                        bool per_row, const float* count, const float* logits, const float* lse,
                                        int64_t ld, const int64_t* targets, int64_t N, int64_t V,
                                        int64_t ignore_index) {
  LOOM_CHECK(d.is_cuda(), device_error, "cross_entropy: a bf16 gradient is written on CUDA only");
  LOOM_GPU_ONLY(cuda::cross_entropy_backward_bf16(dlogits, ld_out, V_out, dloss, per_row, count, logits, lse, ld,
                                                  targets, N, V, ignore_index, d.index));
}

// --- Rotary position embedding ------------------------------------------------------------------

/// Element strides of a (B, T, H, HS) operand along B, T and H (the HS stride is 1).
using RopeStrides = cpu::RopeStrides;

/// out (B, T, H, HS, contiguous) = x (strides sx) rotated at positions pos (B, T, on the CPU),
/// by the opposite angles when `inverse`; contract in backend/cpu/rope.hpp. CPU only: on CUDA the
/// op (ops/rope.hpp) composes kernels that exist there instead of reaching this seam.
template <class T>
void rope(Device d, T* out, const T* x, RopeStrides sx, const int64_t* pos, int64_t B, int64_t T_, int64_t H,
          int64_t HS, double theta, RopeLayout layout, bool inverse) {
  LOOM_CHECK(d.is_cpu(), device_error, "rope: the fused kernel runs on the CPU only, not on ", d);
  cpu::rope(out, x, sx, pos, B, T_, H, HS, theta, layout, inverse);
}

// --- Attention ----------------------------------------------------------------------------------

/// Element strides of a (B, NH, T, HS) operand along B, NH and T (the HS stride is 1).
using AttnStrides = cpu::AttnLayout;

namespace detail {
inline cuda::AttnStrides to_cuda(AttnStrides s) { return {s.b, s.h, s.t}; }

// A contiguous (B, NH, T, HS) float buffer on a GPU, for the kernels that read and write only
// contiguous operands: strided inputs are copied in, and a strided output is copied out.
class Contiguous {
 public:
  Contiguous(float* p, AttnStrides s, int64_t B, int64_t NH, int64_t T, int64_t HS, int dev, bool input)
      : user_(p), s_(s), shape_{B, NH, T, HS}, dev_(dev) {
    if (s.t == HS && s.h == T * HS && s.b == NH * T * HS) return;  // already contiguous: used in place
    bytes_ = std::size_t(B * NH * T * HS) * sizeof(float);
    tmp_ = static_cast<float*>(cuda::malloc(bytes_ ? bytes_ : 1, dev));
    if (input) copy(tmp_, dense_strides(), user_, user_strides());
  }
  ~Contiguous() {
    if (tmp_) cuda::free(tmp_, bytes_ ? bytes_ : 1, dev_);
  }
  Contiguous(const Contiguous&) = delete;
  Contiguous& operator=(const Contiguous&) = delete;
  float* get() const { return tmp_ ? tmp_ : user_; }
  /// Copies the buffer back to the strided output (outputs only).
  void write_back() const {
    if (tmp_) copy(user_, user_strides(), tmp_, dense_strides());
  }

 private:
  Shape dense_strides() const { return loom::contiguous_strides(shape_); }
  Shape user_strides() const { return Shape{s_.b, s_.h, s_.t, 1}; }
  void copy(float* dst, const Shape& dst_st, const float* src, const Shape& src_st) const {
    cuda::copy_strided(dst, src, int(sizeof(float)), loom::detail::cuda_layout<2>(shape_, {dst_st, src_st}), dev_);
  }
  float* user_;
  AttnStrides s_;
  Shape shape_;
  int dev_;
  float* tmp_ = nullptr;
  std::size_t bytes_ = 0;
};
}  // namespace detail

/// Causal flash attention forward: out (B, NH, Tq, HS) and lse (B, NH, Tq, contiguous) from q
/// (B, NH, Tq, HS) and k, v (B, NKV, Tk, HS), each with its strides; query head h reads key/value
/// head h / (NH / NKV) (grouped-query attention); query i sits at position i + Tk - Tq; kv_start
/// (B, Tq) int32 or null: query i of row b also hides keys j < kv_start[b, i] (packed sequences).
/// Contract in backend/cpu/attention.hpp. The CUDA kernels take NKV == NH only (the op repeats
/// the key/value heads on CUDA; a native GQA CUDA kernel waits for a GPU to test it on).
template <class T>
void attention_forward(Device d, T* out, AttnStrides so, T* lse, const T* q, AttnStrides sq, const T* k,
                       AttnStrides sk, const T* v, AttnStrides sv, int64_t B, int64_t NH, int64_t NKV, int64_t Tq,
                       int64_t Tk, int64_t HS, const int32_t* kv_start = nullptr) {
  if (d.is_cpu()) return cpu::attention_forward(out, so, lse, q, sq, k, sk, v, sv, B, NH, NKV, Tq, Tk, HS, kv_start);
  LOOM_CHECK(NKV == NH, value_error, "causal_attention: the CUDA kernels need as many key/value heads as query heads (",
             NKV, " vs ", NH, "); repeat them first");
  using detail::to_cuda;
  LOOM_CUDA_F32(T, "causal_attention",
                cuda::attention_forward_f32(out, to_cuda(so), lse, q, to_cuda(sq), k, to_cuda(sk), v, to_cuda(sv), B,
                                            NH, Tq, Tk, HS, kv_start, d.index));
}

/// Its backward from the saved lse (and the same kv_start): writes dq (NH heads), dk and dv (NKV heads), each with its
/// strides. The CUDA kernel
/// reads and writes contiguous operands; strided ones go through contiguous copies here.
template <class T>
void attention_backward(Device d, T* dq, AttnStrides sdq, T* dk, AttnStrides sdk, T* dv, AttnStrides sdv, const T* g,
                        AttnStrides sg, const T* q, AttnStrides sq, const T* k, AttnStrides sk, const T* v,
                        AttnStrides sv, const T* o, AttnStrides so, const T* lse, int64_t B, int64_t NH, int64_t NKV,
                        int64_t Tq, int64_t Tk, int64_t HS, const int32_t* kv_start = nullptr) {
  if (d.is_cpu())
    return cpu::attention_backward(dq, sdq, dk, sdk, dv, sdv, g, sg, q, sq, k, sk, v, sv, o, so, lse, B, NH, NKV, Tq, Tk,
                                   HS, kv_start);
  LOOM_CHECK(NKV == NH, value_error, "causal_attention backward: the CUDA kernels need as many key/value heads as "
             "query heads (", NKV, " vs ", NH, ")");
  LOOM_CUDA_F32(T, "causal_attention backward", {
    using C = detail::Contiguous;
    auto in = [&](const float* p, AttnStrides s, int64_t T_) { return C(const_cast<float*>(p), s, B, NH, T_, HS, d.index, true); };
    C cq = in(q, sq, Tq), ck = in(k, sk, Tk), cv = in(v, sv, Tk), co = in(o, so, Tq), cg = in(g, sg, Tq);
    C cdq(dq, sdq, B, NH, Tq, HS, d.index, false), cdk(dk, sdk, B, NH, Tk, HS, d.index, false),
        cdv(dv, sdv, B, NH, Tk, HS, d.index, false);
    cuda::attention_backward_f32(cdq.get(), cdk.get(), cdv.get(), cg.get(), cq.get(), ck.get(), cv.get(), co.get(), lse,
                                 B, NH, Tq, Tk, HS, kv_start, d.index);
    cdq.write_back(), cdk.write_back(), cdv.write_back();
  });
}

/// True when the device has bf16 tensor-core attention for these shapes (CUDA: Tq == Tk, HS 64).
inline bool attention_bf16_supported(Device d, int64_t Tq, int64_t Tk, int64_t HS) {
  return d.is_cuda() && Tq == Tk && HS == 64;
}

/// Causal attention on bf16 tensor cores (CUDA only): q, k, v contiguous bf16 (B, NH, T, HS);
/// out, lse float. Returns false, doing nothing, when the GPU has no bf16 tensor cores.
inline bool attention_forward_bf16(Device d, float* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                   int64_t B, int64_t NH, int64_t T, int64_t HS) {
  LOOM_CHECK(d.is_cuda(), device_error, "causal_attention: the bf16 kernels run on CUDA only");
  bool ran = false;
  LOOM_GPU_ONLY(ran = cuda::attention_forward_bf16(out, lse, q, k, v, B, NH, T, HS, d.index));
  return ran;
}

/// The bf16 backward (CUDA only): dq, dk, dv float contiguous; dout bf16.
inline void attention_backward_bf16(Device d, float* dq, float* dk, float* dv, const bf16* g, const bf16* q,
                                    const bf16* k, const bf16* v, const float* o, const float* lse, int64_t B,
                                    int64_t NH, int64_t T, int64_t HS) {
  LOOM_CHECK(d.is_cuda(), device_error, "causal_attention backward: the bf16 kernels run on CUDA only");
  bool ran = false;
  LOOM_GPU_ONLY(ran = cuda::attention_backward_bf16(dq, dk, dv, g, q, k, v, o, lse, B, NH, T, HS, d.index));
  LOOM_CHECK(ran, backend_error, "causal_attention backward: the bf16 kernel refused shapes its forward accepted");
}

/// Splits a contiguous (B, T, P*NH*HS) float tensor into P contiguous (B, NH, T, HS) bf16
/// tensors, converting on the way (CUDA only; HS % 8 == 0).
inline void split_heads_bf16(Device d, bf16* const* out, const float* in, int P, int64_t B, int64_t T, int64_t NH,
                             int64_t HS) {
  LOOM_CHECK(d.is_cuda(), device_error, "split_heads_bf16: runs on CUDA only");
  void* parts[3] = {};
  for (int i = 0; i < P && i < 3; ++i) parts[i] = out[i];
  LOOM_GPU_ONLY(cuda::split_heads_bf16(parts, in, P, B, T, NH, HS, d.index));
}

/// Merges P contiguous (B, NH, T, HS) float tensors into one contiguous (B, T, P*NH*HS).
inline void merge_heads(Device d, float* out, const float* const* in, int P, int64_t B, int64_t T, int64_t NH,
                        int64_t HS) {
  if (d.is_cpu()) {
    const int64_t C = NH * HS;
    parallel_for(0, B * T, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(P * C, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t bt = lo; bt < hi; ++bt) {
        const int64_t b = bt / T, t = bt % T;
        for (int p = 0; p < P; ++p)
          for (int64_t h = 0; h < NH; ++h)
            std::copy(in[p] + ((b * NH + h) * T + t) * HS, in[p] + ((b * NH + h) * T + t + 1) * HS,
                      out + bt * P * C + p * C + h * HS);
      }
    });
    return;
  }
  if (HS % 4 == 0) {
    LOOM_GPU_ONLY(cuda::merge_heads_f32(out, in, P, B, T, NH, HS, d.index));
    return;
  }
  const Shape shape{B, NH, T, HS};  // one strided copy per part
  for (int p = 0; p < P; ++p)
    LOOM_GPU_ONLY(cuda::copy_strided(out + p * NH * HS, in[p], int(sizeof(float)),
                                     loom::detail::cuda_layout<2>(shape, {Shape{T * P * NH * HS, HS, P * NH * HS, 1},
                                                                          contiguous_strides(shape)}),
                                     d.index));
}

// --- Conversions --------------------------------------------------------------------------------

/// out = in rounded to bf16 (to nearest even); strides of (out, in).
inline void to_bf16(Device d, bf16* out, const float* in, const Shape& shape, const std::array<Shape, 2>& st) {
  if (d.is_cpu()) return cpu::map_unary(out, in, StridedLayout<2>(shape, st), [](float v) { return v; });
  LOOM_GPU_ONLY(cuda::convert(out, cuda::Elem::bf16, in, cuda::Elem::f32, loom::detail::cuda_layout<2>(shape, st), d.index));
}

// --- Matrix products ----------------------------------------------------------------------------

/// One operand of a batched GEMM: element (r, c) of batch entry i sits at
/// ptr[i * batch_stride + r * ld + c], or at ptr[i * batch_stride + c * ld + r] when transposed.
template <class E>
struct MatOperand {
  const E* ptr;
  bool transposed;
  int64_t ld, batch_stride;
};

/// c[i] (M, N) = a[i] (M, K) @ b[i] (K, N) (+ bias (N) on every row, when not null) for i < batch,
/// c[i] at c + i * c_batch_stride with row stride ldc, written (not added to). The CPU multiplies
/// T = float or double (E = T); CUDA multiplies float, or bf16 operands (E = bf16) with fp32
/// accumulation, into float, and adds the bias in the GEMM's epilogue. With a_row_sums, CUDA may
/// also write the sums of a's rows (M values) from the epilogue of one product: returns true when
/// it did (never on the CPU), false when the caller must compute them.
template <class E, class T>
bool gemm(Device d, MatOperand<E> a, MatOperand<E> b, T* c, int64_t ldc, int64_t c_batch_stride, int64_t M,
          int64_t N, int64_t K, int64_t batch, const T* bias = nullptr, T* a_row_sums = nullptr) {
  if (d.is_cpu()) {
    if constexpr (std::is_same_v<E, T>) {
      auto one = [&](int64_t i) {
        cpu::gemm(c + i * c_batch_stride, ldc, a.ptr + i * a.batch_stride, !a.transposed, a.ld,
                  b.ptr + i * b.batch_stride, !b.transposed, b.ld, M, N, K);
      };
      // Several products that are each small (under 2^26 multiply-adds, e.g. attention heads): one
      // product per thread, each run serially by Eigen; Eigen's own threading does not pay at that
      // size (measured: 2x slower at 256x64x256). Otherwise one after another, each split by Eigen.
      if (batch > 1 && M * N * K < (int64_t(1) << 26)) {
        parallel_for(0, batch, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) one(i);
        });
      } else {
        for (int64_t i = 0; i < batch; ++i) one(i);
      }
      if (bias)  // then the bias on every row of every product, the rows split among the threads
        for_each_row(batch * M, N, [&](int64_t r) {
          T* row = c + (r / M) * c_batch_stride + (r % M) * ldc;
          for (int64_t n = 0; n < N; ++n) row[n] += bias[n];
        });
      return false;
    } else {
      throw device_error("matmul: bf16 operands are multiplied on CUDA only");
    }
  }
  if constexpr (std::is_same_v<T, float> && (std::is_same_v<E, float> || std::is_same_v<E, bf16>)) {
    cuda::GemmOperand ga{a.ptr, a.transposed, a.ld, a.batch_stride}, gb{b.ptr, b.transposed, b.ld, b.batch_stride};
    LOOM_GPU_ONLY(return cuda::gemm(std::is_same_v<E, bf16>, ga, gb, c, ldc, c_batch_stride, M, N, K, batch, 0.0f, bias,
                                    a_row_sums, d.index));
  } else {
    detail::not_float<T>("matmul");
  }
  return false;
}

}  // namespace kernel

}  // namespace loom
