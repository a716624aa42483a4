#pragma once

// `parry-agent --real`: one endpoint, the machine (or namespaces) this process runs
// in. It enrolls (or loads its key), pins the server, re-applies its desired state,
// starts the exec guard and detection, restores its action journal, and runs the
// same protocol session as the simulator on a bus_runner with a real_executor.

#include <atomic>
#include <string>

namespace parry::real {

struct real_options {
  std::string config_path;  ///< The agent's TOML file (agent-real/real_config.hpp).
  std::string enroll_token; ///< Needed only before the first enrollment.
  std::string hold_file;    ///< Test hooks as in the simulator; "" for none.
  std::string hold_results_file;
};

/// Runs until `stop`; returns the process exit code. Errors that prevent starting
/// (configuration, keys, enrollment, nftables, fanotify) are printed and return 2.
int run_real_agent(const real_options& opt, const std::atomic<bool>& stop);

} // namespace parry::real
