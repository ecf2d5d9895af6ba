// 01_tensors: a tour of loom's tensors and CPU ops, ending in one causal self-attention step.
//
// Build and run (from the repository root):
//   cmake --preset release && cmake --build --preset release && ./build/release/examples/01_tensors
// It prints the tensors it makes and ends with "attention rows sum to 1: yes".
#include <cmath>
#include <iostream>

#include <loom/loom.hpp>

int main() {
  using namespace loom;
  std::cout << "loom " << version_string << ", " << get_num_threads() << " threads\n\n";

  // --- Tensors are views of shared storage ---------------------------------------------------
  auto x = arange<float>(0, 12).reshape({3, 4});     // (3, 4)
  std::cout << "x = " << x << "\n";
  std::cout << "x.t() is a view with strides " << x.t().strides() << ": " << x.t() << "\n";
  std::cout << "column 1 = x.select(1, 1) = " << x.select(1, 1) << "\n\n";

  // --- Broadcasting and reductions -------------------------------------------------------------
  auto row_means = mean(x, 1, /*keepdim=*/true);       // (3, 1)
  auto centered = x - row_means;                       // (3, 4) - (3, 1) -> (3, 4)
  std::cout << "x - mean(x, 1) = " << centered << "\n";
  std::cout << "sum over rows = " << sum(x, 0) << "\n\n";

  // --- One causal self-attention step, from matmul, masked_fill and softmax ---------------------
  const int64_t T = 5, C = 8;                           // sequence length, channels
  Generator rng(1337);
  auto h = randn<float>({T, C}, rng);                   // token features (T, C)
  auto Wq = randn<float>({C, C}, rng, 0.0, 1.0 / std::sqrt(double(C)));
  auto Wk = randn<float>({C, C}, rng, 0.0, 1.0 / std::sqrt(double(C)));
  auto q = matmul(h, Wq), k = matmul(h, Wk);            // (T, C) each
  auto scores = matmul(q, k.t()) / std::sqrt(float(C)); // (T, T); k.t() is read in place
  auto future = lt(arange<int64_t>(0, T).reshape({T, 1}), arange<int64_t>(0, T));  // j > i
  auto att = softmax(masked_fill(scores, future, -INFINITY), -1);                  // (T, T)
  std::cout << "causal attention weights = " << att << "\n";
  bool ok = max(abs(sum(att, 1) - 1.0f)).item() < 1e-5f;
  std::cout << "attention rows sum to 1: " << (ok ? "yes" : "no") << "\n";
  return ok ? 0 : 1;
}
