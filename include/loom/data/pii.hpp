#pragma once
/// @file pii.hpp
/// Finds personal data in text (e-mail addresses, IP addresses, phone numbers, payment card
/// numbers, IBANs) with hand-written scanners, and replaces each span by a placeholder such as
/// "<EMAIL>" (FineWeb's PIIFormatter in datatrove replaces e-mails and IPs the same way; we add
/// phones, cards and IBANs with checksums to keep false positives low).
///
/// What each scanner accepts (all ASCII; a "boundary" means the neighbouring byte is not a
/// letter, digit or '_'):
///  - email: local@domain.tld. Local part of [A-Za-z0-9._%+-] (1..64, not starting or ending
///    with '.'), domain of at least two dot-separated labels of [A-Za-z0-9-] (no label starting
///    or ending in '-'), the last label (TLD) 2+ letters. A trailing '.' or '-' is not taken.
///    "user@localhost" is not an address.
///  - IPv4: four decimal octets 0..255 without leading zeros, not inside a longer dotted number
///    (not preceded by "<digit>." or a letter, not followed by ".<digit>": "1.2.3.4.5" and
///    "v1.2.3.4" are not addresses).
///    Private, loopback and broadcast addresses are matched too (datatrove can keep them).
///  - IPv6: hex groups of 1..4 digits separated by ':'; either exactly 8 groups, or one "::"
///    with at least 2 groups of which one has 3+ hex digits ("fe80::1", "2001:db8::8a2e:370:7334").
///    Times "12:30:45", MAC addresses "00:1a:2b:3c:4d:5e" and C++ names "std::map" do not match.
///    Embedded IPv4 ("::ffff:1.2.3.4") and zone ids ("%eth0") are not handled.
///  - phone: North American "(NPA) NXX-XXXX", "NPA-NXX-XXXX", "NPA.NXX.XXXX", "NPA NXX XXXX",
///    optionally after "+1" / "1" and a separator (NPA and NXX start with 2..9); or
///    international "+CC ..." with 8..15 digits in all, in groups separated by one space, '-' or
///    '.', a group possibly in parentheses ("+44 (0) 20 7946 0958"), at most one one-digit group
///    after the country code. Bare digit runs are never phones (years, counts, ids).
///  - credit_card: 13..19 digits, one group or groups of 3..6 digits joined by single spaces or
///    single '-' (one kind of separator), Luhn-valid, with an issuer prefix and length: Visa 4
///    (13, 16, 19), Mastercard 51-55 / 2221-2720 (16), Amex 34 / 37 (15), Discover 6011 / 65
///    (16..19).
///  - iban: two capital letters of a country in the IBAN registry table below, two check digits,
///    then the country's length of capitals/digits, either unbroken or in groups of 4 separated
///    by single spaces; the ISO 13616 mod-97 check must give 1.
/// Matches are returned in text order without overlaps; where two scanners claim overlapping
/// spans the one that starts first (then the longer) wins.
///
/// Speed: the scanners jump between candidate bytes ('@' with memchr, ':' with memchr, then one
/// pass testing each byte against a 256-entry table of digits, '+', '(' and capitals).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace loom::data {

/// Kinds of personal data found.
enum class PiiType { email, ip_address, phone, credit_card, iban };

/// One found span [begin, end) of the text.
struct PiiMatch {
  PiiType type;  ///< what was found
  size_t begin;  ///< first byte
  size_t end;    ///< one past the last byte
};

/// "email", "ip_address", "phone", "credit_card", "iban".
inline const char* pii_name(PiiType t) {
  switch (t) {
    case PiiType::email: return "email";
    case PiiType::ip_address: return "ip_address";
    case PiiType::phone: return "phone";
    case PiiType::credit_card: return "credit_card";
    case PiiType::iban: return "iban";
  }
  return "unknown";
}

/// "<EMAIL>", "<IP_ADDRESS>", "<PHONE>", "<CREDIT_CARD>", "<IBAN>".
inline const char* pii_placeholder(PiiType t) {
  switch (t) {
    case PiiType::email: return "<EMAIL>";
    case PiiType::ip_address: return "<IP_ADDRESS>";
    case PiiType::phone: return "<PHONE>";
    case PiiType::credit_card: return "<CREDIT_CARD>";
    case PiiType::iban: return "<IBAN>";
  }
  return "<PII>";
}

