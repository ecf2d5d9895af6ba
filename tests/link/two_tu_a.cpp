// Two translation units include every header and link together: a non-inline definition in a
// header would be defined twice and fail to link.
#include <loom/loom.hpp>
int loom_two_tu_b();
int main() {
  auto x = loom::arange<float>(0, 4);
  return (loom::sum(x).item() == 6.0f && loom_two_tu_b() == 3) ? 0 : 1;
}
