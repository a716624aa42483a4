#pragma once

// `parry-agent --real`: one endpoint, the machine (or namespaces) this process runs
// in. It enrolls (or loads its key), pins the server, re-applies its desired state,
// starts the exec guard and detection, restores its action journal, and runs the
// same protocol session as the simulator on a bus_runner with a real_executor.

#include <atomic>
#include <string>

#include "agent-sim/agent_session.hpp"

namespace parry::real {

/// Writes the session's action journal to `path` (0600, atomically): every entry,
/// the highest command seq accepted, and `in_flight`, the action whose effect is
/// starting ("" when none), so that an action that ran before a restart is answered
/// from the journal and never runs twice.
void save_journal(const std::string& path, const sim::agent_session& s,
                  const std::string& in_flight = "");

/// Restores the journal at `path` into `s` before it starts; nothing when there is
/// no file. An action that was in flight and has no entry is journaled as failed
/// (its effect is unknown) so it is reported, never run again. Throws on a file
/// that is unsafe or malformed.
void load_journal(const std::string& path, sim::agent_session& s);

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
