#include "actors/store.hpp"

#include <sqlite3.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <iterator>
#include <tuple>
#include <utility>

#include <caf/event_based_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "actors/incident.hpp"
#include "actors/json.hpp"
#include "bus/codec.hpp"
#include "bus/integrator.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"
#include "server/logging.hpp"
#include "server/metrics.hpp"

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
  password_confirmed INTEGER, reverses TEXT, reversed_by TEXT,
  result_agent_us INTEGER NOT NULL DEFAULT 0);
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
  iterations INTEGER NOT NULL, hash_hex TEXT NOT NULL, created_at INTEGER,
  disabled INTEGER NOT NULL DEFAULT 0);
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
-- Who may use the bus: one key per device or integrator, one device or integrator
-- per key.
CREATE TABLE IF NOT EXISTS bus_keys (
  public_key TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
  role TEXT NOT NULL DEFAULT '', created_at INTEGER NOT NULL, created_by TEXT NOT NULL,
  UNIQUE (kind, name));
CREATE TABLE IF NOT EXISTS enrollment_tokens (
  token_hash TEXT PRIMARY KEY, token_id TEXT NOT NULL, created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, uses_left INTEGER NOT NULL);
-- What GET /stats shows, kept by triggers in the transaction of each change, so a
-- read of the counts never scans a table (issue 11). Filled from the tables once,
-- when a database from before it is opened (count_rows).
CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS counts_device_in AFTER INSERT ON devices BEGIN
  UPDATE counts SET n = n + 1 WHERE name = 'devices';
  UPDATE counts SET n = n + (NEW.online = 1) WHERE name = 'devices_online'; END;
CREATE TRIGGER IF NOT EXISTS counts_device_online AFTER UPDATE OF online ON devices
  BEGIN UPDATE counts SET n = n + (NEW.online = 1) - (OLD.online = 1)
  WHERE name = 'devices_online'; END;
CREATE TRIGGER IF NOT EXISTS counts_device_out AFTER DELETE ON devices BEGIN
  UPDATE counts SET n = n - 1 WHERE name = 'devices';
  UPDATE counts SET n = n - (OLD.online = 1) WHERE name = 'devices_online'; END;
CREATE TRIGGER IF NOT EXISTS counts_incident_in AFTER INSERT ON incidents BEGIN
  UPDATE counts SET n = n + 1 WHERE name = 'incidents';
  UPDATE counts SET n = n + coalesce(NEW.event_count, 0) WHERE name = 'events'; END;
CREATE TRIGGER IF NOT EXISTS counts_incident_events AFTER UPDATE OF event_count
  ON incidents BEGIN UPDATE counts
  SET n = n + coalesce(NEW.event_count, 0) - coalesce(OLD.event_count, 0)
  WHERE name = 'events'; END;
CREATE TRIGGER IF NOT EXISTS counts_incident_out AFTER DELETE ON incidents BEGIN
  UPDATE counts SET n = n - 1 WHERE name = 'incidents';
  UPDATE counts SET n = n - coalesce(OLD.event_count, 0) WHERE name = 'events'; END;
CREATE TRIGGER IF NOT EXISTS counts_action_in AFTER INSERT ON actions BEGIN
  UPDATE counts SET n = n + 1 WHERE name = 'actions';
  UPDATE counts SET n = n + (NEW.state NOT IN ('completed', 'failed', 'expired',
    'cancelled', 'reverted')) WHERE name = 'actions_open'; END;
CREATE TRIGGER IF NOT EXISTS counts_action_state AFTER UPDATE OF state ON actions
  BEGIN UPDATE counts
  SET n = n + (NEW.state NOT IN ('completed', 'failed', 'expired', 'cancelled',
    'reverted')) - (OLD.state NOT IN ('completed', 'failed', 'expired', 'cancelled',
    'reverted')) WHERE name = 'actions_open'; END;
CREATE TRIGGER IF NOT EXISTS counts_action_out AFTER DELETE ON actions BEGIN
  UPDATE counts SET n = n - 1 WHERE name = 'actions';
  UPDATE counts SET n = n - (OLD.state NOT IN ('completed', 'failed', 'expired',
    'cancelled', 'reverted')) WHERE name = 'actions_open'; END;
)sql";

/// The counts of a database opened without them (or with some missing), taken from
/// the tables once, in one transaction.
constexpr const char* count_rows = R"sql(
BEGIN IMMEDIATE;
DELETE FROM counts;
INSERT INTO counts (name, n)
  SELECT 'devices', count(*) FROM devices
  UNION ALL SELECT 'devices_online', count(*) FROM devices WHERE online = 1
  UNION ALL SELECT 'incidents', count(*) FROM incidents
  UNION ALL SELECT 'events', coalesce(sum(event_count), 0) FROM incidents
  UNION ALL SELECT 'actions', count(*) FROM actions
  UNION ALL SELECT 'actions_open', count(*) FROM actions
    WHERE state NOT IN ('completed', 'failed', 'expired', 'cancelled', 'reverted');
COMMIT;
)sql";

/// The names in `counts`, as GET /stats shows them.
constexpr const char* count_names[] = {"devices", "devices_online", "incidents",
                                       "events",  "actions",        "actions_open"};

/// A prepared statement borrowed from the cache: bound on construction, reset when
/// it goes out of scope.
class stmt {
public:
  stmt(store_state& st, const char* sql) : db_(st.db) {
    auto i = st.statements.find(std::string_view{sql});
    if (i == st.statements.end()) {
      sqlite3_stmt* made = nullptr;
      if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &made, nullptr) !=
          SQLITE_OK)
        throw std::runtime_error(sqlite3_errmsg(db_));
      i = st.statements.emplace(sql, made).first;
    }
    s_ = i->second;
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

