#pragma once
/// @file any_tensor.hpp
/// AnyTensor: a tensor whose element type is known only at run time (what a file holds), as a
/// std::variant over the seven Tensor<T> types, and the per-dtype byte size.

#include <cstddef>
#include <cstdint>
#include <variant>

#include "loom/autograd/grad_mode.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/shape.hpp"
#include "loom/core/tensor.hpp"

namespace loom {

/// Bytes per element of a DType.
inline size_t dtype_itemsize(DType t) {
  switch (t) {
    case DType::float32: return 4;
    case DType::float64: return 8;
    case DType::bfloat16: return 2;
    case DType::float16: return 2;
    case DType::int32: return 4;
    case DType::int64: return 8;
    case DType::boolean: return 1;
  }
  return 0;
}

static_assert(sizeof(bf16) == 2 && sizeof(half) == 2 && sizeof(bool) == 1,
              "loom's file formats assume 2-byte bf16/half and 1-byte bool");

/// A Tensor<T> for any of loom's seven element types; copying it copies the handle, not the data.
class AnyTensor {
 public:
  /// The seven alternatives, in DType order.
  using Variant = std::variant<Tensor<float>, Tensor<double>, Tensor<bf16>, Tensor<half>, Tensor<int32_t>,
                               Tensor<int64_t>, Tensor<bool>>;

  /// An undefined tensor (an undefined Tensor<float>).
  AnyTensor() = default;
  /// Wraps a typed tensor (shares its storage).
  template <class T>
  AnyTensor(Tensor<T> t) : v_(std::move(t)) {}  // NOLINT: implicit, so typed tensors pass where AnyTensor is expected

  /// The element type.
  DType dtype() const {
    return std::visit([](const auto& t) { return std::decay_t<decltype(t)>::dtype(); }, v_);
  }
  /// The shape.
  Shape shape() const { return std::visit([](const auto& t) { return t.shape(); }, v_); }
  /// Number of elements.
  int64_t numel() const { return std::visit([](const auto& t) { return t.numel(); }, v_); }
  /// Bytes of the elements when stored contiguously.
  size_t nbytes() const { return size_t(numel()) * dtype_itemsize(dtype()); }
  /// A new uninitialised contiguous CPU tensor of element type `dtype`.
  static AnyTensor empty(DType dtype, const Shape& shape) {
    switch (dtype) {
      case DType::float32: return Tensor<float>::empty(shape);
      case DType::float64: return Tensor<double>::empty(shape);
      case DType::bfloat16: return Tensor<bf16>::empty(shape);
      case DType::float16: return Tensor<half>::empty(shape);
      case DType::int32: return Tensor<int32_t>::empty(shape);
      case DType::int64: return Tensor<int64_t>::empty(shape);
      case DType::boolean: return Tensor<bool>::empty(shape);
    }
    throw value_error("AnyTensor::empty: unknown dtype");
  }
  /// True when the wrapped tensor has storage.
  bool defined() const { return std::visit([](const auto& t) { return t.defined(); }, v_); }
  /// True when the element type is T.
  template <class T>
  bool holds() const { return std::holds_alternative<Tensor<T>>(v_); }
  /// The typed tensor; throws dtype_error naming `what` and both element types when it holds another type.
  template <class T>
  Tensor<T> get(std::string_view what = "AnyTensor") const {
    const Tensor<T>* p = std::get_if<Tensor<T>>(&v_);
    LOOM_CHECK(p != nullptr, dtype_error, what, ": holds a ", dtype_name(dtype()), " tensor, not ",
               dtype_name(dtype_of_v<T>));
    return *p;
  }
  /// Pointer to the first element's bytes (a device pointer for CUDA tensors).
  void* data() const { return std::visit([](const auto& t) { return static_cast<void*>(t.data()); }, v_); }
  /// The same elements as a contiguous CPU tensor (this tensor itself when it already is one).
  AnyTensor contiguous_cpu() const {
    NoGradGuard no_grad;  // a copy for I/O, not part of any graph
    return std::visit([](const auto& t) { return AnyTensor(t.to(Device::cpu()).contiguous()); }, v_);
  }
  /// The underlying variant (for std::visit).
  const Variant& variant() const { return v_; }
  /// Calls f(tensor) with the typed tensor and returns its result.
  template <class F>
  decltype(auto) visit(F&& f) const { return std::visit(std::forward<F>(f), v_); }

 private:
  Variant v_;
};

}  // namespace loom
