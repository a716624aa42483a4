#include "actors/store.hpp"

#include <sqlite3.h>

#include <algorithm>

#include <caf/event_based_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "actors/json.hpp"
#include "bus/codec.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"

namespace parry {

using nlohmann::json;

namespace {

constexpr int schema_version = 1;

constexpr const char* schema = R"sql(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY, hostname TEXT, os TEXT, agent_version TEXT,
  addresses TEXT, online INTEGER, isolated INTEGER, first_seen INTEGER,
  last_seen INTEGER);
CREATE TABLE IF NOT EXISTS incidents (
  incident_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, report_id TEXT NOT NULL,
  status TEXT NOT NULL, created_at INTEGER NOT NULL, det_name TEXT, det_severity TEXT,
  det_engine TEXT, key_event_id TEXT, event_count INTEGER, report BLOB NOT NULL,
  UNIQUE (device_id, report_id));
CREATE INDEX IF NOT EXISTS incidents_by_time ON incidents (created_at);
CREATE TABLE IF NOT EXISTS actions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, action_id TEXT UNIQUE NOT NULL,
  type TEXT NOT NULL, device_id TEXT NOT NULL, incident_id TEXT, target_kind TEXT,
  target_event_id TEXT, params TEXT, requested_by TEXT, comment TEXT,
  idempotency_key TEXT, state TEXT NOT NULL, created_at INTEGER, updated_at INTEGER,
  result_ok INTEGER, result_error TEXT, result_effect TEXT, expires_at INTEGER,
  password_confirmed INTEGER, reverses TEXT, reversed_by TEXT);
CREATE INDEX IF NOT EXISTS actions_by_incident ON actions (incident_id);
CREATE UNIQUE INDEX IF NOT EXISTS actions_by_idem ON actions (requested_by, idempotency_key)
  WHERE idempotency_key <> '';
CREATE INDEX IF NOT EXISTS actions_open ON actions (state)
  WHERE state NOT IN ('completed', 'failed', 'expired', 'cancelled', 'reverted');
CREATE TABLE IF NOT EXISTS transitions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, action_id TEXT NOT NULL, state TEXT NOT NULL,
  time INTEGER NOT NULL, reason TEXT);
CREATE INDEX IF NOT EXISTS transitions_by_action ON transitions (action_id, seq);
CREATE TABLE IF NOT EXISTS users (
  username TEXT PRIMARY KEY, role TEXT NOT NULL, salt_hex TEXT NOT NULL,
  iterations INTEGER NOT NULL, hash_hex TEXT NOT NULL, created_at INTEGER);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, actor TEXT NOT NULL, kind TEXT NOT NULL,
  target TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
-- Append-only: the server never changes or removes a record.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TABLE IF NOT EXISTS tokens (
  token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, name TEXT, created_at INTEGER,
  token_id TEXT, expires_at INTEGER NOT NULL DEFAULT 0);
)sql";

/// A prepared statement borrowed from the cache: bound on construction, reset when
/// it goes out of scope.
class stmt {
public:
  stmt(store_state& st, const char* sql) : db_(st.db) {
    auto& slot = st.statements[sql];
    if (slot == nullptr && sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT,
                                              &slot, nullptr) != SQLITE_OK)
      throw std::runtime_error(sqlite3_errmsg(db_));
    s_ = slot;
  }
  ~stmt() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  stmt& bind_blob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  /// Steps once; true when a row is available.
  bool step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    if (rc == SQLITE_CONSTRAINT) throw constraint_error(sqlite3_errmsg(db_));
    throw std::runtime_error(sqlite3_errmsg(db_));
  }
  std::string text(int i) {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return p ? std::string(p, sqlite3_column_bytes(s_, i)) : std::string{};
  }
  std::string blob(int i) {
    auto p = static_cast<const char*>(sqlite3_column_blob(s_, i));
    return p ? std::string(p, sqlite3_column_bytes(s_, i)) : std::string{};
  }
  int64_t integer(int i) { return sqlite3_column_int64(s_, i); }

  struct constraint_error : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

void exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw std::runtime_error(msg);
  }
}

