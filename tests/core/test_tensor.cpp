// Tensor core: shapes, dtypes (bf16/half bit patterns), views, copies, factories, RNG, printing, errors.
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include <loom/backend/cuda/per_device.hpp>
#include <loom/loom.hpp>

#include "catch.hpp"

using namespace loom;

namespace {
float from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
template <class T> std::string str(const T& x) { std::ostringstream os; os << x; return os.str(); }
}  // namespace

TEST_CASE("Shape basics and broadcasting") {
  Shape s{2, 3, 4};
  CHECK(s.size() == 3);
  CHECK(numel_of(s) == 24);
  CHECK(contiguous_strides(s) == Shape{12, 4, 1});
  CHECK(numel_of(Shape{}) == 1);
  CHECK(str(s) == "[2, 3, 4]");
  CHECK(broadcast_shapes({3, 1}, {1, 4}, "t") == Shape{3, 4});
  CHECK(broadcast_shapes({2, 1, 4}, {3, 1}, "t") == Shape{2, 3, 4});
  CHECK(broadcast_shapes({}, {5}, "t") == Shape{5});
  CHECK(broadcast_shapes({0, 3}, {1, 3}, "t") == Shape{0, 3});
  CHECK_THROWS_AS(broadcast_shapes({2, 3}, {4, 3}, "add"), shape_error);
  CHECK_THROWS_WITH(broadcast_shapes({2, 3}, {4, 3}, "add"), LOOM_CONTAINS("add: shapes [2, 3] and [4, 3]"));
  CHECK_THROWS_AS((Shape{1, 2, 3, 4, 5, 6, 7, 8, 9}), shape_error);
  CHECK(wrap_axis(-1, 3, "t") == 2);
  CHECK_THROWS_WITH(wrap_axis(3, 3, "sum"), LOOM_CONTAINS("sum: axis 3 is out of range for a tensor with 3 dimensions"));
}

TEST_CASE("bf16 conversion: known bit patterns, round to nearest even, NaN and Inf") {
  CHECK(bf16(1.0f).bits == 0x3F80);
  CHECK(bf16(-2.0f).bits == 0xC000);
  CHECK(bf16(0.0f).bits == 0x0000);
  CHECK(bf16(-0.0f).bits == 0x8000);
  CHECK(bf16(from_bits(0x3F808000)).bits == 0x3F80);  // halfway: ties to even (down)
  CHECK(bf16(from_bits(0x3F818000)).bits == 0x3F82);  // halfway: ties to even (up)
  CHECK(bf16(from_bits(0x3F808001)).bits == 0x3F81);  // just above halfway: up
  CHECK(bf16(from_bits(0x7F7FFFFF)).bits == 0x7F80);  // FLT_MAX rounds to +Inf
  CHECK(bf16(INFINITY).bits == 0x7F80);
  CHECK(bf16(-INFINITY).bits == 0xFF80);
  CHECK(std::isnan(float(bf16(NAN))));
  CHECK(std::isnan(float(bf16(from_bits(0x7F800001)))));  // a signalling NaN whose payload would round away
  CHECK(float(bf16::from_bits(0x4049)) == 3.140625f);
  for (uint32_t b = 0; b < 0x10000; ++b) {  // every non-NaN bf16 survives the trip through float
    bf16 h = bf16::from_bits(uint16_t(b));
    float f = h;
    if (!std::isnan(f)) REQUIRE(bf16(f).bits == b);
  }
}

