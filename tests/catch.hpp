#pragma once
// One header hides the Catch2 v2/v3 split. LOOM_CATCH2_MAJOR comes from CMake (the version that
// was linked), not from __has_include, because a machine may have v3 headers and link v2.
#if defined(LOOM_CATCH2_MAJOR) && LOOM_CATCH2_MAJOR >= 3
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_floating_point.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
using Catch::Approx;
#define LOOM_CONTAINS(s) Catch::Matchers::ContainsSubstring(s)
#else
#include <catch2/catch.hpp>
#define LOOM_CONTAINS(s) Catch::Matchers::Contains(s)
#endif