std::map<std::string, std::string> json_map(const std::string& text) {
  std::map<std::string, std::string> out;
  if (text.empty()) return out;
  auto j = json::parse(text, nullptr, false);
  if (j.is_object())
    for (auto& [k, v] : j.items())
      if (v.is_string()) out.emplace(k, v.get<std::string>());
  return out;
}

device_record read_device(stmt& q) {
  device_record d;
  d.device_id = q.text(0);
  d.hostname = q.text(1);
  d.os = q.text(2);
  d.agent_version = q.text(3);
  auto addrs = json::parse(q.text(4), nullptr, false);
  if (addrs.is_array())
    for (auto& a : addrs)
      if (a.is_string()) d.addresses.push_back(a.get<std::string>());
  d.online = q.integer(5) != 0;
  d.isolated = q.integer(6) != 0;
  d.first_seen = q.integer(7);
  d.last_seen = q.integer(8);
  return d;
}

constexpr const char* device_columns =
    "device_id, hostname, os, agent_version, addresses, online, isolated, first_seen, "
    "last_seen";

constexpr const char* action_columns =
    "action_id, type, device_id, incident_id, target_kind, target_event_id, params, "
    "requested_by, comment, idempotency_key, state, created_at, updated_at, result_ok, "
    "result_error, result_effect, expires_at, password_confirmed, reverses, reversed_by";

action_record read_action(stmt& q) {
  action_record a;
  a.action_id = q.text(0);
  a.type = q.text(1);
  a.device_id = q.text(2);
  a.incident_id = q.text(3);
  a.target_kind = q.text(4);
  a.target_event_id = q.text(5);
  a.params = json_map(q.text(6));
  a.requested_by = q.text(7);
  a.comment = q.text(8);
  a.idempotency_key = q.text(9);
  a.state = q.text(10);
  a.created_at = q.integer(11);
  a.updated_at = q.integer(12);
  a.result_ok = q.integer(13) != 0;
  a.result_error = q.text(14);
  a.result_effect = json_map(q.text(15));
  a.expires_at = q.integer(16);
  a.password_confirmed = q.integer(17) != 0;
  a.reverses = q.text(18);
  a.reversed_by = q.text(19);
  return a;
}

std::optional<incident_record> load_incident(store_state& st, const std::string& id) {
  stmt q{st, "SELECT incident_id, device_id, status, created_at, report FROM incidents "
             "WHERE incident_id = ?"};
  q.bind(1, id);
  if (!q.step()) return std::nullopt;
  incident_record r;
  r.incident_id = q.text(0);
  r.device_id = q.text(1);
  r.status = q.text(2);
  r.created_at = q.integer(3);
  std::string why;
  // The blob was written by us, but bound the decode all the same.
  bus::decode_limits lim;
  lim.max_frame = 64 << 20;
  auto rep = bus::decode<bus::incident_report>(q.blob(4), lim, why);
  if (!rep) throw std::runtime_error("stored incident " + id + " unreadable: " + why);
  r.report = std::move(*rep);
  return r;
}

int64_t limit_of(const query& q) {
  int64_t limit = 500;
  if (auto i = q.filters.find("limit"); i != q.filters.end()) {
    try {
      limit = std::stoll(i->second);
    } catch (const std::exception&) {
      limit = 500;
    }
  }
  return std::clamp<int64_t>(limit, 1, 5000);
}

std::string filter(const query& q, const char* key) {
  auto i = q.filters.find(key);
  return i == q.filters.end() ? std::string{} : i->second;
}

