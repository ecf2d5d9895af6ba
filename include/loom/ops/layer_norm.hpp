#pragma once
/// @file layer_norm.hpp
/// layer_norm and rms_norm over the last dimension, each one fused op (forward and backward
/// kernels in backend/cpu/{layer,rms}_norm.hpp and backend/cuda/{layer,rms}_norm.cuh).

#include <utility>
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

// LayerNorm's backward, one fused pass over the rows `in` (N, C) that were normalised:
// {dx, dweight, dbias} for the output's gradient g, dx + dsum when dsum is defined (the gradient
// that reaches `in` from its other uses), dweight and dbias undefined without has_w / has_b.
template <class T>
std::vector<Tensor<T>> layer_norm_grads(const Tensor<T>& g, const Tensor<T>& in, const Tensor<T>& w,
                                        const Tensor<T>& mean, const Tensor<T>& rstd, int64_t N, int64_t C, bool has_w,
                                        bool has_b, const Tensor<T>& dsum = Tensor<T>()) {
  const Device d = in.device();
  Tensor<T> gc = g.contiguous(), dx = Tensor<T>::empty(in.shape(), d), ds = contiguous_or_none(dsum);
  Tensor<T> dw = has_w ? Tensor<T>::empty({C}, d) : Tensor<T>(), db = has_b ? Tensor<T>::empty({C}, d) : Tensor<T>();
  if (C > 0) {
    kernel::layer_norm_backward(d, dx.data(), dw.data(), db.data(), gc.data(), in.data(), w.data(), mean.data(),
                                rstd.data(), N, C, ds.data());
  } else {
    for (const Tensor<T>& p : {dw, db})
      if (p.defined()) p.fill_(T(0));
  }
  return {dx, dw, db};
}

// RMSNorm's backward, one fused pass over the rows `in` (N, C) that were normalised: {dx,
// dweight} for the output's gradient g, dx + dsum when dsum is defined, dweight undefined
// without has_w.
template <class T>
std::vector<Tensor<T>> rms_norm_grads(const Tensor<T>& g, const Tensor<T>& in, const Tensor<T>& w,
                                      const Tensor<T>& rstd, int64_t N, int64_t C, bool has_w,
                                      const Tensor<T>& dsum = Tensor<T>()) {
  const Device d = in.device();
  Tensor<T> gc = g.contiguous(), dx = Tensor<T>::empty(in.shape(), d), ds = contiguous_or_none(dsum);
  Tensor<T> dw = has_w ? Tensor<T>::empty({C}, d) : Tensor<T>();
  if (C > 0) {
    kernel::rms_norm_backward(d, dx.data(), dw.data(), gc.data(), in.data(), w.data(), rstd.data(), N, C, ds.data());
  } else if (has_w) {
    dw.fill_(T(0));
  }
  return {dx, dw};
}

// The residual step both norms share, as one op with two outputs: h = x + residual and y =
// norm(h), for x and residual (..., C) and the norm's optional weight and bias (C).
// forward(y, stats, x, residual, h, weight, bias, N, C) runs the norm's fused kernel over the
// (N, C) rows and fills its per-row statistics (`n_stats` tensors of (N)); grads(dy, h, weight,
// stats, N, C, dh) is the norm's backward with h's gradient from its other uses, dh, added to its
// dx: {dx + dh, dweight, dbias (or nothing)}.
template <class T, class Forward, class Grads>
std::pair<Tensor<T>, Tensor<T>> add_norm(const char* op, const Tensor<T>& x, const Tensor<T>& residual,
                                         const Tensor<T>& weight, const Tensor<T>& bias, double eps, int n_stats,
                                         Forward forward, Grads grads) {
  const Device d = op_device<T>(op, x, residual);
  const int64_t C = check_norm<T>(op, x, {{"weight", &weight}, {"bias", &bias}}, eps);
  LOOM_CHECK(residual.shape() == x.shape(), shape_error, op, ": x ", x.shape(), " and residual ", residual.shape(),
             " must have the same shape");
  const int64_t N = C > 0 ? x.numel() / C : 0;
  Tensor<T> xin = x.contiguous(), rin = residual.contiguous(), w = contiguous_or_none(weight),
            b = contiguous_or_none(bias);
  // (N, C) rows of x and residual -> h = x + residual (N, C), y = norm(h) (N, C), and the
  // statistics of h's rows (N) for the backward
  Tensor<T> h = Tensor<T>::empty(x.shape(), d), y = Tensor<T>::empty(x.shape(), d);
  std::vector<Tensor<T>> stats;
  for (int i = 0; i < n_stats; ++i) stats.push_back(Tensor<T>::empty({N}, d));
  if (C > 0) forward(y, stats, xin, rin, h, w, b, N, C);
  // backward: dh = (h's gradient from its other uses) + the norm's dx; dx = dresidual = dh
  Tensor<T> none;
  record_outputs<T>(op, {&h, &y}, {&x, &residual, weight.defined() ? &weight : &none, bias.defined() ? &bias : &none},
                    [op, sh = SavedTensor<T>(h), sw = SavedTensor<T>(w), stats, N, C,
                     grads](const std::vector<Tensor<T>>& g) {
    const Tensor<T>&dh = g[0], &dy = g[1];  // either may be undefined (no gradient reached it)
    if (!dy.defined()) return std::vector<Tensor<T>>{dh, dh, Tensor<T>(), Tensor<T>()};
    std::vector<Tensor<T>> n = grads(dy, sh.get(op), sw.get(op), stats, N, C, dh);
    return std::vector<Tensor<T>>{n[0], n[0], n[1], n.size() > 2 ? n[2] : Tensor<T>()};
  });
  return {h, y};
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
      return detail::layer_norm_grads(g, sx.get("layer_norm"), sw.get("layer_norm"), mean, rstd, N, C, has_w, has_b);
    });
    return out;
  }
}

