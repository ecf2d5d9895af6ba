#pragma once
/// @file matmul.hpp
/// Matrix products: 2-D, batched with broadcast batch dimensions, and NumPy's 1-D promotion.
/// Transposed views (x.transpose(-1, -2)) are read in place, without a copy.

#include <algorithm>

#include "loom/backend/cpu/matmul.hpp"
#include "loom/ops/common.hpp"
#include "loom/ops/gpu.hpp"
#include "loom/ops/reduce.hpp"

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

// a2 @ b2 on the GPU (both at least 2-D), through cuBLAS: fp32, or bf16 operands with fp32
// accumulation under AutocastGuard. The bf16 path saves the bf16 copies for the backward, so
// the backward multiplies in bf16 too and stores half the bytes.
inline Tensor<float> gpu_matmul(const Tensor<float>& a2, const Tensor<float>& b2, const Shape& a_orig,
                                const Shape& b_orig) {
  using TF = Tensor<float>;
  MatmulShapes sh = matmul_shapes(a2.shape(), b2.shape(), a_orig, b_orig);
  // the batch shape and output shape of x @ y for the backward's products
  auto shapes_of = [](const Shape& x, const Shape& y) { return matmul_shapes(x, y, x, y); };
  if (AutocastGuard::bf16()) {
    // An output width that is not a multiple of 8 (a vocabulary) is padded with zero columns of
    // b, in the forward and in both products of the backward; the results are views without them.
    const int64_t N = b2.size(-1), Np = (N + 7) / 8 * 8;
    const bool pad = Np != N && b2.dim() == 2;
    Tensor<bf16> a16 = gpu::to_bf16(a2), b16 = pad ? gpu::to_bf16_padded(b2, Np) : gpu::to_bf16(b2);
    MatmulShapes shp = shapes_of(a16.shape(), b16.shape());
    TF out = gpu::matmul(a16, b16, shp.batch, shp.out);
    if (pad) out = out.slice(-1, 0, N);
    record<float>("matmul", out, {&a2, &b2}, [a16, b16, shapes_of, pad, N, Np, sa = a2.shape(), sb = b2.shape()](const TF& g) {
      Tensor<bf16> g16 = pad ? gpu::to_bf16_padded(g, Np) : gpu::to_bf16(g);
      Tensor<bf16> bt = b16.transpose(-1, -2), at = a16.transpose(-1, -2);
      MatmulShapes s1 = shapes_of(g16.shape(), bt.shape()), s2 = shapes_of(at.shape(), g16.shape());
      TF da = gpu::matmul(g16, bt, s1.batch, s1.out), db = gpu::matmul(at, g16, s2.batch, s2.out);
      if (pad) db = db.slice(-1, 0, N);
      return std::vector<TF>{sum_to_shape(da, sa), sum_to_shape(db, sb)};
    });
    return out;
  }
  TF out = gpu::matmul(a2, b2, sh.batch, sh.out);
  record<float>("matmul", out, {&a2, &b2}, [sa = SavedTensor<float>(a2), sb = SavedTensor<float>(b2), shapes_of](const TF& g) {
    const TF &x = sa.get("matmul"), &y = sb.get("matmul");
    TF yt = y.transpose(-1, -2), xt = x.transpose(-1, -2);
    MatmulShapes s1 = shapes_of(g.shape(), yt.shape()), s2 = shapes_of(xt.shape(), g.shape());
    return std::vector<TF>{sum_to_shape(gpu::matmul(g, yt, s1.batch, s1.out), x.shape()),
                           sum_to_shape(gpu::matmul(xt, g, s2.batch, s2.out), y.shape())};
  });
  return out;
}

}  // namespace detail

/// out = a @ b written into an existing contiguous tensor of the right shape (no allocation).
/// Shapes as in matmul(); `out` must not overlap the inputs.
template <class T>
void matmul_out(const Tensor<T>& out, const Tensor<T>& a_in, const Tensor<T>& b_in);

