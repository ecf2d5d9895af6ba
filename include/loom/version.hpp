#pragma once
/// @file version.hpp
/// loom's version: the one source of truth, also read by CMakeLists.txt.

#define LOOM_VERSION_MAJOR 0
#define LOOM_VERSION_MINOR 1
#define LOOM_VERSION_PATCH 0

namespace loom {
/// The library version as "MAJOR.MINOR.PATCH".
inline constexpr const char* version_string = "0.1.0";
}  // namespace loom