/// Answers a REST read; throws std::out_of_range for "not found".
json run_query(store_state& st, const query& q) {
  if (q.what == "devices") {
    std::string sql = std::string{"SELECT "} + device_columns +
                      " FROM devices ORDER BY device_id LIMIT ?";
    stmt s{st, sql.c_str()};
    s.bind(1, limit_of(q));
    auto out = json::array();
    while (s.step())
      out.push_back(to_json(read_device(s)));
    return json{{"devices", std::move(out)}};
  }
  if (q.what == "device") {
    std::string sql =
        std::string{"SELECT "} + device_columns + " FROM devices WHERE device_id = ?";
    stmt s{st, sql.c_str()};
    s.bind(1, q.id);
    if (!s.step()) throw std::out_of_range("no device " + q.id);
    return json{{"device", to_json(read_device(s))}};
  }
  if (q.what == "incidents") {
    auto dev = filter(q, "device_id");
    stmt s{st, "SELECT incident_id, device_id, status, created_at, det_name, "
               "det_severity, det_engine, key_event_id, event_count FROM incidents "
               "WHERE (?1 = '' OR device_id = ?1) ORDER BY created_at DESC LIMIT ?2"};
    s.bind(1, dev).bind(2, limit_of(q));
    auto out = json::array();
    while (s.step()) {
      out.push_back(json{
          {"incident_id", s.text(0)},
          {"device_id", s.text(1)},
          {"status", s.text(2)},
          {"created_at", format_time(s.integer(3))},
          {"detection",
           json{{"name", s.text(4)}, {"severity", s.text(5)}, {"engine", s.text(6)}}},
          {"key_event_id", s.text(7)},
          {"event_count", s.integer(8)}});
    }
    return json{{"incidents", std::move(out)}};
  }
  if (q.what == "incident") {
    auto r = load_incident(st, q.id);
    if (!r) throw std::out_of_range("no incident " + q.id);
    return json{{"incident", to_json(*r, true)}};
  }
  if (q.what == "actions") {
    std::string sql = std::string{"SELECT "} + action_columns +
                      " FROM actions WHERE (?1 = '' OR device_id = ?1) AND "
                      "(?2 = '' OR state = ?2) AND (?4 = '' OR incident_id = ?4) "
                      "ORDER BY seq DESC LIMIT ?3";
    stmt s{st, sql.c_str()};
    s.bind(1, filter(q, "device_id")).bind(2, filter(q, "state")).bind(3, limit_of(q));
    s.bind(4, filter(q, "incident_id"));
    auto out = json::array();
    while (s.step())
      out.push_back(to_json(read_action(s)));
    return json{{"actions", std::move(out)}};
  }
  if (q.what == "action") {
    std::string sql =
        std::string{"SELECT "} + action_columns + " FROM actions WHERE action_id = ?";
    stmt s{st, sql.c_str()};
    s.bind(1, q.id);
    if (!s.step()) throw std::out_of_range("no action " + q.id);
    auto out = to_json(read_action(s));
    stmt t{st, "SELECT action_id, state, time, reason FROM transitions "
               "WHERE action_id = ? ORDER BY seq"};
    t.bind(1, q.id);
    auto list = json::array();
    while (t.step())
      list.push_back(to_json(transition{t.text(0), t.text(1), t.integer(2), t.text(3)}));
    out["transitions"] = std::move(list);
    return json{{"action", std::move(out)}};
  }
  if (q.what == "users") {
    stmt s{st, "SELECT username, role, created_at FROM users ORDER BY username"};
    auto out = json::array();
    while (s.step())
      out.push_back(json{{"username", s.text(0)},
                         {"role", s.text(1)},
                         {"created_at", format_time(s.integer(2))}});
    return json{{"users", std::move(out)}};
  }
  if (q.what == "user") {
    stmt s{st, "SELECT username, role, created_at FROM users WHERE username = ?"};
    s.bind(1, q.id);
    if (!s.step()) throw std::out_of_range("no user " + q.id);
    return json{{"user", json{{"username", s.text(0)},
                              {"role", s.text(1)},
                              {"created_at", format_time(s.integer(2))}}}};
  }
  if (q.what == "audit") {
    if (!st.writer)
      throw std::invalid_argument("the audit trail is read through the store itself");
    int64_t after = 0;
    try {
      after = std::stoll(filter(q, "after").empty() ? "0" : filter(q, "after"));
    } catch (const std::exception&) {
      throw std::invalid_argument("'after' must be a record number");
    }
    auto limit = std::clamp<int64_t>(
        filter(q, "limit").empty() ? 1000 : std::stoll(filter(q, "limit")), 1, 10000);
    stmt s{st,
           "SELECT seq, time, actor, kind, target, detail, prev_hash, hash FROM audit "
           "WHERE seq > ? ORDER BY seq LIMIT ?"};
    s.bind(1, after).bind(2, limit);
    auto out = json::array();
    while (s.step())
      out.push_back(json{{"seq", s.integer(0)},
                         {"time", format_time(s.integer(1))},
                         {"time_us", s.integer(1)},
                         {"actor", s.text(2)},
                         {"kind", s.text(3)},
                         {"target", s.text(4)},
                         {"detail", s.text(5)},
                         {"prev_hash", s.text(6)},
                         {"hash", s.text(7)}});
    // The head the writer keeps in memory, not the table's last row: a record cut
    // from the end of the table then shows as a mismatch.
    return json{{"records", std::move(out)},
                {"head", json{{"seq", st.audit_seq}, {"hash", st.audit_head}}}};
  }
  if (q.what == "stats") {
    auto count = [&](const char* sql) {
      stmt s{st, sql};
      return s.step() ? s.integer(0) : int64_t{0};
    };
    return json{
        {"devices", count("SELECT count(*) FROM devices")},
        {"devices_online", count("SELECT count(*) FROM devices WHERE online = 1")},
        {"incidents", count("SELECT count(*) FROM incidents")},
        {"events", count("SELECT coalesce(sum(event_count), 0) FROM incidents")},
        {"actions", count("SELECT count(*) FROM actions")},
        {"actions_open",
         count("SELECT count(*) FROM actions WHERE state NOT IN ('completed', 'failed', "
               "'expired', 'cancelled', 'reverted')")}};
  }
  throw std::invalid_argument("unknown query " + q.what);
}

} // namespace

