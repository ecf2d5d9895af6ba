// CUDA backend: device memory round trips, a custom kernel and a cuBLAS GEMM, each compared
// with the CPU. Without a GPU the binary prints why and exits 77, which ctest reports as skipped.
#if defined(LOOM_CATCH2_MAJOR) && LOOM_CATCH2_MAJOR >= 3
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#endif
#include "catch.hpp"

#include <cstdio>

#include <loom/backend/cuda/cuda_api.hpp>
#include <loom/loom.hpp>

using namespace loom;

int main(int argc, char** argv) {
  if (!cuda::is_available()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  std::printf("CUDA device 0: %s\n", cuda::device_name(0).c_str());
  return Catch::Session().run(argc, argv);
}

TEST_CASE("Tensors move to the GPU and back unchanged") {
  Generator g(1);
  auto x = randn<float>({37, 129}, g);
  auto d = x.to(Device::cuda());
  CHECK(d.device() == Device::cuda(0));
  CHECK(d.to(Device::cpu()).to_vector() == x.to_vector());
  auto t = x.t().to(Device::cuda());  // non-contiguous source
  CHECK(t.to(Device::cpu()).to_vector() == x.t().contiguous().to_vector());
  CHECK(full<float>({3}, 2.0f, Device::cuda()).to(Device::cpu()).to_vector() == std::vector<float>{2, 2, 2});
  CHECK(d.slice(0, 0, 1).item() == x.at({0, 0}));
  CHECK_THROWS_AS(add(d, d), device_error);  // CPU-only ops say so
}

TEST_CASE("A custom kernel agrees with the CPU") {
  Generator g(2);
  auto x = randn<float>({100003}, g);
  auto d = x.to(Device::cuda());
  cuda::scale_f32(d.data(), 3.0f, d.numel(), 0);
  auto expect = x * 3.0f;
  CHECK(d.to(Device::cpu()).to_vector() == expect.to_vector());
}

TEST_CASE("cuBLAS SGEMM agrees with the CPU GEMM") {
  Generator g(3);
  const int64_t M = 67, K = 129, N = 33;  // odd sizes that fill no tile
  auto a = randn<float>({M, K}, g), b = randn<float>({K, N}, g);
  auto da = a.to(Device::cuda()), db = b.to(Device::cuda());
  auto dc = empty<float>({M, N}, Device::cuda());
  cuda::matmul_f32(da.data(), db.data(), dc.data(), M, N, K, 0);
  auto ref = matmul(a.to<double>(), b.to<double>());
  auto got = dc.to(Device::cpu()).to<double>();
  // TF32 is off by default in cuBLAS, so fp32 accumulation differences only: 1e-4 absolute
  // on values of magnitude ~sqrt(K) ~ 11.
  double worst = max(abs(got - ref)).item();
  CHECK(worst < 1e-4);
}
