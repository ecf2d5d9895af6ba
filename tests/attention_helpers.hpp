#pragma once
// Helpers shared by the attention tests: kv_start arrays of packed rows, and key/value heads
// repeated for grouped-query attention's reference.
#include <cstdint>
#include <vector>

#include <loom/loom.hpp>

namespace loom_test {

// kv_start (B, T) of rows cut into runs of the given lengths (each row's lengths sum to T).
inline loom::Tensor<int32_t> starts_of(const std::vector<std::vector<int64_t>>& rows) {
  std::vector<int32_t> out;
  for (const auto& lens : rows) {
    int64_t start = 0;
    for (int64_t n : lens) {
      for (int64_t t = 0; t < n; ++t) out.push_back(int32_t(start));
      start += n;
    }
  }
  return loom::from_vector<int32_t>(out, {int64_t(rows.size()), int64_t(out.size() / rows.size())});
}

// t (B, NKV, T, HS) with each head repeated G times in place: (B, NKV G, T, HS), the key/value
// heads that grouped-query attention shares, written out.
template <class T>
loom::Tensor<T> repeat_heads(const loom::Tensor<T>& t, int64_t G) {
  const int64_t B = t.size(0), NKV = t.size(1), T_ = t.size(2), HS = t.size(3);
  return t.unsqueeze(2).expand({B, NKV, G, T_, HS}).contiguous().reshape({B, NKV * G, T_, HS});
}

}  // namespace loom_test
