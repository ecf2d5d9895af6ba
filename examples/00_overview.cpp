// 00_overview: the snippet at the top of README.md, as a program.
#include <iostream>

#include <loom/loom.hpp>

int main() {
  using namespace loom;

  Generator rng(1337);
  auto x = randn<float>({4, 64, 768}, rng);              // (B, T, C)
  auto w = randn<float>({3072, 768}, rng, 0.0, 0.02);    // (4C, C), as a Linear layer stores it
  auto h = gelu(matmul(x, w.t()), GeluApprox::tanh);     // (B, T, 4C); w.t() is a view, not a copy
  auto p = softmax(h, -1);                               // each row sums to 1
  std::cout << p.shape() << " " << sum(p, -1).at({0, 0}) << "\n";   // [4, 64, 3072] 1
  return std::abs(sum(p, -1).at({0, 0}) - 1.0f) < 1e-5f ? 0 : 1;
}
