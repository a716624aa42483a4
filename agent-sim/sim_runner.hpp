#pragma once

// Runs N simulated endpoints in one thread: their sessions on one bus_runner
// (agent-sim/bus_runner.hpp), which owns the sockets and the poll.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "agent-sim/bus_runner.hpp"
#include "agent-sim/scenario.hpp"
#include "agent-sim/sim_endpoint.hpp"

namespace parry::sim {

/// Settings of a run.
struct runner_config {
  std::size_t endpoints = 1; ///< How many endpoints to simulate.
  /// Index of the first one: endpoints first .. first + endpoints - 1 are simulated
  /// (one process's share of a run spread over several, `--procs`). Ids and seeds
  /// follow the index, so a share behaves as it would in one process.
  std::size_t first = 0;
  endpoint_config endpoint; ///< Shared by all of them; `endpoint.server` is dialled.
  /// Sockets, test hooks and CURVE keys (by index within this share); `link.server` is
  /// taken from `endpoint.server`.
  link_config link;
};

/// Totals over all endpoints.
struct runner_stats {
  endpoint_stats totals;      ///< Sum of every endpoint's counters.
  std::size_t welcomed = 0;   ///< Endpoints currently welcomed by the server.
  std::size_t linked = 0;     ///< Endpoints whose connection is up.
  std::size_t opened = 0;     ///< Endpoints whose socket has been opened.
  uint64_t send_failures = 0; ///< Messages dropped because a socket's queue was full.
};

class sim_runner {
public:
  /// Builds the endpoints; no socket is opened yet.
  sim_runner(runner_config cfg, std::vector<scenario> scenarios);
  ~sim_runner();

  sim_runner(const sim_runner&) = delete;
  sim_runner& operator=(const sim_runner&) = delete;

  /// Raises the descriptor limit and opens the first `link.connects_in_flight`
  /// sockets; later rounds of poll_once open more as handshakes finish, until all
  /// are open. Throws std::runtime_error when a socket cannot be made.
  void start();

  /// Waits at most `max_wait_ms` for a message, a link event or a timer, then
  /// handles everything that is ready. Looks at the hold files when 100 ms have
  /// passed since it last did.
  void poll_once(long max_wait_ms);

  /// Polls until `stop` is true, checking it at least every 100 ms, and logs a
  /// summary every 30 s.
  void run(const std::atomic<bool>& stop);

  /// Number of endpoints.
  std::size_t size() const;

  /// Endpoint `i`, for inspection.
  const sim_endpoint& endpoint(std::size_t i) const;

  /// Counters summed over all endpoints.
  runner_stats stats() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Instantiates `per_endpoint` incidents for each endpoint of `cfg` without any
/// socket and writes one JSON line per endpoint and per incident to `out`. Nothing
/// printed depends on the clock, so one seed always prints the same bytes.
void write_generated(const runner_config& cfg, const std::vector<scenario>& scenarios,
                     std::size_t per_endpoint, std::ostream& out);

} // namespace parry::sim
