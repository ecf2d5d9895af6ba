#pragma once
/// @file layer_norm.hpp
/// layer_norm and rms_norm over the last dimension, each one fused op (forward and backward
/// kernels in backend/cpu/{layer,rms}_norm.hpp and backend/cuda/{layer,rms}_norm.cuh).

#include <vector>

#include "loom/core/tensor.hpp"

namespace loom {

namespace detail {
// The checks both norms share: x has a last dimension C, eps >= 0, each parameter is (C).
template <class T>
int64_t check_norm(const char* op, const Tensor<T>& x, std::initializer_list<std::pair<const char*, const Tensor<T>*>> params,
                   double eps) {
  LOOM_CHECK(x.dim() >= 1, shape_error, op, ": input needs at least 1 dimension, got shape ", x.shape());
  LOOM_CHECK(eps >= 0, value_error, op, ": eps must be non-negative, got ", eps);
  const int64_t C = x.size(-1);
  for (const auto& [name, p] : params) {
    if (!p->defined()) continue;
    same_device(op, x, *p);
    LOOM_CHECK(p->dim() == 1 && p->size(0) == C, shape_error, op, ": ", name, " has shape ", p->shape(),
               ", expected [", C, "] for input ", x.shape());
  }
  return C;
}

// A tensor's contiguous form, or the undefined tensor it is.
template <class T>
Tensor<T> contiguous_or_none(const Tensor<T>& t) {
  return t.defined() ? t.contiguous() : t;
}

// Reduced floats (bf16, half) are normalised in float.
template <class T>
Tensor<float> as_float(const Tensor<T>& t) {
  return t.defined() ? t.template to<float>() : Tensor<float>();
}
}  // namespace detail

/// LayerNorm of x (..., C) over its last dimension: (x - mean) / sqrt(var + eps) * weight + bias.
/// weight and bias have shape (C); pass an undefined Tensor for either to leave it out.
template <class T>
Tensor<T> layer_norm(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, double eps = 1e-5) {
  static_assert(is_floating_v<T>, "layer_norm: needs a floating element type");
  if constexpr (is_reduced_float_v<T>) {
    using detail::as_float;
    return layer_norm(as_float(x), as_float(weight), as_float(bias), eps).template to<T>();
  } else {
    const Device d = detail::op_device<T>("layer_norm", x);
    const int64_t C = detail::check_norm<T>("layer_norm", x, {{"weight", &weight}, {"bias", &bias}}, eps);
    const int64_t N = C > 0 ? x.numel() / C : 0;
    Tensor<T> in = x.contiguous(), w = detail::contiguous_or_none(weight), b = detail::contiguous_or_none(bias);
    // (N, C) rows -> out (N, C), and mean, rstd (N) for the backward
    Tensor<T> out = Tensor<T>::empty(x.shape(), d), mean = Tensor<T>::empty({N}, d), rstd = Tensor<T>::empty({N}, d);
    if (C > 0) kernel::layer_norm_forward(d, out.data(), mean.data(), rstd.data(), in.data(), w.data(), b.data(), N, C, eps);
    // backward, one fused pass: dx, dweight = sum over rows of g * xhat, dbias = sum over rows of g
    Tensor<T> none;
    detail::record<T>("layer_norm", out, {&x, weight.defined() ? &weight : &none, bias.defined() ? &bias : &none},
                      [sx = SavedTensor<T>(in), sw = SavedTensor<T>(w), mean, rstd, N, C, has_w = weight.defined(),
                       has_b = bias.defined()](const Tensor<T>& g) {
      const Tensor<T>&in = sx.get("layer_norm"), &w = sw.get("layer_norm");
      const Device d = in.device();
      Tensor<T> gc = g.contiguous(), dx = Tensor<T>::empty(in.shape(), d);
      Tensor<T> dw = has_w ? Tensor<T>::empty({C}, d) : Tensor<T>(), db = has_b ? Tensor<T>::empty({C}, d) : Tensor<T>();
      if (C > 0) {
        kernel::layer_norm_backward(d, dx.data(), dw.data(), db.data(), gc.data(), in.data(), w.data(), mean.data(),
                                    rstd.data(), N, C);
      } else {
        for (const Tensor<T>& p : {dw, db}) if (p.defined()) p.fill_(T(0));
      }
      return std::vector<Tensor<T>>{dx, dw, db};
    });
    return out;
  }
}

/// RMSNorm of x (..., C) over its last dimension, as Llama normalises: x / sqrt(mean(x^2) + eps)
/// * weight. weight has shape (C); pass an undefined Tensor to leave it out. No mean is removed.
template <class T>
Tensor<T> rms_norm(const Tensor<T>& x, const Tensor<T>& weight, double eps = 1e-6) {
  static_assert(is_floating_v<T>, "rms_norm: needs a floating element type");
  if constexpr (is_reduced_float_v<T>) {
    using detail::as_float;
    return rms_norm(as_float(x), as_float(weight), eps).template to<T>();
  } else {
    const Device d = detail::op_device<T>("rms_norm", x);
    const int64_t C = detail::check_norm<T>("rms_norm", x, {{"weight", &weight}}, eps);
    const int64_t N = C > 0 ? x.numel() / C : 0;
    Tensor<T> in = x.contiguous(), w = detail::contiguous_or_none(weight);
    // (N, C) rows -> out (N, C) = x * rstd * w, and rstd (N) = 1 / sqrt(mean(x^2) + eps) for the backward
    Tensor<T> out = Tensor<T>::empty(x.shape(), d), rstd = Tensor<T>::empty({N}, d);
    if (C > 0) kernel::rms_norm_forward(d, out.data(), rstd.data(), in.data(), w.data(), N, C, eps);
    // backward, one fused pass: xhat = x * rstd, dxhat = g * w,
    //   dx = rstd * (dxhat - xhat * mean(dxhat * xhat)),  dweight = sum over rows of g * xhat
    Tensor<T> none;
    detail::record<T>("rms_norm", out, {&x, weight.defined() ? &weight : &none},
                      [sx = SavedTensor<T>(in), sw = SavedTensor<T>(w), rstd, N, C,
                       has_w = weight.defined()](const Tensor<T>& g) {
      const Tensor<T>&in = sx.get("rms_norm"), &w = sw.get("rms_norm");
      const Device d = in.device();
      Tensor<T> gc = g.contiguous(), dx = Tensor<T>::empty(in.shape(), d);
      Tensor<T> dw = has_w ? Tensor<T>::empty({C}, d) : Tensor<T>();
      if (C > 0) {
        kernel::rms_norm_backward(d, dx.data(), dw.data(), gc.data(), in.data(), w.data(), rstd.data(), N, C);
      } else if (has_w) {
        dw.fill_(T(0));
      }
      return std::vector<Tensor<T>>{dx, dw};
    });
    return out;
  }
}

}  // namespace loom