/// A pre-norm block's residual step as one op: h = x + residual, then y = layer_norm(h, weight,
/// bias, eps); returns {h, y}. The same values as the two ops, from one pass over the rows: each
/// row of h is normalised while it is in cache. Its backward adds the gradient that reaches h
/// from its other uses (the residual stream) to LayerNorm's own, in the same pass. x and residual
/// have the same shape (..., C); weight and bias as in layer_norm.
template <class T>
std::pair<Tensor<T>, Tensor<T>> add_layer_norm(const Tensor<T>& x, const Tensor<T>& residual, const Tensor<T>& weight,
                                               const Tensor<T>& bias, double eps = 1e-5) {
  static_assert(is_floating_v<T>, "add_layer_norm: needs a floating element type");
  if constexpr (is_reduced_float_v<T>) {
    Tensor<T> h = x + residual;
    return {h, layer_norm(h, weight, bias, eps)};
  } else {
    // the fused kernel fills mean and rstd of h's rows, then LayerNorm's backward helper
    return detail::add_norm<T>(
        "add_layer_norm", x, residual, weight, bias, eps, 2,
        [eps](Tensor<T>& y, std::vector<Tensor<T>>& s, const Tensor<T>& x, const Tensor<T>& r, Tensor<T>& h,
              const Tensor<T>& w, const Tensor<T>& b, int64_t N, int64_t C) {
      kernel::layer_norm_forward(x.device(), y.data(), s[0].data(), s[1].data(), x.data(), w.data(), b.data(), N, C,
                                 eps, r.data(), h.data());
        },
        [has_w = weight.defined(), has_b = bias.defined()](const Tensor<T>& dy, const Tensor<T>& h, const Tensor<T>& w,
                                                           const std::vector<Tensor<T>>& s, int64_t N, int64_t C,
                                                           const Tensor<T>& dh) {
      return detail::layer_norm_grads(dy, h, w, s[0], s[1], N, C, has_w, has_b, dh);
    });
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
      return detail::rms_norm_grads(g, sx.get("rms_norm"), sw.get("rms_norm"), rstd, N, C, has_w);
    });
    return out;
  }
}

/// add_layer_norm's RMSNorm twin, Llama's residual step: h = x + residual, then y = rms_norm(h,
/// weight, eps); returns {h, y}, one op with two outputs, one pass over the rows each way.
template <class T>
std::pair<Tensor<T>, Tensor<T>> add_rms_norm(const Tensor<T>& x, const Tensor<T>& residual, const Tensor<T>& weight,
                                             double eps = 1e-6) {
  static_assert(is_floating_v<T>, "add_rms_norm: needs a floating element type");
  if constexpr (is_reduced_float_v<T>) {
    Tensor<T> h = x + residual;
    return {h, rms_norm(h, weight, eps)};
  } else {
    // the fused kernel fills rstd of h's rows, then RMSNorm's backward helper; no bias
    return detail::add_norm<T>(
        "add_rms_norm", x, residual, weight, Tensor<T>(), eps, 1,
        [eps](Tensor<T>& y, std::vector<Tensor<T>>& s, const Tensor<T>& x, const Tensor<T>& r, Tensor<T>& h,
              const Tensor<T>& w, const Tensor<T>&, int64_t N, int64_t C) {
      kernel::rms_norm_forward(x.device(), y.data(), s[0].data(), x.data(), w.data(), N, C, eps, r.data(), h.data());
        },
        [has_w = weight.defined()](const Tensor<T>& dy, const Tensor<T>& h, const Tensor<T>& w,
                                   const std::vector<Tensor<T>>& s, int64_t N, int64_t C, const Tensor<T>& dh) {
      return detail::rms_norm_grads(dy, h, w, s[0], N, C, has_w, dh);
    });
  }
}

}  // namespace loom
