#include <loom/loom.hpp>
int loom_two_tu_b() { return static_cast<int>(loom::ones<float>({3}).numel()); }
