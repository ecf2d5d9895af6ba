#pragma once
/// @file eigen.hpp
/// Eigen's dense core, included the way loom includes it: with GCC 12's false "'__Y' is used
/// uninitialized" warnings switched off for Eigen's code only.
///
/// GCC 12.1-12.2 implements _mm512_undefined_ps() and friends as `__m512 __Y = __Y;` and then
/// reports -Wuninitialized / -Wmaybe-uninitialized wherever an AVX-512 intrinsic that uses it is
/// inlined (https://gcc.gnu.org/bugzilla/show_bug.cgi?id=105593); Eigen's packet math is full of
/// them under -march=native. The pragmas cover the first inclusion of Eigen (and of
/// <immintrin.h>, which Eigen pulls in), and GCC checks them along the inlining chain, so the
/// warnings stay off where loom's kernels call Eigen and stay on for loom's and the user's code.
/// config.hpp includes this header, so it comes first in every TU that includes a loom header.

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <Eigen/Core>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
