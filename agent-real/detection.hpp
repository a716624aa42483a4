#pragma once

// Real detection: the exec guard reports files on the IOC list that were written or
// executed under a guarded mount; this turns each into an incident report whose
// threat development chain comes from the machine: the process ancestry from /proc
// (root first) and the file events seen for the same file. Hits are queued by the
// guard's thread and reported by the session's thread a moment later, once the exec
// has finished and /proc shows the new image.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "agent-real/exec_guard.hpp"
#include "agent-sim/agent_session.hpp"

namespace parry::real {

class detection final : public sim::incident_source {
public:
  /// Hits waiting to be reported; beyond this new ones are dropped and counted.
  static constexpr std::size_t max_pending = 256;
  /// How long a hit waits before it is reported (the exec completes meanwhile).
  static constexpr int64_t settle_us = 200'000;
  /// Ancestors followed up from the process in a chain.
  static constexpr int max_ancestry = 16;

  /// `run_tag` makes report ids unique across restarts.
  explicit detection(std::string run_tag);
  ~detection() override;

  /// From any thread: queues a hit and wakes the loop through `wake_fd`.
  void push(const ioc_hit& hit);
  /// Readable when hits were pushed; `drain_wake` empties it.
  int wake_fd() const { return wake_fd_; }
  void drain_wake();
  /// Hits dropped because the queue was full.
  uint64_t dropped() const;

  void start_reporting(int64_t now) override;
  int64_t next_report_due() const override;
  std::optional<bus::incident_report> take_report(int64_t now) override;

private:
  bus::incident_report build(const ioc_hit& hit);

  std::string run_tag_;
  int wake_fd_ = -1;
  mutable std::mutex mutex_;
  std::deque<ioc_hit> pending_; ///< Guarded by mutex_.
  uint64_t dropped_ = 0;        ///< Guarded by mutex_.
  bool reporting_ = false;
  uint64_t reports_ = 0;
  /// The last `written` hit per path (bounded), so an exec's chain shows the write.
  std::map<std::string, ioc_hit> written_;
};

} // namespace parry::real
