#pragma once
/// @file rope.hpp
/// Rotary position embedding (RoPE; Su et al. 2021), the position encoding of Llama: each pair
/// of a head's features is rotated by an angle proportional to the token's position, so the dot
/// product of a rotated query and a rotated key depends only on their distance. One fused op on
/// the CPU (kernel in backend/cpu/rope.hpp); on CUDA a composition of ops that run there.
///
/// The layout trap: Meta's Llama code rotates adjacent features (2p, 2p + 1), the Hugging Face
/// code rotates halves (p, p + HS/2). The two agree once the features are permuted, which is why
/// HF's conversion script permutes the rows of q_proj and k_proj: a checkpoint must be run with
/// the layout it was converted for (RopeLayout::half for HF Llama checkpoints).

#include <cmath>
#include <utility>
#include <vector>

#include "loom/core/tensor.hpp"
#include "loom/ops/elementwise.hpp"
#include "loom/ops/matmul.hpp"

namespace loom {

/// Positions start, start + 1, ..., start + T - 1 in every row: (B, T) int64 on the CPU.
inline Tensor<int64_t> rope_positions(int64_t B, int64_t T, int64_t start = 0) {
  LOOM_CHECK(B >= 0 && T >= 0, value_error, "rope_positions: B and T must be non-negative, got ", B, ", ", T);
  Tensor<int64_t> pos = Tensor<int64_t>::empty({B, T});
  int64_t* p = pos.data();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) p[b * T + t] = start + t;
  return pos;
}

namespace detail {
// x (B, T, H, HS) and pos checked as rope needs them; returns pos as a contiguous CPU tensor.
template <class T>
Tensor<int64_t> check_rope(const char* op, const Tensor<T>& x, const Tensor<int64_t>& pos, double theta) {
  LOOM_CHECK(pos.defined(), value_error, op, ": pos is undefined");
  LOOM_CHECK(x.dim() == 4, shape_error, op, ": x must be (B, T, H, HS), got ", x.shape());
  const int64_t B = x.size(0), T_ = x.size(1), HS = x.size(3);
  LOOM_CHECK(pos.shape() == Shape({B, T_}), shape_error, op, ": pos must be (B, T) = ", Shape({B, T_}), " for x ",
             x.shape(), ", got ", pos.shape());
  LOOM_CHECK(HS % 2 == 0, shape_error, op, ": the head size HS must be even (features rotate in pairs), got x ",
             x.shape());
  LOOM_CHECK(theta > 0 && std::isfinite(theta), value_error, op, ": theta must be positive and finite, got ", theta);
  return pos.to(Device::cpu()).contiguous();  // small: read on the host
}

/// rope as a composition of ops that run on every device: x * cos + matmul(x, P) * sin, where
/// cos and sin are (B, T, 1, HS) tables (each pair's angle at both of its features), built on
/// the host from pos (B, T, on the CPU, contiguous) and moved to x's device, and P (HS, HS) is
/// the signed permutation with x P = rotate_half(x) (for pair (i, j): (x P)[i] = -x[j],
/// (x P)[j] = x[i]). Autograd comes from the ops. The CUDA path of rope; on the CPU it checks
/// the fused kernel.
template <class T>
Tensor<T> rope_composed(const Tensor<T>& x, const Tensor<int64_t>& pos, double theta, RopeLayout layout) {
  const Device d = x.device();
  const int64_t B = x.size(0), T_ = x.size(1), HS = x.size(3), half = HS / 2;
  const bool interleaved = layout == RopeLayout::interleaved;
  auto pair = [&](int64_t p) {  // the two features of pair p
    return interleaved ? std::pair<int64_t, int64_t>{2 * p, 2 * p + 1} : std::pair<int64_t, int64_t>{p, p + half};
  };
  Tensor<T> cos_t = Tensor<T>::empty({B, T_, 1, HS}), sin_t = Tensor<T>::empty({B, T_, 1, HS});
  T *c = cos_t.data(), *s = sin_t.data();
  const int64_t* pp = pos.data();
  for (int64_t bt = 0; bt < B * T_; ++bt)
    for (int64_t p = 0; p < half; ++p) {
      const double a = double(pp[bt]) * std::pow(theta, -2.0 * double(p) / double(HS));
      auto [i, j] = pair(p);
      c[bt * HS + i] = c[bt * HS + j] = T(std::cos(a));
      s[bt * HS + i] = s[bt * HS + j] = T(std::sin(a));
    }
  Tensor<T> P = zeros<T>({HS, HS});
  for (int64_t p = 0; p < half; ++p) {
    auto [i, j] = pair(p);
    P.data()[j * HS + i] = T(-1);  // (x P)[i] = -x[j]
    P.data()[i * HS + j] = T(1);   // (x P)[j] = x[i]
  }
  return x * cos_t.to(d) + matmul(x, P.to(d)) * sin_t.to(d);
}
}  // namespace detail

/// Rotary position embedding of x (B, T, H, HS) (HS even; any strides, last one 1 or copied)
/// at positions pos (B, T) int64: pair p of position n rotates by angle n * theta^(-2p/HS).
/// Returns a new contiguous (B, T, H, HS). Backward: g rotated by the opposite angle.
template <class T>
Tensor<T> rope(const Tensor<T>& x, const Tensor<int64_t>& pos, double theta = 10000.0,
               RopeLayout layout = RopeLayout::half) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "rope: float or double");
  const Device d = detail::op_device<T>("rope", x);
  const Tensor<int64_t> p = detail::check_rope("rope", x, pos, theta);  // on the CPU, even for CUDA x
  // No CUDA kernel yet (none is written without a GPU to test it on): compose ops that run there.
  if (d.is_cuda()) return detail::rope_composed(x, p, theta, layout);
  const int64_t B = x.size(0), T_ = x.size(1), H = x.size(2), HS = x.size(3);
  Tensor<T> in = (x.stride(-1) == 1 || HS <= 1) ? x : x.contiguous();
  Tensor<T> out = Tensor<T>::empty({B, T_, H, HS}, d);
  if (out.numel() > 0)
    kernel::rope(d, out.data(), in.data(), {in.stride(0), in.stride(1), in.stride(2)}, p.data(), B, T_, H, HS, theta,
                 layout, false);
  // backward: a rotation's transpose is its inverse, so dx = g rotated by the opposite angles
  detail::record<T>("rope", out, {&x}, [p, B, T_, H, HS, theta, layout](const Tensor<T>& g_in) {
    const Device d = g_in.device();
    Tensor<T> g = g_in.stride(-1) == 1 ? g_in : g_in.contiguous();
    Tensor<T> dx = Tensor<T>::empty({B, T_, H, HS}, d);
    if (dx.numel() > 0)
      kernel::rope(d, dx.data(), g.data(), {g.stride(0), g.stride(1), g.stride(2)}, p.data(), B, T_, H, HS, theta,
                   layout, true);
    return std::vector<Tensor<T>>{dx};
  });
  return out;
}

}  // namespace loom
