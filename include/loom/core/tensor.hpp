#pragma once
/// @file tensor.hpp
/// Tensor<T>: a cheap handle to a strided view of shared storage, with its views, copies,
/// casts, factories and printing.
///
///   storage  [ 0 1 2 3 4 5 6 7 8 9 10 11 ]        one buffer, shared by every view
///   x        shape [3, 4], strides [4, 1], offset 0
///   x.t()    shape [4, 3], strides [1, 4], offset 0  (no copy)
///   x[1]     shape [4],    strides [1],    offset 4  (x.select(0, 1), no copy)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <memory>
#include <ostream>
#include <sstream>
#include <type_traits>
#include <vector>

#include "loom/autograd/engine.hpp"
#include "loom/autograd/grad_mode.hpp"
#include "loom/autograd/node.hpp"
#include "loom/autograd/record.hpp"
#include "loom/backend/kernels.hpp"
#include "loom/core/device.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/parallel.hpp"
#include "loom/core/random.hpp"
#include "loom/core/shape.hpp"
#include "loom/core/storage.hpp"

namespace loom {

template <class T> class Tensor;

namespace detail {
/// Sums a broadcast gradient back to `shape` (over leading and stretched dimensions), on the
/// gradient's device. For gradients inside backward functions: it records nothing.
template <class T>
Tensor<T> sum_to_shape(const Tensor<T>& grad, const Shape& shape);


/// Checks a shape for negative sizes; `op` names the caller in the error.
inline void check_sizes(const Shape& s, const char* op) {
  for (int64_t d : s) LOOM_CHECK(d >= 0, value_error, op, ": negative dimension ", d, " in shape ", s);
}

/// Strides for viewing (shape, strides) as `target` without copying, or false when impossible.
inline bool view_strides(const Shape& shape, const Shape& strides, const Shape& target, Shape& out) {
  out = target;
  if (numel_of(shape) == 0 || shape.empty()) {
    out = contiguous_strides(target);
    return true;
  }
  int view_d = target.size() - 1;
  int64_t chunk_base = strides.back(), tensor_numel = 1, view_numel = 1;
  for (int d = shape.size() - 1; d >= 0; --d) {
    tensor_numel *= shape[d];
    // At the start of a chunk of dimensions that are contiguous with each other:
    if (d == 0 || (shape[d - 1] != 1 && strides[d - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || target[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base;
        view_numel *= target[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base = strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

}  // namespace detail

/// An n-dimensional array of T on the CPU or a GPU. Copying a Tensor copies the handle, not the
/// data: both handles see the same elements. Views (reshape, transpose, slice, ...) share storage.
template <class T>
class Tensor {
 public:
  using value_type = T;

  /// An undefined tensor (no storage); defined() is false.
  Tensor() = default;
  /// A view of `storage` with the given shape, strides (in elements) and offset.
  Tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset)
      : storage_(std::move(storage)), shape_(shape), strides_(strides), offset_(offset) {}

  /// A new uninitialised contiguous tensor.
  static Tensor empty(const Shape& shape, Device device = Device::cpu()) {
    detail::check_sizes(shape, "empty");
    auto st = Storage::allocate(size_t(numel_of(shape)) * sizeof(T), device);
    return Tensor(std::move(st), shape, contiguous_strides(shape), 0);
  }

  // --- Metadata ----------------------------------------------------------------------------
  /// True when the tensor has storage.
  bool defined() const { return storage_ != nullptr; }
  /// The sizes, outermost first.
  const Shape& shape() const { return shape_; }
  /// The size of dimension d (negative d counts from the end).
  int64_t size(int64_t d) const { return shape_[wrap_axis(d, dim(), "size")]; }
  /// Number of dimensions.
  int dim() const { return shape_.size(); }
  /// Number of elements.
  int64_t numel() const { return numel_of(shape_); }
  /// Strides in elements.
  const Shape& strides() const { return strides_; }
  /// The stride of dimension d.
  int64_t stride(int64_t d) const { return strides_[wrap_axis(d, dim(), "stride")]; }
  /// Offset of the first element in the storage, in elements.
  int64_t offset() const { return offset_; }
  /// The element type's tag.
  static constexpr DType dtype() { return dtype_of_v<T>; }
  /// Where the elements live.
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  /// The shared storage.
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  /// Pointer to the first element (a device pointer for CUDA tensors).
  T* data() const { return storage_ ? static_cast<T*>(storage_->data()) + offset_ : nullptr; }
  /// True when the elements are laid out in row-major order without gaps.
  bool is_contiguous() const {
    if (numel() == 0) return true;
    int64_t expected = 1;
    for (int d = dim() - 1; d >= 0; --d) {
      if (shape_[d] == 1) continue;
      if (strides_[d] != expected) return false;
      expected *= shape_[d];
    }
    return true;
  }

  // --- Element access ----------------------------------------------------------------------
  /// A reference to one element of a CPU tensor, with bounds checks: x.at({i, j}).
  T& at(std::initializer_list<int64_t> index) const {
    LOOM_CHECK(defined(), value_error, "at: the tensor is undefined");
    LOOM_CHECK(device().is_cpu(), device_error, "at: element access needs a CPU tensor, this one is on ",
               device(), "; call .to(Device::cpu()) first");
    LOOM_CHECK(int(index.size()) == dim(), index_error, "at: ", index.size(),
               " indices given for a tensor of shape ", shape_);
    int64_t off = 0;
    int d = 0;
    for (int64_t i : index) {
      LOOM_CHECK(i >= -shape_[d] && i < shape_[d], index_error, "at: index ", i, " is out of range for dimension ",
                 d, " of size ", shape_[d], " (shape ", shape_, ")");
      off += (i < 0 ? i + shape_[d] : i) * strides_[d];
      ++d;
    }
    return data()[off];
  }
  /// The value of a one-element tensor (copied from the GPU if needed).
  T item() const {
    LOOM_CHECK(numel() == 1, shape_error, "item: the tensor has ", numel(), " elements (shape ", shape_,
               "), item() needs exactly one");
    if (device().is_cpu()) return *data();
    return to(Device::cpu()).item();
  }
  /// The elements in row-major order, copied into a vector.
  std::vector<T> to_vector() const {
    Tensor c = to(Device::cpu()).contiguous();
    return std::vector<T>(c.data(), c.data() + c.numel());
  }

  // --- Views (no copy; differentiable) -------------------------------------------------------
  /// The same elements with another shape; throws when the strides make a view impossible.
  /// One size may be -1 and is inferred.
  Tensor view(const Shape& shape) const {
    Shape target = infer_shape(shape, "view");
    Shape st;
    LOOM_CHECK(detail::view_strides(shape_, strides_, target, st), shape_error, "view: a tensor of shape ",
               shape_, " and strides ", strides_, " cannot be viewed as ", target,
               " without a copy; use reshape()");
    return reshaped_view("view", target, st);
  }
  /// The same elements with another shape: a view when possible, else a contiguous copy.
  Tensor reshape(const Shape& shape) const {
    Shape target = infer_shape(shape, "reshape");
    Shape st;
    if (detail::view_strides(shape_, strides_, target, st)) return reshaped_view("reshape", target, st);
    return contiguous().view(target);
  }
  /// Dimensions start..end (inclusive) merged into one.
  Tensor flatten(int64_t start = 0, int64_t end = -1) const {
    if (dim() == 0) return reshape({1});
    int s = wrap_axis(start, dim(), "flatten"), e = wrap_axis(end, dim(), "flatten");
    LOOM_CHECK(s <= e, index_error, "flatten: start axis ", start, " is after end axis ", end);
    Shape t;
    for (int d = 0; d < s; ++d) t.push_back(shape_[d]);
    int64_t m = 1;
    for (int d = s; d <= e; ++d) m *= shape_[d];
    t.push_back(m);
    for (int d = e + 1; d < dim(); ++d) t.push_back(shape_[d]);
    return reshape(t);
  }
  /// Dimensions reordered: result dimension i is this tensor's dimension dims[i].
  Tensor permute(const Shape& dims) const {
    LOOM_CHECK(dims.size() == dim(), shape_error, "permute: ", dims.size(), " dimensions given ", dims,
               " for a tensor of shape ", shape_);
    Shape s, st, inverse = dims;
    bool seen[max_dims] = {};
    for (int i = 0; i < dims.size(); ++i) {
      int a = wrap_axis(dims[i], dim(), "permute");
      LOOM_CHECK(!seen[a], index_error, "permute: dimension ", dims[i], " repeated in ", dims);
      seen[a] = true;
      s.push_back(shape_[a]);
      st.push_back(strides_[a]);
      inverse[a] = i;
    }
    Tensor out(storage_, s, st, offset_);
    // backward: dx = dy permuted back
    detail::record<T>("permute", out, {this}, [inverse](const Tensor& g) { return grads(g.permute(inverse)); });
    return out;
  }
  /// Dimensions d0 and d1 swapped.
  Tensor transpose(int64_t d0, int64_t d1) const {
    int a = wrap_axis(d0, dim(), "transpose"), b = wrap_axis(d1, dim(), "transpose");
    Shape s = shape_, st = strides_;
    std::swap(s[a], s[b]);
    std::swap(st[a], st[b]);
    Tensor out(storage_, s, st, offset_);
    // backward: dx = dy with the same two dimensions swapped back
    detail::record<T>("transpose", out, {this}, [a, b](const Tensor& g) { return grads(g.transpose(a, b)); });
    return out;
  }
  /// The transpose of a matrix (a 2-D tensor).
  Tensor t() const {
    LOOM_CHECK(dim() == 2, shape_error, "t: expects a 2-D tensor, got shape ", shape_);
    return transpose(0, 1);
  }
  /// Elements start, start+step, ... (< end) along dimension d. Like Python slicing, negative
  /// start/end count from the end and out-of-range bounds are clamped.
  Tensor slice(int64_t d, int64_t start, int64_t end, int64_t step = 1) const {
    int a = wrap_axis(d, dim(), "slice");
    LOOM_CHECK(step > 0, value_error, "slice: step must be positive, got ", step);
    int64_t n = shape_[a];
    auto clamp = [n](int64_t i) { return std::clamp<int64_t>(i < 0 ? i + n : i, 0, n); };
    start = clamp(start), end = std::max(clamp(end), start);
    Shape s = shape_, st = strides_;
    s[a] = (end - start + step - 1) / step;
    st[a] = strides_[a] * step;
    Tensor out(storage_, s, st, offset_ + start * strides_[a]);
    // backward: dx = zeros with dy written into the sliced positions
    Shape in = shape_;
    detail::record<T>("slice", out, {this}, [in, a, start, end, step](const Tensor& g) {
      Tensor dx = Tensor::zeros_like_shape(in, g.device());
      dx.slice(a, start, end, step).copy_(g);
      return grads(dx);
    });
    return out;
  }
  /// `length` elements from `start` along dimension d; throws when they do not fit.
  Tensor narrow(int64_t d, int64_t start, int64_t length) const {
    int a = wrap_axis(d, dim(), "narrow");
    LOOM_CHECK(start >= 0 && length >= 0 && start + length <= shape_[a], index_error, "narrow: [", start, ", ",
               start + length, ") is out of range for dimension ", d, " of size ", shape_[a]);
    return slice(a, start, start + length);
  }
  /// Element `index` of dimension d, with that dimension removed.
  Tensor select(int64_t d, int64_t index) const {
    int a = wrap_axis(d, dim(), "select");
    LOOM_CHECK(index >= -shape_[a] && index < shape_[a], index_error, "select: index ", index,
               " is out of range for dimension ", d, " of size ", shape_[a]);
    if (index < 0) index += shape_[a];
    Shape s = shape_, st = strides_;
    s.erase(a), st.erase(a);
    Tensor out(storage_, s, st, offset_ + index * strides_[a]);
    // backward: dx = zeros with dy written into row `index` of dimension a
    Shape in = shape_;
    detail::record<T>("select", out, {this}, [in, a, index](const Tensor& g) {
      Tensor dx = Tensor::zeros_like_shape(in, g.device());
      dx.select(a, index).copy_(g);
      return grads(dx);
    });
    return out;
  }
  /// A size-1 dimension inserted at position d (d may equal dim()).
  Tensor unsqueeze(int64_t d) const {
    int a = wrap_axis(d < 0 ? d + dim() + 1 : d, dim() + 1, "unsqueeze");
    Shape s = shape_, st = strides_;
    s.insert(a, 1);
    st.insert(a, a < dim() ? strides_[a] * shape_[a] : 1);
    return reshaped_view("unsqueeze", s, st);
  }
  /// Every size-1 dimension removed.
  Tensor squeeze() const {
    Shape s, st;
    for (int d = 0; d < dim(); ++d)
      if (shape_[d] != 1) s.push_back(shape_[d]), st.push_back(strides_[d]);
    return reshaped_view("squeeze", s, st);
  }
  /// Dimension d removed if its size is 1 (otherwise the tensor is returned unchanged).
  Tensor squeeze(int64_t d) const {
    int a = wrap_axis(d, dim(), "squeeze");
    if (dim() == 0 || shape_[a] != 1) return *this;
    Shape s = shape_, st = strides_;
    s.erase(a), st.erase(a);
    return reshaped_view("squeeze", s, st);
  }
  /// A broadcast view with the given shape (size-1 dimensions repeated with stride 0; -1 keeps
  /// a size; new dimensions may be added in front).
  Tensor expand(const Shape& shape) const {
    LOOM_CHECK(shape.size() >= dim(), shape_error, "expand: cannot expand shape ", shape_, " to ", shape,
               " (fewer dimensions)");
    Shape s = shape, st = shape;
    int off = shape.size() - dim();
    for (int i = 0; i < shape.size(); ++i) {
      int j = i - off;
      if (j < 0) {
        LOOM_CHECK(shape[i] >= 0, shape_error, "expand: size -1 not allowed for a new dimension in ", shape);
        st[i] = 0;
        continue;
      }
      if (shape[i] == -1) s[i] = shape_[j];
      LOOM_CHECK(s[i] == shape_[j] || shape_[j] == 1, shape_error, "expand: cannot expand shape ", shape_,
                 " to ", shape, " (dimension ", i, ": ", shape_[j], " vs ", s[i], ")");
      st[i] = (s[i] == shape_[j]) ? strides_[j] : 0;
    }
    Tensor out(storage_, s, st, offset_);
    // backward: dx = dy summed over the repeated dimensions
    Shape in = shape_;
    detail::record<T>("expand", out, {this}, [in](const Tensor& g) { return grads(detail::sum_to_shape(g, in)); });
    return out;
  }

  // --- Autograd ----------------------------------------------------------------------------
  /// True when gradients are computed for this tensor (a leaf marked requires_grad_, or the
  /// output of an op on such tensors while grad mode is on).
  bool requires_grad() const { return meta_ && meta_->requires_grad; }
  /// Marks a leaf tensor as a parameter whose gradient backward() accumulates in grad().
  Tensor& requires_grad_(bool on = true) {
    static_assert(is_floating_v<T>, "requires_grad_: only floating tensors can require grad");
    LOOM_CHECK(is_leaf() || on, value_error, "requires_grad_: cannot turn off requires_grad on the output of '",
               meta_->grad_fn->name, "'; use detach()");
    if (!meta_) meta_ = std::make_shared<AutogradMeta<T>>();
    meta_->requires_grad = on;
    return *this;
  }
  /// The gradient accumulated by backward() (undefined until then, or after zero_grad()).
  Tensor grad() const { return meta_ ? meta_->grad : Tensor(); }
  /// Replaces the accumulated gradient (an optimizer or a test may set it).
  void set_grad(const Tensor& g) {
    if (!meta_) meta_ = std::make_shared<AutogradMeta<T>>();
    meta_->grad = g;
  }
  /// Drops the accumulated gradient (the next backward starts from nothing).
  void zero_grad() const {
    if (meta_) meta_->grad = Tensor();
  }
  /// Calls `hook` during each backward() that reaches this leaf, as soon as its gradient is
  /// complete (no later node of the pass adds to it): data-parallel training starts sending a
  /// gradient while the backward pass goes on. An empty function removes the hook.
  void on_grad_ready(std::function<void()> hook) {
    LOOM_CHECK(is_leaf(), value_error, "on_grad_ready: hooks are for leaf tensors (parameters)");
    if (!meta_) meta_ = std::make_shared<AutogradMeta<T>>();
    meta_->grad_ready = std::move(hook);
  }
  /// The graph node of the op that produced this tensor (null for leaves).
  std::shared_ptr<Node<T>> grad_fn() const { return meta_ ? meta_->grad_fn : nullptr; }
  /// True for tensors not produced by a recorded op (parameters, inputs, constants).
  bool is_leaf() const { return !meta_ || !meta_->grad_fn; }
  /// The same data, cut off from the graph (no grad, no grad_fn).
  Tensor detach() const { return Tensor(storage_, shape_, strides_, offset_); }
  /// Back-propagates from this tensor: accumulates d(this)/d(leaf) * grad into every leaf's grad().
  /// `grad` may be omitted for a one-element tensor (it is then 1). The graph is freed unless
  /// retain_graph is true. The engine is autograd/engine.hpp.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const {
    autograd::backward(*this, grad, retain_graph);
  }
  /// The autograd state (internal: used by the engine and by ops that record nodes).
  const std::shared_ptr<AutogradMeta<T>>& autograd_meta() const { return meta_; }
  /// Replaces the autograd state (internal).
  void set_autograd_meta(std::shared_ptr<AutogradMeta<T>> m) { meta_ = std::move(m); }

  // --- Copies ------------------------------------------------------------------------------
  /// This tensor if it is contiguous, else a contiguous copy.
  Tensor contiguous() const { return is_contiguous() ? *this : clone(); }
  /// A contiguous copy with its own storage.
  Tensor clone() const {
    Tensor out = empty(shape_, device());
    {
      NoGradGuard no_grad;
      out.copy_(*this);
    }
    // backward: dx = dy
    detail::record<T>("clone", out, {this}, [](const Tensor& g) { return grads(g); });
    return out;
  }
  /// Copies `src` (broadcast to this shape, from any device) into this tensor; returns *this.
  const Tensor& copy_(const Tensor& src) const {
    check_inplace("copy_");
    Shape target = broadcast_shapes(src.shape(), shape_, "copy_");
    LOOM_CHECK(target == shape_, shape_error, "copy_: source shape ", src.shape(),
               " does not broadcast to destination shape ", shape_);
    if (device().is_cpu() && src.device().is_cpu()) {
      copy_strided(src, *this);
      return *this;
    }
#if LOOM_WITH_CUDA
    if (device() == src.device()) {  // on one GPU: a strided copy kernel (broadcasting included)
      Shape sst = broadcast_strides(src.shape(), src.strides(), shape_);
      cuda::copy_strided(data(), src.data(), int(sizeof(T)), detail::cuda_layout<2>(shape_, {strides_, sst}),
                         device().index);
      return *this;
    }
    if (device().is_cuda() && !is_contiguous()) {  // into a strided GPU view: through a contiguous GPU copy
      Tensor tmp = empty(shape_, device());
      tmp.copy_(src);
      return copy_(tmp);
    }
    if (device().is_cpu() && src.device().is_cuda()) {  // to the CPU: contiguous on the GPU, bytes, then strided
      Tensor s = src.expand(shape_).contiguous();
      if (!is_contiguous()) {
        Tensor host = empty(shape_);
        detail::copy_bytes(host.data(), host.device(), s.data(), s.device(), size_t(numel()) * sizeof(T));
        copy_strided(host, *this);
        return *this;
      }
      detail::copy_bytes(data(), device(), s.data(), s.device(), size_t(numel()) * sizeof(T));
      return *this;
    }
#endif
    // Crossing devices: make both sides contiguous and copy bytes.
    Tensor s = src.device().is_cpu() ? src.expand(shape_).contiguous() : src.expand(shape_);
    LOOM_CHECK(s.is_contiguous() && is_contiguous(), device_error, "copy_: copying from ", src.device(),
               " to ", device(), " needs contiguous tensors");
    detail::copy_bytes(data(), device(), s.data(), s.device(), size_t(numel()) * sizeof(T));
    return *this;
  }
  /// Sets every element to `value`; returns *this.
  const Tensor& fill_(T value) const {
    check_inplace("fill_");
    if (device().is_cpu()) {
      StridedLayout<1> L(shape_, {strides_});
      T* p = data();
      strided_for(L, [&](const int64_t* off, int64_t n, const int64_t* st) {
        for (int64_t i = 0; i < n; ++i) p[off[0] + i * st[0]] = value;
      });
      return *this;
    }
#if LOOM_WITH_CUDA
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    cuda::fill(data(), int(sizeof(T)), bits, detail::cuda_layout<1>(shape_, {strides_}), device().index);
    return *this;
#else
    throw backend_error(no_cuda_message());
#endif
  }
  /// A copy converted to element type U (this tensor itself when U is T). Not differentiable:
  /// the copy is cut off from the graph.
  template <class U>
  Tensor<U> to() const {
    if constexpr (std::is_same_v<U, T>) {
      return *this;
    } else {
#if LOOM_WITH_CUDA
      constexpr bool gpu_types = (is_floating_v<T> && !std::is_same_v<T, double>) && (is_floating_v<U> && !std::is_same_v<U, double>);
      if (gpu_types && device().is_cuda()) {  // float, bf16 and half convert on the GPU
        auto elem = [](DType d) { return d == DType::float32 ? cuda::Elem::f32 : d == DType::bfloat16 ? cuda::Elem::bf16 : cuda::Elem::f16; };
        Tensor<U> out = Tensor<U>::empty(shape_, device());
        cuda::convert(out.data(), elem(Tensor<U>::dtype()), data(), elem(dtype()),
                      detail::cuda_layout<2>(shape_, {out.strides(), strides_}), device().index);
        return out;
      }
#endif
      Tensor src = to(Device::cpu());
      Tensor<U> out = Tensor<U>::empty(shape_);
      StridedLayout<2> L(shape_, {out.strides(), src.strides()});
      U* o = out.data();
      const T* s = src.data();
      strided_for(L, [&](const int64_t* off, int64_t n, const int64_t* st) {
        for (int64_t i = 0; i < n; ++i) o[off[0] + i * st[0]] = detail::convert<U>(s[off[1] + i * st[1]]);
      });
      return out.to(device());
    }
  }
  /// This tensor on `device` (itself when it is already there, else a contiguous copy).
  Tensor to(Device device) const {
    if (device == this->device()) return *this;
    Tensor out = empty(shape_, device);
    out.copy_(device.is_cuda() ? contiguous() : *this);
    return out;
  }

 private:
  // A reshaping view (same elements in the same order): backward reshapes dy back.
  Tensor reshaped_view(const char* op, const Shape& shape, const Shape& strides) const {
    Tensor out(storage_, shape, strides, offset_);
    Shape in = shape_;
    detail::record<T>(op, out, {this}, [in](const Tensor& g) { return grads(g.reshape(in)); });
    return out;
  }
  static std::vector<Tensor> grads(Tensor g) { return {std::move(g)}; }
  static Tensor zeros_like_shape(const Shape& s, Device device) {
    Tensor z = empty(s, device);
    if (device.is_cpu()) {
      std::memset(static_cast<void*>(z.data()), 0, size_t(z.numel()) * sizeof(T));
    } else {
      z.fill_(T(0.0f));
    }
    return z;
  }
  // In-place writes: refused on tensors that require grad (outside NoGradGuard), and counted.
  void check_inplace(const char* op) const {
    LOOM_CHECK(!(GradMode::is_enabled() && requires_grad()), value_error, op,
               ": cannot modify a tensor that requires grad in place (its gradient would be wrong); "
               "do it inside a NoGradGuard scope or on x.detach()");
    if (storage_) storage_->bump_version();
  }

  // Resolves one -1 and checks that the element count matches.
  Shape infer_shape(const Shape& shape, const char* op) const {
    Shape t = shape;
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < t.size(); ++i) {
      if (t[i] == -1) {
        LOOM_CHECK(infer < 0, shape_error, op, ": only one dimension can be -1 in ", shape);
        infer = i;
      } else {
        LOOM_CHECK(t[i] >= 0, shape_error, op, ": invalid size ", t[i], " in ", shape);
        known *= t[i];
      }
    }
    if (infer >= 0) {
      LOOM_CHECK(known != 0 && numel() % known == 0, shape_error, op, ": shape ", shape,
                 " is invalid for a tensor of ", numel(), " elements (shape ", shape_, ")");
      t[infer] = numel() / known;
    }
    LOOM_CHECK(numel_of(t) == numel(), shape_error, op, ": shape ", shape, " is invalid for a tensor of ",
               numel(), " elements (shape ", shape_, ")");
    return t;
  }

  static void copy_strided(const Tensor& src, const Tensor& dst) {
    Shape sst = broadcast_strides(src.shape(), src.strides(), dst.shape());
    StridedLayout<2> L(dst.shape(), {dst.strides(), sst});
    T* o = dst.data();
    const T* s = src.data();
    if (L.ndim == 1 && L.stride[0][0] == 1 && L.stride[1][0] == 1) {  // one contiguous run
      parallel_for(0, L.size[0], 4 * parallel_grain, [&](int64_t lo, int64_t hi) {
        std::memmove(o + lo, s + lo, size_t(hi - lo) * sizeof(T));
      });
      return;
    }
    strided_for(L, [&](const int64_t* off, int64_t n, const int64_t* st) {
      for (int64_t i = 0; i < n; ++i) o[off[0] + i * st[0]] = s[off[1] + i * st[1]];
    });
  }

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  std::shared_ptr<AutogradMeta<T>> meta_;  // null until the tensor takes part in autograd
};

namespace detail {

/// The device of the op's inputs; throws unless every tensor is defined and all are on one device.
template <class... Ts>
Device same_device(const char* op, const Tensor<Ts>&... ts) {
  bool all_defined = (ts.defined() && ...);
  LOOM_CHECK(all_defined, value_error, op, ": an input tensor is undefined");
  Device first = Device::cpu();
  bool have = false, mixed = false;
  auto visit = [&](Device d) {
    if (have && d != first) mixed = true;
    if (!have) first = d, have = true;
  };
  (visit(ts.device()), ...);
  if (mixed) {
    std::string where;
    ((where += (where.empty() ? "" : ", ") + ts.device().str()), ...);
    throw device_error(concat(op, ": input tensors are on different devices (", where, "); move them with .to(device)"));
  }
  return first;
}

/// Throws unless every tensor is defined and on the CPU (for ops that only the CPU runs).
template <class... Ts>
void check_cpu(const char* op, const Tensor<Ts>&... ts) {
  Device d = same_device(op, ts...);
  LOOM_CHECK(d.is_cpu(), device_error, op, ": not available for tensors on ", d,
             " yet; move them with .to(Device::cpu())");
}

/// True when the op's inputs are on a GPU (after the checks of same_device); throws dtype_error
/// there unless T is float, the one element type the CUDA kernels compute in.
template <class T, class... Ts>
bool on_cuda(const char* op, const Tensor<Ts>&... ts) {
  Device d = same_device(op, ts...);
  if (d.is_cpu()) return false;
  LOOM_CHECK((std::is_same_v<T, float>), dtype_error, op, ": CUDA tensors of ", dtype_name(dtype_of_v<T>),
             " are not supported; the GPU kernels compute in float (use .to<float>())");
  return true;
}

/// The device of an op's inputs for an op that has kernels on every device: throws unless all
/// are defined and on one device, and, on a GPU, unless T is float (the GPU kernels' type).
template <class T, class... Ts>
Device op_device(const char* op, const Tensor<Ts>&... ts) {
  Device d = same_device(op, ts...);
  if (d.is_cuda()) (void)on_cuda<T>(op, ts...);
  return d;
}

template <class T>
Tensor<T> sum_to_shape(const Tensor<T>& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const Device dev = grad.device();
  Tensor<T> r = grad.contiguous();
  const int lead = grad.dim() - int(shape.size());
  LOOM_CHECK(lead >= 0, shape_error, "sum_to_shape: gradient ", grad.shape(), " has fewer dimensions than ", shape);
  if (lead > 0) {  // the leading dimensions that broadcasting added: one reduction over all of them
    Shape tail(std::vector<int64_t>(grad.shape().begin() + lead, grad.shape().end()));
    Tensor<T> out = Tensor<T>::empty(tail, dev);
    const int64_t inner = numel_of(tail);
    kernel::sum(dev, false, out.data(), r.data(), 1, inner ? r.numel() / inner : 0, inner);
    r = out;
  }
  for (int d = 0; d < int(shape.size()); ++d) {
    if (shape[d] != 1 || r.size(d) == 1) continue;  // dimensions stretched from 1: sum, keeping them
    const ReduceGeometry geo = reduce_geometry(r.shape(), d, false, true, "sum_to_shape");
    Tensor<T> out = Tensor<T>::empty(geo.out_shape, dev);
    kernel::sum(dev, false, out.data(), r.data(), geo.outer, geo.R, geo.inner);
    r = out;
  }
  return r;
}

}  // namespace detail

// --- Factories -------------------------------------------------------------------------------

/// A new uninitialised tensor.
template <class T>
Tensor<T> empty(const Shape& shape, Device device = Device::cpu()) { return Tensor<T>::empty(shape, device); }

/// A new tensor filled with `value`.
template <class T>
Tensor<T> full(const Shape& shape, T value, Device device = Device::cpu()) {
  Tensor<T> t = Tensor<T>::empty(shape, device);
  t.fill_(value);
  return t;
}

/// A new tensor of zeros.
template <class T>
Tensor<T> zeros(const Shape& shape, Device device = Device::cpu()) { return full<T>(shape, T(0.0f), device); }

/// A new tensor of ones.
template <class T>
Tensor<T> ones(const Shape& shape, Device device = Device::cpu()) { return full<T>(shape, T(1.0f), device); }

/// The 1-D tensor [start, start+step, ...) stopping before `end`, like numpy.arange.
template <class T>
Tensor<T> arange(double start, double end, double step = 1.0) {
  LOOM_CHECK(step != 0 && std::isfinite(start) && std::isfinite(end) && std::isfinite(step), value_error,
             "arange: invalid range start=", start, " end=", end, " step=", step);
  int64_t n = std::max<int64_t>(0, int64_t(std::ceil((end - start) / step)));
  Tensor<T> t = Tensor<T>::empty({n});
  T* p = t.data();
  for (int64_t i = 0; i < n; ++i) p[i] = detail::convert<T>(start + double(i) * step);
  return t;
}

/// A new tensor holding a copy of `values` with the given shape (1-D when the shape is omitted).
template <class T>
Tensor<T> from_vector(const std::vector<T>& values, const Shape& shape) {
  LOOM_CHECK(int64_t(values.size()) == numel_of(shape), shape_error, "from_vector: ", values.size(),
             " values do not fill shape ", shape, " (", numel_of(shape), " elements)");
  Tensor<T> t = Tensor<T>::empty(shape);
  std::copy(values.begin(), values.end(), t.data());
  return t;
}
/// A new 1-D tensor holding a copy of `values`.
template <class T>
Tensor<T> from_vector(const std::vector<T>& values) { return from_vector(values, Shape{int64_t(values.size())}); }

/// Samples from N(mean, std^2); the values depend only on the generator's state, not on threads.
template <class T>
Tensor<T> randn(const Shape& shape, Generator& gen, double mean = 0.0, double std = 1.0) {
  static_assert(is_floating_v<T>, "randn: needs a floating element type");
  Tensor<T> t = Tensor<T>::empty(shape);
  int64_t n = t.numel();
  uint64_t first = gen.advance(uint64_t(n + 1) / 2), seed = gen.seed();
  T* p = t.data();
  // Block j gives two normals (Box-Muller): elements 2j and 2j+1.
  parallel_for(0, (n + 1) / 2, parallel_grain / 8, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j) {
      auto r = Generator::philox(first + uint64_t(j), seed);
      double u1, u2;
      if constexpr (std::is_same_v<T, double>) {
        u1 = 1.0 - Generator::uniform_double(r[0], r[1]);  // (0, 1]: log(u1) is finite
        u2 = Generator::uniform_double(r[2], r[3]);
      } else {
        u1 = 1.0 - double(Generator::uniform_float(r[0]));
        u2 = double(Generator::uniform_float(r[1]));
      }
      double radius = std::sqrt(-2.0 * std::log(u1)), theta = 6.283185307179586 * u2;
      p[2 * j] = detail::convert<T>(mean + std * radius * std::cos(theta));
      if (2 * j + 1 < n) p[2 * j + 1] = detail::convert<T>(mean + std * radius * std::sin(theta));
    }
  });
  return t;
}

/// Samples uniformly from [low, high); thread-count independent like randn.
template <class T>
Tensor<T> rand(const Shape& shape, Generator& gen, double low = 0.0, double high = 1.0) {
  static_assert(is_floating_v<T>, "rand: needs a floating element type");
  LOOM_CHECK(low <= high, value_error, "rand: low (", low, ") must not exceed high (", high, ")");
  Tensor<T> t = Tensor<T>::empty(shape);
  int64_t n = t.numel();
  uint64_t first = gen.advance(uint64_t(n + 1) / 2), seed = gen.seed();
  T* p = t.data();
  parallel_for(0, n, parallel_grain / 4, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      auto r = Generator::philox(first + uint64_t(i / 2), seed);  // two values per block
      int lane = int(i % 2) * 2;
      double u = std::is_same_v<T, double> ? Generator::uniform_double(r[lane], r[lane + 1])
                                           : double(Generator::uniform_float(r[lane]));
      p[i] = detail::convert<T>(low + (high - low) * u);
    }
  });
  return t;
}

/// Samples integers uniformly from [low, high).
template <class T>
Tensor<T> randint(const Shape& shape, int64_t low, int64_t high, Generator& gen) {
  LOOM_CHECK(low < high, value_error, "randint: empty range [", low, ", ", high, ")");
  Tensor<T> t = Tensor<T>::empty(shape);
  int64_t n = t.numel();
  uint64_t first = gen.advance(uint64_t(n + 1) / 2), seed = gen.seed();
  uint64_t range = uint64_t(high - low);
  T* p = t.data();
  parallel_for(0, n, parallel_grain / 4, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      auto r = Generator::philox(first + uint64_t(i / 2), seed);
      int lane = int(i % 2) * 2;
      uint64_t bits = (uint64_t(r[lane]) << 32) | r[lane + 1];
      // Multiply-shift maps 64 random bits onto the range (bias below range / 2^64).
      uint64_t v = uint64_t((static_cast<unsigned __int128>(bits) * range) >> 64);
      p[i] = detail::convert<T>(low + int64_t(v));
    }
  });
  return t;
}

