#pragma once

// The simulator's deterministic randomness: a seeded generator and the helpers that
// turn its draws into values. The same seed gives the same endpoints, incidents and
// action effects with every standard library.

#include <cstdint>
#include <string>

namespace parry::sim {

/// Microseconds in a second.
constexpr int64_t second_us = 1'000'000;

/// Deterministic generator (splitmix64). Unlike the std distributions its output is
/// the same with every standard library, so a seed means the same run everywhere.
class sim_rng {
public:
  explicit sim_rng(uint64_t seed = 0) : state_(seed) {}

  /// An independent stream for one endpoint and purpose.
  static sim_rng derive(uint64_t seed, uint64_t index, uint64_t stream);

  /// Next 64 random bits.
  uint64_t next();

  /// Uniform in [lo, hi]; the modulo bias is negligible at simulation ranges.
  uint64_t between(uint64_t lo, uint64_t hi);

private:
  uint64_t state_;
};

/// The splitmix64 finaliser: a well-mixed 64-bit value from `z`.
uint64_t mix(uint64_t z);

/// Maps one random draw into [lo, hi].
uint64_t span(uint64_t draw, uint64_t lo, uint64_t hi);

/// The low `digits` (at most 16) hex digits of `v`, lower case.
std::string hex(uint64_t v, int digits);

} // namespace parry::sim
