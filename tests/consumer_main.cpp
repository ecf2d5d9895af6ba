// The smallest loom program: exits 0 when a matmul gives the expected value.
#include <loom/loom.hpp>
#include <iostream>
int main() {
  auto a = loom::ones<float>({2, 3});
  auto b = loom::full<float>({3, 4}, 2.0f);
  auto c = loom::matmul(a, b);   // (2, 4), every entry 6
  std::cout << "loom " << loom::version_string << ": " << c << "\n";
  return c.at({1, 3}) == 6.0f ? 0 : 1;
}