/// Matrix product a @ b: (M, K) @ (K, N) -> (M, N); leading batch dimensions broadcast,
/// (..., M, K) @ (..., K, N) -> (..., M, N); a 1-D operand is a row (a) or column (b) vector
/// whose dimension is dropped from the result. Throws shape_error when the inner sizes differ.
template <class T>
Tensor<T> matmul(const Tensor<T>& a, const Tensor<T>& b) {
  static_assert(is_floating_v<T>, "matmul: needs a floating element type");
  if constexpr (is_reduced_float_v<T>) {
    return matmul(a.template to<float>(), b.template to<float>()).template to<T>();
  } else {
    const bool gpu = detail::same_device("matmul", a, b).is_cuda();
    if (!gpu || !std::is_same_v<T, float>) detail::check_cpu("matmul", a, b);
    LOOM_CHECK(a.dim() >= 1 && b.dim() >= 1, shape_error, "matmul: both operands need at least 1 dimension, got ",
               a.shape(), " @ ", b.shape());
    // (..., M, K) @ (K, N): one GEMM over all rows, (prod(...) * M, K) @ (K, N), when the rows of a
    // can be viewed flat (a Linear layer on (B, T, C)). Its backward is then one GEMM too.
    if (a.dim() > 2 && b.dim() == 2 && a.size(-1) == b.size(0)) {
      Shape flat_st;
      Shape flat{-1, a.size(-1)};
      if (detail::view_strides(a.shape(), a.strides(), Shape{a.numel() / std::max<int64_t>(a.size(-1), 1), a.size(-1)},
                               flat_st) && a.numel() > 0) {
        Shape out_shape = a.shape();
        out_shape[out_shape.size() - 1] = b.size(1);
        return matmul(a.reshape(flat), b).reshape(out_shape);
      }
    }
    Tensor<T> a2 = a.dim() == 1 ? a.unsqueeze(0) : a;   // (K) -> (1, K)
    Tensor<T> b2 = b.dim() == 1 ? b.unsqueeze(-1) : b;  // (K) -> (K, 1)
    if constexpr (std::is_same_v<T, float>) {
      if (gpu) {
        Tensor<T> out = detail::gpu_matmul(a2, b2, a.shape(), b.shape());
        if (a.dim() == 1) out = out.squeeze(-2);
        if (b.dim() == 1) out = out.squeeze(-1);
        return out;
      }
    }
    Tensor<T> out = Tensor<T>::empty(detail::matmul_shapes(a2.shape(), b2.shape(), a.shape(), b.shape()).out);
    matmul_out(out, a2, b2);
    // backward: da = g @ b^T, db = a^T @ g, each summed over the batch dims it was broadcast along
    detail::record<T>("matmul", out, {&a2, &b2}, [sa = SavedTensor<T>(a2), sb = SavedTensor<T>(b2)](const Tensor<T>& g) {
      const Tensor<T>&x = sa.get("matmul"), &y = sb.get("matmul");
      return std::vector<Tensor<T>>{detail::sum_to_shape(matmul(g, y.transpose(-1, -2)), x.shape()),
                                    detail::sum_to_shape(matmul(x.transpose(-1, -2), g), y.shape())};
    });
    if (a.dim() == 1) out = out.squeeze(-2);
    if (b.dim() == 1) out = out.squeeze(-1);
    return out;
  }
}

template <class T>
void matmul_out(const Tensor<T>& out, const Tensor<T>& a_in, const Tensor<T>& b_in) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "matmul_out: float or double");
  detail::check_cpu("matmul", out, a_in, b_in);
  LOOM_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, shape_error, "matmul_out: operands need 2 or more dimensions, got a",
             a_in.shape(), " @ b", b_in.shape());
  int64_t M = a_in.size(-2), K = a_in.size(-1), N = b_in.size(-1);
  detail::MatmulShapes shapes = detail::matmul_shapes(a_in.shape(), b_in.shape(), a_in.shape(), b_in.shape());
  const Shape &ab = shapes.batch_a, &bb = shapes.batch_b, &batch = shapes.batch, &expect = shapes.out;
  LOOM_CHECK(out.shape() == expect && out.is_contiguous(), shape_error, "matmul_out: out must be contiguous with shape ",
             expect, ", got ", out.shape());
  if (out.numel() == 0) return;
  if (K == 0) {
    out.fill_(T(0));
    return;
  }
  // A matrix whose inner strides are both != 1 is copied once, so every batch entry is GEMM-ready.
  auto ready = [](const Tensor<T>& t) {
    int64_t r = t.size(-2), c = t.size(-1);
    return detail::mat_layout(r, c, t.stride(-2), t.stride(-1)).ok ? t : t.contiguous();
  };
  Tensor<T> a = ready(a_in), b = ready(b_in);
  detail::MatLayout la = detail::mat_layout(M, K, a.stride(-2), a.stride(-1));
  detail::MatLayout lb = detail::mat_layout(K, N, b.stride(-2), b.stride(-1));
  Shape bsa = broadcast_strides(ab, Shape(std::vector<int64_t>(a.strides().begin(), a.strides().end() - 2)), batch);
  Shape bsb = broadcast_strides(bb, Shape(std::vector<int64_t>(b.strides().begin(), b.strides().end() - 2)), batch);
  int64_t nbatch = numel_of(batch);
  auto one = [&](int64_t i) {
    int64_t oa = 0, ob = 0, rem = i;
    for (int d = batch.size() - 1; d >= 0; --d) {
      int64_t idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * bsa[d], ob += idx * bsb[d];
    }
    cpu::gemm(out.data() + i * M * N, N, a.data() + oa, la.rowmajor, la.ld, b.data() + ob, lb.rowmajor, lb.ld, M,
              N, K);
  };
  // Several products that are each small (under 2^26 multiply-adds, e.g. attention heads): one
  // product per thread, each run serially by Eigen; Eigen's own threading does not pay at that
  // size (measured: 2x slower at 256x64x256). Otherwise one after another, each split by Eigen.
  if (nbatch > 1 && M * N * K < (int64_t(1) << 26)) {
    parallel_for(0, nbatch, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) one(i);
    });
  } else {
    for (int64_t i = 0; i < nbatch; ++i) one(i);
  }
}

}  // namespace loom
