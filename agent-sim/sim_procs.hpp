#pragma once

// Many simulated endpoints over several processes (`parry-agent --sim N --procs P`):
// each endpoint costs about four descriptors, so one process holds a few thousand
// of them under the open-files limit. The parent forks one child per share, each
// running its own sim_runner, forwards SIGINT/SIGTERM to them, and stops them all
// when one ends early.

#include <atomic>
#include <cstddef>
#include <vector>

#include "agent-sim/scenario.hpp"
#include "agent-sim/sim_runner.hpp"

namespace parry::sim {

/// Endpoints one process can hold: the open-files hard limit at about four
/// descriptors each, and ZeroMQ's sockets per context at three each.
std::size_t endpoints_per_process_limit();

/// Processes needed for `endpoints` endpoints at `endpoints_per_process_limit()`.
std::size_t processes_needed(std::size_t endpoints);

/// Endpoints [first, first + count) of share `k` when `total` are split over
/// `procs` processes as evenly as they go (the first shares get one more).
struct share {
  std::size_t first = 0;
  std::size_t count = 0;
};
share share_of(std::size_t total, std::size_t procs, std::size_t k);

/// Runs `cfg.endpoints` endpoints (from `cfg.first`) in `procs` child processes,
/// `cfg.link.curve_keys` split the same way. Returns when every child has ended:
/// after `stop` became true (the children got SIGTERM), or after one child ended by
/// itself (the others are stopped). Children that do not end within 10 s of
/// SIGTERM get SIGKILL. 0 when every child exited 0 on a stop, else 1.
/// `stop` is set by the caller's signal handler; the parent's signal handlers must
/// not restart system calls (no SA_RESTART), so that a signal wakes it at once.
int run_processes(runner_config cfg, const std::vector<scenario>& scenarios,
                  std::size_t procs, const std::atomic<bool>& stop);

} // namespace parry::sim
