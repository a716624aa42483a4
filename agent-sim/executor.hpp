#pragma once

// The seam between the agent's protocol and the machine it acts on. The session
// (agent-sim/agent_session.hpp) decodes a command, checks its parameters
// (agent-sim/action_params.hpp), journals it so it runs at most once, and then calls
// one method here with checked values. `sim_executor` implements it with simulated
// effects; a real executor implements the same methods on the host's kernel.

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "agent-sim/action_params.hpp"

namespace parry::sim {

/// What one action did on the endpoint. The session copies it into the result it
/// sends; the effect of a failed action is dropped.
struct execution {
  bool ok = false;
  std::string error; ///< Why it failed, for the operator; "" when ok.
  std::map<std::string, std::string> effect; ///< What it did (rules, ids, pids, ...).

  /// A failed execution with reason `why`.
  static execution failed(std::string why) {
    execution e;
    e.error = std::move(why);
    return e;
  }
};

/// Executes checked actions. Each method runs at most once per action id (the
/// session's journal sees to that) and never throws on bad input: it fails.
class executor {
public:
  virtual ~executor() = default;

  /// Drops all traffic except the management channel to the server.
  virtual execution isolate() = 0;
  /// Removes what isolate added.
  virtual execution release_isolation() = 0;
  /// Stops the detected process, if it is still the detected one.
  virtual execution terminate_process(const terminate_args& p) = 0;
  /// Starts a process without a shell; `now` is the session's clock (microseconds).
  virtual execution start_process(const start_args& p, int64_t now) = 0;
  /// Moves the file into quarantine if it still has the detected hash.
  virtual execution quarantine(const file_args& p) = 0;
  /// Puts a quarantined file back where it was.
  virtual execution restore_from_quarantine(const restore_args& p) = 0;
  /// Deletes the file if it still has the detected hash.
  virtual execution delete_file(const file_args& p) = 0;
  /// Refuses new starts of executables with this hash.
  virtual execution prevent_run(const hash_args& p) = 0;
  /// Allows them again.
  virtual execution allow_run(const hash_args& p) = 0;
  /// The server withdrew `action_id` before it started here: it never will. Nothing
  /// ran, so there is nothing to undo; an executor that prepares work ahead drops it.
  virtual void cancelled_before_start(const std::string& action_id) = 0;

  /// Whether isolation is in force, as reported in hello and heartbeats.
  virtual bool isolated() const = 0;
};

} // namespace parry::sim
