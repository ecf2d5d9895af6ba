#pragma once
/// @file cuda_api.hpp
/// Host-callable declarations of the CUDA backend. No CUDA types appear here, so g++ can
/// compile any file that includes it; the definitions come from one nvcc translation unit
/// (backend_impl.cuh, built into the loom::cuda target). Include it only when LOOM_WITH_CUDA.
///
/// Conventions: pointers are device pointers unless a name says host; every call runs on the
/// device's one loom stream and returns without waiting, except the ones that hand a value back
/// to the host (they synchronize). Errors throw loom::cuda_error with file:line.

#include <cstddef>
#include <cstdint>
#include <string>

#include "loom/backend/op_codes.hpp"

namespace loom::cuda {

/// The most dimensions an elementwise layout has (the same as loom::max_dims).
inline constexpr int layout_dims = 8;

/// Sizes plus up to four operands' element strides, iterated together (a plain copy of
/// loom::StridedLayout, so that kernels can take it by value).
struct Layout {
  int ndim = 0;
  int64_t size[layout_dims] = {};
  int64_t stride[4][layout_dims] = {};
};

// --- Runtime -------------------------------------------------------------------------------

/// True when the CUDA runtime finds at least one usable GPU.
bool is_available();
/// Number of visible CUDA devices (0 when there is no driver or no GPU).
int device_count();
/// The device's name and compute capability, e.g. "NVIDIA H100 (sm_90)".
std::string device_name(int device);
/// Makes `device` current and checks that this build has machine code for it: throws
/// cuda_error naming the device's compute capability and the architectures compiled in.
void check_device(int device);
/// Waits for all work queued on the device's loom stream.
void synchronize(int device);
/// True when `p` points into GPU memory (cudaMalloc'd or managed); false for host memory.
bool is_device_pointer(const void* p);

/// Allocates `bytes` on GPU `device` from the caching allocator; throws cuda_error on failure.
void* malloc(std::size_t bytes, int device);
/// Returns memory from loom::cuda::malloc to the cache (never throws).
void free(void* ptr, std::size_t bytes, int device) noexcept;

/// The caching allocator's counters for one device, in bytes.
struct MemoryStats {
  std::size_t in_use = 0;   ///< held by live tensors
  std::size_t peak = 0;     ///< the most in_use has been since the last reset
  std::size_t cached = 0;   ///< freed blocks kept for reuse (not returned to the driver)
  uint64_t allocations = 0; ///< calls to malloc
  uint64_t cache_hits = 0;  ///< of those, served from the cache
};
/// The allocator's statistics for `device`.
MemoryStats memory_stats(int device);
/// Sets the peak back to the bytes in use now.
void reset_peak_memory(int device);
/// Returns every cached block of `device` to the driver.
void empty_cache(int device);

/// Copies host → device (waits for the copy: the host buffer may be reused at once).
void memcpy_h2d(void* dst, const void* src, std::size_t bytes, int device);
/// Copies device → host (waits for queued work and for the copy).
void memcpy_d2h(void* dst, const void* src, std::size_t bytes, int device);
/// Copies device → device on the loom stream.
void memcpy_d2d(void* dst, const void* src, std::size_t bytes, int device);

/// Lets fp32 matmuls use TF32 tensor cores (off by default, as in PyTorch).
void set_allow_tf32(bool on);
/// True when fp32 matmuls may use TF32.
bool allow_tf32();

// --- Elementwise (elementwise.cuh) ---------------------------------------------------------

/// The op codes of backend/op_codes.hpp, under the names the kernels use.
using Unary = ::loom::UnaryOp;
using Binary = ::loom::BinaryOp;
using BinaryGrad = ::loom::BinaryGradOp;

/// out = f(x; alpha) for float; L holds (out, x).
void unary_f32(Unary op, float alpha, float* out, const float* x, const Layout& L, int device);
/// dx = g * f'(x, y; alpha) for the unary op (y = f(x)); L holds (dx, g, x, y).
void unary_backward_f32(Unary op, float alpha, float* dx, const float* g, const float* x, const float* y,
                        const Layout& L, int device);
/// dx = g * f'(x; alpha) for ops whose derivative needs only x; L holds (dx, g, x).
void unary_backward_x_f32(Unary op, float alpha, float* dx, const float* g, const float* x, const Layout& L, int device);
/// out = f(a, b); L holds (out, a, b) with broadcast strides (0 along stretched dimensions).
void binary_f32(Binary op, float* out, const float* a, const float* b, const Layout& L, int device);
/// out = f(g, a, b) for the binary ops' gradients; L holds (out, g, a, b).
void binary_backward_f32(BinaryGrad op, float* out, const float* g, const float* a, const float* b,
                         const Layout& L, int device);
/// out = in elementwise for any element size of 1, 2, 4 or 8 bytes; L holds (out, in).
void copy_strided(void* out, const void* in, int elem_bytes, const Layout& L, int device);
/// Sets every element of out (L holds (out)) to the value whose bytes are `bits`.
void fill(void* out, int elem_bytes, uint64_t bits, const Layout& L, int device);

/// The floating element types the GPU converts between.
enum class Elem : int { f32, bf16, f16 };
/// out = in converted (round to nearest even); L holds (out, in) strides in elements.
void convert(void* out, Elem out_type, const void* in, Elem in_type, const Layout& L, int device);

// --- Reductions (reduce.cuh) -----------------------------------------------------------------

/// The reductions over one axis.
using Reduce = ::loom::ReduceOp;
/// out[o, i] = reduce_r in[o, r, i] for a contiguous (outer, R, inner) input.
void reduce_f32(Reduce op, float* out, const float* in, int64_t outer, int64_t R, int64_t inner, int device);
/// The sum of squares of several float arrays together, accumulated in double in a fixed order
/// (the same bits on every run); waits for the result.
double sum_of_squares_f32(const float* const* arrays, const int64_t* sizes, int count, int device);
/// x[i] *= alpha for n contiguous elements.
void scale_f32(float* x, float alpha, int64_t n, int device);

// --- Dropout: dropout.cuh ------------------------------------------------------------------------

/// out = x * scale where element i's draw from (seed, first) is >= p, else 0 (backend/cpu/dropout.hpp).
void dropout_f32(float* out, const float* x, int64_t n, uint64_t seed, uint64_t first, double p, double scale,
                 int device);

// --- Row-wise kernels: softmax.cuh, layer_norm.cuh, rms_norm.cuh, embedding.cuh, loss.cuh -------

/// Softmax (or log-softmax) of each of N contiguous rows of C.
void softmax_f32(float* out, const float* in, int64_t N, int64_t C, bool log, int device);
/// Its backward from y = the forward's output: dx = y (g - sum g y), or g - e^y sum g for log.
void softmax_backward_f32(float* dx, const float* g, const float* y, int64_t N, int64_t C, bool log, int device);

/// LayerNorm over rows of C: out = (x - mean) * rstd * w + b; saves mean and rstd (N each).
/// w and b may be null (no affine part).
void layer_norm_forward_f32(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b,
                            int64_t N, int64_t C, float eps, int device);
/// The fused backward: dx, and (when not null) dw = sum_n g xhat, db = sum_n g, all written (not added).
void layer_norm_backward_f32(float* dx, float* dw, float* db, const float* g, const float* x, const float* w,
                             const float* mean, const float* rstd, int64_t N, int64_t C, int device);
/// RMSNorm over rows of C: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) saved when not null; w may be null.
void rms_norm_forward_f32(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps,
                          int device);
/// Its fused backward: dx, and (when not null) dw = sum_n g xhat, both written (not added); w may be null.
void rms_norm_backward_f32(float* dx, float* dw, const float* g, const float* x, const float* w, const float* rstd,
                           int64_t N, int64_t C, int device);

/// out[n] = w[idx[n]] for N rows of C; throws index_error for an index outside [0, V).
void embedding_forward_f32(float* out, const int64_t* idx, const float* w, int64_t N, int64_t C, int64_t V,
                           int device);
/// dw (V, C) = sum over n with idx[n] == v of g[n], written whole, deterministically (rows
/// with the same index are added in the order they appear).
void embedding_backward_f32(float* dw, const float* g, const int64_t* idx, int64_t N, int64_t C, int64_t V,
                            int device);

/// Cross-entropy of N rows of V logits (row n at logits + n * ld; dlogits alike) against int64 targets, fused with the log-softmax:
/// losses (N) = lse - logits[target] (0 where the target is ignore_index) and lse (N) = log sum
/// exp of each row. Throws index_error for a target outside [0, V) other than ignore_index
/// (it waits for that check).
void cross_entropy_forward_f32(float* losses, float* lse, const float* logits, int64_t ld, const int64_t* targets,
                               int64_t N, int64_t V, int64_t ignore_index, int device);
/// out (a scalar) = the sum of losses, or their mean over the rows not ignored (mean == true);
/// count (a scalar) = the number of rows not ignored. Summed in double in a fixed order.
void cross_entropy_reduce_f32(float* out, float* count, const float* losses, const int64_t* targets, int64_t N,
                              int64_t ignore_index, bool mean, int device);
/// dlogits = (softmax(logits) - onehot(target)) * dloss[n], recomputed from the saved lse (no
/// probabilities are stored). dloss is one value per row (per_row) or one scalar; when count is
/// not null, dloss is divided by it (mean). Ignored rows get 0.
void cross_entropy_backward_f32(float* dlogits, const float* dloss, bool per_row, const float* count,
                                const float* logits, const float* lse, int64_t ld, const int64_t* targets, int64_t N,
                                int64_t V, int64_t ignore_index, int device);
/// The same gradient in bf16 (dlogits: __nv_bfloat16, rows ld_out apart), with the columns
/// [V, V_out) written as 0: the operand of a fused lm_head's backward GEMMs.
void cross_entropy_backward_bf16(void* dlogits, int64_t ld_out, int64_t V_out, const float* dloss, bool per_row,
                                 const float* count, const float* logits, const float* lse, int64_t ld,
                                 const int64_t* targets, int64_t N, int64_t V, int64_t ignore_index, int device);

// --- Attention (attention.cuh) ----------------------------------------------------------------

/// Element strides of a (B, NH, T, HS) operand along B, NH and T (the HS stride is 1).
struct AttnStrides {
  int64_t b, h, t;
};
/// Causal flash attention forward, fp32: out (B, NH, Tq, HS), lse (B, NH, Tq) contiguous.
/// Query i sits at position i + Tk - Tq. HS must be at most 128. kv_start: null, or a contiguous
/// (B, Tq) int32 device array; query i of row b then sees keys kv_start[b, i] <= j only (packing).
void attention_forward_f32(float* out, AttnStrides so, float* lse, const float* q, AttnStrides sq, const float* k,
                           AttnStrides sk, const float* v, AttnStrides sv, int64_t B, int64_t NH, int64_t Tq,
                           int64_t Tk, int64_t HS, const int32_t* kv_start, int device);
/// Its backward from the saved lse and the same kv_start: writes dq, dk, dv (same strides as q, k,
/// v, which must be contiguous (B, NH, T, HS) here, as must dout and out).
void attention_backward_f32(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                            const float* v, const float* out, const float* lse, int64_t B, int64_t NH, int64_t Tq,
                            int64_t Tk, int64_t HS, const int32_t* kv_start, int device);
/// Causal flash attention on bf16 tensor cores (mma.sync, fp32 accumulation). q, k, v, dout are
/// contiguous bf16 (B, NH, T, HS) with Tq == Tk == T and HS == 64; out, lse, dq, dk, dv as in
/// the fp32 path (float). Returns false, doing nothing, for shapes it does not handle.
bool attention_forward_bf16(float* out, float* lse, const void* q, const void* k, const void* v, int64_t B,
                            int64_t NH, int64_t T, int64_t HS, int device);
/// The bf16 backward: dq, dk, dv float (B, NH, T, HS) contiguous.
bool attention_backward_bf16(float* dq, float* dk, float* dv, const void* dout, const void* q, const void* k,
                             const void* v, const float* out, const float* lse, int64_t B, int64_t NH, int64_t T,
                             int64_t HS, int device);

/// Splits a contiguous (B, T, P*NH*HS) float tensor into P contiguous (B, NH, T, HS) bf16
/// tensors out[0..P) (P = 3: q, k, v), converting on the way; HS % 8 == 0. One pass.
void split_heads_bf16(void* const* out, const float* in, int P, int64_t B, int64_t T, int64_t NH, int64_t HS,
                      int device);
/// The reverse, in float: P contiguous (B, NH, T, HS) tensors in[0..P) into one contiguous
/// (B, T, P*NH*HS); HS % 4 == 0. One pass.
void merge_heads_f32(float* out, const float* const* in, int P, int64_t B, int64_t T, int64_t NH, int64_t HS,
                     int device);

// --- Matmul (matmul.cuh) ----------------------------------------------------------------------

/// One row-major operand of a batched product: element (r, c) of batch i sits at
/// ptr[i * batch_stride + r * ld + c] (or at c * ld + r when transposed).
struct GemmOperand {
  const void* ptr;
  bool transposed;
  int64_t ld, batch_stride;
};
/// c (batch, M, N) = a (M, K) @ b (K, N) + beta * c (+ bias (N) on every row, when not null),
/// through cuBLAS (cuBLASLt's bias epilogue for one product with a bias). a and b hold float, or
/// bf16 when `bf16` (fp32 accumulation); c is float with leading dimension ldc. With a_row_sums
/// (and no bias), one product may also write the sums of a's rows (M) from cuBLASLt's epilogue:
/// returns true when it did, false when the caller must compute them.
bool gemm(bool bf16, GemmOperand a, GemmOperand b, float* c, int64_t ldc, int64_t c_batch_stride, int64_t M,
          int64_t N, int64_t K, int64_t batch, float beta, const float* bias, float* a_row_sums, int device);

// --- Optimizers (optim.cuh) -------------------------------------------------------------------

/// The scalars of one Adam/AdamW step (the same fields as optim_detail::AdamScalars).
struct AdamParams {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bias_correction2_sqrt, eps, l2, decay_factor;
};
/// One fused Adam/AdamW update of n elements: p, m, v in place from g, fp32 master weights.
void adam_f32(float* p, float* m, float* v, const float* g, int64_t n, const AdamParams& s, int device);

}  // namespace loom::cuda