TEST_CASE("half conversion: known bit patterns, subnormals, overflow, NaN") {
  CHECK(half(1.0f).bits == 0x3C00);
  CHECK(half(-2.0f).bits == 0xC000);
  CHECK(half(65504.0f).bits == 0x7BFF);         // the largest half
  CHECK(half(65519.0f).bits == 0x7BFF);         // below the rounding midpoint
  CHECK(half(65520.0f).bits == 0x7C00);         // the midpoint to 2^16 rounds to Inf
  CHECK(half(1e10f).bits == 0x7C00);
  CHECK(half(-INFINITY).bits == 0xFC00);
  CHECK(half(std::ldexp(1.0f, -14)).bits == 0x0400);  // the smallest normal
  CHECK(half(std::ldexp(1.0f, -24)).bits == 0x0001);  // the smallest subnormal
  CHECK(half(std::ldexp(1.0f, -25)).bits == 0x0000);  // halfway to zero: ties to even
  CHECK(half(std::ldexp(1.5f, -25)).bits == 0x0001);
  CHECK(half(std::ldexp(3.0f, -25)).bits == 0x0002);  // 1.5 ulps: ties to even (2)
  CHECK(half(std::ldexp(5.0f, -25)).bits == 0x0002);  // 2.5 ulps: ties to even (2)
  CHECK(half(1e-10f).bits == 0x0000);
  CHECK(half(-1e-10f).bits == 0x8000);
  CHECK(half(from_bits(0x3F801000)).bits == 0x3C00);  // 1 + 2^-11: halfway, even stays
  CHECK(half(from_bits(0x3F803000)).bits == 0x3C02);  // 1 + 3*2^-11: halfway, rounds to even
  CHECK(float(half::from_bits(0x3555)) == Approx(0.333251953125f).epsilon(0));
  CHECK(std::isnan(float(half(NAN))));
  CHECK(float(half::from_bits(0x7C00)) == INFINITY);
  for (uint32_t b = 0; b < 0x10000; ++b) {  // every non-NaN half survives the trip through float
    half h = half::from_bits(uint16_t(b));
    float f = h;
    if (!std::isnan(f)) REQUIRE(half(f).bits == b);
    else REQUIRE(std::isnan(float(half(f))));
  }
  // Rounding agrees with a double-precision reference on random floats in half's range.
  Generator g(7);
  auto xs = rand<float>({20000}, g, -70000.0, 70000.0);
  for (float x : xs.to_vector()) {
    float h = half(x);
    // The nearest half value: no other half lies strictly closer.
    float up = half::from_bits(uint16_t(half(x).bits + 1)), down = half::from_bits(uint16_t(half(x).bits - 1));
    if (std::isinf(h)) { REQUIRE(std::fabs(x) >= 65520.0f); continue; }
    REQUIRE(std::fabs(double(h) - x) <= std::fabs(double(up) - x));
    REQUIRE(std::fabs(double(h) - x) <= std::fabs(double(down) - x));
  }
}

TEST_CASE("Tensor metadata, alignment and element access") {
  auto x = arange<float>(0, 24).reshape({2, 3, 4});
  CHECK(x.dim() == 3);
  CHECK(x.numel() == 24);
  CHECK(x.strides() == Shape{12, 4, 1});
  CHECK(x.size(-1) == 4);
  CHECK(x.dtype() == DType::float32);
  CHECK(x.device() == Device::cpu());
  CHECK(x.is_contiguous());
  CHECK(reinterpret_cast<uintptr_t>(x.data()) % 64 == 0);
  CHECK(x.at({1, 2, 3}) == 23.0f);
  CHECK(x.at({-1, -1, -1}) == 23.0f);
  x.at({0, 0, 0}) = 42.0f;
  CHECK(x.data()[0] == 42.0f);
  CHECK_THROWS_AS(x.at({2, 0, 0}), index_error);
  CHECK_THROWS_WITH(x.at({0, 3, 0}), LOOM_CONTAINS("at: index 3 is out of range for dimension 1 of size 3"));
  CHECK_THROWS_AS(x.at({0, 0}), index_error);
  CHECK_THROWS_WITH(x.item(), LOOM_CONTAINS("item: the tensor has 24 elements"));
  CHECK(full<double>({}, 2.5).item() == 2.5);
  CHECK(Tensor<float>().defined() == false);
  CHECK(zeros<int32_t>({3}).dtype() == DType::int32);
  CHECK(std::string(dtype_name(Tensor<bf16>::dtype())) == "bfloat16");
  CHECK(std::string(dtype_name(Tensor<half>::dtype())) == "float16");
}

