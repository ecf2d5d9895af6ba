#pragma once
/// @file dtype.hpp
/// Element types: the 2-byte floating formats bf16 and half, and the DType tag of each type.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <type_traits>

#include "loom/config.hpp"

namespace loom {

namespace detail {
LOOM_HOST_DEVICE inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
LOOM_HOST_DEVICE inline float bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
}  // namespace detail

/// bfloat16: the top 16 bits of a float32 (8 exponent bits, 7 mantissa bits).
/// Conversion from float rounds to nearest, ties to even; NaN stays NaN and Inf stays Inf.
struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  /// Converts from float with round-to-nearest-even.
  LOOM_HOST_DEVICE bf16(float f) : bits(from_float(f)) {}  // NOLINT: implicit like a built-in float
  /// Converts to float exactly.
  LOOM_HOST_DEVICE operator float() const { return detail::bits_float(uint32_t(bits) << 16); }
  /// Builds a value from its raw bit pattern.
  LOOM_HOST_DEVICE static bf16 from_bits(uint16_t b) { bf16 h; h.bits = b; return h; }

  /// The raw bits of float f rounded to bf16.
  LOOM_HOST_DEVICE static uint16_t from_float(float f) {
    uint32_t u = detail::float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet NaN, sign kept
    uint32_t lsb = (u >> 16) & 1u;             // ties go to the even neighbour
    return uint16_t((u + 0x7fffu + lsb) >> 16);  // overflow rounds up to Inf, as IEEE says
  }
};

/// IEEE 754 binary16 (5 exponent bits, 10 mantissa bits), with subnormals.
/// Conversion from float rounds to nearest, ties to even; overflow gives Inf; NaN stays NaN.
struct half {
  uint16_t bits = 0;

  half() = default;
  /// Converts from float with round-to-nearest-even.
  LOOM_HOST_DEVICE half(float f) : bits(from_float(f)) {}  // NOLINT
  /// Converts to float exactly.
  LOOM_HOST_DEVICE operator float() const { return detail::bits_float(to_float_bits(bits)); }
  /// Builds a value from its raw bit pattern.
  LOOM_HOST_DEVICE static half from_bits(uint16_t b) { half h; h.bits = b; return h; }

  /// The raw bits of float f rounded to half.
  LOOM_HOST_DEVICE static uint16_t from_float(float f) {
    uint32_t u = detail::float_bits(f);
    uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN (quiet)
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to Inf (and Inf)
    if (a >= 0x38800000u) {                                // normal half: exponent >= -14
      uint32_t lsb = (a >> 13) & 1u;
      a += 0x0fffu + lsb;                                  // round mantissa at bit 13
      return uint16_t(sign | ((a - 0x38000000u) >> 13));   // rebias 127 -> 15
    }
    if (a < 0x33000000u) return sign;  // below half the smallest subnormal (2^-25): zero
    // Subnormal half: value = m * 2^-24, m = round(a_value * 2^24).
    uint32_t exp = a >> 23;                    // biased float exponent, 102..112
    uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - exp;               // (bias 127 - 24 = 103) => shift so that m = mant >> (126 - exp)
    uint32_t m = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (m & 1u))) ++m;  // may carry into the smallest normal: fine
    return uint16_t(sign | m);
  }

  /// The float32 bits of half bits h (exact).
  LOOM_HOST_DEVICE static uint32_t to_float_bits(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1fu) return sign | 0x7f800000u | (mant << 13);  // Inf / NaN
    if (exp != 0) return sign | ((exp + 112u) << 23) | (mant << 13);
    if (mant == 0) return sign;                                   // signed zero
    // Subnormal: normalise the mantissa.
    uint32_t e = 113u;
    while ((mant & 0x400u) == 0) { mant <<= 1; --e; }
    return sign | (e << 23) | ((mant & 0x3ffu) << 13);
  }
};

/// Runtime tag of an element type.
enum class DType { float32, float64, bfloat16, float16, int32, int64, boolean };

/// The DType of a C++ element type (compile error for unsupported types).
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::float64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::bfloat16; };
template <> struct dtype_of<half> { static constexpr DType value = DType::float16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::int32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::int64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::boolean; };
template <class T> inline constexpr DType dtype_of_v = dtype_of<T>::value;

/// The name of a DType, as PyTorch spells it ("float32", "bfloat16", ...).
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::bfloat16: return "bfloat16";
    case DType::float16: return "float16";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
    case DType::boolean: return "bool";
  }
  return "?";
}
inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

/// True for the 2-byte floating types that compute through float.
template <class T> inline constexpr bool is_reduced_float_v = std::is_same_v<T, bf16> || std::is_same_v<T, half>;
/// True for every floating element type (float, double, bf16, half).
template <class T> inline constexpr bool is_floating_v = std::is_floating_point_v<T> || is_reduced_float_v<T>;

/// The type arithmetic is done in: float for bf16/half, the type itself otherwise.
template <class T> struct compute_type { using type = T; };
template <> struct compute_type<bf16> { using type = float; };
template <> struct compute_type<half> { using type = float; };
template <class T> using compute_t = typename compute_type<T>::type;

namespace detail {
/// Converts one element between any two loom element types (through float for bf16/half).
template <class U, class T>
U convert(T x) {
  if constexpr (std::is_same_v<U, T>) {
    return x;
  } else if constexpr (std::is_same_v<U, bool>) {
    return static_cast<compute_t<T>>(x) != compute_t<T>(0);
  } else if constexpr (is_reduced_float_v<U>) {
    return U(static_cast<float>(static_cast<compute_t<T>>(x)));
  } else {
    return static_cast<U>(static_cast<compute_t<T>>(x));
  }
}
}  // namespace detail

}  // namespace loom
