#pragma once
/// @file shape.hpp
/// Shape: a small inline array of dimension sizes (also used for strides), and the helpers
/// that compute numel, contiguous strides, broadcasting and axis wrapping.

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <vector>

#include "loom/core/error.hpp"

namespace loom {

/// The most dimensions a tensor may have.
inline constexpr int max_dims = 8;

/// Dimension sizes in numpy order (outermost first), stored inline: copying never allocates.
class Shape {
 public:
  Shape() = default;
  /// A shape from a braced list: Shape{2, 3}.
  Shape(std::initializer_list<int64_t> dims) { assign(dims.begin(), dims.end()); }
  /// A shape from a vector of sizes.
  explicit Shape(const std::vector<int64_t>& dims) { assign(dims.begin(), dims.end()); }

  /// Number of dimensions.
  int size() const { return n_; }
  /// True for a 0-dimensional (scalar) shape.
  bool empty() const { return n_ == 0; }
  int64_t& operator[](int i) { return d_[i]; }
  int64_t operator[](int i) const { return d_[i]; }
  /// The last dimension (undefined on a 0-d shape).
  int64_t back() const { return d_[n_ - 1]; }
  int64_t* begin() { return d_; }
  int64_t* end() { return d_ + n_; }
  const int64_t* begin() const { return d_; }
  const int64_t* end() const { return d_ + n_; }

  /// Appends one dimension.
  void push_back(int64_t v) {
    LOOM_CHECK(n_ < max_dims, shape_error, "Shape: more than ", max_dims, " dimensions");
    d_[n_++] = v;
  }
  /// Inserts a dimension before position i.
  void insert(int i, int64_t v) {
    LOOM_CHECK(n_ < max_dims, shape_error, "Shape: more than ", max_dims, " dimensions");
    for (int k = n_; k > i; --k) d_[k] = d_[k - 1];
    d_[i] = v;
    ++n_;
  }
  /// Removes the dimension at position i.
  void erase(int i) {
    for (int k = i; k + 1 < n_; ++k) d_[k] = d_[k + 1];
    --n_;
  }
  /// The sizes as a std::vector.
  std::vector<int64_t> vec() const { return std::vector<int64_t>(begin(), end()); }

  friend bool operator==(const Shape& a, const Shape& b) {
    return a.n_ == b.n_ && std::equal(a.begin(), a.end(), b.begin());
  }
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

 private:
  template <class It>
  void assign(It first, It last) {
    LOOM_CHECK(last - first <= max_dims, shape_error, "Shape: ", last - first,
               " dimensions given, at most ", max_dims, " are supported");
    n_ = 0;
    for (; first != last; ++first) d_[n_++] = *first;
  }
  int64_t d_[max_dims] = {};
  int n_ = 0;
};

/// Prints a shape as [2, 3, 4].
inline std::ostream& operator<<(std::ostream& os, const Shape& s) {
  os << '[';
  for (int i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  return os << ']';
}

/// Product of the sizes (1 for a 0-d shape).
inline int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

/// Row-major (C-contiguous) strides of a shape, in elements.
inline Shape contiguous_strides(const Shape& s) {
  Shape st = s;
  int64_t acc = 1;
  for (int i = s.size() - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

/// Wraps a possibly negative axis into [0, ndim); throws index_error naming OP when out of range.
inline int wrap_axis(int64_t axis, int ndim, const char* op) {
  int64_t lo = -ndim, hi = ndim - 1;
  if (ndim == 0) lo = -1, hi = 0;  // a 0-d tensor accepts axis 0 / -1, like numpy's keepdim sums
  LOOM_CHECK(axis >= lo && axis <= hi, index_error, op, ": axis ", axis,
             " is out of range for a tensor with ", ndim, " dimensions");
  return int(axis < 0 ? axis + std::max(ndim, 1) : axis);
}

/// The NumPy broadcast of two shapes; throws shape_error naming OP when they do not broadcast.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  int n = std::max(a.size(), b.size());
  Shape out;
  for (int i = 0; i < n; ++i) {
    int ia = i - (n - a.size()), ib = i - (n - b.size());
    int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    LOOM_CHECK(da == db || da == 1 || db == 1, shape_error, op, ": shapes ", a, " and ", b,
               " cannot be broadcast (dimension ", i, ": ", da, " vs ", db, ")");
    out.push_back(da == 1 ? db : da);
  }
  return out;
}

/// Strides that read a tensor of shape `s` with strides `st` as if it had shape `target`
/// (stride 0 on broadcast dimensions). `target` must be a broadcast of `s`.
inline Shape broadcast_strides(const Shape& s, const Shape& st, const Shape& target) {
  Shape out = target;
  int off = target.size() - s.size();
  for (int i = 0; i < target.size(); ++i) {
    int j = i - off;
    out[i] = (j < 0 || s[j] == 1) ? 0 : st[j];
  }
  return out;
}

namespace detail {
/// A reduction of a contiguous tensor over one axis seen as (outer, R, inner), and the result's
/// shape. `all` reduces every element (outer = inner = 1).
struct ReduceGeometry {
  int64_t outer = 1, R = 1, inner = 1;
  Shape out_shape;
};
inline ReduceGeometry reduce_geometry(const Shape& in, int64_t axis, bool all, bool keepdim, const char* op) {
  ReduceGeometry g;
  g.R = numel_of(in);
  if (!all) {
    int a = wrap_axis(axis, in.size(), op);
    if (in.size() > 0) {
      g.R = in[a];
      for (int d = 0; d < a; ++d) g.outer *= in[d];
      for (int d = a + 1; d < in.size(); ++d) g.inner *= in[d];
      g.out_shape = in;
      if (keepdim) g.out_shape[a] = 1; else g.out_shape.erase(a);
    }
  } else if (keepdim) {
    g.out_shape = in;
    for (int64_t& d : g.out_shape) d = 1;
  }
  return g;
}
}  // namespace detail

}  // namespace loom
