#pragma once
/// @file layer_norm.hpp
/// layer_norm over the last dimension.

#include "loom/backend/cpu/layer_norm.hpp"
#include "loom/ops/common.hpp"
#include "loom/ops/gpu.hpp"

namespace loom {

namespace detail {
// LayerNorm on the GPU: the same shapes and saved tensors as the CPU path, the kernels of
// backend/cuda/layer_norm.cuh (the backward writes dx, dweight and dbias in one fused pass).
inline Tensor<float> gpu_layer_norm(const Tensor<float>& x, const Tensor<float>& weight, const Tensor<float>& bias,
                                    double eps) {
  using TF = Tensor<float>;
  LOOM_CHECK(x.dim() >= 1, shape_error, "layer_norm: input needs at least 1 dimension, got shape ", x.shape());
  LOOM_CHECK(eps >= 0, value_error, "layer_norm: eps must be non-negative, got ", eps);
  const int64_t C = x.size(-1);
  for (const TF* p : {&weight, &bias})
    LOOM_CHECK(!p->defined() || (p->dim() == 1 && p->size(0) == C), shape_error, "layer_norm: ",
               p == &weight ? "weight" : "bias", " has shape ", p->shape(), ", expected [", C, "] for input ", x.shape());
  const Device d = x.device();
  TF in = x.contiguous();
  TF w = weight.defined() ? weight.contiguous() : weight, b = bias.defined() ? bias.contiguous() : bias;
  const int64_t N = C > 0 ? in.numel() / C : 0;
  TF out = TF::empty(x.shape(), d), mean = TF::empty({N}, d), rstd = TF::empty({N}, d);
  if (C > 0)
    LOOM_GPU_ONLY(cuda::layer_norm_forward_f32(out.data(), mean.data(), rstd.data(), in.data(), w.data(), b.data(), N, C,
                                               float(eps), d.index));
  TF none;
  record<float>("layer_norm", out, {&x, weight.defined() ? &weight : &none, bias.defined() ? &bias : &none},
                [sx = SavedTensor<float>(in), sw = SavedTensor<float>(w), mean, rstd, N, C, has_w = weight.defined(),
                 has_b = bias.defined()](const TF& g) {
    const TF &in = sx.get("layer_norm"), &w = sw.get("layer_norm");
    const Device d = in.device();
    TF gc = g.contiguous(), dx = TF::empty(in.shape(), d);
    TF dw = has_w ? TF::empty({C}, d) : TF(), db = has_b ? TF::empty({C}, d) : TF();
    if (C > 0)
      LOOM_GPU_ONLY(cuda::layer_norm_backward_f32(dx.data(), dw.data(), db.data(), gc.data(), in.data(), w.data(),
                                                  mean.data(), rstd.data(), N, C, d.index));
    return std::vector<TF>{dx, dw, db};
  });
  return out;
}
}  // namespace detail

/// LayerNorm of x (..., C) over its last dimension: (x - mean) / sqrt(var + eps) * weight + bias.
/// weight and bias have shape (C); pass an undefined Tensor for either to leave it out.
template <class T>
Tensor<T> layer_norm(const Tensor<T>& x, const Tensor<T>& weight, const Tensor<T>& bias, double eps = 1e-5) {
  static_assert(is_floating_v<T>, "layer_norm: needs a floating element type");
  if constexpr (is_reduced_float_v<T>) {
    auto f = [](const Tensor<T>& t) { return t.defined() ? t.template to<float>() : Tensor<float>(); };
    return layer_norm(f(x), f(weight), f(bias), eps).template to<T>();
  } else {
    if constexpr (std::is_same_v<T, float>) {
      if (weight.defined()) detail::same_device("layer_norm", x, weight);
      if (bias.defined()) detail::same_device("layer_norm", x, bias);
      if (detail::on_cuda<T>("layer_norm", x)) return detail::gpu_layer_norm(x, weight, bias, eps);
    }
    detail::check_cpu("layer_norm", x);
    LOOM_CHECK(x.dim() >= 1, shape_error, "layer_norm: input needs at least 1 dimension, got shape ", x.shape());
    LOOM_CHECK(eps >= 0, value_error, "layer_norm: eps must be non-negative, got ", eps);
    int64_t C = x.size(-1);
    for (const Tensor<T>* p : {&weight, &bias}) {
      if (!p->defined()) continue;
      detail::check_cpu("layer_norm", x, *p);
      LOOM_CHECK(p->dim() == 1 && p->size(0) == C, shape_error, "layer_norm: ", p == &weight ? "weight" : "bias",
                 " has shape ", p->shape(), ", expected [", C, "] for input ", x.shape());
    }
    Tensor<T> in = x.contiguous();
    Tensor<T> w = weight.defined() ? weight.contiguous() : weight, b = bias.defined() ? bias.contiguous() : bias;
    Tensor<T> out = Tensor<T>::empty(x.shape());
    int64_t N = C > 0 ? in.numel() / C : 0;
    // mean and rstd are kept for the backward only when there will be one
    const bool grad = GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() || bias.requires_grad());
    Tensor<T> mean = grad ? Tensor<T>::empty({N}) : Tensor<T>(), rstd = grad ? Tensor<T>::empty({N}) : Tensor<T>();
    if (C > 0) cpu::layer_norm_forward<T>(out.data(), mean.data(), rstd.data(), in.data(), w.data(), b.data(), N, C, eps);
    // backward: one fused pass gives dx, dweight and dbias (see cpu::layer_norm_backward)
    Tensor<T> none;
    detail::record<T>("layer_norm", out, {&x, weight.defined() ? &weight : &none, bias.defined() ? &bias : &none},
                      [sx = SavedTensor<T>(in), sw = SavedTensor<T>(w), mean, rstd, N, C, has_w = weight.defined(),
                       has_b = bias.defined()](const Tensor<T>& g) {
      const Tensor<T>&in = sx.get("layer_norm"), &w = sw.get("layer_norm");
      Tensor<T> gc = g.contiguous(), dx = Tensor<T>::empty(in.shape());
      Tensor<T> dw = has_w ? zeros<T>({C}) : Tensor<T>(), db = has_b ? zeros<T>({C}) : Tensor<T>();
      if (C > 0)
        cpu::layer_norm_backward<T>(dx.data(), dw.data(), db.data(), gc.data(), in.data(), w.data(), mean.data(),
                                    rstd.data(), N, C);
      return std::vector<Tensor<T>>{dx, dw, db};
    });
    return out;
  }
}

}  // namespace loom