TEST_CASE("Views share storage and compute strides") {
  auto x = arange<float>(0, 12).reshape({3, 4});
  auto t = x.t();
  CHECK(t.shape() == Shape{4, 3});
  CHECK(t.strides() == Shape{1, 4});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.storage() == x.storage());
  t.at({3, 2}) = -1.0f;  // writes through to x
  CHECK(x.at({2, 3}) == -1.0f);

  SECTION("reshape and view") {
    CHECK(x.reshape({2, -1}).shape() == Shape{2, 6});
    CHECK(x.reshape({2, -1}).storage() == x.storage());
    CHECK(x.view({4, 3}).storage() == x.storage());
    CHECK_THROWS_WITH(t.view({12}), LOOM_CONTAINS("without a copy; use reshape()"));
    auto r = t.reshape({12});  // must copy
    CHECK(r.storage() != x.storage());
    CHECK(r.to_vector() == std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, -1});
    CHECK_THROWS_AS(x.reshape({5, -1}), shape_error);
    CHECK_THROWS_AS(x.reshape({-1, -1}), shape_error);
    CHECK_THROWS_WITH(x.reshape({5, 3}), LOOM_CONTAINS("reshape: shape [5, 3] is invalid for a tensor of 12 elements"));
    // A view of a non-contiguous tensor where the strides allow it: split a transposed dim.
    auto y = arange<float>(0, 24).reshape({4, 6}).t();  // (6, 4) strides (1, 6)
    auto v = y.view({2, 3, 4});
    CHECK(v.strides() == Shape{3, 1, 6});
    CHECK(v.at({1, 2, 3}) == y.at({5, 3}));
    CHECK(full<float>({}, 3.0f).reshape({1, 1}).shape() == Shape{1, 1});
    CHECK(x.flatten().shape() == Shape{12});
    CHECK(arange<float>(0, 24).reshape({2, 3, 4}).flatten(1).shape() == Shape{2, 12});
  }
  SECTION("permute and transpose") {
    auto y = arange<float>(0, 24).reshape({2, 3, 4});
    auto p = y.permute({2, 0, 1});
    CHECK(p.shape() == Shape{4, 2, 3});
    CHECK(p.at({3, 1, 2}) == y.at({1, 2, 3}));
    CHECK_THROWS_AS(y.permute({0, 0, 1}), index_error);
    CHECK_THROWS_AS(y.permute({0, 1}), shape_error);
    CHECK(y.transpose(0, -1).shape() == Shape{4, 3, 2});
    CHECK_THROWS_AS(y.t(), shape_error);
  }
  SECTION("slice, narrow, select") {
    auto s = x.slice(1, 1, 4, 2);  // columns 1 and 3
    CHECK(s.shape() == Shape{3, 2});
    CHECK(s.at({2, 1}) == x.at({2, 3}));
    CHECK(x.slice(0, -2, 100).shape() == Shape{2, 4});  // clamped like Python
    CHECK(x.slice(0, 2, 1).numel() == 0);
    CHECK_THROWS_AS(x.slice(0, 0, 2, 0), value_error);
    CHECK(x.narrow(1, 1, 2).shape() == Shape{3, 2});
    CHECK_THROWS_WITH(x.narrow(1, 3, 2), LOOM_CONTAINS("narrow: [3, 5) is out of range for dimension 1 of size 4"));
    auto row = x.select(0, 1);
    CHECK(row.shape() == Shape{4});
    CHECK(row.to_vector() == std::vector<float>{4, 5, 6, 7});
    CHECK(x.select(1, -1).to_vector() == std::vector<float>{3, 7, -1});
    CHECK_THROWS_AS(x.select(0, 3), index_error);
    // Views of views.
    auto vv = x.t().slice(0, 1, 3).select(1, 2);
    CHECK(vv.to_vector() == std::vector<float>{9, 10});
  }
  SECTION("unsqueeze, squeeze, expand") {
    CHECK(x.unsqueeze(0).shape() == Shape{1, 3, 4});
    CHECK(x.unsqueeze(-1).shape() == Shape{3, 4, 1});
    CHECK(x.unsqueeze(1).shape() == Shape{3, 1, 4});
    CHECK(x.unsqueeze(1).squeeze().shape() == Shape{3, 4});
    CHECK(x.unsqueeze(1).squeeze(1).shape() == Shape{3, 4});
    CHECK(x.squeeze(0).shape() == Shape{3, 4});  // size 3: unchanged
    auto e = arange<float>(0, 3).reshape({3, 1}).expand({2, 3, 4});
    CHECK(e.shape() == Shape{2, 3, 4});
    CHECK(e.strides() == Shape{0, 1, 0});
    CHECK(e.at({1, 2, 3}) == 2.0f);
    CHECK(x.expand({-1, 4}).shape() == Shape{3, 4});
    CHECK_THROWS_WITH(x.expand({3, 5}), LOOM_CONTAINS("expand: cannot expand shape [3, 4] to [3, 5]"));
  }
}