/// Counts per type, indexable by int(PiiType).
struct PiiCounts {
  uint64_t n[5] = {};  ///< matches of each type
  /// All matches together.
  uint64_t total() const { return n[0] + n[1] + n[2] + n[3] + n[4]; }
  /// Adds one match of each element of `matches`.
  void add(const std::vector<PiiMatch>& matches) {
    for (const PiiMatch& m : matches) ++n[int(m.type)];
  }
};

namespace detail_pii {

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
inline bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }
inline bool is_word(char c) { return is_alnum(c) || c == '_'; }
inline bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/// True when a number may start at i: no word byte before it, and not "<digit>." / "<digit>-"
/// / "<digit>," before it (which would make it part of a longer number).
inline bool number_starts(std::string_view s, size_t i, bool allow_dash = false) {
  if (i == 0) return true;
  char p = s[i - 1];
  if (is_word(p)) return false;
  if ((p == '.' || p == ',' || (p == '-' && !allow_dash)) && i >= 2 && is_digit(s[i - 2])) return false;
  if (p == '.' && i >= 2 && is_alpha(s[i - 2])) return false;  // "v.1.2.3.4", "x.1.2.3.4"
  return true;
}

/// True when a number may end at e: no word byte after it, and not ".<digit>" / "-<digit>" /
/// ",<digit>" after it.
inline bool number_ends(std::string_view s, size_t e) {
  if (e >= s.size()) return true;
  char c = s[e];
  if (is_word(c)) return false;
  if ((c == '.' || c == ',' || c == '-') && e + 1 < s.size() && is_digit(s[e + 1])) return false;
  return true;
}

// ---------------------------------------------------------------- email

/// The address around the '@' at `at`, if any; `floor` is the first byte the match may use.
inline bool match_email(std::string_view s, size_t at, size_t floor, PiiMatch& m) {
  auto local_char = [](char c) {
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
  };
  size_t b = at;
  while (b > floor && at - b < 64 && local_char(s[b - 1])) --b;
  if (b > floor && (local_char(s[b - 1]) || s[b - 1] == '@')) return false;  // local part too long
  while (b < at && (s[b] == '.' || s[b] == '-' || s[b] == '+')) ++b;  // "...joe@" -> "joe@"
  if (b == at || s[at - 1] == '.') return false;
  size_t e = at + 1;
  while (e < s.size() && e - at <= 253 && (is_alnum(s[e]) || s[e] == '.' || s[e] == '-')) ++e;
  while (e > at + 1 && (s[e - 1] == '.' || s[e - 1] == '-')) --e;
  if (e < s.size() && (s[e] == '_' || s[e] == '@')) return false;
  // labels
  size_t labels = 0, label_start = at + 1, last_start = at + 1;
  for (size_t i = at + 1; i <= e; ++i) {
    if (i == e || s[i] == '.') {
      if (i == label_start) return false;  // empty label
      if (s[label_start] == '-' || s[i - 1] == '-') return false;
      ++labels;
      last_start = label_start;
      label_start = i + 1;
    }
  }
  if (labels < 2 || e - last_start < 2) return false;
  for (size_t i = last_start; i < e; ++i)
    if (!is_alpha(s[i])) return false;
  m = {PiiType::email, b, e};
  return true;
}

// ---------------------------------------------------------------- IP addresses

/// True when the text before i marks what follows as a version number, not an address:
/// "version 2.0.3.4", "Standards-Version to 4.5.1.0", "(>= 2.0.3.4)", "base-passwd (2.0.3.5)".
inline bool after_version_marker(std::string_view s, size_t i) {
  size_t p = i;
  while (p > 0 && s[p - 1] == ' ') --p;
  const std::string_view before = s.substr(0, p);
  auto ends = [&](std::string_view w) {
    if (before.size() < w.size()) return false;
    for (size_t k = 0; k < w.size(); ++k)
      if ((before[before.size() - w.size() + k] | 0x20) != w[k]) return false;
    return true;
  };
  if (ends("version") || ends("version to") || ends(">=") || ends("<=") || ends(">>") || ends("<<") || ends("(="))
    return true;
  // "package (1.2.3.4)": an opening parenthesis right after a word (ending in a letter) and a space
  return p == i && p >= 3 && s[p - 1] == '(' && s[p - 2] == ' ' && is_alpha(s[p - 3]);
}

