#pragma once
// A fixture for the include-order test: a core header that includes an op (upward).
#include "loom/ops/high.hpp"