std::string audit_hash(int64_t seq, int64_t time_us, const audit_entry& e,
                       const std::string& prev_hash) {
  std::string text = std::to_string(seq) + '\n' + std::to_string(time_us) + '\n' +
                     e.actor + '\n' + e.kind + '\n' + e.target + '\n' + e.detail + '\n' +
                     prev_hash;
  return sha256_hex(text);
}

namespace {

void append_audit(store_state& st, const audit_entry& e) {
  auto seq = st.audit_seq + 1;
  auto time = now_us();
  auto hash = audit_hash(seq, time, e, st.audit_head);
  stmt s{st,
         "INSERT INTO audit (seq, time, actor, kind, target, detail, prev_hash, hash) "
         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"};
  s.bind(1, seq).bind(2, time).bind(3, e.actor).bind(4, e.kind).bind(5, e.target);
  s.bind(6, e.detail).bind(7, st.audit_head).bind(8, hash);
  s.step();
  st.audit_seq = seq;
  st.audit_head = std::move(hash);
}

void write_transition(store_state& st, const transition& t, const std::string& actor) {
  stmt s{st, "INSERT INTO transitions (action_id, state, time, reason) "
             "VALUES (?, ?, ?, ?)"};
  s.bind(1, t.action_id).bind(2, t.state).bind(3, t.time).bind(4, t.reason);
  s.step();
  append_audit(st,
               audit_entry{actor, "transition", t.action_id, t.state + ": " + t.reason});
}

} // namespace

store_state::~store_state() {
  for (auto& [sql, s] : statements)
    sqlite3_finalize(s);
  if (db != nullptr) sqlite3_close(db);
}

namespace {

caf::result<std::string> answer_query(store_state& st, const query& q) {
  try {
    return run_query(st, q).dump();
  } catch (const std::out_of_range& e) {
    return make_error(ec::not_found, e.what());
  } catch (const std::invalid_argument& e) {
    return make_error(ec::bad_request, e.what());
  } catch (const std::exception& e) {
    return make_error(ec::storage, e.what());
  }
}

} // namespace

store_reader_actor::behavior_type
store_reader(store_reader_actor::stateful_pointer<store_state> self, std::string path) {
  auto& st = self->state;
  if (sqlite3_open_v2(path.c_str(), &st.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK ||
      sqlite3_exec(st.db, "PRAGMA busy_timeout=5000;", nullptr, nullptr, nullptr) !=
          SQLITE_OK) {
    spdlog::critical("store reader: {}: {}", path, st.db ? sqlite3_errmsg(st.db) : "?");
    self->quit(make_error(ec::storage, "cannot open the database for reading"));
    return store_reader_actor::behavior_type::make_empty_behavior();
  }
  return {
      [self](const query& q) { return answer_query(self->state, q); },
  };
}

store_actor::behavior_type store(store_stateful self, std::string path) {
  auto& st = self->state;
  st.writer = true;
  auto fail = [&](const std::string& what) {
    spdlog::critical("store: {}: {}", path, what);
    self->quit(make_error(ec::storage, what));
  };
  if (sqlite3_open_v2(path.c_str(), &st.db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    fail(st.db ? sqlite3_errmsg(st.db) : "cannot open");
    return store_actor::behavior_type::make_empty_behavior();
  }
  try {
    // WAL lets readers of the file (sqlite3 CLI, backups) run beside our writer;
    // FULL sync makes a commit survive power loss, and group commit pays for it.
    exec(st.db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                "PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;");
    exec(st.db, schema);
    // Tokens from before expiry: give them an id (they keep no expiry, 0).
    if (stmt cols{st,
                  "SELECT 1 FROM pragma_table_info('tokens') WHERE name = 'token_id'"};
        !cols.step())
      exec(st.db, "ALTER TABLE tokens ADD COLUMN token_id TEXT; "
                  "ALTER TABLE tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;");
    exec(st.db, "UPDATE tokens SET token_id = lower(hex(randomblob(8))) "
                "WHERE token_id IS NULL; "
                "CREATE UNIQUE INDEX IF NOT EXISTS tokens_by_id ON tokens (token_id);");
    stmt v{st, "SELECT value FROM meta WHERE key = 'schema_version'"};
    if (v.step()) {
      if (std::stoi(v.text(0)) > schema_version)
        throw std::runtime_error("database was written by a newer parryd");
    } else {
      stmt put{st, "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"};
      put.bind(1, std::to_string(schema_version));
      put.step();
    }
    stmt head{st, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"};
    if (head.step()) {
      st.audit_seq = head.integer(0);
      st.audit_head = head.text(1);
    }
  } catch (const std::exception& e) {
    fail(e.what());
    return store_actor::behavior_type::make_empty_behavior();
  }

  // Runs `write` inside the group transaction and answers through `reply` once the
  // transaction commits (true) or rolls back (false).
  auto write = [self](auto&& body, std::function<void(bool)> reply) {
    auto& st = self->state;
    if (!st.in_transaction) {
      exec(st.db, "BEGIN");
      st.in_transaction = true;
      // Everything already in the mailbox lands in this transaction: the flush
      // message queues behind it.
      self->send(self, atom::flush_v);
    }
    body();
    ++st.writes;
    st.on_commit.push_back(std::move(reply));
  };

  // Wraps a write whose answer is `ok` so failures become errors, not crashes.
  auto ok_write = [self, write](auto&& body) -> caf::result<atom::ok> {
    auto rp = self->make_response_promise<atom::ok>();
    try {
      write(body, [rp](bool committed) mutable {
        if (committed)
          rp.deliver(atom::ok_v);
        else
          rp.deliver(make_error(ec::storage, "commit failed"));
      });
    } catch (const stmt::constraint_error& e) {
      return make_error(ec::conflict, e.what());
    } catch (const std::exception& e) {
      return make_error(ec::storage, e.what());
    }
    return rp;
  };

  return {
      [=](atom::put, const device_record& d) -> caf::result<atom::ok> {
        return ok_write([&] {
          stmt s{
              self->state,
              "INSERT INTO devices (device_id, hostname, os, agent_version, addresses, "
              "online, isolated, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
              "?) "
              "ON CONFLICT (device_id) DO UPDATE SET "
              // A device heard from before its hello keeps what the last hello said.
              "hostname = coalesce(nullif(excluded.hostname, ''), hostname), "
              "os = coalesce(nullif(excluded.os, ''), os), "
              "agent_version = coalesce(nullif(excluded.agent_version, ''), "
              "agent_version), "
              "addresses = iif(excluded.hostname = '', addresses, excluded.addresses), "
              "online = excluded.online, "
              "isolated = excluded.isolated, last_seen = excluded.last_seen"};
          s.bind(1, d.device_id)
              .bind(2, d.hostname)
              .bind(3, d.os)
              .bind(4, d.agent_version);
          s.bind(5, json(d.addresses).dump()).bind(6, int64_t{d.online});
          s.bind(7, int64_t{d.isolated}).bind(8, d.first_seen).bind(9, d.last_seen);
          s.step();
        });
      },
      [=](atom::put, const incident_record& r) -> caf::result<std::string> {
        auto& st = self->state;
        try {
          // A re-sent report (lost acknowledgement, agent restart) is the same incident.
          stmt find{st, "SELECT incident_id FROM incidents WHERE device_id = ? AND "
                        "report_id = ?"};
          find.bind(1, r.device_id).bind(2, r.report.report_id);
          if (find.step()) return find.text(0);
          auto rp = self->make_response_promise<std::string>();
          auto id = r.incident_id;
          write(
              [&] {
                stmt s{
                    st,
                    "INSERT INTO incidents (incident_id, device_id, report_id, status, "
                    "created_at, det_name, det_severity, det_engine, key_event_id, "
                    "event_count, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"};
                s.bind(1, r.incident_id).bind(2, r.device_id).bind(3, r.report.report_id);
                s.bind(4, r.status).bind(5, r.created_at).bind(6, r.report.det.name);
                s.bind(7, r.report.det.severity).bind(8, r.report.det.engine);
                s.bind(9, r.report.key_event_id);
                s.bind(10, static_cast<int64_t>(r.report.events.size()));
                s.bind_blob(11, bus::encode(r.report));
                s.step();
              },
              [rp, id](bool committed) mutable {
                if (committed)
                  rp.deliver(id);
                else
                  rp.deliver(make_error(ec::storage, "commit failed"));
              });
          return rp;
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
      },
      [=](atom::put, const action_record& a,
          const transition& t) -> caf::result<atom::ok> {
        return ok_write([&] {
          std::string sql =
              std::string{"INSERT INTO actions ("} + action_columns +
              ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
          stmt s{self->state, sql.c_str()};
          s.bind(1, a.action_id)
              .bind(2, a.type)
              .bind(3, a.device_id)
              .bind(4, a.incident_id);
          s.bind(5, a.target_kind)
              .bind(6, a.target_event_id)
              .bind(7, json(a.params).dump());
          s.bind(8, a.requested_by).bind(9, a.comment).bind(10, a.idempotency_key);
          s.bind(11, a.state).bind(12, a.created_at).bind(13, a.updated_at);
          s.bind(14, int64_t{a.result_ok}).bind(15, a.result_error);
          s.bind(16, json(a.result_effect).dump()).bind(17, a.expires_at);
          s.bind(18, int64_t{a.password_confirmed}).bind(19, a.reverses);
          s.bind(20, a.reversed_by);
          s.step();
          write_transition(self->state, t, a.requested_by);
        });
      },
      [=](atom::update, const action_record& a,
          const transition& t) -> caf::result<atom::ok> {
        return ok_write([&] {
          stmt s{self->state,
                 "UPDATE actions SET state = ?, updated_at = ?, result_ok = ?, "
                 "result_error = ?, result_effect = ? WHERE action_id = ?"};
          s.bind(1, a.state).bind(2, a.updated_at).bind(3, int64_t{a.result_ok});
          s.bind(4, a.result_error)
              .bind(5, json(a.result_effect).dump())
              .bind(6, a.action_id);
          s.step();
          write_transition(self->state, t, "parryd");
        });
      },
      [=](atom::get, atom::incident,
          const std::string& id) -> caf::result<incident_record> {
        try {
          if (auto r = load_incident(self->state, id)) return std::move(*r);
          return make_error(ec::not_found, "no incident " + id);
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
      },
      [=](atom::get, const std::string& id) -> caf::result<device_record> {
        try {
          std::string sql = std::string{"SELECT "} + device_columns +
                            " FROM devices WHERE device_id = ?";
          stmt s{self->state, sql.c_str()};
          s.bind(1, id);
          if (!s.step()) return make_error(ec::not_found, "no device " + id);
          return read_device(s);
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
      },
      [=](atom::idem, const std::string& user,
          const std::string& key) -> caf::result<std::string> {
        try {
          stmt s{self->state, "SELECT action_id FROM actions WHERE requested_by = ? AND "
                              "idempotency_key = ?"};
          s.bind(1, user).bind(2, key);
          return s.step() ? s.text(0) : std::string{};
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
      },
      [=](atom::open) -> caf::result<std::vector<action_record>> {
        try {
          std::string sql = std::string{"SELECT "} + action_columns +
                            " FROM actions WHERE state NOT IN ('completed', 'failed', "
                            "'expired', 'cancelled', 'reverted') ORDER BY seq";
          stmt s{self->state, sql.c_str()};
          std::vector<action_record> out;
          while (s.step())
            out.push_back(read_action(s));
          return out;
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
      },
      [=](atom::user, const std::string& name) -> caf::result<user_record> {
        try {
          stmt s{self->state, "SELECT username, role, salt_hex, iterations, hash_hex, "
                              "created_at FROM users WHERE username = ?"};
          s.bind(1, name);
          if (!s.step()) return make_error(ec::not_found, "no user " + name);
          return user_record{s.text(0), s.text(1),
                             s.text(2), static_cast<uint32_t>(s.integer(3)),
                             s.text(4), s.integer(5)};
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
      },
      [=](atom::put, const user_record& u) -> caf::result<atom::ok> {
        return ok_write([&] {
          stmt s{self->state, "INSERT INTO users (username, role, salt_hex, iterations, "
                              "hash_hex, created_at) VALUES (?, ?, ?, ?, ?, ?)"};
          s.bind(1, u.username).bind(2, u.role).bind(3, u.salt_hex);
          s.bind(4, int64_t{u.iterations}).bind(5, u.hash_hex).bind(6, u.created_at);
          s.step();
        });
      },
      [=](atom::token, const std::string& hash,
          const token_record& t) -> caf::result<atom::ok> {
        return ok_write([&] {
          stmt s{self->state,
                 "INSERT INTO tokens (token_hash, username, name, created_at, token_id, "
                 "expires_at) VALUES (?, ?, ?, ?, ?, ?)"};
          s.bind(1, hash).bind(2, t.username).bind(3, t.name).bind(4, t.created_at);
          s.bind(5, t.token_id).bind(6, t.expires_at);
          s.step();
        });
      },
      [=](atom::token, const std::string& hash) -> caf::result<token_record> {
        try {
          stmt s{self->state, "SELECT token_id, name, username, created_at, expires_at "
                              "FROM tokens WHERE token_hash = ?"};
          s.bind(1, hash);
          if (!s.step()) return make_error(ec::unauthenticated, "unknown token");
          return token_record{s.text(0), s.text(1), s.text(2), s.integer(3),
                              s.integer(4)};
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
      },
      [=](atom::token, atom::list,
          const std::string& user) -> caf::result<std::vector<token_record>> {
        try {
          stmt s{self->state, "SELECT token_id, name, username, created_at, expires_at "
                              "FROM tokens WHERE ?1 = '' OR username = ?1 "
                              "ORDER BY created_at, token_id LIMIT 10000"};
          s.bind(1, user);
          std::vector<token_record> out;
          while (s.step())
            out.push_back(token_record{s.text(0), s.text(1), s.text(2), s.integer(3),
                                       s.integer(4)});
          return out;
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
      },
      [=](atom::revoke, const std::string& hash) -> caf::result<atom::ok> {
        return ok_write([&] {
          stmt s{self->state, "DELETE FROM tokens WHERE token_hash = ?"};
          s.bind(1, hash);
          s.step();
        });
      },
      [=](atom::revoke, atom::token, const std::string& id,
          const std::string& owner) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        try {
          std::string username;
          {
            stmt q{self->state, "SELECT username FROM tokens WHERE token_id = ?1 AND "
                                "(?2 = '' OR username = ?2)"};
            q.bind(1, id).bind(2, owner);
            if (!q.step()) {
              rp.deliver(make_error(ec::not_found, "no token " + id));
              return rp;
            }
            username = q.text(0);
          }
          write(
              [&] {
                stmt s{self->state, "DELETE FROM tokens WHERE token_id = ?"};
                s.bind(1, id);
                s.step();
              },
              [rp, username](bool committed) mutable {
                if (committed)
                  rp.deliver(username);
                else
                  rp.deliver(make_error(ec::storage, "commit failed"));
              });
        } catch (const std::exception& e) {
          rp.deliver(make_error(ec::storage, e.what()));
        }
        return rp;
      },
      [=](atom::get, atom::action, const std::string& id) -> caf::result<action_record> {
        try {
          std::string sql = std::string{"SELECT "} + action_columns +
                            " FROM actions WHERE action_id = ?";
          stmt s{self->state, sql.c_str()};
          s.bind(1, id);
          if (!s.step()) return make_error(ec::not_found, "no action " + id);
          return read_action(s);
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
      },
      [=](atom::link, const std::string& id,
          const std::string& reverse) -> caf::result<atom::ok> {
        return ok_write([&] {
          stmt s{self->state, "UPDATE actions SET reversed_by = ? WHERE action_id = ?"};
          s.bind(1, reverse).bind(2, id);
          s.step();
        });
      },
      [=](atom::revert, const std::string& id,
          const std::string& reverse) -> caf::result<atom::ok> {
        return ok_write([&] {
          auto now = now_us();
          stmt s{self->state, "UPDATE actions SET state = 'reverted', updated_at = ? "
                              "WHERE action_id = ? AND state = 'completed'"};
          s.bind(1, now).bind(2, id);
          s.step();
          if (sqlite3_changes(self->state.db) == 1)
            write_transition(self->state,
                             transition{id, state::reverted, now, "undone by " + reverse},
                             "parryd");
        });
      },
      [=](atom::audit, const audit_entry& e) -> caf::result<atom::ok> {
        return ok_write([&] { append_audit(self->state, e); });
      },
      [=](atom::update, const user_record& u) -> caf::result<atom::ok> {
        auto& st = self->state;
        try {
          stmt cur{st, "SELECT role FROM users WHERE username = ?"};
          cur.bind(1, u.username);
          if (!cur.step()) return make_error(ec::not_found, "no user " + u.username);
          if (cur.text(0) == "administrator" && u.role != "administrator") {
            stmt admins{st, "SELECT count(*) FROM users WHERE role = 'administrator'"};
            if (admins.step() && admins.integer(0) <= 1)
              return make_error(ec::conflict, "the last administrator keeps that role");
          }
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
        return ok_write([&] {
          stmt s{st,
                 "UPDATE users SET role = ?, salt_hex = ?, iterations = ?, hash_hex = ? "
                 "WHERE username = ?"};
          s.bind(1, u.role).bind(2, u.salt_hex).bind(3, int64_t{u.iterations});
          s.bind(4, u.hash_hex).bind(5, u.username);
          s.step();
          stmt t{st, "DELETE FROM tokens WHERE username = ?"};
          t.bind(1, u.username);
          t.step();
        });
      },
      [=](atom::del, const std::string& name) -> caf::result<atom::ok> {
        auto& st = self->state;
        try {
          stmt cur{st, "SELECT role FROM users WHERE username = ?"};
          cur.bind(1, name);
          if (!cur.step()) return make_error(ec::not_found, "no user " + name);
          stmt admins{st, "SELECT count(*) FROM users WHERE role = 'administrator'"};
          if (cur.text(0) == "administrator" && admins.step() && admins.integer(0) <= 1)
            return make_error(ec::conflict, "the last administrator cannot be deleted");
        } catch (const std::exception& e) {
          return make_error(ec::storage, e.what());
        }
        return ok_write([&] {
          stmt s{st, "DELETE FROM users WHERE username = ?"};
          s.bind(1, name);
          s.step();
          stmt t{st, "DELETE FROM tokens WHERE username = ?"};
          t.bind(1, name);
          t.step();
        });
      },
      [=](const query& q) { return answer_query(self->state, q); },
      [=](atom::flush) {
        auto& st = self->state;
        if (!st.in_transaction) return;
        bool committed = true;
        try {
          exec(st.db, "COMMIT");
        } catch (const std::exception& e) {
          spdlog::error("store: commit failed: {}", e.what());
          committed = false;
          sqlite3_exec(st.db, "ROLLBACK", nullptr, nullptr, nullptr);
          // The audit records of the batch are gone: continue the chain from disk.
          try {
            stmt head{st, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"};
            st.audit_seq = head.step() ? head.integer(0) : 0;
            st.audit_head = st.audit_seq ? head.text(1) : std::string(64, '0');
          } catch (const std::exception& e2) {
            spdlog::critical("store: cannot reload the audit head: {}", e2.what());
          }
        }
        st.in_transaction = false;
        ++st.commits;
        auto replies = std::move(st.on_commit);
        st.on_commit.clear();
        for (auto& reply : replies)
          reply(committed);
      },
  };
}

} // namespace parry