/// An IPv4 address starting at i (a digit).
inline bool match_ipv4(std::string_view s, size_t i, PiiMatch& m) {
  if (!number_starts(s, i, true)) return false;
  if (after_version_marker(s, i)) return false;
  size_t p = i;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (p >= s.size() || s[p] != '.') return false;
      ++p;
    }
    size_t q = p;
    unsigned v = 0;
    while (q < s.size() && is_digit(s[q]) && q - p < 4) v = v * 10 + unsigned(s[q++] - '0');
    size_t len = q - p;
    if (len == 0 || len > 3 || v > 255 || (len > 1 && s[p] == '0')) return false;
    p = q;
  }
  if (!number_ends(s, p)) return false;
  m = {PiiType::ip_address, i, p};
  return true;
}

/// An IPv6 address in the hex/colon run around the ':' at `colon`; `floor` as for email.
inline bool match_ipv6(std::string_view s, size_t colon, size_t floor, PiiMatch& m) {
  size_t b = colon, e = colon + 1;
  while (b > floor && (is_hex(s[b - 1]) || s[b - 1] == ':')) --b;
  while (e < s.size() && (is_hex(s[e]) || s[e] == ':')) ++e;
  // a single ':' at either end is punctuation ("address: fe80::1", "fe80::1:")
  if (e - b >= 2 && s[b] == ':' && s[b + 1] != ':') ++b;
  if (e - b >= 2 && s[e - 1] == ':' && s[e - 2] != ':') --e;
  if (b > 0 && (is_word(s[b - 1]) || s[b - 1] == '.')) return false;
  if (e < s.size() && (is_word(s[e]) || (s[e] == '.' && e + 1 < s.size() && is_alnum(s[e + 1]))))
    return false;
  // parse groups
  int groups = 0, long_groups = 0, compressions = 0;
  size_t i = b;
  if (i + 1 < e && s[i] == ':' && s[i + 1] == ':') {
    compressions = 1;
    i += 2;
  }
  while (i < e) {
    size_t q = i;
    while (q < e && is_hex(s[q])) ++q;
    size_t len = q - i;
    if (len == 0 || len > 4) return false;
    ++groups;
    long_groups += len >= 3;
    i = q;
    if (i == e) break;
    // s[i] == ':'
    if (i + 1 < e && s[i + 1] == ':') {
      if (++compressions > 1) return false;
      i += 2;
    } else {
      ++i;
      if (i == e) return false;  // trailing single ':' (trimmed above)
    }
  }
  bool ok = compressions == 0 ? groups == 8 : (groups >= 2 && groups <= 7 && long_groups >= 1);
  if (!ok) return false;
  m = {PiiType::ip_address, b, e};
  return true;
}

// ---------------------------------------------------------------- credit cards

/// True when the digits pass the Luhn check.
inline bool luhn_ok(const char* d, size_t n) {
  unsigned sum = 0;
  for (size_t k = 0; k < n; ++k) {
    unsigned v = unsigned(d[n - 1 - k] - '0');
    if (k & 1) {
      v *= 2;
      if (v > 9) v -= 9;
    }
    sum += v;
  }
  return sum % 10 == 0;
}

/// True when the card number has a known issuer prefix for its length.
inline bool card_issuer_ok(const char* d, size_t n) {
  auto prefix = [&](int k) {
    int v = 0;
    for (int i = 0; i < k; ++i) v = v * 10 + (d[i] - '0');
    return v;
  };
  if (d[0] == '4') return n == 13 || n == 16 || n == 19;                 // Visa
  int p2 = prefix(2), p4 = prefix(4);
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return n == 16;  // Mastercard
  if (p2 == 34 || p2 == 37) return n == 15;                                // Amex
  if (p4 == 6011 || p2 == 65) return n >= 16 && n <= 19;                   // Discover
  return false;
}

