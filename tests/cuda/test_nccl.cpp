// The NCCL communicator (dist/nccl.hpp) with one rank on GPU 0: every collective on device
// buffers, in place and out of place, through NCCL's own calls and through the per-piece path
// that unequal counts take; host buffers, byte types, abort. One GPU holds one NCCL rank (NCCL
// refuses two ranks on one device), so sums over several ranks need a machine with several GPUs:
//   mpirun -np 2 ... with make_communicator("nccl").
// Without a GPU the binary prints why and exits 77, which ctest reports as skipped.
#if defined(LOOM_CATCH2_MAJOR) && LOOM_CATCH2_MAJOR >= 3
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#endif
#include "catch.hpp"

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <loom/backend/cuda/cuda_api.hpp>
#include <loom/backend/cuda/nccl_api.hpp>
#include <loom/dist/dist.hpp>
#include <loom/dist/nccl.hpp>

using namespace loom;
using dist::NcclCommunicator;
using Op = dist::ReduceOp;

int main(int argc, char** argv) {
  if (!cuda::is_available()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  const int v = cuda::nccl_version();
  std::printf("CUDA device 0: %s, NCCL %d.%d.%d\n", cuda::device_name(0).c_str(), v / 10000, v / 100 % 100, v % 100);
  return Catch::Session().run(argc, argv);
}

namespace {

// n elements of T in GPU 0's memory, filled from and read back to the host.
template <class T>
struct DeviceBuffer {
  explicit DeviceBuffer(const std::vector<T>& values) : n(values.size()) {
    ptr = static_cast<T*>(cuda::malloc(bytes(), 0));
    cuda::memcpy_h2d(ptr, values.data(), bytes(), 0);
  }
  ~DeviceBuffer() { cuda::free(ptr, bytes(), 0); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::vector<T> read() const {
    std::vector<T> out(n);
    cuda::memcpy_d2h(out.data(), ptr, bytes(), 0);
    return out;
  }
  size_t bytes() const { return n * sizeof(T); }
  size_t n;
  T* ptr = nullptr;
};

// Values whose every element differs, so a shifted or skipped element shows.
template <class T>
std::vector<T> ramp(size_t n, double start) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = T(start + 0.25 * double(i % 1000) + double(i / 1000));
  return v;
}

std::unique_ptr<NcclCommunicator> one_rank() {
  static dist::SingleProcess bootstrap;
  return std::make_unique<NcclCommunicator>(bootstrap, 0);
}

template <class T>
void check_all_reduce(NcclCommunicator& comm, Op op) {
  const size_t n = (size_t(1) << 20) + 3;  // several NCCL chunks and a ragged end
  const std::vector<T> x = ramp<T>(n, 1.5);
  DeviceBuffer<T> d(x);
  comm.all_reduce(d.ptr, int64_t(n), op, "gradients");
  REQUIRE(d.read() == x);  // the sum (or average) over one rank is the value itself
}

}  // namespace

TEST_CASE("nccl: one rank on cuda:0") {
  auto comm = one_rank();
  CHECK(comm->backend() == "nccl");
  CHECK(comm->device_buffers());
  CHECK(comm->rank() == 0);
  CHECK(comm->size() == 1);
  CHECK(comm->device() == 0);
  CHECK(comm->host() == nullptr);
  CHECK(dist::have_nccl());
  comm->barrier();
  comm->barrier("twice");
}

TEST_CASE("nccl: all_reduce of f32, f64 and i64, sum and average") {
  auto comm = one_rank();
  for (Op op : {Op::sum, Op::average}) {
    check_all_reduce<float>(*comm, op);
    check_all_reduce<double>(*comm, op);
    check_all_reduce<int64_t>(*comm, op);
  }
  float* none = nullptr;
  comm->all_reduce(none, 0);  // nothing to do, no pointer needed
}

TEST_CASE("nccl: reduce_scatter, NCCL's call and the per-piece path, out of place and in place") {
  auto comm = one_rank();
  for (bool grouped : {false, true}) {
    comm->set_always_grouped(grouped);
    const std::vector<float> x = ramp<float>(1001, -3.0);
    DeviceBuffer<float> send(x);
    DeviceBuffer<float> recv(std::vector<float>(x.size(), -1.0f));
    comm->reduce_scatter(send.ptr, recv.ptr, {int64_t(x.size())}, Op::average);
    CHECK(recv.read() == x);
    CHECK(send.read() == x);  // the input is left alone
    comm->reduce_scatter(send.ptr, send.ptr, {int64_t(x.size())});
    CHECK(send.read() == x);
    const std::vector<double> y = ramp<double>(77, 2.0);
    DeviceBuffer<double> sd(y), rd(std::vector<double>(y.size(), 0.0));
    comm->reduce_scatter(sd.ptr, rd.ptr, {int64_t(y.size())});
    CHECK(rd.read() == y);
  }
}

TEST_CASE("nccl: all_gather, NCCL's call and the per-piece path, out of place and in place") {
  auto comm = one_rank();
  for (bool grouped : {false, true}) {
    comm->set_always_grouped(grouped);
    const std::vector<int64_t> x = ramp<int64_t>(4099, 7.0);
    DeviceBuffer<int64_t> send(x);
    DeviceBuffer<int64_t> recv(std::vector<int64_t>(x.size(), -1));
    comm->all_gather(send.ptr, recv.ptr, {int64_t(x.size())});
    CHECK(recv.read() == x);
    comm->all_gather(recv.ptr, recv.ptr, {int64_t(x.size())});
    CHECK(recv.read() == x);
    const std::vector<uint8_t> b = {1, 2, 3, 250, 0, 9};
    DeviceBuffer<uint8_t> sb(b), rb(std::vector<uint8_t>(b.size(), 0));
    comm->all_gather(sb.ptr, rb.ptr, {int64_t(b.size())});
    CHECK(rb.read() == b);
  }
}

TEST_CASE("nccl: broadcast from rank 0; bytes are broadcast but not reduced") {
  auto comm = one_rank();
  const std::vector<double> x = ramp<double>(300, 0.5);
  DeviceBuffer<double> d(x);
  comm->broadcast(d.ptr, int64_t(x.size()), 0);
  CHECK(d.read() == x);
  CHECK_THROWS_AS(comm->broadcast(d.ptr, int64_t(x.size()), 1), value_error);  // no rank 1

  DeviceBuffer<uint8_t> bytes(std::vector<uint8_t>{5, 6, 7});
  comm->broadcast(bytes.ptr, 3, 0);
  CHECK(bytes.read() == std::vector<uint8_t>{5, 6, 7});
  CHECK_THROWS_WITH(comm->all_reduce(bytes.ptr, 3), LOOM_CONTAINS("bytes cannot be reduced"));
}

TEST_CASE("nccl: host buffers go to the host communicator it keeps, else are refused") {
  auto lone = one_rank();
  std::vector<float> host(8, 1.0f);
  CHECK_THROWS_AS(lone->all_reduce(host.data(), 8), value_error);
  CHECK_THROWS_WITH(lone->broadcast(host.data(), 8), LOOM_CONTAINS("needs GPU memory"));
  DeviceBuffer<float> d(std::vector<float>(8, 2.0f));
  CHECK_THROWS_WITH(lone->reduce_scatter(host.data(), d.ptr, {8}), LOOM_CONTAINS("host memory"));
  CHECK(d.read() == std::vector<float>(8, 2.0f));

  NcclCommunicator kept(std::make_unique<dist::SingleProcess>(), 0);
  REQUIRE(kept.host() != nullptr);
  CHECK(kept.host()->backend() == "single");
  CHECK(kept.broadcast_string("config: 12 layers") == "config: 12 layers");
  CHECK(kept.gather_values<int64_t>(42) == std::vector<int64_t>{42});
  kept.all_gather(d.ptr, d.ptr, {8});  // device buffers still go through NCCL
  CHECK(d.read() == std::vector<float>(8, 2.0f));
}

TEST_CASE("nccl: after abort every call throws dist_error naming the rank") {
  auto comm = one_rank();
  DeviceBuffer<float> d(std::vector<float>(16, 3.0f));
  comm->all_reduce(d.ptr, 16);
  comm->abort(3);
  CHECK_THROWS_AS(comm->all_reduce(d.ptr, 16), dist_error);
  CHECK_THROWS_WITH(comm->broadcast(d.ptr, 16, 0, "weights"),
                    LOOM_CONTAINS("rank 0: weights: the NCCL communicator was aborted"));
  CHECK_THROWS_AS(comm->barrier(), dist_error);
}

TEST_CASE("nccl: make_communicator(\"nccl\") and wrong arguments") {
#if !LOOM_HAVE_MPI
  CHECK_THROWS_WITH(dist::make_communicator("nccl"), LOOM_CONTAINS("built without MPI"));
#endif
  CHECK_THROWS_WITH(dist::make_communicator("gloo"), LOOM_CONTAINS("choose auto, single, mpi or nccl"));
  dist::SingleProcess bootstrap;
  CHECK_THROWS_AS(NcclCommunicator(bootstrap, cuda::device_count()), device_error);  // no such GPU
  auto comm = one_rank();
  DeviceBuffer<float> d(std::vector<float>(4, 1.0f));
  CHECK_THROWS_AS(comm->reduce_scatter(d.ptr, d.ptr, {2, 2}), value_error);  // two counts, one rank
}
