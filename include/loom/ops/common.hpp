#pragma once
/// @file common.hpp
/// Checks shared by every op: tensors defined, on the same device, and on a device the op runs on.

#include "loom/core/tensor.hpp"

// check_cpu lives in core/tensor.hpp (tensor.hpp's own includes need it before this file is read).