/// A card number starting at i (a digit).
inline bool match_card(std::string_view s, size_t i, PiiMatch& m) {
  if (!number_starts(s, i)) return false;
  // part of an identifier or a URL ("fuzzer-5390364397928448", "testcase-detail/5390...")
  if (i > 0 && (s[i - 1] == '/' || s[i - 1] == '-' || s[i - 1] == '_' || s[i - 1] == '#' || s[i - 1] == '=' || s[i - 1] == ':'))
    return false;
  char digits[24];
  size_t nd = 0, p = i;
  char sep = 0;
  // group ends (byte offset, digit count so far) for backing off to a shorter number
  size_t ends[24], counts[24];
  int ngroups = 0;
  while (true) {
    size_t q = p;
    while (q < s.size() && is_digit(s[q])) {
      if (nd < 20) digits[nd] = s[q];
      ++nd;
      ++q;
    }
    size_t len = q - p;
    if (ngroups == 0 && (len > 19)) return false;
    ends[ngroups] = q;
    counts[ngroups] = nd;
    ++ngroups;
    if (nd > 19 || ngroups >= 8) break;
    if (q + 1 < s.size() && (s[q] == ' ' || s[q] == '-') && is_digit(s[q + 1]) &&
        (sep == 0 || s[q] == sep)) {
      sep = s[q];
      p = q + 1;
      continue;
    }
    break;
  }
  // a grouped number: groups of 3..6 digits; one group: 13..19 digits
  for (int g = ngroups - 1; g >= 0; --g) {
    size_t n = counts[g];
    if (n < 13 || n > 19) continue;
    bool groups_ok = true;
    if (g > 0)
      for (int k = 0; k <= g; ++k) {
        size_t glen = counts[k] - (k ? counts[k - 1] : 0);
        if (glen < 3 || glen > 6) groups_ok = false;
      }
    if (!groups_ok) continue;
    if (!number_ends(s, ends[g]) && !(g + 1 < ngroups)) continue;
    if (g + 1 < ngroups && s[ends[g]] == '-') continue;  // "4111-1111-1111-1111-2222"
    if (!card_issuer_ok(digits, n) || !luhn_ok(digits, n)) continue;
    m = {PiiType::credit_card, i, ends[g]};
    return true;
  }
  return false;
}

// ---------------------------------------------------------------- phones

/// Reads exactly k digits at p; returns the end or npos.
inline size_t read_digits(std::string_view s, size_t p, size_t k) {
  for (size_t j = 0; j < k; ++j)
    if (p + j >= s.size() || !is_digit(s[p + j])) return std::string_view::npos;
  return p + k;
}

/// A North American number starting at i ('+', '1', '(' or the area code's first digit).
inline bool match_nanp(std::string_view s, size_t i, PiiMatch& m) {
  constexpr size_t npos = std::string_view::npos;
  if (i > 0 && (is_word(s[i - 1]) || s[i - 1] == '+')) return false;
  if (!number_starts(s, i)) return false;
  size_t p = i;
  auto is_sep = [](char c) { return c == ' ' || c == '-' || c == '.'; };
  // optional country code
  if (s[p] == '+' || (s[p] == '1' && p + 1 < s.size() && is_sep(s[p + 1]))) {
    if (s[p] == '+') {
      if (p + 1 >= s.size() || s[p + 1] != '1') return false;
      ++p;
    }
    ++p;  // the '1'
    if (p >= s.size()) return false;
    if (is_sep(s[p])) ++p;
    else if (s[p] != '(') return false;
  }
  bool paren = false;
  if (p < s.size() && s[p] == '(') {
    paren = true;
    ++p;
  }
  size_t q = read_digits(s, p, 3);
  if (q == npos || s[p] < '2') return false;
  p = q;
  if (paren) {
    if (p >= s.size() || s[p] != ')') return false;
    ++p;
    if (p < s.size() && (s[p] == ' ' || s[p] == '-')) ++p;
  } else {
    if (p >= s.size() || !is_sep(s[p])) return false;
    ++p;
  }
  const char first_sep = paren ? 0 : s[p - 1];
  q = read_digits(s, p, 3);
  if (q == npos || s[p] < '2') return false;
  p = q;
  // one kind of separator: "617-555-0199", "617.555.0199", not the clause "252.227-7013"
  if (p >= s.size() || !is_sep(s[p]) || (first_sep && s[p] != first_sep)) return false;
  ++p;
  q = read_digits(s, p, 4);
  if (q == npos) return false;
  p = q;
  if (!number_ends(s, p)) return false;
  m = {PiiType::phone, i, p};
  return true;
}

