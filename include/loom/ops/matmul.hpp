#pragma once
/// @file matmul.hpp
/// Matrix products: 2-D, batched with broadcast batch dimensions, and NumPy's 1-D promotion.
/// Transposed views (x.transpose(-1, -2)) are read in place, without a copy. One body for every
/// device: the GEMM is the seam's kernel::gemm (Eigen or loom's AVX-512 kernel on the CPU,
/// cuBLAS on CUDA); under AutocastGuard a CUDA product takes bf16 operands.

#include <algorithm>
#include <vector>

#include "loom/core/tensor.hpp"

namespace loom {

namespace detail {

// How one batch entry of a matrix operand is read by the GEMM: row-major or column-major, with
// its leading dimension. `ok` is false when neither inner stride is 1 (a copy is needed).
struct MatLayout {
  bool ok, rowmajor;
  int64_t ld;
};
inline MatLayout mat_layout(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  // A stride along a dimension of size 1 is never used: pick the one that makes the layout valid.
  if (cols <= 1) col_stride = 1;
  if (rows <= 1) row_stride = col_stride == 1 ? std::max<int64_t>(cols, 1) : 1;
  if (col_stride == 1 && row_stride >= cols) return {true, true, row_stride};
  if (row_stride == 1 && col_stride >= rows) return {true, false, col_stride};
  return {false, true, 0};  // e.g. a broadcast (stride 0) or a strided slice: copy first
}

// The batch shape (broadcast) and the output shape of a (..., M, K) @ (..., K, N); throws
// shape_error naming a_orig and b_orig (the user's operands) when K differs.
struct MatmulShapes {
  Shape batch_a, batch_b, batch, out;
};
inline MatmulShapes matmul_shapes(const Shape& a, const Shape& b, const Shape& a_orig, const Shape& b_orig) {
  int64_t K = a[a.size() - 1], K2 = b[b.size() - 2];
  LOOM_CHECK(K == K2, shape_error, "matmul: inner dimensions differ: a", a_orig, " @ b", b_orig, " (", K, " != ", K2,
             ")");
  MatmulShapes s{a, b, {}, {}};
  s.batch_a.erase(s.batch_a.size() - 1), s.batch_a.erase(s.batch_a.size() - 1);
  s.batch_b.erase(s.batch_b.size() - 1), s.batch_b.erase(s.batch_b.size() - 1);
  s.batch = broadcast_shapes(s.batch_a, s.batch_b, "matmul (batch dimensions)");
  s.out = s.batch;
  s.out.push_back(a[a.size() - 2]), s.out.push_back(b[b.size() - 1]);
  return s;
}

// out (batch..., M, N) = a (..., M, K) @ b (..., K, N) (+ bias (N) on every row), written into
// `out`, whose rows have unit stride and whose batch entries lie M * out.stride(-2) apart. E is
// the operands' element type and TO the output's (float for bf16 operands). With a_row_sums, a
// CUDA GEMM may also write the sums of a's rows (M): returns true when it did (kernel::gemm).
template <class E, class TO>
bool gemm_into(const Tensor<TO>& out, const Tensor<E>& a_in, const Tensor<E>& b_in, const TO* bias = nullptr,
               TO* a_row_sums = nullptr) {
  const Device d = out.device();
  const int64_t M = a_in.size(-2), K = a_in.size(-1), N = b_in.size(-1);
  MatmulShapes sh = matmul_shapes(a_in.shape(), b_in.shape(), a_in.shape(), b_in.shape());
  if (out.numel() == 0) return false;
  if (K == 0) {
    LOOM_ASSERT(!bias);  // (linear() adds the bias of an empty product itself)
    out.fill_(TO(0));
    return false;
  }
  // A matrix whose inner strides are both != 1 is copied once, so every batch entry is GEMM-ready.
  auto ready = [](const Tensor<E>& t) {
    return mat_layout(t.size(-2), t.size(-1), t.stride(-2), t.stride(-1)).ok ? t : t.contiguous();
  };
  Tensor<E> a = ready(a_in), b = ready(b_in);
  MatLayout la = mat_layout(M, K, a.stride(-2), a.stride(-1)), lb = mat_layout(K, N, b.stride(-2), b.stride(-1));
  // Batch offsets of each operand, and whether they are i * stride (one batched GEMM call).
  const Shape& batch = sh.batch;
  Shape sa = broadcast_strides(sh.batch_a, Shape(std::vector<int64_t>(a.strides().begin(), a.strides().end() - 2)), batch);
  Shape sb = broadcast_strides(sh.batch_b, Shape(std::vector<int64_t>(b.strides().begin(), b.strides().end() - 2)), batch);
  const int64_t nbatch = numel_of(batch), ldc = M > 1 ? out.stride(-2) : N;
  bool flat = true;
  int64_t fa = 0, fb = 0;
  {
    int64_t ea = -1, span = 1;
    for (int dim = batch.size() - 1; dim >= 0 && flat; --dim) {
      if (batch[dim] == 1) continue;
      if (ea < 0) {
        ea = sa[dim], fa = sa[dim], fb = sb[dim];
      } else {
        flat = sa[dim] == fa * span && sb[dim] == fb * span;
      }
      span *= batch[dim];
    }
  }
  kernel::MatOperand<E> ga{a.data(), !la.rowmajor, la.ld, fa}, gb{b.data(), !lb.rowmajor, lb.ld, fb};
  if (flat) return kernel::gemm(d, ga, gb, out.data(), ldc, M * ldc, M, N, K, nbatch, bias, a_row_sums);
  for (int64_t i = 0; i < nbatch; ++i) {  // a broadcast that does not flatten: one product per entry
    int64_t oa = 0, ob = 0, rem = i;
    for (int dim = batch.size() - 1; dim >= 0; --dim) {
      int64_t idx = rem % batch[dim];
      rem /= batch[dim];
      oa += idx * sa[dim], ob += idx * sb[dim];
    }
    kernel::MatOperand<E> xa = ga, xb = gb;
    xa.ptr = a.data() + oa, xb.ptr = b.data() + ob;
    kernel::gemm(d, xa, xb, out.data() + i * M * ldc, ldc, 0, M, N, K, 1, bias);
  }
  return false;
}

// The output element type of a product of E operands: float for bf16, else E.
template <class E>
using product_t = std::conditional_t<std::is_same_v<E, bf16>, float, E>;

// a (..., M, K) @ b (..., K, N) (+ bias (N) on every row) as a new tensor (no autograd). On
// CUDA an odd width N is padded to a multiple of 8 and the result is a view of the padded buffer:
// cuBLAS's fast tensor-core kernels need rows at 32-byte boundaries (measured: the logits GEMM
// ran 6x slower unpadded). With a_row_sums, *summed says whether the GEMM wrote a's row sums.
template <class E>
Tensor<product_t<E>> product(const Tensor<E>& a, const Tensor<E>& b, const product_t<E>* bias = nullptr,
                             product_t<E>* a_row_sums = nullptr, bool* summed = nullptr) {
  using TO = product_t<E>;
  const Device d = a.device();
  MatmulShapes sh = matmul_shapes(a.shape(), b.shape(), a.shape(), b.shape());
  const int64_t M = a.size(-2), N = b.size(-1);
  const int64_t ldc = (d.is_cuda() && N % 8 != 0 && M > 1) ? (N + 7) / 8 * 8 : N;
  Tensor<TO> out;
  if (ldc == N) {
    out = Tensor<TO>::empty(sh.out, d);
  } else {
    Shape padded = sh.out;
    padded[padded.size() - 1] = ldc;
    out = Tensor<TO>::empty(padded, d).slice(-1, 0, N);
  }
  const bool rows = gemm_into(out, a, b, bias, a_row_sums);
  if (summed) *summed = rows;
  return out;
}

// A bf16 copy of t in one conversion pass that keeps the layout GEMMs like: a transposed matrix
// stays transposed (a weight's .t() view), and rows padded to an aligned stride stay padded (a
// matmul's output with an odd width, such as the logits).
inline Tensor<bf16> to_bf16(const Tensor<float>& t) {
  const Device d = t.device();
  auto convert = [&](const Tensor<bf16>& out, const Tensor<float>& in, const Shape& in_strides) {
    kernel::to_bf16(d, out.data(), in.data(), out.shape(), {out.strides(), in_strides});
  };
  if (t.dim() >= 2) {
    Tensor<float> tt = t.transpose(-1, -2);
    if (!t.is_contiguous() && tt.is_contiguous()) return to_bf16(tt).transpose(-1, -2);
    const int64_t cols = t.size(-1), rows = t.numel() / std::max<int64_t>(cols, 1);
    Shape st;
    if (!t.is_contiguous() && t.stride(-1) == 1 && t.numel() > 0 &&
        view_strides(t.shape(), t.strides(), Shape{rows, cols}, st) && st[0] >= cols) {
      Tensor<bf16> out = Tensor<bf16>::empty({rows, st[0]}, d).slice(1, 0, cols);
      convert(out, t, st);
      return out.view(t.shape());
    }
  }
  Tensor<float> c = t.contiguous();
  Tensor<bf16> out = Tensor<bf16>::empty(t.shape(), d);
  convert(out, c, c.strides());
  return out;
}

// A bf16 copy of t (..., N) whose last dimension is padded with zeros to Np (a multiple of 8):
// (..., Np), of which [..., :N] is the copy proper. A transposed matrix (a weight's .t()) stays
// transposed. cuBLAS picks fast tensor-core kernels only when every GEMM dimension is a
// multiple of 8 (measured on an H100: 16384x768 @ 768x50257 ran at 96 TFLOP/s, at 575 with
// N = 50264), and the zeros change no product.
inline Tensor<bf16> to_bf16_padded(const Tensor<float>& t, int64_t Np) {
  const int64_t N = t.size(-1);
  const Device d = t.device();
  if (t.dim() == 2 && t.transpose(0, 1).is_contiguous()) {  // t = W^T with W (N, K) contiguous
    Tensor<float> w = t.transpose(0, 1);
    Tensor<bf16> wp = Tensor<bf16>::empty({Np, w.size(1)}, d);
    wp.slice(0, N, Np).fill_(bf16(0.0f));
    Tensor<bf16> top = wp.slice(0, 0, N);
    kernel::to_bf16(d, top.data(), w.data(), w.shape(), {top.strides(), w.strides()});
    return wp.t();
  }
  Shape s = t.shape();
  s[s.size() - 1] = Np;
  Tensor<bf16> full = Tensor<bf16>::empty(s, d);
  full.slice(-1, N, Np).fill_(bf16(0.0f));
  Tensor<bf16> body = full.slice(-1, 0, N);
  kernel::to_bf16(d, body.data(), t.data(), t.shape(), {body.strides(), t.strides()});
  return full;
}

// a2 @ b2 (both at least 2-D) with its backward: da = g @ b^T, db = a^T @ g, each summed over
// the batch dimensions it was broadcast along.
template <class T>
Tensor<T> matmul_2d(const Tensor<T>& a2, const Tensor<T>& b2, const Shape& a_orig, const Shape& b_orig) {
  matmul_shapes(a2.shape(), b2.shape(), a_orig, b_orig);  // the error names the user's shapes
  if constexpr (std::is_same_v<T, float>) {
    if (AutocastGuard::bf16() && a2.device().is_cuda()) {
      // bf16 operands, fp32 accumulation; the bf16 copies are saved, so the backward multiplies
      // in bf16 too and stores half the bytes. An output width that is not a multiple of 8 (a
      // vocabulary) is padded with zero columns of b, in the forward and in both products of
      // the backward; the results are views without them.
      const int64_t N = b2.size(-1), Np = (N + 7) / 8 * 8;
      const bool pad = Np != N && b2.dim() == 2;
      Tensor<bf16> a16 = to_bf16(a2), b16 = pad ? to_bf16_padded(b2, Np) : to_bf16(b2);
      Tensor<float> out = product(a16, b16);
      if (pad) out = out.slice(-1, 0, N);
      record<float>("matmul", out, {&a2, &b2}, [a16, b16, pad, N, Np, sa = a2.shape(), sb = b2.shape()](const Tensor<float>& g) {
        Tensor<bf16> g16 = pad ? to_bf16_padded(g, Np) : to_bf16(g);
        Tensor<float> da = product(g16, b16.transpose(-1, -2)), db = product(a16.transpose(-1, -2), g16);
        if (pad) db = db.slice(-1, 0, N);
        return std::vector<Tensor<float>>{sum_to_shape(da, sa), sum_to_shape(db, sb)};
      });
      return out;
    }
  }
  Tensor<T> out = product(a2, b2);
  record<T>("matmul", out, {&a2, &b2}, [sa = SavedTensor<T>(a2), sb = SavedTensor<T>(b2)](const Tensor<T>& g) {
    const Tensor<T>&x = sa.get("matmul"), &y = sb.get("matmul");
    Tensor<T> dx = sum_to_shape(product(g, y.transpose(-1, -2)), x.shape());
    // db in b's own layout: for b = W^T, a view of a Linear's weight W (N, K), db^T = g^T x is
    // computed (N, K) contiguous, so that W's gradient is contiguous rather than a transposed view
    if (x.dim() == 2 && g.dim() == 2 && !y.is_contiguous() && y.transpose(0, 1).is_contiguous())
      return std::vector<Tensor<T>>{dx, product(g.transpose(0, 1), x).transpose(0, 1)};
    return std::vector<Tensor<T>>{dx, sum_to_shape(product(x.transpose(-1, -2), g), y.shape())};
  });
  return out;
}

}  // namespace detail

/// Matrix product a @ b: (M, K) @ (K, N) -> (M, N); leading batch dimensions broadcast,
/// (..., M, K) @ (..., K, N) -> (..., M, N); a 1-D operand is a row (a) or column (b) vector
/// whose dimension is dropped from the result. Throws shape_error when the inner sizes differ.
template <class T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b) {
  static_assert(is_floating_v<T>, "matmul: needs a floating element type");
  if constexpr (is_reduced_float_v<T>) {
    return matmul(a.template to<float>(), b.template to<float>()).template to<T>();
  } else {
    detail::op_device<T>("matmul", a, b);
    LOOM_CHECK(a.dim() >= 1 && b.dim() >= 1, shape_error, "matmul: both operands need at least 1 dimension, got ",
               a.shape(), " @ ", b.shape());
    // (..., M, K) @ (K, N): one GEMM over all rows, (prod(...) * M, K) @ (K, N), when the rows of a
    // can be viewed flat (a Linear layer on (B, T, C)). Its backward is then one GEMM too.
    if (a.dim() > 2 && b.dim() == 2 && a.size(-1) == b.size(0) && a.numel() > 0) {
      Shape flat_st;
      if (detail::view_strides(a.shape(), a.strides(), Shape{a.numel() / std::max<int64_t>(a.size(-1), 1), a.size(-1)},
                               flat_st)) {
        Shape out_shape = a.shape();
        out_shape[out_shape.size() - 1] = b.size(1);
        return matmul(a.reshape({-1, a.size(-1)}), b).reshape(out_shape);
      }
    }
    Tensor<T> a2 = a.dim() == 1 ? a.unsqueeze(0) : a;   // (K) -> (1, K)
    Tensor<T> b2 = b.dim() == 1 ? b.unsqueeze(-1) : b;  // (K) -> (K, 1)
    Tensor<T> out = detail::matmul_2d(a2, b2, a.shape(), b.shape());
    if (a.dim() == 1) out = out.squeeze(-2);
    if (b.dim() == 1) out = out.squeeze(-1);
    return out;
  }
}