// --- Printing --------------------------------------------------------------------------------

namespace detail {

template <class T>
std::string format_element(T v, bool sci) {
  std::ostringstream os;
  if constexpr (std::is_same_v<T, bool>) {
    os << (v ? "true" : "false");
  } else if constexpr (std::is_integral_v<T>) {
    os << v;
  } else {
    double x = double(static_cast<float>(static_cast<compute_t<T>>(v)));
    if constexpr (std::is_same_v<T, double>) x = v;
    if (std::isnan(x)) return "nan";
    if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
    os << (sci ? std::scientific : std::fixed) << std::setprecision(4) << x;
  }
  return os.str();
}

template <class T>
void print_elements(std::ostream& os, const Tensor<T>& t, int d, int64_t off, bool summarize, int indent,
                    bool sci) {
  const int edge = 3;
  if (t.dim() == 0) {
    os << format_element(t.data()[off], sci);
    return;
  }
  int64_t n = t.size(d);
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 2 * edge && i == edge) {
      os << (d + 1 < t.dim() ? "...,\n" + std::string(size_t(indent + 1), ' ') : "..., ");
      i = n - edge;
    }
    int64_t o = off + i * t.stride(d);
    if (d + 1 == t.dim()) {
      os << format_element(t.data()[o], sci);
    } else {
      print_elements(os, t, d + 1, o, summarize, indent + 1, sci);
    }
    if (i + 1 < n) {
      if (d + 1 == t.dim()) {
        os << ", ";
      } else {
        os << "," << std::string(size_t(t.dim() - d - 1), '\n') << std::string(size_t(indent + 1), ' ');
      }
    }
  }
  os << ']';
}

}  // namespace detail

/// Prints `tensor([...], shape=[...], dtype=...)`; tensors over 1000 elements are abbreviated
/// to their first and last three entries along each dimension.
template <class T>
std::ostream& operator<<(std::ostream& os, const Tensor<T>& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  Tensor<T> c = t.to(Device::cpu());
  bool sci = false;
  if constexpr (is_floating_v<T>) {
    double amax = 0, amin = INFINITY;
    auto v = c.to_vector();
    for (T e : v) {
      double a = std::fabs(double(static_cast<compute_t<T>>(e)));
      if (!std::isfinite(a)) continue;
      amax = std::max(amax, a);
      if (a > 0) amin = std::min(amin, a);
    }
    sci = amax >= 1e5 || (amin < 1e-4 && amin > 0);
  }
  os << "tensor(";
  if (c.numel() == 0) {
    os << "[]";
  } else {
    detail::print_elements(os, c, 0, 0, c.numel() > 1000, 7, sci);
  }
  os << ", shape=" << c.shape() << ", dtype=" << dtype_name(c.dtype());
  if (t.device().is_cuda()) os << ", device=" << t.device();
  return os << ')';
}

}  // namespace loom