/// An international number "+CC ..." starting at the '+' at i.
inline bool match_intl_phone(std::string_view s, size_t i, PiiMatch& m) {
  if (i > 0 && (is_word(s[i - 1]) || s[i - 1] == '+')) return false;
  size_t p = i + 1;
  if (p >= s.size() || !is_digit(s[p])) return false;
  size_t digits = 0, one_digit_groups = 0;
  size_t ends[40], counts[40];
  int ngroups = 0;
  bool first = true;
  while (ngroups < 40) {
    bool paren = false;
    if (!first && p < s.size() && s[p] == '(') {
      paren = true;
      ++p;
    }
    size_t q = p;
    while (q < s.size() && is_digit(s[q])) ++q;
    size_t len = q - p;
    if (len == 0) break;
    if (paren) {
      if (q >= s.size() || s[q] != ')') break;
    }
    if (first && len > 3) return false;  // country codes have 1..3 digits
    if (!first && len == 1) ++one_digit_groups;
    digits += len;
    size_t end = paren ? q + 1 : q;
    ends[ngroups] = end;
    counts[ngroups] = digits;
    ++ngroups;
    first = false;
    p = end;
    // separator to the next group
    if (p < s.size() && (s[p] == ' ' || s[p] == '-' || s[p] == '.')) {
      if (p + 1 < s.size() && (is_digit(s[p + 1]) || s[p + 1] == '(')) {
        ++p;
        continue;
      }
      break;
    }
    if (p < s.size() && s[p] == '(') continue;  // "+44(0)20..."
    if (paren && p < s.size() && is_digit(s[p])) continue;  // "(0)20"
    break;
  }
  if (one_digit_groups > 1 || ngroups < 2) return false;
  for (int g = ngroups - 1; g >= 1; --g) {
    if (counts[g] > 15) continue;
    if (counts[g] < 8) return false;
    size_t e = ends[g];
    if (s[e - 1] == ')') return false;
    if (g == ngroups - 1 && !number_ends(s, e)) return false;
    m = {PiiType::phone, i, e};
    return true;
  }
  return false;
}

// ---------------------------------------------------------------- IBAN

/// The IBAN length of a country code (0 if not in the table). Lengths from the SWIFT IBAN
/// registry (all SEPA countries and the other common ones).
inline int iban_length(char a, char b) {
  struct Entry { char c[3]; int len; };
  static const Entry table[] = {
      {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
      {"BG", 22}, {"BH", 22}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28},
      {"CZ", 24}, {"DE", 22}, {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24},
      {"FI", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18},
      {"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23},
      {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32},
      {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"MC", 27}, {"MD", 24}, {"ME", 22},
      {"MK", 19}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NL", 18}, {"NO", 15}, {"PK", 24},
      {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"SA", 24},
      {"SC", 31}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"ST", 25}, {"SV", 28},
      {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20}};
  for (const Entry& e : table)
    if (e.c[0] == a && e.c[1] == b) return e.len;
  return 0;
}

/// ISO 13616 check: the IBAN (no spaces) rotated by 4, letters as 10..35, mod 97 == 1.
inline bool iban_checksum_ok(const char* c, size_t n) {
  unsigned r = 0;
  for (size_t k = 0; k < n; ++k) {
    char ch = c[(k + 4) % n];
    if (is_digit(ch)) r = (r * 10 + unsigned(ch - '0')) % 97;
    else r = (r * 100 + unsigned(ch - 'A' + 10)) % 97;
  }
  return r == 1;
}

