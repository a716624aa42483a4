#include "actors/checkpointer.hpp"

#include <sqlite3.h>

#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "server/metrics.hpp"

namespace parry {

checkpointer_state::~checkpointer_state() {
  if (db != nullptr) sqlite3_close(db);
}

namespace {

using clock = std::chrono::steady_clock;

/// One checkpoint: the pages in the log and how many of them are in the database
/// file, or the error SQLite gave.
caf::expected<std::pair<int64_t, int64_t>> checkpoint(checkpointer_state& st) {
  auto began = clock::now();
  int log = 0;
  int done = 0;
  // PASSIVE copies what it can without waiting for anyone: the writer goes on.
  int rc =
      sqlite3_wal_checkpoint_v2(st.db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
  // Another checkpoint (a backup's connection closing) holds the lock: next round.
  if (rc == SQLITE_BUSY) rc = SQLITE_OK;
  if (rc == SQLITE_OK && log >= st.opts.restart_pages && done == log) {
    // Everything is copied, yet the log is long: a writer that never paused kept
    // appending to it. RESTART holds new writes back while it waits for readers of
    // the old log, so it waits briefly and gives up (the next round tries again).
    sqlite3_busy_timeout(st.db, static_cast<int>(st.opts.restart_wait.count()));
    rc =
        sqlite3_wal_checkpoint_v2(st.db, nullptr, SQLITE_CHECKPOINT_RESTART, &log, &done);
    sqlite3_busy_timeout(st.db, 0);
    if (rc == SQLITE_BUSY) rc = SQLITE_OK;
  }
  if (rc != SQLITE_OK) {
    std::string why = sqlite3_errmsg(st.db);
    if (!st.failing) spdlog::error("store: checkpoint failed: {}", why);
    st.failing = true;
    return make_error(ec::storage, "checkpoint failed: " + why);
  }
  if (st.failing) spdlog::info("store: checkpoints work again");
  st.failing = false;
  if (st.opts.metrics)
    st.opts.metrics->store_checkpoint(
        std::chrono::duration<double>(clock::now() - began).count(), log);
  return std::make_pair(int64_t{log}, int64_t{done});
}

} // namespace

checkpointer_actor::behavior_type
checkpointer(checkpointer_actor::stateful_pointer<checkpointer_state> self,
             std::string path, checkpointer_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  // A new connection knows the file is in WAL mode only once it has read it: until
  // then a checkpoint answers -1 and does nothing. The pragma reads it (the store
  // made the file WAL; this changes nothing).
  if (sqlite3_open_v2(path.c_str(), &st.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK ||
      sqlite3_busy_timeout(st.db, 5000) != SQLITE_OK ||
      sqlite3_exec(st.db, "PRAGMA journal_mode=WAL;", nullptr, nullptr, nullptr) !=
          SQLITE_OK ||
      sqlite3_busy_timeout(st.db, 0) != SQLITE_OK) {
    spdlog::critical("store checkpointer: {}: {}", path,
                     st.db ? sqlite3_errmsg(st.db) : "cannot open");
    self->quit(make_error(ec::storage, "cannot open the database to checkpoint it"));
    return checkpointer_actor::behavior_type::make_empty_behavior();
  }
  if (st.opts.every.count() > 0) self->send(self, atom::check_v);
  return {
      [self](atom::flush) -> caf::result<int64_t, int64_t> {
        auto r = checkpoint(self->state);
        if (!r) return std::move(r.error());
        return {r->first, r->second};
      },
      [self](atom::check) {
        (void)checkpoint(self->state);
        self->delayed_send(self, self->state.opts.every, atom::check_v);
      },
  };
}

} // namespace parry