/// The JSON text of a string map as stored; most are empty, and cost no JSON then.
std::string json_text(const std::map<std::string, std::string>& m) {
  return m.empty() ? std::string{"{}"} : json(m).dump();
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
    "result_error, result_effect, expires_at, password_confirmed, reverses, reversed_by, "
    "result_agent_us";

/// An action row as stored. `problem` says why the row cannot be read as a record
/// (a type or target kind this build does not know: a newer server or a hand edit
/// wrote it), empty when it can; `type` and `kind` are the words as stored.
struct action_row {
  action_record rec;
  std::string type;
  std::string kind;
  std::string problem;
};

action_row read_action_row(stmt& q) {
  action_row row;
  auto& a = row.rec;
  a.action_id = q.text(0);
  row.type = q.text(1);
  if (auto t = action_type_from_string(row.type))
    a.type = *t;
  else
    row.problem = "unknown stored type '" + row.type + "'";
  a.device_id = q.text(2);
  a.incident_id = q.text(3);
  row.kind = q.text(4);
  if (auto k = target_kind_from_string(row.kind))
    a.target_kind = *k;
  else if (row.problem.empty())
    row.problem = "unknown stored target kind '" + row.kind + "'";
  a.target_event_id = q.text(5);
  a.params = json_map(q.text(6));
  a.requested_by = q.text(7);
  a.comment = q.text(8);
  a.idempotency_key = q.text(9);
  // A state this build does not know (a newer server wrote it) is shown as failed
  // with the stored word, never resumed: `open` skips such rows.
  auto stored_state = action_state_from_string(q.text(10));
  a.state = stored_state.value_or(action_state::failed);
  a.created_at = q.integer(11);
  a.updated_at = q.integer(12);
  a.result_ok = q.integer(13) != 0;
  a.result_error = q.text(14);
  if (!stored_state) {
    spdlog::error("store: action {} has an unknown state '{}'", a.action_id, q.text(10));
    a.result_error = "unknown stored state '" + q.text(10) + "'"; // not the old error
  }
  a.result_effect = json_map(q.text(15));
  a.expires_at = q.integer(16);
  a.password_confirmed = q.integer(17) != 0;
  a.reverses = q.text(18);
  a.reversed_by = q.text(19);
  a.result_agent_us = q.integer(20);
  return row;
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
  // Stored as the agent sent it: hashes in the form the server compares.
  normalize_hashes(r.report);
  return r;
}

/// A write the store refuses on purpose (nothing matched, a rule says no): rolls back
/// the write's savepoint like any failure, and reaches the caller with its code.
struct refused : std::runtime_error {
  refused(ec code, const std::string& what) : std::runtime_error(what), code(code) {}
  ec code;
};

/// Throws `refused` with `code` unless the last statement changed a row.
void expect_change(store_state& st, ec code, const std::string& what) {
  if (sqlite3_changes(st.db) == 0) throw refused(code, what);
}

/// The record of the action row `q` is on. A row this build cannot read is a storage
/// error for that read (logged), never a crash and never a record with a made-up type.
action_record read_action(stmt& q) {
  auto row = read_action_row(q);
  if (!row.problem.empty()) {
    spdlog::error("store: action {} cannot be read: {}", row.rec.action_id, row.problem);
    throw refused(ec::storage, "action " + row.rec.action_id + ": " + row.problem);
  }
  return std::move(row.rec);
}

/// An action row in a listing. A row this build cannot read keeps its place: shown
/// with its stored words and `unreadable` saying why, so one bad row never drops
/// the page.
json action_json(stmt& q) {
  auto row = read_action_row(q);
  auto out = to_json(row.rec);
  if (!row.problem.empty()) {
    spdlog::error("store: action {} cannot be read: {}", row.rec.action_id, row.problem);
    out["type"] = row.type;
    out["target"]["kind"] = row.kind;
    out["unreadable"] = row.problem;
  }
  return out;
}

/// The user on the row `q` is on (username, role, salt_hex, iterations, hash_hex,
/// created_at). A role this build does not know is a storage error for that read.
user_record read_user(stmt& q) {
  user_record u;
  u.username = q.text(0);
  auto role = user_role_from_string(q.text(1));
  if (!role) {
    spdlog::error("store: user {} has an unknown stored role '{}'", u.username,
                  q.text(1));
    throw refused(ec::storage,
                  "user " + u.username + ": unknown stored role '" + q.text(1) + "'");
  }
  u.role = *role;
  u.salt_hex = q.text(2);
  u.iterations = static_cast<uint32_t>(q.integer(3));
  u.hash_hex = q.text(4);
  u.created_at = q.integer(5);
  u.disabled = q.integer(6) != 0;
  return u;
}

/// True when the stored role word of the row `q` is on (column `col`) is
/// administrator.
bool administrator_at(stmt& q, int col) {
  return user_role_from_string(q.text(col)) == user_role::administrator;
}

/// Runs `f` and turns whatever it throws into the error its caller gets:
/// a refused write keeps its code, a constraint is a conflict, the rest is storage
/// (and logged, because it is the store failing, not the request).
template <class F> caf::error guarded(const char* what, F&& f) {
  try {
    f();
    return caf::none;
  } catch (const refused& e) {
    return make_error(e.code, e.what());
  } catch (const stmt::constraint_error& e) {
    return make_error(ec::conflict, e.what());
  } catch (const std::exception& e) {
    spdlog::error("store: {} failed: {}", what, e.what());
    return make_error(ec::storage, e.what());
  }
}

/// How many rows a list answers by default, and at most.
struct list_limits {
  int64_t fallback;
  int64_t max;
};
constexpr list_limits list_rows{500, 5000};
constexpr list_limits audit_rows{1000, 10000};

int64_t rows_of(const page_request& p, list_limits lim) {
  if (p.limit <= 0) return lim.fallback;
  return std::min(p.limit, lim.max);
}

std::string filter(const page_request& p, const char* key) {
  auto i = p.filters.find(key);
  return i == p.filters.end() ? std::string{} : i->second;
}

/// The RFC 3339 time of filter `key` in microseconds, -1 when not given (0 is the
/// epoch itself); bad_request naming the key otherwise.
int64_t time_filter(const page_request& p, const char* key) {
  auto text = filter(p, key);
  if (text.empty()) return -1;
  auto t = parse_time(text);
  if (!t)
    throw refused(ec::bad_request, std::string{"'"} + key +
                                       "' must be an RFC 3339 time, e.g. "
                                       "2026-12-02T10:00:00Z");
  return *t;
}

/// Parses a whole decimal number that fits 64 bits, or throws bad_request naming
/// `what`.
int64_t number(const std::string& text, const char* what) {
  int64_t out = 0;
  auto end = text.data() + text.size();
  auto [ptr, err] = std::from_chars(text.data(), end, out);
  if (text.empty() || err != std::errc{} || ptr != end || out < 0)
    throw refused(ec::bad_request, std::string{"'"} + what + "' must be a whole number");
  return out;
}

/// Cursors are the key of the last row shown, hex-encoded: opaque to clients, and
/// never parsed as anything but a key.
std::string encode_cursor(const std::string& key) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(key.size() * 2);
  for (unsigned char c : key) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string decode_cursor(const std::string& text) {
  auto bad = [] {
    return refused(ec::bad_request, "'cursor' is not one this server gave");
  };
  if (text.size() % 2 != 0 || text.size() > 1024) throw bad();
  auto value = [&](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw bad();
  };
  std::string out;
  for (size_t i = 0; i < text.size(); i += 2)
    out += static_cast<char>(value(text[i]) * 16 + value(text[i + 1]));
  return out;
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// Renders the rows `s` yields as `{"<name>": [...], "next_cursor": ...}`: at most
/// `rows` rows (the statement asks for one more, to know whether a next page
/// exists), and no row past the first once the text passes `max_bytes`.
template <class Row, class Key>
std::string render_page(stmt& s, const char* name, int64_t rows, size_t max_bytes,
                        Row row, Key key, const std::string& extra = {}) {
  std::string out = std::string{"{\""} + name + "\":[";
  int64_t n = 0;
  std::string last, next;
  while (s.step()) {
    if (n == rows) {
      next = last;
      break;
    }
    auto text = dump(row(s));
    if (n > 0 && out.size() + text.size() + 1 > max_bytes) {
      next = last;
      break;
    }
    if (n > 0) out += ',';
    out += text;
    last = key(s);
    ++n;
  }
  out += "],\"next_cursor\":";
  out += next.empty() ? std::string{"null"} : dump(json(encode_cursor(next)));
  out += extra;
  out += '}';
  return out;
}

json user_json(stmt& s) {
  return json{{"username", s.text(0)},
              {"role", s.text(1)},
              {"created_at", format_time(s.integer(2))},
              {"disabled", s.integer(3) != 0}};
}

std::string read_devices(store_state& st, const page_request& p) {
  std::string sql = std::string{"SELECT "} + device_columns +
                    " FROM devices WHERE device_id > ?1 ORDER BY device_id LIMIT ?2";
  stmt s{st, sql.c_str()};
  auto rows = rows_of(p, list_rows);
  s.bind(1, decode_cursor(p.cursor)).bind(2, rows + 1);
  return render_page(
      s, "devices", rows, st.max_page_bytes,
      [](stmt& s) { return to_json(read_device(s)); }, [](stmt& s) { return s.text(0); });
}

std::string read_device_json(store_state& st, const std::string& id) {
  std::string sql =
      std::string{"SELECT "} + device_columns + " FROM devices WHERE device_id = ?";
  stmt s{st, sql.c_str()};
  s.bind(1, id);
  if (!s.step()) throw refused(ec::not_found, "no device " + id);
  return dump(json{{"device", to_json(read_device(s))}});
}

std::string read_incidents(store_state& st, const page_request& p) {
  // Newest first; the cursor is "<created_at> <incident_id>" of the last row shown.
  int64_t before_time = 0;
  std::string before_id;
  if (auto key = decode_cursor(p.cursor); !key.empty()) {
    auto sp = key.find(' ');
    if (sp == std::string::npos)
      throw refused(ec::bad_request, "'cursor' is not one this server gave");
    before_time = number(key.substr(0, sp), "cursor");
    before_id = key.substr(sp + 1);
  }
  // Filters: since (inclusive) and until (exclusive) bound created_at.
  auto since = time_filter(p, "since");
  auto until = time_filter(p, "until");
  stmt s{st, "SELECT incident_id, device_id, status, created_at, det_name, "
             "det_severity, det_engine, key_event_id, event_count FROM incidents "
             "WHERE (?1 = '' OR device_id = ?1) AND (?3 = '' OR created_at < ?4 OR "
             "(created_at = ?4 AND incident_id < ?3)) AND (?5 = '' OR status = ?5) AND "
             "(?6 = '' OR det_severity = ?6) AND (?7 < 0 OR created_at >= ?7) AND "
             "(?8 < 0 OR created_at < ?8) "
             "ORDER BY created_at DESC, incident_id DESC LIMIT ?2"};
  auto rows = rows_of(p, list_rows);
  s.bind(1, filter(p, "device_id")).bind(2, rows + 1).bind(3, before_id);
  s.bind(4, before_time).bind(5, filter(p, "status")).bind(6, filter(p, "severity"));
  s.bind(7, since).bind(8, until);
  return render_page(
      s, "incidents", rows, st.max_page_bytes,
      [](stmt& s) {
        return json{
            {"incident_id", s.text(0)},
            {"device_id", s.text(1)},
            {"status", s.text(2)},
            {"created_at", format_time(s.integer(3))},
            {"detection",
             json{{"name", s.text(4)}, {"severity", s.text(5)}, {"engine", s.text(6)}}},
            {"key_event_id", s.text(7)},
            {"event_count", s.integer(8)}};
      },
      [](stmt& s) { return std::to_string(s.integer(3)) + ' ' + s.text(0); });
}

std::string read_incident_json(store_state& st, const std::string& id) {
  auto r = load_incident(st, id);
  if (!r) throw refused(ec::not_found, "no incident " + id);
  return dump(json{{"incident", to_json(*r, true)}});
}

std::string read_actions(store_state& st, const page_request& p) {
  // Newest first; the cursor is the registration number of the last row shown.
  auto key = decode_cursor(p.cursor);
  int64_t before = key.empty() ? 0 : number(key, "cursor");
  std::string sql = std::string{"SELECT "} + action_columns +
                    ", seq FROM actions WHERE (?1 = '' OR device_id = ?1) AND "
                    "(?2 = '' OR state = ?2) AND (?4 = '' OR incident_id = ?4) AND "
                    "(?5 = 0 OR seq < ?5) ORDER BY seq DESC LIMIT ?3";
  stmt s{st, sql.c_str()};
  auto rows = rows_of(p, list_rows);
  s.bind(1, filter(p, "device_id")).bind(2, filter(p, "state")).bind(3, rows + 1);
  s.bind(4, filter(p, "incident_id")).bind(5, before);
  return render_page(
      s, "actions", rows, st.max_page_bytes, [](stmt& s) { return action_json(s); },
      [](stmt& s) { return std::to_string(s.integer(21)); });
}

std::string read_action_json(store_state& st, const std::string& id) {
  std::string sql =
      std::string{"SELECT "} + action_columns + " FROM actions WHERE action_id = ?";
  stmt s{st, sql.c_str()};
  s.bind(1, id);
  if (!s.step()) throw refused(ec::not_found, "no action " + id);
  auto out = to_json(read_action(s));
  stmt t{st, "SELECT action_id, state, time, reason FROM transitions "
             "WHERE action_id = ? ORDER BY seq"};
  t.bind(1, id);
  auto list = json::array();
  while (t.step()) {
    auto word = t.text(1);
    auto tj = to_json(transition{
        t.text(0), action_state_from_string(word).value_or(action_state::failed),
        t.integer(2), t.text(3)});
    tj["state"] = word; // as stored, also a word this build does not know
    list.push_back(std::move(tj));
  }
  out["transitions"] = std::move(list);
  return dump(json{{"action", std::move(out)}});
}

std::string read_users(store_state& st, const page_request& p) {
  stmt s{st, "SELECT username, role, created_at, disabled FROM users WHERE username > ?1 "
             "ORDER BY username LIMIT ?2"};
  auto rows = rows_of(p, list_rows);
  s.bind(1, decode_cursor(p.cursor)).bind(2, rows + 1);
  return render_page(s, "users", rows, st.max_page_bytes, user_json,
                     [](stmt& s) { return s.text(0); });
}

std::string read_audit(store_state& st, const page_request& p) {
  if (!st.writer)
    throw refused(ec::bad_request, "the audit trail is read through the store itself");
  // Oldest first, after record `after` (or the cursor's record).
  auto key = decode_cursor(p.cursor);
  auto after_text = key.empty() ? filter(p, "after") : key;
  int64_t after =
      after_text.empty() ? 0 : number(after_text, key.empty() ? "after" : "cursor");
  stmt s{st, "SELECT seq, time, actor, kind, target, detail, prev_hash, hash FROM audit "
             "WHERE seq > ? ORDER BY seq LIMIT ?"};
  auto rows = rows_of(p, audit_rows);
  s.bind(1, after).bind(2, rows + 1);
  // The head the writer keeps in memory, not the table's last row: a record cut
  // from the end of the table then shows as a mismatch.
  auto head = ",\"head\":" + dump(json{{"seq", st.audit_seq}, {"hash", st.audit_head}});
  return render_page(
      s, "records", rows, st.max_page_bytes,
      [](stmt& s) {
        return json{{"seq", s.integer(0)},     {"time", format_time(s.integer(1))},
                    {"time_us", s.integer(1)}, {"actor", s.text(2)},
                    {"kind", s.text(3)},       {"target", s.text(4)},
                    {"detail", s.text(5)},     {"prev_hash", s.text(6)},
                    {"hash", s.text(7)}};
      },
      [](stmt& s) { return std::to_string(s.integer(0)); }, head);
}

std::string read_stats(store_state& st) {
  // Six rows the triggers keep: no table is scanned, however large.
  auto out = json::object();
  for (const char* name : count_names)
    out[name] = 0;
  stmt s{st, "SELECT name, n FROM counts"};
  while (s.step())
    if (auto name = s.text(0); out.contains(name)) out[name] = s.integer(1);
  return dump(out);
}

} // namespace

int store_schema_version() {
  return schema_version;
}

std::string audit_hash(int64_t seq, int64_t time_us, const audit_entry& e,
                       const std::string& prev_hash) {
  std::string text = std::to_string(seq) + '\n' + std::to_string(time_us) + '\n' +
                     e.actor + '\n' + e.kind + '\n' + e.target + '\n' + e.detail + '\n' +
                     prev_hash;
  return sha256_hex(text);
}

namespace {

/// Counts something in the metrics once the open transaction commits.
template <class F> void count_on_commit(store_state& st, F f) {
  if (st.metrics) st.count_on_commit.emplace_back(std::move(f));
}

void append_audit(store_state& st, const audit_entry& e) {
  count_on_commit(st, [kind = e.kind](server_metrics& m) { m.audit_record(kind); });
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
  s.bind(1, t.action_id).bind(2, to_string(t.state)).bind(3, t.time).bind(4, t.reason);
  s.step();
  append_audit(st, audit_entry{actor, "transition", t.action_id,
                               std::string(to_string(t.state)) + ": " + t.reason});
}

/// Counts a committed transition of `a` (its type and age) in the metrics.
void count_transition(store_state& st, const action_record& a, const transition& t) {
  count_on_commit(st, [id = a.action_id, type = a.type, created = a.created_at,
                       t](server_metrics& m) {
    m.action_transition(id, to_string(type), to_string(t.state), created, t.time);
  });
}

/// Inserts a new action with its first transition.
void insert_action(store_state& st, const action_record& a, const transition& t) {
  static const std::string sql =
      std::string{"INSERT INTO actions ("} + action_columns +
      ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  stmt s{st, sql.c_str()};
  s.bind(1, a.action_id).bind(2, to_string(a.type)).bind(3, a.device_id);
  s.bind(4, a.incident_id).bind(5, to_string(a.target_kind)).bind(6, a.target_event_id);
  s.bind(7, json_text(a.params)).bind(8, a.requested_by).bind(9, a.comment);
  s.bind(10, a.idempotency_key).bind(11, to_string(a.state)).bind(12, a.created_at);
  s.bind(13, a.updated_at).bind(14, int64_t{a.result_ok}).bind(15, a.result_error);
  s.bind(16, json_text(a.result_effect)).bind(17, a.expires_at);
  s.bind(18, int64_t{a.password_confirmed}).bind(19, a.reverses);
  s.bind(20, a.reversed_by).bind(21, a.result_agent_us);
  s.step();
  write_transition(st, t, a.requested_by);
  count_transition(st, a, t);
}

const char* key_kind(bool integrator) {
  return integrator ? "integrator" : "agent";
}

/// The key now admitted for a device (false) or integrator (true) `name`, or "".
std::string admitted_key(store_state& st, bool integrator, const std::string& name) {
  stmt q{st, "SELECT public_key FROM bus_keys WHERE kind = ? AND name = ?"};
  q.bind(1, key_kind(integrator)).bind(2, name);
  return q.step() ? q.text(0) : std::string{};
}

/// Admits `k`, replacing the key of the same device or integrator and any earlier
/// binding of the same key.
void admit_key(store_state& st, const bus_key_record& k) {
  stmt by_name{st, "DELETE FROM bus_keys WHERE kind = ? AND name = ?"};
  by_name.bind(1, key_kind(k.integrator)).bind(2, k.name);
  by_name.step();
  stmt by_key{st, "DELETE FROM bus_keys WHERE public_key = ?"};
  by_key.bind(1, k.public_z85);
  by_key.step();
  stmt s{st, "INSERT INTO bus_keys (public_key, kind, name, role, created_at, "
             "created_by) VALUES (?, ?, ?, ?, ?, ?)"};
  s.bind(1, k.public_z85).bind(2, key_kind(k.integrator)).bind(3, k.name);
  s.bind(4, k.role).bind(5, k.created_at).bind(6, k.created_by);
  s.step();
}

} // namespace

store_state::~store_state() {
  for (auto& [sql, s] : statements)
    sqlite3_finalize(s);
  if (db != nullptr) sqlite3_close(db);
}

namespace {

/// Reloads the audit head from disk after writes that carried audit records were
/// rolled back.
void reload_audit_head(store_state& st) {
  try {
    stmt head{st, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"};
    st.audit_seq = head.step() ? head.integer(0) : 0;
    st.audit_head = st.audit_seq ? head.text(1) : std::string(64, '0');
  } catch (const std::exception& e) {
    spdlog::critical("store: cannot reload the audit head: {}", e.what());
  }
}

/// Ends the group transaction: answers every write in it with `err` (none: they
/// are committed).
void settle_batch(store_state& st, const caf::error& err) {
  st.in_transaction = false;
  ++st.commits;
  auto counts = std::move(st.count_on_commit);
  st.count_on_commit.clear();
  if (!err && st.metrics)
    for (auto& count : counts)
      count(*st.metrics);
  auto replies = std::move(st.on_commit);
  st.on_commit.clear();
  for (auto& reply : replies)
    reply(err);
}

/// Keeps the log near its bound (store_options::wal_restart_pages). Each quarter
/// the log grows, asks the checkpointer to copy (on its own thread) and notes how
/// far behind it still was. Past the bound, copies into the database what is left,
/// so that the next write starts the log over and overwrites its pages in place
/// instead of growing the file; but not when the checkpointer last said it was
/// more than a quarter behind (a reader such as a backup pinned the log): that
/// copy would stall every write behind it, and is the checkpointer's, until the
/// log reaches four times its bound. Runs between
/// two groups; a checkpoint under way on the checkpointer's connection
/// (SQLITE_BUSY) leaves it to the next commit.
void bound_log(store_stateful self) {
  auto& st = self->state;
  if (st.wal_restart_pages == 0) return;
  const int quarter = std::max(st.wal_restart_pages / 4, 1);
  if (st.wal_pages < st.wal_seen) { // the log started over
    st.wal_woken_at = 0;
    st.wal_retry_at = 0;
    st.wal_behind = 0;
  }
  st.wal_seen = st.wal_pages;
  if (st.checkpointer && st.wal_pages >= st.wal_woken_at + quarter) {
    st.wal_woken_at = st.wal_pages;
    self->request(st.checkpointer, std::chrono::seconds{60}, atom::flush_v)
        .then(
            [self](int64_t log, int64_t done) {
              self->state.wal_behind = static_cast<int>(std::max<int64_t>(log - done, 0));
            },
            [](caf::error&) {}); // the checkpointer logs its own failures
  }
  if (st.wal_pages < st.wal_restart_pages || st.wal_pages < st.wal_retry_at) return;
  // A checkpointer that cannot keep up (a slow disk) must not leave the log without
  // a bound: from four times it, the store copies what it can whatever it costs.
  if (st.checkpointer && st.wal_behind > quarter &&
      st.wal_pages < 4 * st.wal_restart_pages)
    return;
  auto began = std::chrono::steady_clock::now();
  int log = 0;
  int done = 0;
  int rc =
      sqlite3_wal_checkpoint_v2(st.db, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
  if (rc == SQLITE_BUSY) return;
  // Done, pinned by a reader, or failed: next time a quarter later, not every commit.
  st.wal_retry_at = st.wal_pages + quarter;
  if (rc != SQLITE_OK) {
    if (!st.wal_failing)
      spdlog::error("store: checkpoint of a long log failed: {}", sqlite3_errmsg(st.db));
    st.wal_failing = true;
    return;
  }
  if (st.wal_failing) spdlog::info("store: checkpoints of a long log work again");
  st.wal_failing = false;
  st.wal_behind = std::max(log - done, 0);
  if (done == log && st.metrics)
    st.metrics->store_checkpoint(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count(),
        log);
}

/// Commits the open group transaction, if any, and answers its writes.
void commit_open(store_stateful self) {
  auto& st = self->state;
  if (!st.in_transaction) return;
  auto err = guarded("commit", [&] { exec(st.db, "COMMIT"); });
  if (!err && st.metrics)
    st.metrics->store_commit(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - st.began)
            .count(),
        st.batch_writes);
  if (err) {
    // Every write of the batch is gone: each caller hears it.
    sqlite3_exec(st.db, "ROLLBACK", nullptr, nullptr, nullptr);
    reload_audit_head(st);
  }
  settle_batch(st, err);
  if (!err) bound_log(self);
}

/// Opens the group transaction if none is open; a full one commits first (its
/// writes' answers are all queued by now).
caf::error open_group(store_stateful self) {
  auto& st = self->state;
  if (st.in_transaction && st.batch_writes >= st.max_batch_writes) commit_open(self);
  if (st.in_transaction) return {};
  if (auto err = guarded("begin", [&] { exec(st.db, "BEGIN"); })) return err;
  st.in_transaction = true;
  st.batch_writes = 0;
  st.began = std::chrono::steady_clock::now();
  // Everything already in the mailbox lands in this transaction: the flush
  // message queues behind it.
  self->send(self, atom::flush_v);
  return {};
}

/// How a write goes into the group transaction.
enum class write_shape {
  /// Several statements that stand or fall together: a savepoint around them.
  statements,
  /// One statement (with its triggers), which SQLite already applies whole or not
  /// at all: no savepoint, whose journal copies of each page it touches would cost
  /// more than the write.
  one_statement,
};

/// Runs `body` as `n` writes of the open group transaction, which has room for
/// them, in one savepoint (none for one write of one statement). Released when the
/// body succeeds, rolled back when it throws, so the next commit never carries half
/// a write. Answers the error, or none.
template <class Body>
caf::error write_in_group(store_stateful self, std::size_t n, write_shape shape,
                          Body& body) {
  auto& st = self->state;
  bool savepoint = n > 1 || shape == write_shape::statements;
  // Prepared once, as every statement of a write.
  if (savepoint)
    if (auto err = guarded("savepoint", [&] { stmt{st, "SAVEPOINT w"}.step(); }))
      return err;
  auto seq = st.audit_seq;
  auto head = st.audit_head;
  auto counted = st.count_on_commit.size();
  auto err = guarded("write", [&] {
    body();
    if (savepoint) stmt{st, "RELEASE w"}.step();
  });
  if (!err) {
    st.writes += n;
    st.batch_writes += n;
    return err;
  }
  st.audit_seq = seq;
  st.audit_head = std::move(head);
  st.count_on_commit.resize(counted);
  if (sqlite3_get_autocommit(st.db) != 0) {
    // SQLite rolled the whole transaction back (I/O error, disk full): the other
    // writes of the batch are gone too, and they hear it now.
    spdlog::error("store: the group transaction was rolled back: {}", message_of(err));
    reload_audit_head(st);
    settle_batch(st,
                 make_error(ec::storage, "transaction rolled back: " + message_of(err)));
    return err;
  }
  if (savepoint && sqlite3_exec(st.db, "ROLLBACK TO w; RELEASE w", nullptr, nullptr,
                                nullptr) != SQLITE_OK) {
    spdlog::critical("store: cannot roll back a failed write: {}", sqlite3_errmsg(st.db));
    sqlite3_exec(st.db, "ROLLBACK", nullptr, nullptr, nullptr);
    reload_audit_head(st);
    settle_batch(st, make_error(ec::storage, "transaction rolled back"));
  }
  return err;
}

/// Runs `body` as one write of the group transaction. Answers the error the caller
/// gets, or none.
template <class Body>
caf::error run_write(store_stateful self, Body& body,
                     write_shape shape = write_shape::statements) {
  if (auto err = open_group(self)) return err;
  return write_in_group(self, 1, shape, body);
}

/// A write answered with `value` once its group commits, or with the error that
/// stopped it. The answer always goes through the promise.
template <class T, class Body>
caf::result<T> write_answer(store_stateful self, Body&& body, T value) {
  auto rp = self->make_response_promise<T>();
  if (auto err = run_write(self, body)) {
    rp.deliver(std::move(err));
    return rp;
  }
  ++self->state.replies_queued;
  self->state.on_commit.emplace_back(
      [rp, value = std::move(value)](const caf::error& err) mutable {
        if (err)
          rp.deliver(err);
        else
          rp.deliver(std::move(value));
      });
  return rp;
}

template <class Body> caf::result<atom::ok> ok_write(store_stateful self, Body&& body) {
  return write_answer(self, std::forward<Body>(body), atom::ok_v);
}

/// Publishes `e` as `family`.`kind` once the write just queued (`queued`: the
/// store's replies_queued before it) commits; nothing when it was not queued or is
/// rolled back.
template <class Event>
void publish_on_commit(store_state& st, uint64_t queued, const char* family,
                       std::string kind, const Event& e) {
  if (!st.publish || st.replies_queued <= queued) return;
  st.on_commit.emplace_back([pub = st.publish, family, kind = std::move(kind),
                             body = bus::encode(e)](const caf::error& err) mutable {
    if (!err) pub(family, std::move(kind), std::move(body));
  });
}

bus::action_event action_event_of(const action_record& a) {
  return {a.action_id,  to_string(a.type), to_string(a.state),
          a.device_id,  a.incident_id,     a.requested_by,
          a.updated_at, a.result_ok,       a.result_error};
}

/// A read answered with what `body` returns, or the error it threw.
template <class T, class Body> caf::result<T> read_answer(Body&& body) {
  std::optional<T> out;
  if (auto err = guarded("read", [&] { out = body(); })) return err;
  return std::move(*out);
}

/// The typed paged reads (JSON text for the REST edge) and the incidents of a bulk
/// registration, shared by the writer, which sees its own uncommitted batch, and the
/// reader, which serves the REST edge and the directory.
template <class Self> auto read_handlers(Self self) {
  return std::make_tuple(
      [=](atom::query, atom::devices, const page_request& p) {
        return read_answer<std::string>([&] { return read_devices(self->state, p); });
      },
      [=](atom::query, atom::device, const std::string& id) {
        return read_answer<std::string>(
            [&] { return read_device_json(self->state, id); });
      },
      [=](atom::query, atom::incidents, const page_request& p) {
        return read_answer<std::string>([&] { return read_incidents(self->state, p); });
      },
      [=](atom::query, atom::incident, const std::string& id) {
        return read_answer<std::string>(
            [&] { return read_incident_json(self->state, id); });
      },
      [=](atom::query, atom::actions, const page_request& p) {
        return read_answer<std::string>([&] { return read_actions(self->state, p); });
      },
      [=](atom::query, atom::action, const std::string& id) {
        return read_answer<std::string>(
            [&] { return read_action_json(self->state, id); });
      },
      [=](atom::query, atom::users, const page_request& p) {
        return read_answer<std::string>([&] { return read_users(self->state, p); });
      },
      [=](atom::query, atom::stats) {
        return read_answer<std::string>([&] { return read_stats(self->state); });
      },
      [=](atom::get, atom::incidents, const std::vector<std::string>& ids) {
        return read_answer<std::vector<incident_record>>([&] {
          std::vector<incident_record> found;
          found.reserve(ids.size());
          for (const auto& id : ids) {
            // One unreadable incident must not refuse the others: it is logged and
            // left out, and its targets are refused as not found.
            try {
              if (auto r = load_incident(self->state, id)) found.push_back(std::move(*r));
            } catch (const std::exception& e) {
              spdlog::error("store: {}", e.what());
            }
          }
          return found;
        });
      });
}

/// A behavior of `handlers...` followed by the shared reads.
template <class Behavior, class Reads, class... Handlers>
Behavior with_reads(Reads reads, Handlers... handlers) {
  return std::apply(
      [&](auto... r) {
        return Behavior{std::move(handlers)..., std::move(r)...};
      },
      std::move(reads));
}

/// Stores a new incident in the open group. `done` hears the incident's id once the
/// group commits (the stored one, for a re-sent report), or the error that stopped
/// it.
template <class Done>
void put_incident(store_stateful self, const incident_record& r, Done done) {
  auto& st = self->state;
  // Handled, whatever the outcome: the report no longer counts as in flight.
  struct release {
    ingest_gauge* gauge;
    uint64_t bytes;
    ~release() {
      if (gauge != nullptr && bytes > 0) gauge->done(bytes);
    }
  } released{st.ingest.get(), r.wire_bytes};
  // A re-sent report (lost acknowledgement, agent restart) is the same incident.
  std::string known;
  if (auto err = guarded("read", [&] {
        stmt find{st, "SELECT incident_id FROM incidents WHERE device_id = ? AND "
                      "report_id = ?"};
        find.bind(1, r.device_id).bind(2, r.report.report_id);
        if (find.step()) known = find.text(0);
      }))
    return done(std::move(err));
  if (!known.empty()) return done(std::move(known));
  auto insert = [&] {
    stmt s{st, "INSERT INTO incidents (incident_id, device_id, report_id, "
               "status, created_at, det_name, det_severity, det_engine, "
               "key_event_id, event_count, report) VALUES (?, ?, ?, ?, ?, ?, "
               "?, ?, ?, ?, ?)"};
    s.bind(1, r.incident_id).bind(2, r.device_id).bind(3, r.report.report_id);
    s.bind(4, r.status).bind(5, r.created_at).bind(6, r.report.det.name);
    s.bind(7, r.report.det.severity).bind(8, r.report.det.engine);
    s.bind(9, r.report.key_event_id);
    s.bind(10, static_cast<int64_t>(bus::event_count(r.report)));
    // As it came off the bus, decoded and checked (gateway_bridge.cpp).
    if (r.report.wire.empty())
      s.bind_blob(11, bus::encode(r.report));
    else
      s.bind_blob(11, r.report.wire);
    // Before the step: with no savepoint, nothing after it may throw.
    count_on_commit(st, [](server_metrics& m) { m.incident_stored(); });
    s.step();
  };
  auto queued = st.replies_queued;
  if (auto err = run_write(self, insert, write_shape::one_statement))
    return done(std::move(err));
  ++st.replies_queued;
  st.on_commit.emplace_back(
      [done = std::move(done), id = r.incident_id](const caf::error& err) mutable {
        if (err)
          done(err);
        else
          done(std::move(id));
      });
  publish_on_commit(
      st, queued, bus::topic::incident, "created",
      bus::incident_event{r.incident_id, r.device_id, r.report.det.name,
                          r.report.det.severity, r.created_at,
                          static_cast<uint32_t>(bus::event_count(r.report))});
}

/// An incident from the bus that could not be stored: nobody waits for it, so the
/// store counts it and logs it (at most 5 lines per 10 s; the rest are counted in
/// the next line).
void incident_not_stored(store_state& st, const std::string& device,
                         const caf::error& err) {
  ++st.incidents_failed;
  if (st.metrics) st.metrics->incident_failed();
  uint64_t held = 0;
  if (!st.incident_log.pass("incident", held)) return;
  spdlog::error("{}store: cannot store an incident: {} ({} more since the last line, "
                "{} in all)",
                log_tags({{"device", device}}), message_of(err), held,
                st.incidents_failed);
}

} // namespace

store_actor::behavior_type store(store_stateful self, std::string path) {
  return store_with(self, std::move(path), store_options{});
}

store_actor::behavior_type store_with(store_stateful self, std::string path,
                                      store_options opts) {
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
    // A savepoint keeps the first copy of each page it changes in its journal: in
    // memory (temp_store), not in a temporary file written page by page. That holds
    // for this connection's temporary sorts too; its reads are by index, and the
    // REST edge reads through its own connection (store_reader).
    exec(st.db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;");
    if (sqlite3_busy_timeout(st.db, static_cast<int>(opts.busy_timeout.count())) !=
        SQLITE_OK)
      throw std::runtime_error(sqlite3_errmsg(st.db));
    // Checkpoints are the checkpointer's (actors/checkpointer.hpp), not a commit's:
    // the hook replaces SQLite's own checkpoint in a commit (wal_autocheckpoint)
    // and only notes the log's length for bound_log.
    sqlite3_wal_hook(
        st.db,
        [](void* arg, sqlite3*, const char*, int pages) {
          static_cast<store_state*>(arg)->wal_pages = pages;
          return SQLITE_OK;
        },
        &st);
    st.wal_restart_pages = std::max(opts.wal_restart_pages, 0);
    exec(st.db, ("PRAGMA journal_size_limit=" +
                 std::to_string(std::max<int64_t>(opts.wal_keep_bytes, 0)) + ";")
                    .c_str());
    exec(st.db, schema);
    // Tokens from before expiry: give them an id (they keep no expiry, 0).
    if (stmt cols{st,
                  "SELECT 1 FROM pragma_table_info('tokens') WHERE name = 'token_id'"};
        !cols.step())
      exec(st.db, "ALTER TABLE tokens ADD COLUMN token_id TEXT; "
                  "ALTER TABLE tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;");
    // Actions from before the agent's share of a round trip was kept.
    if (stmt cols{st, "SELECT 1 FROM pragma_table_info('actions') "
                      "WHERE name = 'result_agent_us'"};
        !cols.step())
      exec(st.db, "ALTER TABLE actions ADD COLUMN result_agent_us INTEGER NOT NULL "
                  "DEFAULT 0;");
    // Users from before accounts could be disabled.
    if (stmt cols{st, "SELECT 1 FROM pragma_table_info('users') WHERE name = 'disabled'"};
        !cols.step())
      exec(st.db, "ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;");
    exec(st.db, "UPDATE tokens SET token_id = lower(hex(randomblob(8))) "
                "WHERE token_id IS NULL; "
                "CREATE UNIQUE INDEX IF NOT EXISTS tokens_by_id ON tokens (token_id);");
    bool counted = false;
    if (stmt n{st, "SELECT count(*) FROM counts"}; n.step())
      counted = n.integer(0) == static_cast<int64_t>(std::size(count_names));
    if (!counted) exec(st.db, count_rows);
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
    // No device is connected to a server that just started: each is online again
    // with its next hello or heartbeat.
    exec(st.db, "UPDATE devices SET online = 0 WHERE online <> 0");
  } catch (const std::exception& e) {
    fail(e.what());
    return store_actor::behavior_type::make_empty_behavior();
  }
  st.max_page_bytes = std::max<size_t>(opts.max_page_bytes, 1);
  st.max_batch_writes = std::max<size_t>(opts.max_batch_writes, 1);
  st.ingest = opts.ingest;
  st.publish = opts.publish;
  st.metrics = opts.metrics;
  // The database holds password hashes: only the owner reads it, whatever the umask
  // was when a file was created (SQLite makes -wal and -shm on demand).
  if (path != ":memory:")
    for (auto suffix : {"", "-wal", "-shm"}) {
      auto file = path + suffix;
      if (::chmod(file.c_str(), 0600) != 0 && errno != ENOENT)
        spdlog::warn("store: cannot make {} private: {}", file, std::strerror(errno));
    }

  return with_reads<store_actor::behavior_type>(
      read_handlers(self),
      [=](atom::put, const device_record& d) -> caf::result<atom::ok> {
        auto& st = self->state;
        auto queued = st.replies_queued;
        auto res = ok_write(self, [&] {
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
        if (st.publish) {
          auto now = std::make_tuple(d.online, d.isolated, d.hostname);
          auto [it, fresh] = st.device_published.try_emplace(d.device_id, now);
          if (fresh || it->second != now) {
            it->second = now;
            publish_on_commit(st, queued, bus::topic::device, "updated",
                              bus::device_event{d.device_id, d.hostname, d.online,
                                                d.isolated, d.last_seen});
          }
        }
        return res;
      },
      [=](atom::put, const incident_record& r) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        put_incident(self, r, [rp](caf::expected<std::string> id) mutable {
          if (id)
            rp.deliver(std::move(*id));
          else
            rp.deliver(std::move(id.error()));
        });
        return rp;
      },
      [=](atom::put, atom::incident, const incident_record& r) {
        put_incident(self, r,
                     [self, device = r.device_id](caf::expected<std::string> id) {
                       if (!id) incident_not_stored(self->state, device, id.error());
                     });
      },
      [=](atom::put, const action_record& a,
          const transition& t) -> caf::result<atom::ok> {
        auto queued = self->state.replies_queued;
        auto res = ok_write(self, [&] { insert_action(self->state, a, t); });
        publish_on_commit(self->state, queued, bus::topic::action, to_string(a.state),
                          action_event_of(a));
        return res;
      },
      [=](atom::put, const std::vector<action_registration>& regs)
          -> caf::result<std::vector<caf::error>> {
        // Each stands or falls alone: a refused one leaves the others registered.
        // The answer waits until every one of them has committed or failed (a full
        // group may commit part of them before the rest are written).
        struct outcomes {
          caf::typed_response_promise<std::vector<caf::error>> rp;
          std::vector<caf::error> errors;
          std::size_t open = 0;
          void settle() {
            if (--open == 0) rp.deliver(std::move(errors));
          }
        };
        auto out = std::make_shared<outcomes>();
        out->rp = self->make_response_promise<std::vector<caf::error>>();
        out->errors.resize(regs.size());
        out->open = regs.size() + 1; // + 1 until every write is queued
        auto& st = self->state;
        auto write = [&](std::size_t i) {
          const auto& r = regs[i];
          append_audit(st, r.trigger);
          insert_action(st, r.rec, r.first);
          for (const auto& t : r.then) {
            write_transition(st, t, "parryd");
            count_transition(st, r.rec, t);
          }
        };
        auto queue = [&](std::size_t i) {
          const auto& r = regs[i];
          auto queued = st.replies_queued++;
          st.on_commit.emplace_back([out, i](const caf::error& err) {
            out->errors[i] = err;
            out->settle();
          });
          // Each transition is an event, as when written one by one.
          auto event = action_event_of(r.rec);
          event.state = to_string(r.first.state);
          publish_on_commit(st, queued, bus::topic::action, event.state, event);
          for (const auto& t : r.then) {
            event.state = to_string(t.state);
            publish_on_commit(st, queued, bus::topic::action, event.state, event);
          }
        };
        auto refuse = [&](std::size_t i, caf::error err) {
          out->errors[i] = std::move(err);
          out->settle();
        };
        // As many as the open group has room for under one savepoint; only when one
        // of them fails are they written again one by one, to refuse just that one.
        // When SQLite rolled the whole transaction back (an I/O error), the run is
        // tried once more in a new group, and refused whole if that fails too.
        bool retried = false;
        for (std::size_t i = 0; i < regs.size();) {
          if (auto err = open_group(self)) {
            refuse(i++, std::move(err));
            continue;
          }
          auto n = std::min(regs.size() - i, st.max_batch_writes - st.batch_writes);
          auto run = [&] {
            for (std::size_t j = i; j < i + n; ++j)
              write(j);
          };
          auto err = write_in_group(self, n, write_shape::statements, run);
          if (!err) {
            for (std::size_t j = i; j < i + n; ++j)
              queue(j);
          } else if (!st.in_transaction) {
            if (!std::exchange(retried, true)) continue;
            for (std::size_t j = i; j < i + n; ++j)
              refuse(j, err);
          } else {
            for (std::size_t j = i; j < i + n; ++j) {
              auto one = [&] { write(j); };
              if (auto e = run_write(self, one))
                refuse(j, std::move(e));
              else
                queue(j);
            }
          }
          retried = false;
          i += n;
        }
        out->settle();
        return out->rp;
      },
      [=](atom::update, const action_record& a,
          const transition& t) -> caf::result<atom::ok> {
        auto queued = self->state.replies_queued;
        auto res = ok_write(self, [&] {
          stmt s{self->state,
                 "UPDATE actions SET state = ?, updated_at = ?, result_ok = ?, "
                 "result_error = ?, result_effect = ?, result_agent_us = ? "
                 "WHERE action_id = ?"};
          s.bind(1, to_string(a.state))
              .bind(2, a.updated_at)
              .bind(3, int64_t{a.result_ok});
          s.bind(4, a.result_error)
              .bind(5, json_text(a.result_effect))
              .bind(6, a.result_agent_us)
              .bind(7, a.action_id);
          s.step();
          expect_change(self->state, ec::not_found, "no action " + a.action_id);
          write_transition(self->state, t, "parryd");
          count_transition(self->state, a, t);
        });
        publish_on_commit(self->state, queued, bus::topic::action, to_string(a.state),
                          action_event_of(a));
        return res;
      },
      [=](atom::get, atom::incident,
          const std::string& id) -> caf::result<incident_record> {
        return read_answer<incident_record>([&] {
          auto r = load_incident(self->state, id);
          if (!r) throw refused(ec::not_found, "no incident " + id);
          return std::move(*r);
        });
      },
      [=](atom::get, const std::string& id) -> caf::result<device_record> {
        return read_answer<device_record>([&] {
          std::string sql = std::string{"SELECT "} + device_columns +
                            " FROM devices WHERE device_id = ?";
          stmt s{self->state, sql.c_str()};
          s.bind(1, id);
          if (!s.step()) throw refused(ec::not_found, "no device " + id);
          return read_device(s);
        });
      },
      [=](atom::idem, const std::string& user,
          const std::string& key) -> caf::result<std::string> {
        return read_answer<std::string>([&] {
          stmt s{self->state, "SELECT action_id FROM actions WHERE requested_by = ? AND "
                              "idempotency_key = ?"};
          s.bind(1, user).bind(2, key);
          return s.step() ? s.text(0) : std::string{};
        });
      },
      [=](atom::open) -> caf::result<std::vector<action_record>> {
        return read_answer<std::vector<action_record>>([&] {
          std::string sql = std::string{"SELECT "} + action_columns +
                            " FROM actions WHERE state NOT IN ('completed', 'failed', "
                            "'expired', 'cancelled', 'reverted') ORDER BY seq";
          stmt s{self->state, sql.c_str()};
          std::vector<action_record> out;
          while (s.step()) {
            if (!action_state_from_string(s.text(10))) { // logged, not resumed
              spdlog::error("store: not resuming action {}: unknown state '{}'",
                            s.text(0), s.text(10));
              continue;
            }
            auto row = read_action_row(s);
            if (!row.problem.empty()) { // the same: one bad row stops no other
              spdlog::error("store: not resuming action {}: {}", row.rec.action_id,
                            row.problem);
              continue;
            }
            out.push_back(std::move(row.rec));
          }
          return out;
        });
      },
      [=](atom::user, const std::string& name) -> caf::result<user_record> {
        return read_answer<user_record>([&] {
          stmt s{self->state, "SELECT username, role, salt_hex, iterations, hash_hex, "
                              "created_at, disabled FROM users WHERE username = ?"};
          s.bind(1, name);
          if (!s.step()) throw refused(ec::not_found, "no user " + name);
          return read_user(s);
        });
      },
      [=](atom::put, const user_record& u) -> caf::result<atom::ok> {
        return ok_write(self, [&] {
          stmt s{self->state, "INSERT INTO users (username, role, salt_hex, iterations, "
                              "hash_hex, created_at) VALUES (?, ?, ?, ?, ?, ?)"};
          s.bind(1, u.username).bind(2, to_string(u.role)).bind(3, u.salt_hex);
          s.bind(4, int64_t{u.iterations}).bind(5, u.hash_hex).bind(6, u.created_at);
          s.step();
        });
      },
      [=](atom::token, const std::string& hash,
          const token_record& t) -> caf::result<atom::ok> {
        return ok_write(self, [&] {
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
        return ok_write(self, [&] {
          stmt s{self->state, "DELETE FROM tokens WHERE token_hash = ?"};
          s.bind(1, hash);
          s.step();
        });
      },
      [=](atom::revoke, atom::token, const std::string& id,
          const std::string& owner) -> caf::result<std::string> {
        std::string username;
        if (auto err = guarded("read", [&] {
              stmt q{self->state, "SELECT username FROM tokens WHERE token_id = ?1 AND "
                                  "(?2 = '' OR username = ?2)"};
              q.bind(1, id).bind(2, owner);
              if (!q.step()) throw refused(ec::not_found, "no token " + id);
              username = q.text(0);
            }))
          return err;
        return write_answer(
            self,
            [&] {
              stmt s{self->state, "DELETE FROM tokens WHERE token_id = ?"};
              s.bind(1, id);
              s.step();
              expect_change(self->state, ec::not_found, "no token " + id);
            },
            username);
      },
      [=](atom::get, atom::action, const std::string& id) -> caf::result<action_record> {
        return read_answer<action_record>([&] {
          std::string sql = std::string{"SELECT "} + action_columns +
                            " FROM actions WHERE action_id = ?";
          stmt s{self->state, sql.c_str()};
          s.bind(1, id);
          if (!s.step()) throw refused(ec::not_found, "no action " + id);
          return read_action(s);
        });
      },
      [=](atom::link, const std::string& id,
          const std::string& reverse) -> caf::result<atom::ok> {
        return ok_write(self, [&] {
          stmt s{self->state, "UPDATE actions SET reversed_by = ? WHERE action_id = ?"};
          s.bind(1, reverse).bind(2, id);
          s.step();
          expect_change(self->state, ec::not_found, "no action " + id);
        });
      },
      [=](atom::revert, const std::string& id,
          const std::string& reverse) -> caf::result<atom::ok> {
        auto queued = self->state.replies_queued;
        std::optional<action_record> reverted;
        auto res = ok_write(self, [&] {
          auto& st = self->state;
          stmt cur{st, "SELECT state, reversed_by FROM actions WHERE action_id = ?"};
          cur.bind(1, id);
          if (!cur.step()) throw refused(ec::not_found, "no action " + id);
          // Settled by this reverse already (a resumed reverse settles again).
          if (cur.text(0) == to_string(state::reverted) && cur.text(1) == reverse) return;
          auto now = now_us();
          stmt s{st, "UPDATE actions SET state = 'reverted', updated_at = ? "
                     "WHERE action_id = ? AND state = 'completed'"};
          s.bind(1, now).bind(2, id);
          s.step();
          expect_change(st, ec::conflict, "action " + id + " is not completed");
          write_transition(
              st, transition{id, state::reverted, now, "undone by " + reverse}, "parryd");
          std::string sql = std::string{"SELECT "} + action_columns +
                            " FROM actions WHERE action_id = ?";
          stmt row{st, sql.c_str()};
          row.bind(1, id);
          if (row.step())
            if (auto r = read_action_row(row); r.problem.empty()) {
              count_transition(st, r.rec, transition{id, state::reverted, now, {}});
              reverted = std::move(r.rec);
            }
        });
        // Subscribers hear of it like of any other state (action.reverted).
        if (reverted)
          publish_on_commit(self->state, queued, bus::topic::action,
                            to_string(state::reverted), action_event_of(*reverted));
        return res;
      },
      [=](atom::audit, const audit_entry& e) -> caf::result<atom::ok> {
        return ok_write(self, [&] { append_audit(self->state, e); });
      },
      [=](atom::update, const user_record& u) -> caf::result<atom::ok> {
        return ok_write(self, [&] {
          auto& st = self->state;
          stmt cur{st, "SELECT role, disabled FROM users WHERE username = ?"};
          cur.bind(1, u.username);
          if (!cur.step()) throw refused(ec::not_found, "no user " + u.username);
          // The last enabled administrator keeps the role and stays enabled, so
          // someone can always manage the server.
          if (administrator_at(cur, 0) && cur.integer(1) == 0 &&
              (u.role != user_role::administrator || u.disabled)) {
            stmt admins{st, "SELECT count(*) FROM users WHERE role = ? AND disabled = 0"};
            admins.bind(1, to_string(user_role::administrator));
            if (admins.step() && admins.integer(0) <= 1)
              throw refused(ec::conflict,
                            "the last enabled administrator keeps that role and "
                            "cannot be disabled");
          }
          stmt s{st, "UPDATE users SET role = ?, salt_hex = ?, iterations = ?, "
                     "hash_hex = ?, disabled = ? WHERE username = ?"};
          s.bind(1, to_string(u.role)).bind(2, u.salt_hex).bind(3, int64_t{u.iterations});
          s.bind(4, u.hash_hex).bind(5, int64_t{u.disabled}).bind(6, u.username);
          s.step();
          stmt t{st, "DELETE FROM tokens WHERE username = ?"};
          t.bind(1, u.username);
          t.step();
        });
      },
      [=](atom::del, const std::string& name) -> caf::result<atom::ok> {
        return ok_write(self, [&] {
          auto& st = self->state;
          stmt cur{st, "SELECT role, disabled FROM users WHERE username = ?"};
          cur.bind(1, name);
          if (!cur.step()) throw refused(ec::not_found, "no user " + name);
          stmt admins{st, "SELECT count(*) FROM users WHERE role = ? AND disabled = 0"};
          admins.bind(1, to_string(user_role::administrator));
          if (administrator_at(cur, 0) && cur.integer(1) == 0 && admins.step() &&
              admins.integer(0) <= 1)
            throw refused(ec::conflict,
                          "the last enabled administrator cannot be deleted");
          stmt s{st, "DELETE FROM users WHERE username = ?"};
          s.bind(1, name);
          s.step();
          stmt t{st, "DELETE FROM tokens WHERE username = ?"};
          t.bind(1, name);
          t.step();
        });
      },
      [=](atom::query, atom::audit, const page_request& p) {
        return read_answer<std::string>([&] { return read_audit(self->state, p); });
      },
      [=](atom::list, atom::key) -> caf::result<std::vector<bus_key_record>> {
        return read_answer<std::vector<bus_key_record>>([&] {
          std::vector<bus_key_record> out;
          stmt q{self->state, "SELECT public_key, kind, name, role, created_at, "
                              "created_by FROM bus_keys ORDER BY kind, name"};
          while (q.step())
            out.push_back(bus_key_record{q.text(0), q.text(1) == "integrator", q.text(2),
                                         q.text(3), q.integer(4), q.text(5)});
          return out;
        });
      },
      [=](atom::put, const bus_key_record& k) -> caf::result<std::string> {
        std::string replaced;
        if (auto err = guarded("read", [&] {
              replaced = admitted_key(self->state, k.integrator, k.name);
            }))
          return err;
        if (replaced == k.public_z85) replaced.clear();
        return write_answer(
            self, [&] { admit_key(self->state, k); }, replaced);
      },
      [=](atom::revoke, atom::key, bool integrator,
          const std::string& name) -> caf::result<std::string> {
        std::string key;
        if (auto err = guarded(
                "read", [&] { key = admitted_key(self->state, integrator, name); }))
          return err;
        if (key.empty())
          return make_error(ec::not_found, std::string{"no key for "} +
                                               key_kind(integrator) + " " + name);
        return write_answer(
            self,
            [&] {
              stmt s{self->state, "DELETE FROM bus_keys WHERE public_key = ?"};
              s.bind(1, key);
              s.step();
            },
            key);
      },
      [=](atom::put, const std::string& hash,
          const enrollment_token_record& t) -> caf::result<atom::ok> {
        return ok_write(self, [&] {
          stmt s{self->state, "INSERT INTO enrollment_tokens (token_hash, token_id, "
                              "created_by, created_at, expires_at, uses_left) VALUES "
                              "(?, ?, ?, ?, ?, ?)"};
          s.bind(1, hash).bind(2, t.token_id).bind(3, t.created_by).bind(4, t.created_at);
          s.bind(5, t.expires_at).bind(6, int64_t{t.uses_left});
          s.step();
        });
      },
      [=](atom::list, atom::enroll) -> caf::result<std::vector<enrollment_token_record>> {
        return read_answer<std::vector<enrollment_token_record>>([&] {
          std::vector<enrollment_token_record> out;
          stmt q{self->state,
                 "SELECT token_id, created_by, created_at, expires_at, "
                 "uses_left FROM enrollment_tokens ORDER BY created_at DESC"};
          while (q.step())
            out.push_back(enrollment_token_record{q.text(0), q.text(1), q.integer(2),
                                                  q.integer(3),
                                                  static_cast<uint32_t>(q.integer(4))});
          return out;
        });
      },
      [=](atom::del, atom::enroll, const std::string& id) -> caf::result<atom::ok> {
        bool found = false;
        if (auto err = guarded("read", [&] {
              stmt q{self->state, "SELECT 1 FROM enrollment_tokens WHERE token_id = ?"};
              q.bind(1, id);
              found = q.step();
            }))
          return err;
        if (!found) return make_error(ec::not_found, "no enrollment token " + id);
        return ok_write(self, [&] {
          stmt s{self->state, "DELETE FROM enrollment_tokens WHERE token_id = ?"};
          s.bind(1, id);
          s.step();
        });
      },
      [=](atom::enroll, const std::string& hash, int64_t now,
          const bus_key_record& k) -> caf::result<std::string> {
        // Checking and using the token is one write: a one-time token admits one key.
        return write_answer(
            self,
            [&] {
              auto& st = self->state;
              // The same key again (an answer lost on the way) is answered as done
              // and uses nothing, even once the token is spent.
              auto current = admitted_key(st, k.integrator, k.name);
              if (current == k.public_z85) return;
              int64_t expires_at = 0, uses_left = 0;
              {
                stmt q{st, "SELECT expires_at, uses_left FROM enrollment_tokens WHERE "
                           "token_hash = ?"};
                q.bind(1, hash);
                if (q.step()) {
                  expires_at = q.integer(0);
                  uses_left = q.integer(1);
                }
              }
              if (uses_left < 1)
                throw refused(ec::not_found, "unknown or used enrollment token");
              if (expires_at <= now)
                throw refused(ec::conflict, "the enrollment token has expired");
              // A token never takes a device over from the key it has: revoke first.
              if (!current.empty())
                throw refused(ec::forbidden, "device " + k.name +
                                                 " is already enrolled with another "
                                                 "key; revoke it first");
              auto left = uses_left - 1;
              if (left == 0) {
                stmt del{st, "DELETE FROM enrollment_tokens WHERE token_hash = ?"};
                del.bind(1, hash);
                del.step();
              } else {
                stmt upd{st, "UPDATE enrollment_tokens SET uses_left = ? WHERE "
                             "token_hash = ?"};
                upd.bind(1, left).bind(2, hash);
                upd.step();
              }
              admit_key(st, k);
            },
            std::string{}); // enrollment never replaces a key (see actors.hpp)
      },
      [=](atom::flush) { commit_open(self); },
      [=](atom::link, checkpointer_actor c) { self->state.checkpointer = std::move(c); });
}

caf::expected<page_request> parse_page(const std::map<std::string, std::string>& params) {
  page_request out;
  for (const auto& [key, value] : params) {
    if (key == "limit") {
      auto end = value.data() + value.size();
      auto [ptr, err] = std::from_chars(value.data(), end, out.limit);
      if (value.empty() || err != std::errc{} || ptr != end || out.limit < 1)
        return make_error(ec::bad_request,
                          "'limit' must be a whole number from 1 (larger values are "
                          "capped at the list's maximum)");
    } else if (key == "cursor") {
      out.cursor = value;
    } else {
      out.filters.emplace(key, value);
    }
  }
  return out;
}

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
  return with_reads<store_reader_actor::behavior_type>(read_handlers(self));
}

} // namespace parry