TEST_CASE("contiguous, clone, copy_, fill_, casts and devices") {
  auto x = arange<float>(0, 6).reshape({2, 3});
  CHECK(x.contiguous().storage() == x.storage());  // no copy when not needed
  auto t = x.t().contiguous();
  CHECK(t.storage() != x.storage());
  CHECK(t.is_contiguous());
  CHECK(t.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  auto c = x.clone();
  c.at({0, 0}) = 100.0f;
  CHECK(x.at({0, 0}) == 0.0f);

  auto d = zeros<float>({2, 3});
  d.copy_(from_vector<float>({1, 2, 3}));  // broadcast source
  CHECK(d.to_vector() == std::vector<float>{1, 2, 3, 1, 2, 3});
  d.t().copy_(arange<float>(0, 6).reshape({3, 2}));  // strided destination
  CHECK(d.to_vector() == std::vector<float>{0, 2, 4, 1, 3, 5});
  CHECK_THROWS_AS(d.copy_(zeros<float>({3, 3})), shape_error);
  d.slice(1, 0, 3, 2).fill_(9.0f);
  CHECK(d.to_vector() == std::vector<float>{9, 2, 9, 9, 3, 9});

  auto i = from_vector<float>({-1.5f, 0.0f, 2.7f}).to<int32_t>();
  CHECK(i.to_vector() == std::vector<int32_t>{-1, 0, 2});
  auto b = from_vector<float>({-1.5f, 0.0f, 2.7f}).to<bool>();
  CHECK(b.to_vector() == std::vector<bool>{true, false, true});
  auto h = from_vector<float>({1.0f, 65504.0f, 1e6f}).to<half>().to<float>();
  CHECK(h.to_vector() == std::vector<float>{1.0f, 65504.0f, INFINITY});
  auto bf = x.t().to<bf16>();  // casts read strided inputs
  CHECK(bf.to<double>().to_vector() == std::vector<double>{0, 3, 1, 4, 2, 5});
  CHECK(x.to<float>().storage() == x.storage());

  CHECK(x.to(Device::cpu()).storage() == x.storage());
#if !LOOM_WITH_CUDA
  CHECK_THROWS_AS(x.to(Device::cuda()), backend_error);
  CHECK_THROWS_WITH(zeros<float>({2}, Device::cuda()), LOOM_CONTAINS("loom was built without CUDA"));
#endif
  CHECK(Device::cuda(1).str() == "cuda:1");
}

TEST_CASE("Factories") {
  CHECK(zeros<float>({2, 2}).to_vector() == std::vector<float>(4, 0.0f));
  CHECK(ones<int64_t>({3}).to_vector() == std::vector<int64_t>{1, 1, 1});
  CHECK(full<double>({2}, 3.5).to_vector() == std::vector<double>{3.5, 3.5});
  CHECK(arange<int32_t>(0, 5).to_vector() == std::vector<int32_t>{0, 1, 2, 3, 4});
  CHECK(arange<float>(1, 2, 0.25).to_vector() == std::vector<float>{1, 1.25, 1.5, 1.75});
  CHECK(arange<float>(3, 0, -1).to_vector() == std::vector<float>{3, 2, 1});
  CHECK(arange<float>(3, 3).numel() == 0);
  CHECK_THROWS_AS(arange<float>(0, 1, 0), value_error);
  CHECK(from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}).at({1, 0}) == 4.0f);
  CHECK_THROWS_WITH(from_vector<float>({1, 2, 3}, {2, 2}), LOOM_CONTAINS("from_vector: 3 values do not fill shape [2, 2]"));
  CHECK_THROWS_WITH(zeros<float>({2, -1}), LOOM_CONTAINS("negative dimension -1"));
  auto e = empty<float>({0, 5});
  CHECK(e.numel() == 0);
  CHECK(e.shape() == Shape{0, 5});
}