/// A Linear layer's product: x (..., in) @ w^T + b for a weight w (out, in) and a bias b (out),
/// or x @ w^T when b is undefined. The bias is added inside the GEMM (by cuBLASLt's epilogue on
/// CUDA), not by a pass of its own over the output; under AutocastGuard a CUDA product takes
/// bf16 operands, as matmul does. Gradients: dx = g @ w, dw = g^T @ x (in w's own layout),
/// db = the sum of g's rows. Throws shape_error for mismatched sizes.
template <class T>
Tensor<T> linear(const Tensor<T>& x, const Tensor<T>& w, const Tensor<T>& b = Tensor<T>()) {
  static_assert(is_floating_v<T>, "linear: needs a floating element type");
  if (!b.defined()) return matmul(x, w.t());
  detail::op_device<T>("linear", x, w, b);
  LOOM_CHECK(w.dim() == 2 && b.dim() == 1 && b.size(0) == w.size(0) && x.dim() >= 1 && x.size(-1) == w.size(1),
             shape_error, "linear: x", x.shape(), ", weight", w.shape(), " and bias", b.shape(),
             " do not fit x (..., in) @ weight (out, in)^T + bias (out)");
  if constexpr (is_reduced_float_v<T>) {
    return matmul(x, w.t()) + b;  // (computed through float by matmul)
  } else {
    const int64_t in = w.size(1), N = w.size(0);
    const bool half = std::is_same_v<T, float> && AutocastGuard::bf16() && x.device().is_cuda();
    // Composed where the fused product does not apply: an empty product, rows that cannot be
    // viewed flat, or a bf16 output width that cuBLAS would need padded.
    Shape flat_st;
    if (x.numel() == 0 || in == 0 || x.dim() == 1 || (half && N % 8 != 0) ||
        !detail::view_strides(x.shape(), x.strides(), Shape{x.numel() / in, in}, flat_st))
      return matmul(x, w.t()) + b;
    Shape out_shape = x.shape();
    out_shape[out_shape.size() - 1] = N;
    const Tensor<T> x2 = x.reshape({-1, in});  // (M, in)
    const Tensor<T> bc = b.contiguous();         // the GEMM reads the bias as one row
    if constexpr (std::is_same_v<T, float>) {
      if (half) {
        // bf16 operands, saved for the backward as in matmul; w16 (in, out) is a view of w's layout
        Tensor<bf16> x16 = detail::to_bf16(x2), w16 = detail::to_bf16(w.t());
        Tensor<float> out = detail::product(x16, w16, bc.data());  // (M, in) @ (in, out) + b
        detail::record<float>("linear", out, {&x2, &w, &b}, [x16, w16, N](const Tensor<float>& g) {
          Tensor<bf16> g16 = detail::to_bf16(g);                         // (M, out)
          Tensor<float> dx = detail::product(g16, w16.transpose(0, 1));  // (M, out) @ (out, in)
          // dw (out, in) = (out, M) @ (M, in); db (out), the sums of g16^T's rows, from the same
          // GEMM's epilogue where cuBLASLt has one (else a pass over g)
          Tensor<float> db = Tensor<float>::empty(Shape{N}, g.device());
          bool summed = false;
          Tensor<float> dw = detail::product(g16.transpose(0, 1), x16, nullptr, db.data(), &summed);
          if (!summed) db = detail::sum_to_shape(g, Shape{N});
          return std::vector<Tensor<float>>{dx, dw, db};
        });
        return out.reshape(out_shape);
      }
    }
    Tensor<T> out = detail::product(x2, w.t(), bc.data());  // (M, in) @ (in, out) + b
    detail::record<T>("linear", out, {&x2, &w, &b}, [sx = SavedTensor<T>(x2), sw = SavedTensor<T>(w), N](const Tensor<T>& g) {
      const Tensor<T>&xs = sx.get("linear"), &ws = sw.get("linear");
      Tensor<T> dx = detail::product(g, ws);                  // (M, out) @ (out, in)
      Tensor<T> dw = detail::product(g.transpose(0, 1), xs);  // (out, M) @ (M, in)
      return std::vector<Tensor<T>>{dx, dw, detail::sum_to_shape(g, Shape{N})};  // db (out)
    });
    return out.reshape(out_shape);
  }
}

/// out = a @ b written into an existing contiguous tensor of the right shape (no allocation, no
/// autograd). Shapes as in matmul() for operands of 2 or more dimensions; `out` must not overlap
/// the inputs.
template <class T>
void matmul_out(const Tensor<T>& out, const Tensor<T>& a, const Tensor<T>& b) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "matmul_out: float or double");
  detail::op_device<T>("matmul", out, a, b);
  LOOM_CHECK(a.dim() >= 2 && b.dim() >= 2, shape_error, "matmul_out: operands need 2 or more dimensions, got a",
             a.shape(), " @ b", b.shape());
  const Shape expect = detail::matmul_shapes(a.shape(), b.shape(), a.shape(), b.shape()).out;
  LOOM_CHECK(out.shape() == expect && out.is_contiguous(), shape_error, "matmul_out: out must be contiguous with shape ",
             expect, ", got ", out.shape());
  detail::gemm_into(out, a, b);
}

}  // namespace loom