/// An IBAN starting at i (a capital letter).
inline bool match_iban(std::string_view s, size_t i, PiiMatch& m) {
  if (i + 4 > s.size() || !is_upper(s[i + 1]) || !is_digit(s[i + 2]) || !is_digit(s[i + 3]))
    return false;
  if (i > 0 && is_word(s[i - 1])) return false;
  int len = iban_length(s[i], s[i + 1]);
  if (len == 0) return false;
  char buf[40];
  // unbroken, or grouped by single spaces after every 4 characters
  for (int grouped = 0; grouped < 2; ++grouped) {
    size_t p = i;
    int n = 0;
    bool ok = true;
    while (n < len) {
      if (grouped && n > 0 && n % 4 == 0) {
        if (p >= s.size() || s[p] != ' ') { ok = false; break; }
        ++p;
      }
      if (p >= s.size() || !(is_upper(s[p]) || is_digit(s[p]))) { ok = false; break; }
      buf[n++] = s[p++];
    }
    if (!ok) continue;
    if (p < s.size() && is_word(s[p])) continue;
    if (!iban_checksum_ok(buf, size_t(len))) continue;
    m = {PiiType::iban, i, p};
    return true;
  }
  return false;
}

}  // namespace detail_pii

/// Every PII span in `text`, in order, non-overlapping.
inline std::vector<PiiMatch> find_pii(std::string_view text) {
  using namespace detail_pii;
  std::vector<PiiMatch> found;
  PiiMatch m{};
  const char* d = text.data();
  size_t n = text.size();
  // e-mail addresses, around each '@'
  for (size_t at = 0; at < n;) {
    const void* hit = std::memchr(d + at, '@', n - at);
    if (!hit) break;
    size_t a = size_t(static_cast<const char*>(hit) - d);
    size_t floor = found.empty() ? 0 : found.back().end;
    if (match_email(text, a, floor, m)) {
      found.push_back(m);
      at = m.end;
    } else {
      at = a + 1;
    }
  }
  // IPv6, around each ':' that has a hex digit or ':' next to it
  size_t v6_floor = 0;
  for (size_t at = 0; at < n;) {
    const void* hit = std::memchr(d + at, ':', n - at);
    if (!hit) break;
    size_t c = size_t(static_cast<const char*>(hit) - d);
    bool near_hex = (c > 0 && is_hex(d[c - 1])) || (c + 1 < n && (is_hex(d[c + 1]) || d[c + 1] == ':'));
    if (near_hex && match_ipv6(text, c, v6_floor, m)) {
      found.push_back(m);
      at = v6_floor = m.end;
    } else {
      at = c + 1;
    }
  }
  // digits, '+', '(' and capitals: IPv4, cards, phones, IBANs
  static const auto table = [] {
    struct T { bool v[256]; } t{};
    for (int c = '0'; c <= '9'; ++c) t.v[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) t.v[c] = true;
    t.v[int('+')] = t.v[int('(')] = true;
    return t;
  }();
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(d[i]);
    if (!table.v[c]) continue;
    bool hit = false;
    if (is_upper(char(c))) {
      hit = match_iban(text, i, m);
      if (!hit) {  // skip the rest of the word
        while (i + 1 < n && is_word(d[i + 1])) ++i;
        continue;
      }
    } else if (c == '+') {
      hit = match_nanp(text, i, m) || match_intl_phone(text, i, m);
    } else if (c == '(') {
      hit = i + 1 < n && is_digit(d[i + 1]) && match_nanp(text, i, m);
    } else {  // digit
      if (i > 0 && (is_word(d[i - 1]))) continue;
      hit = match_ipv4(text, i, m) || match_card(text, i, m) || match_nanp(text, i, m);
      if (!hit) {
        while (i + 1 < n && is_word(d[i + 1])) ++i;
        continue;
      }
    }
    if (hit) {
      found.push_back(m);
      i = m.end - 1;
    }
  }
  // order, and drop overlaps: the earlier start wins, then the longer span
  std::sort(found.begin(), found.end(), [](const PiiMatch& a, const PiiMatch& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end > b.end;
  });
  std::vector<PiiMatch> out;
  out.reserve(found.size());
  for (const PiiMatch& f : found)
    if (out.empty() || f.begin >= out.back().end) out.push_back(f);
  return out;
}

/// `text` with each match replaced by its placeholder (matches in order, non-overlapping, as
/// find_pii returns them).
inline std::string redact_pii(std::string_view text, const std::vector<PiiMatch>& matches) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  for (const PiiMatch& m : matches) {
    if (m.begin < pos || m.end > text.size()) continue;  // overlapping or out of range: skipped
    out.append(text.data() + pos, m.begin - pos);
    out.append(pii_placeholder(m.type));
    pos = m.end;
  }
  out.append(text.data() + pos, text.size() - pos);
  return out;
}

}  // namespace loom::data
