#pragma once

// The store's checkpoints, off its commit path. In WAL mode every commit appends to
// the log; a checkpoint copies the log's pages into the database file and fsyncs it.
// SQLite does that by default inside the COMMIT that crosses 1,000 pages, so one
// writer's commit in a thousand paid for all the others (the stall the bench saw).
// The store turns that off and this actor checkpoints from a connection of its own,
// on a timer; only a log past its bound (store_options::wal_restart_pages) gets the
// rest of its checkpoint from the store, between two groups.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"

struct sqlite3;

namespace parry {

class server_metrics;

struct checkpointer_options {
  /// Time between checkpoints; zero: only when asked (atom::flush).
  std::chrono::milliseconds every{1000};
  /// Log pages from which a checkpoint that copied everything also restarts the
  /// log (RESTART), so that a writer that never pauses gets its log started over.
  /// RESTART holds new writes back while it waits for readers of the old log: it
  /// waits at most `restart_wait`, then gives up until the next round.
  int64_t restart_pages = 16384;
  std::chrono::milliseconds restart_wait{50};
  /// Prometheus metrics (may be null): checkpoint time and log size.
  std::shared_ptr<server_metrics> metrics;
};

struct checkpointer_state {
  static inline constexpr const char* name = "store checkpointer";
  ~checkpointer_state();
  sqlite3* db = nullptr;
  checkpointer_options opts;
  /// True while checkpoints fail: the failure is logged once, and the recovery.
  bool failing = false;
};

/// Checkpoints the WAL of the database at `path` (which the store made: it is not
/// created here). Spawn it detached: a checkpoint writes and fsyncs the file.
checkpointer_actor::behavior_type
checkpointer(checkpointer_actor::stateful_pointer<checkpointer_state> self,
             std::string path, checkpointer_options opts);

} // namespace parry
