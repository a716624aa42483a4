#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/fwd.hpp"
#include "actors/ingest.hpp"
#include "common/log_limiter.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace parry {

class server_metrics;

/// State of one database connection: the store actor (the only writer) or a
/// store_reader. Both run detached: SQLite calls block only their own thread.
struct store_state {
  static inline constexpr const char* name = "store";

  ~store_state();

  /// Open database connection (WAL mode).
  sqlite3* db = nullptr;
  /// Prepared statements by SQL text, prepared on first use (found without a copy
  /// of the text).
  std::map<std::string, sqlite3_stmt*, std::less<>> statements;
  /// True while a transaction collects writes for the next commit.
  bool in_transaction = false;
  /// When the open transaction began, for the commit latency.
  std::chrono::steady_clock::time_point began;
  /// Prometheus metrics (may be null), and what the open transaction will count
  /// once it commits (dropped with a write that rolls back).
  std::shared_ptr<server_metrics> metrics;
  std::vector<std::function<void(server_metrics&)>> count_on_commit;
  /// Replies to send once the open transaction ends (argument: none when it
  /// committed, else the error every write of the batch is answered with).
  std::vector<std::function<void(const caf::error&)>> on_commit;
  /// Writes queued for an answer so far (never reset): a write handler compares it
  /// before and after to know whether its write went in (publish_on_commit); the
  /// size of on_commit would not do, since a full group commits and empties it.
  uint64_t replies_queued = 0;
  /// Writes in the open transaction, and how many it takes before it commits
  /// without waiting for its flush (store_options::max_batch_writes).
  std::size_t batch_writes = 0;
  std::size_t max_batch_writes = 500;
  /// Writes committed so far, and commits (groups) that carried them.
  uint64_t writes = 0;
  uint64_t commits = 0;
  /// True for the writer (the store), false for a reader.
  bool writer = false;
  /// A page of a list read stops growing once its JSON passes this many bytes.
  size_t max_page_bytes = 4 << 20;
  /// See store_options::ingest.
  std::shared_ptr<ingest_gauge> ingest;
  /// Incidents from the bus that could not be stored (nobody waits for their
  /// answer), and the bound on their log lines.
  uint64_t incidents_failed = 0;
  log_limiter incident_log;
  /// See store_options::publish.
  std::function<void(const char* family, std::string kind, std::string body)> publish;
  /// What was last published of each device (online, isolated, hostname): a
  /// device.updated goes out only when one of them changes.
  std::unordered_map<std::string, std::tuple<bool, bool, std::string>> device_published;
  /// See store_options::wal_restart_pages; the log's pages after the last commit
  /// (SQLite's WAL hook) and after the one before (fewer: the log started over);
  /// the checkpointer to wake as the log grows, the log's pages when it last was,
  /// and the pages it had not copied then; the log's pages from which the store
  /// tries its own checkpoint again, and whether the last one failed (logged once).
  int wal_restart_pages = 0;
  int wal_pages = 0;
  int wal_seen = 0;
  checkpointer_actor checkpointer;
  int wal_woken_at = 0;
  int wal_behind = 0;
  int wal_retry_at = 0;
  bool wal_failing = false;
  /// Number and hash of the last audit record (0 and 64 zeros before the first).
  int64_t audit_seq = 0;
  std::string audit_head = std::string(64, '0');
};

/// Tuning of the store's connection.
struct store_options {
  /// How long a write waits for a lock another connection holds (a backup, a
  /// sqlite3 shell) before it fails with `ec::storage`.
  std::chrono::milliseconds busy_timeout{5000};
  /// A page of a list read stops growing once its JSON passes this many bytes
  /// (it always holds at least one row).
  size_t max_page_bytes = 4 << 20;
  /// Writes one transaction takes at most. The flush that ends a group queues
  /// behind everything already in the mailbox: after a burst of 20,000 reports the
  /// first commit came only when all were written, and nothing was visible (or
  /// answered) for seconds. A full group commits at once and the next one begins.
  std::size_t max_batch_writes = 500;
  /// The log's bound, in pages. The checkpointer (actors/checkpointer.hpp) copies
  /// the log into the database off the commit path, but a log starts over only
  /// once everything in it was copied while no write was under way, which never
  /// happens to a writer that never pauses: during a burst the log grew by every
  /// byte written (774 MB for 100,000 reports), each write extending the file.
  /// Each quarter of it the log grows, the store wakes the checkpointer (if it was
  /// given one: atom::link); once a commit leaves at least this many pages in the
  /// log, the store itself copies what the checkpointer has not yet, between two
  /// groups, so that the next group writes the log from its start again (0: never).
  int wal_restart_pages = 8192;
  /// Bytes the log file keeps when it starts over (it is truncated to this).
  int64_t wal_keep_bytes = 64 << 20;
  /// Incidents in flight between the bus and the store (may be null): each one is
  /// taken off once its write was handled.
  std::shared_ptr<ingest_gauge> ingest;
  /// Called once a write commits, with the event it makes for integrators
  /// (bus/integrator.hpp): family ("incident", "action", "device"), kind (the topic
  /// after the dot) and the msgpack body. Null: no events. Runs on the store's
  /// thread: it must only queue.
  std::function<void(const char* family, std::string kind, std::string body)> publish;
  /// Prometheus metrics (may be null): commits, incidents, transitions, audit kinds.
  std::shared_ptr<server_metrics> metrics;
};

/// The paging parameters of a list endpoint's query string: `limit` (a whole
/// number from 1; larger than the list's maximum is capped) and `cursor`; every
/// other parameter is a filter. Fails with bad_request naming the parameter.
caf::expected<page_request> parse_page(const std::map<std::string, std::string>& params);

using store_stateful = store_actor::stateful_pointer<store_state>;

/// Opens `path` read-only (the writer must have created it) and answers queries.
/// Spawn it detached, like the store.
store_reader_actor::behavior_type
store_reader(store_reader_actor::stateful_pointer<store_state> self, std::string path);

/// The newest database schema this build reads and writes.
int store_schema_version();

/// Hash of one audit record: SHA-256 over its fields and the previous hash, each
/// separated by a newline (docs/rest-api.md, "Audit trail").
std::string audit_hash(int64_t seq, int64_t time_us, const audit_entry& e,
                       const std::string& prev_hash);

/// Opens (creating if needed) the database at `path` and serves the store
/// interface. `path` may be ":memory:" for tests. Quits with an error if the
/// database cannot be opened or migrated.
store_actor::behavior_type store(store_stateful self, std::string path);

/// `store` with explicit options.
store_actor::behavior_type store_with(store_stateful self, std::string path,
                                      store_options opts);

} // namespace parry
