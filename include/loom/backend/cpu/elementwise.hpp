#pragma once
/// @file elementwise.hpp
/// CPU elementwise kernels over strided operands (broadcasting is a stride of 0).
///
/// Each kernel walks a StridedLayout in runs along the innermost dimension. A run where every
/// operand is contiguous becomes a plain loop the compiler vectorises; a functor that provides
/// an Eigen array form (`vectorized`) gets Eigen's SIMD exp/tanh/log on contiguous data.

#include <type_traits>

#include <Eigen/Core>

#include "loom/core/dtype.hpp"
#include "loom/core/parallel.hpp"

namespace loom::cpu {

namespace detail {
template <class F, class = void> struct has_array_form : std::false_type {};
template <class F> struct has_array_form<F, std::void_t<decltype(F::vectorized)>> : std::true_type {};
}  // namespace detail

/// out = f(a) elementwise. Operand 0 of L is out, operand 1 is a. f takes and returns compute_t.
template <class TO, class TA, class F>
void map_unary(TO* out, const TA* a, const StridedLayout<2>& L, F f) {
  using C = compute_t<TA>;
  if constexpr (detail::has_array_form<F>::value && std::is_same_v<TO, TA> &&
                (std::is_same_v<TA, float> || std::is_same_v<TA, double>)) {
    if (L.ndim == 1 && L.stride[0][0] == 1 && L.stride[1][0] == 1) {
      using Arr = Eigen::Array<TA, Eigen::Dynamic, 1>;
      parallel_for(0, L.size[0], parallel_grain, [&](int64_t lo, int64_t hi) {
        Eigen::Map<const Arr> x(a + lo, hi - lo);
        Eigen::Map<Arr> y(out + lo, hi - lo);
        y = f.array(x);
      });
      return;
    }
  }
  strided_for(L, [&](const int64_t* off, int64_t n, const int64_t* st) {
    TO* o = out + off[0];
    const TA* x = a + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = loom::detail::convert<TO>(f(C(x[i])));
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = loom::detail::convert<TO>(f(C(x[i * st[1]])));
    }
  });
}

/// out = f(a, b) elementwise. Operands of L: out, a, b.
template <class TO, class TA, class TB, class F>
void map_binary(TO* out, const TA* a, const TB* b, const StridedLayout<3>& L, F f) {
  using CA = compute_t<TA>;
  using CB = compute_t<TB>;
  strided_for(L, [&](const int64_t* off, int64_t n, const int64_t* st) {
    TO* o = out + off[0];
    const TA* x = a + off[1];
    const TB* y = b + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = loom::detail::convert<TO>(f(CA(x[i]), CB(y[i])));
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {  // b broadcast along the run (a row + a bias)
      const CB yv = CB(*y);
      for (int64_t i = 0; i < n; ++i) o[i] = loom::detail::convert<TO>(f(CA(x[i]), yv));
    } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
      const CA xv = CA(*x);
      for (int64_t i = 0; i < n; ++i) o[i] = loom::detail::convert<TO>(f(xv, CB(y[i])));
    } else {
      for (int64_t i = 0; i < n; ++i)
        o[i * st[0]] = loom::detail::convert<TO>(f(CA(x[i * st[1]]), CB(y[i * st[2]])));
    }
  });
}

/// out = f(a, b, c) elementwise. Operands of L: out, a, b, c.
template <class TO, class TA, class TB, class TC, class F>
void map_ternary(TO* out, const TA* a, const TB* b, const TC* c, const StridedLayout<4>& L, F f) {
  strided_for(L, [&](const int64_t* off, int64_t n, const int64_t* st) {
    for (int64_t i = 0; i < n; ++i) {
      out[off[0] + i * st[0]] = loom::detail::convert<TO>(
          f(compute_t<TA>(a[off[1] + i * st[1]]), compute_t<TB>(b[off[2] + i * st[2]]),
            compute_t<TC>(c[off[3] + i * st[3]])));
    }
  });
}

}  // namespace loom::cpu