TEST_CASE("Random numbers: seeded, thread-count independent, right distribution") {
  // Philox4x32-10 known-answer vector (counter 0, key 0) from the Random123 distribution.
  auto r = Generator::philox(0, 0);
  CHECK(r[0] == 0x6627e8d5u);
  CHECK(r[1] == 0xe169c58du);
  CHECK(r[2] == 0xbc57ac4cu);
  CHECK(r[3] == 0x9b00dbd8u);

  Generator g1(42), g2(42), g3(43);
  auto a = randn<float>({1000}, g1), b = randn<float>({1000}, g2), c = randn<float>({1000}, g3);
  CHECK(a.to_vector() == b.to_vector());
  CHECK(a.to_vector() != c.to_vector());
  CHECK(randn<float>({10}, g1).to_vector() != a.slice(0, 0, 10).to_vector());  // the counter advanced

  int saved = get_num_threads();
  Generator h1(5), h2(5);
  set_num_threads(1);
  auto s1 = randn<double>({200001}, h1);
  set_num_threads(2);
  auto s2 = randn<double>({200001}, h2);
  set_num_threads(saved);
  CHECK(s1.to_vector() == s2.to_vector());

  double m = mean(s1).item(), sd = std::sqrt(var(s1).item());
  CHECK(std::fabs(m) < 0.01);
  CHECK(std::fabs(sd - 1.0) < 0.01);
  Generator g(9);
  auto n2 = randn<float>({100000}, g, 3.0, 0.5);
  CHECK(std::fabs(mean(n2).item() - 3.0f) < 0.01f);
  CHECK(std::fabs(std::sqrt(var(n2).item()) - 0.5f) < 0.01f);

  auto u = rand<float>({100000}, g, -2.0, 3.0);
  CHECK(min(u).item() >= -2.0f);
  CHECK(max(u).item() < 3.0f);
  CHECK(std::fabs(mean(u).item() - 0.5f) < 0.02f);

  auto k = randint<int64_t>({10000}, -3, 4, g);
  std::set<int64_t> seen;
  for (int64_t v : k.to_vector()) {
    REQUIRE(v >= -3);
    REQUIRE(v < 4);
    seen.insert(v);
  }
  CHECK(seen.size() == 7);
  CHECK_THROWS_AS(randint<int32_t>({3}, 5, 5, g), value_error);
  Generator saved_state = g;
  auto x1 = rand<float>({7}, g);
  g.set_state(saved_state.seed(), saved_state.offset());
  CHECK(rand<float>({7}, g).to_vector() == x1.to_vector());
}

TEST_CASE("Printing") {
  auto x = arange<float>(0, 6).reshape({2, 3});
  std::string s = str(x);
  CHECK(s == "tensor([[0.0000, 1.0000, 2.0000],\n        [3.0000, 4.0000, 5.0000]], shape=[2, 3], dtype=float32)");
  CHECK(str(arange<int64_t>(0, 3)) == "tensor([0, 1, 2], shape=[3], dtype=int64)");
  CHECK(str(full<float>({}, 1.5f)) == "tensor(1.5000, shape=[], dtype=float32)");
  CHECK(str(empty<float>({0, 2})) == "tensor([], shape=[0, 2], dtype=float32)");
  CHECK(str(from_vector<float>({1e6f, NAN})) == "tensor([1.0000e+06, nan], shape=[2], dtype=float32)");
  auto big = str(arange<float>(0, 2000));
  CHECK(big.find("...") != std::string::npos);
  CHECK(big.find("1999.0000") != std::string::npos);
  CHECK(big.find("1000.0000") == std::string::npos);  // abbreviated
  CHECK(big.size() < 200);
  CHECK(str(x.to<bf16>()).find("dtype=bfloat16") != std::string::npos);
  CHECK(str(from_vector<float>({1, 0}).to<bool>()).find("[true, false]") != std::string::npos);
}

