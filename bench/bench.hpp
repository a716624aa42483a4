#pragma once

// What every part of parry-bench shares: its options, its constants, the clock, and
// the flag that a signal sets to stop the run.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace parry::bench {

using steady = std::chrono::steady_clock;

constexpr const char* admin_password = "parry-bench-admin-password";
constexpr const char* sim_prefix = "sim";
/// How often each bench device sends a heartbeat once welcomed: well inside the
/// server's default of 3 missed 5 s intervals.
constexpr std::chrono::milliseconds heartbeat_period{4000};

/// The bench's own device sockets at most: two descriptors each in one process.
constexpr std::size_t max_bench_sockets = 10'000;

struct options {
  /// Devices asked for (--endpoints): simulated devices, and as many bench sockets
  /// up to max_bench_sockets, unless the two options below say otherwise.
  std::size_t endpoints = 200;
  /// The bench's own devices (one DEALER each, in this process) that ingest runs
  /// over; 0: min(endpoints, max_bench_sockets).
  std::size_t bench_sockets = 0;
  /// Simulated devices (parry-agent --sim) for the round trips and the fan-out; 0:
  /// as many as `endpoints`. Apart, so that they can grow past what the bench's own
  /// sockets fit under the open-files limit.
  std::size_t sim_endpoints = 0;
  std::size_t incidents = 20000;
  /// Actions stored for the restart-to-ready figure (one in ten open); 0 skips it.
  std::size_t restart_actions = 100000;
  std::size_t rounds = 200;
  std::string bin_dir;
  std::string scenarios = "./config/scenarios";
  bool keep = false;
  /// Also measure ingest and the isolate round trip with CURVE and signed commands
  /// (a second parryd, same run) and print them beside the plain figures.
  bool curve = true;
  /// Where to write the latency histograms as SVG ("": not written).
  std::string svg;
  /// parryd's device_passivate_after_s, seconds; above zero the bench also waits
  /// until every device has passivated and measures the heap of idle devices.
  std::size_t passivate_after = 0;
  /// parryd's bus_gateways: gateway processes holding the agent connections (0: in
  /// parryd). Memory and CPU figures of parryd include them. -1: as many as the
  /// connections need (gateways_needed).
  int gateways = -1;
  /// At the end, kill -9 parryd, start it again and time until every device is
  /// online again (phases.hpp, kill_restart).
  bool kill_restart = false;
};

/// Gateway processes for `connections` bus connections when each process may open
/// `fd_limit` files: none while parryd holds them all under its cap (the limit minus
/// its reserve of 2,048), else enough to keep each gateway at 80 % of that (the
/// kernel's spread over SO_REUSEPORT listeners is not exact).
inline std::size_t gateways_needed(std::size_t connections, std::size_t fd_limit) {
  std::size_t cap = fd_limit > 4096 ? fd_limit - 2048 : fd_limit / 2;
  if (connections <= cap) return 0;
  std::size_t per = std::max<std::size_t>(cap * 4 / 5, 1);
  return std::min<std::size_t>((connections + per - 1) / per, 64);
}

inline std::atomic<bool> interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free,
              "flag is set from a signal handler");

/// Throws when the user asked us to stop, so that cleanup runs on the way out.
inline void check_interrupt() {
  if (interrupted.load()) throw std::runtime_error("interrupted");
}

} // namespace parry::bench
