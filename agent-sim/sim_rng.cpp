// The simulator's seeded generator and draw helpers (see sim_rng.hpp).

#include "agent-sim/sim_rng.hpp"

#include <cstdio>

namespace parry::sim {

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t span(uint64_t draw, uint64_t lo, uint64_t hi) {
  return lo + draw % (hi - lo + 1);
}

std::string hex(uint64_t v, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return std::string(buf + 16 - digits);
}

sim_rng sim_rng::derive(uint64_t seed, uint64_t index, uint64_t stream) {
  return sim_rng(mix(mix(mix(seed) + index) + stream));
}

uint64_t sim_rng::next() {
  state_ += 0x9e3779b97f4a7c15ULL;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t sim_rng::between(uint64_t lo, uint64_t hi) {
  return span(next(), lo, hi);
}

} // namespace parry::sim
