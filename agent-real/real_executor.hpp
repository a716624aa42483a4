#pragma once

// The executor of `parry-agent --real`: every action on the machine (or namespaces)
// the agent runs in, composed from nftables isolation, pidfd process control, the
// encrypted quarantine and the fanotify exec guard. It also keeps the desired state
// (isolation, prevented hashes) in `<state_dir>/desired-state.json`, re-applies it
// when the agent starts, and enforces the isolation lease and the dead-man switch.

#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "agent-real/exec_guard.hpp"
#include "agent-real/file_ops.hpp"
#include "agent-real/nft_isolation.hpp"
#include "agent-real/process_ops.hpp"
#include "agent-real/real_config.hpp"
#include "agent-sim/executor.hpp"

namespace parry::real {

class real_executor final : public sim::executor {
public:
  /// Hashes the prevent list holds; prevent_run fails beyond it.
  static constexpr std::size_t max_prevented = 4096;
  /// How often the kernel is checked against the desired isolation.
  static constexpr int64_t enforce_interval_us = 5'000'000;

  /// `guard` may be null (no guard_mounts): prevent_run then fails. Reads the desired
  /// state file and applies it; throws std::runtime_error when it is unreadable.
  real_executor(const real_config& cfg, std::unique_ptr<exec_guard> guard, int64_t now);

  sim::execution isolate() override;
  sim::execution release_isolation() override;
  sim::execution terminate_process(const sim::terminate_args& p) override;
  sim::execution start_process(const sim::start_args& p, int64_t now) override;
  sim::execution quarantine(const sim::file_args& p) override;
  sim::execution restore_from_quarantine(const sim::restore_args& p) override;
  sim::execution delete_file(const sim::file_args& p) override;
  sim::execution prevent_run(const sim::hash_args& p) override;
  sim::execution allow_run(const sim::hash_args& p) override;
  void cancelled_before_start(const std::string&) override {}
  bool isolated() const override { return isolated_; }

  /// Timers, called by the loop with whether the server is reachable now: the
  /// lease, the dead-man switch, and re-applying isolation if something removed our
  /// table. Returns when it next wants to run.
  int64_t tick(int64_t now, bool server_reachable);

  /// Hashes whose exec is denied.
  const std::set<std::string>& prevented() const { return prevented_; }
  /// The exec guard's counters; all zero without guard_mounts.
  guard_stats guard_counters() const { return guard_ ? guard_->stats() : guard_stats{}; }

private:
  /// Writes the desired state; throws std::runtime_error when it cannot.
  void save() const;
  /// As save, but a failure is logged and noted in `e`'s effect: the action took
  /// effect, only a restart would forget it.
  void save(sim::execution& e) const;
  sim::execution release(const char* why);

  real_config cfg_;
  std::string state_file_;
  nft_isolation isolation_;
  file_actions files_;
  std::unique_ptr<exec_guard> guard_;
  start_limits start_limits_;

  bool isolated_ = false;
  int64_t isolated_at_ = 0;  ///< When isolation was applied (or re-applied at start).
  int64_t last_contact_ = 0; ///< Last time the server was reachable.
  int64_t next_enforce_ = 0;
  int64_t clock_ = 0; ///< The latest `now` seen, for actions that get none.
  std::set<std::string> prevented_;
  std::string mounts_; ///< The guarded mounts, space-separated, for effects.
};

} // namespace parry::real
