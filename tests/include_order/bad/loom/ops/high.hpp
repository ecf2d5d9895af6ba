#pragma once
// A fixture for the include-order test: an op header (it may include core).
#include "loom/core/low.hpp"
