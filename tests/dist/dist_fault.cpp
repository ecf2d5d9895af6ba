// dist_fault: collectives between the ranks of `mpirun -np N dist_fault MODE`, and the two ways a
// rank can fail them. Used by test_dist.
//   collectives  checks all_reduce, reduce_scatter, all_gather and broadcast against sums computed
//                here; prints "collectives ok" on rank 0
//   hang         rank 1 sleeps instead of joining an all_reduce; the others must fail after the
//                2 s timeout with a message naming rank 1, then stop the job
//   die          rank 1 exits (status 3) before the all_reduce; the job must end, not hang
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <loom/dist/dist.hpp>

using namespace loom;

int main(int argc, char** argv) {
  std::unique_ptr<dist::Communicator> comm;
  try {
    const std::string mode = argc > 1 ? argv[1] : "collectives";
    comm = dist::make_communicator("mpi");
    comm->set_timeout(2.0);
    const int r = comm->rank(), n = comm->size();
    if (mode == "collectives") {
      // Values whose float sum depends on the order: the result must be the rank-order sum.
      std::vector<float> x(1001);
      for (size_t i = 0; i < x.size(); ++i) x[i] = float(1e-3 * double(i) + (r == 0 ? 1e7 : 0.37 * (r + 1)));
      std::vector<float> want(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        float s = 0;
        for (int k = 0; k < n; ++k) {
          float v = float(1e-3 * double(i) + (k == 0 ? 1e7 : 0.37 * (k + 1)));
          s = k == 0 ? v : s + v;
        }
        want[i] = s;
      }
      std::vector<float> y = x;
      comm->all_reduce(y.data(), int64_t(y.size()), dist::ReduceOp::sum, "all_reduce 'test'");
      if (y != want) throw value_error("all_reduce differs from the rank-order sum");
      std::vector<int64_t> counts = dist::even_counts(int64_t(x.size()), n);
      int64_t off = 0;
      for (int k = 0; k < r; ++k) off += counts[size_t(k)];
      std::vector<float> piece(static_cast<size_t>(counts[static_cast<size_t>(r)]));
      comm->reduce_scatter(x.data(), piece.data(), counts);
      for (size_t i = 0; i < piece.size(); ++i)
        if (piece[i] != want[size_t(off) + i]) throw value_error("reduce_scatter differs from the rank-order sum");
      std::vector<float> all(x.size());
      comm->all_gather(piece.data(), all.data(), counts);
      if (all != want) throw value_error("all_gather does not reassemble the pieces");
      std::vector<double> avg{double(r)};
      comm->all_reduce(avg.data(), 1, dist::ReduceOp::average);
      if (avg[0] != double(n - 1) / 2.0) throw value_error("average is wrong");
      if (comm->broadcast_string(r == 0 ? "from rank 0" : "") != "from rank 0") throw value_error("broadcast failed");
      comm->barrier();
      if (r == 0) std::cout << "collectives ok on " << n << " ranks\n";
      return 0;
    }
    if (mode == "hang" && r == 1) std::this_thread::sleep_for(std::chrono::seconds(60));
    if (mode == "die" && r == 1) _exit(3);
    std::vector<float> g(16, 1.0f);
    comm->all_reduce(g.data(), 16, dist::ReduceOp::sum, "all_reduce 'gradients'");
    std::cout << "rank " << r << " finished\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "dist_fault: " << e.what() << "\n";
    if (comm && comm->size() > 1) comm->abort(1);
    return 1;
  }
}