TEST_CASE("The CPU allocator reuses large blocks and keeps statistics") {
  auto& a = CpuAllocator::instance();
  auto before = a.stats();
  void* p1 = nullptr;
  {
    auto big = empty<float>({1 << 20});  // 4 MiB: cached on release
    p1 = big.storage()->data();
    CHECK(a.stats().in_use >= before.in_use + (4u << 20));
    CHECK(a.stats().peak >= a.stats().in_use);
  }
  CHECK(a.stats().in_use == before.in_use);
  auto again = empty<float>({1 << 20});
  CHECK(again.storage()->data() == p1);  // the same block, no new page faults
  CHECK(reinterpret_cast<uintptr_t>(again.data()) % 64 == 0);
  again = Tensor<float>();
  void* p2 = nullptr;
  {
    auto mid = empty<float>({1 << 16});  // 256 KiB, a small model's activation: cached too
    p2 = mid.storage()->data();
  }
  auto mid_again = empty<float>({1 << 16});
  CHECK(mid_again.storage()->data() == p2);
  mid_again = Tensor<float>();
  a.empty_cache();
  CHECK(a.stats().cached == 0);
  // small blocks (malloc, aligned by hand): 64-byte aligned at every size, writable to their
  // last byte, and counted while alive
  std::vector<Tensor<float>> small;
  for (int64_t n : {1, 3, 4, 15, 16, 17, 1000, 4096, 16000}) {  // 4 to 64000 bytes
    small.push_back(full<float>({n}, float(n)));
    CHECK(reinterpret_cast<uintptr_t>(small.back().data()) % 64 == 0);
    CHECK(small.back().data()[n - 1] == float(n));
  }
  CHECK(a.stats().in_use >= before.in_use + 64000);
  small.clear();
  CHECK(a.stats().in_use == before.in_use);
  CHECK(a.stats().cached == 0);  // small blocks go back to malloc, not to the cache
}

// The CUDA backend keeps its streams, handles and workspaces in these tables; the helper itself is
// plain C++, so its contract is checked here, on every machine.
TEST_CASE("per_device makes one value per device and call site, once, and retries after a throw") {
  using cuda::detail::per_device;
  static int made_a = 0, made_b = 0, attempts = 0;
  auto site_a = [](int device) {
    return per_device(device, [](int d) {
      ++made_a;
      return 100 + d;
    });
  };
  auto site_b = [](int device) {
    return per_device(device, [](int d) {
      ++made_b;
      return 200 + d;
    });
  };
  CHECK(site_a(0) == 100);
  CHECK(site_a(3) == 103);  // a later device grows the table; device 0 keeps its value
  CHECK(site_a(0) == 100);
  CHECK(site_b(0) == 200);  // another call site: a table of its own
  CHECK(site_a(3) == 103);
  CHECK(made_a == 2);
  CHECK(made_b == 1);
  auto flaky = [](int device) {
    return per_device(device, [](int d) {
      if (++attempts == 1) throw std::runtime_error("first try fails");
      return d * 2;
    });
  };
  CHECK_THROWS_AS(flaky(1), std::runtime_error);
  CHECK(flaky(1) == 2);  // nothing was kept from the failed try
  CHECK(flaky(1) == 2);
  CHECK(attempts == 2);
  // threads asking at once: make runs once, and all get its value
  static int made_c = 0;
  std::vector<int> got(8, -1);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&got, i] {
      got[size_t(i)] = per_device(2, [](int d) {
        ++made_c;
        return 300 + d;
      });
    });
  for (auto& t : threads) t.join();
  CHECK(made_c == 1);
  for (int v : got) CHECK(v == 302);
}
