#include "server/backup.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <stdexcept>

#include <sqlite3.h>

#include "actors/records.hpp"
#include "actors/store.hpp"

namespace parry {

namespace fs = std::filesystem;

namespace {

/// An SQLite connection closed on every path out.
struct db_handle {
  sqlite3* db = nullptr;
  ~db_handle() {
    if (db != nullptr) sqlite3_close(db);
  }
};

/// One prepared statement, finalized on every path out.
struct query {
  sqlite3_stmt* s = nullptr;
  query(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK)
      throw std::runtime_error(std::string{sql} + ": " + sqlite3_errmsg(db));
  }
  ~query() { sqlite3_finalize(s); }
  bool step() {
    auto rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw std::runtime_error(sqlite3_errmsg(sqlite3_db_handle(s)));
  }
  std::string text(int i) {
    auto p = sqlite3_column_text(s, i);
    return p ? std::string{reinterpret_cast<const char*>(p),
                           static_cast<std::size_t>(sqlite3_column_bytes(s, i))}
             : std::string{};
  }
  int64_t integer(int i) { return sqlite3_column_int64(s, i); }
};

void open_db(db_handle& h, const std::string& path, int flags) {
  if (sqlite3_open_v2(path.c_str(), &h.db, flags, nullptr) != SQLITE_OK)
    throw std::runtime_error("cannot open " + path + ": " +
                             (h.db ? sqlite3_errmsg(h.db) : "out of memory"));
  sqlite3_busy_timeout(h.db, 10000);
}

void exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    throw std::runtime_error(std::string{sql} + ": " + why);
  }
}

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0)
    throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0)
    throw std::runtime_error("cannot sync " + path + ": " + std::strerror(errno));
}

/// Copies `from` to `to` byte for byte, fsynced, mode 0600 (`to` must not exist).
void copy_file_synced(const std::string& from, const std::string& to) {
  fs::copy_file(from, to);
  fs::permissions(to, fs::perms::owner_read | fs::perms::owner_write);
  fsync_path(to, O_RDONLY);
}

std::string utc_stamp() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

backup_check check_open(sqlite3* db) {
  backup_check out;
  {
    query q{db, "PRAGMA integrity_check"};
    std::string first = q.step() ? q.text(0) : "no answer";
    if (first != "ok") {
      out.problem = "integrity_check: " + first;
      return out;
    }
  }
  {
    query q{db, "SELECT value FROM meta WHERE key = 'schema_version'"};
    if (!q.step()) {
      out.problem = "not a Parry database (no schema_version)";
      return out;
    }
    auto v = q.text(0);
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos ||
        v.size() > 4 || std::stoi(v) > store_schema_version()) {
      out.problem = "schema version " + v + " is not one this parryd knows";
      return out;
    }
  }
  query q{db, "SELECT seq, time, actor, kind, target, detail, prev_hash, hash FROM audit "
              "ORDER BY seq"};
  std::string head(64, '0');
  int64_t expect = 1;
  while (q.step()) {
    auto seq = q.integer(0);
    audit_entry e{q.text(2), q.text(3), q.text(4), q.text(5)};
    if (seq != expect) {
      out.problem = "audit chain: record " + std::to_string(expect) + " is missing";
      return out;
    }
    if (q.text(6) != head) {
      out.problem = "audit chain: record " + std::to_string(seq) +
                    " does not name the hash of the one before";
      return out;
    }
    auto hash = audit_hash(seq, q.integer(1), e, head);
    if (q.text(7) != hash) {
      out.problem = "audit chain: record " + std::to_string(seq) + " was altered";
      return out;
    }
    head = std::move(hash);
    ++expect;
  }
  out.ok = true;
  out.audit_records = expect - 1;
  out.audit_head = std::move(head);
  return out;
}

} // namespace

backup_check check_database(const std::string& file) {
  backup_check out;
  try {
    std::error_code ec;
    auto size = fs::file_size(file, ec);
    if (ec) {
      out.problem = "cannot read " + file + ": " + ec.message();
      return out;
    }
    db_handle h;
    // Immutable: nothing (no WAL, no journal) is created next to the file checked.
    open_db(h, "file:" + file + "?immutable=1",
            SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX);
    out = check_open(h.db);
    out.bytes = static_cast<int64_t>(size);
  } catch (const std::exception& e) {
    out.ok = false;
    out.problem = e.what();
  }
  return out;
}

backup_check backup_database(const std::string& db, const std::string& out) {
  if (fs::exists(out)) throw std::runtime_error(out + " exists; choose a new file");
  if (!fs::exists(db)) throw std::runtime_error("no database at " + db);
  auto partial = out + ".partial";
  fs::remove(partial);
  try {
    {
      db_handle src, dst;
      open_db(src, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
      int fd = ::open(partial.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
      if (fd < 0)
        throw std::runtime_error("cannot create " + partial + ": " +
                                 std::strerror(errno));
      ::close(fd);
      open_db(dst, partial, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
      auto* b = sqlite3_backup_init(dst.db, "main", src.db, "main");
      if (b == nullptr)
        throw std::runtime_error(std::string{"backup: "} + sqlite3_errmsg(dst.db));
      // All pages in one step: one read transaction, so the copy is one commit's
      // state, and a writer on the live database (WAL) is never held up.
      int rc = sqlite3_backup_step(b, -1);
      sqlite3_backup_finish(b);
      if (rc != SQLITE_DONE)
        throw std::runtime_error(std::string{"backup: "} + sqlite3_errstr(rc));
      // A single self-contained file: no WAL beside it.
      exec(dst.db, "PRAGMA journal_mode=DELETE");
    }
    fs::permissions(partial, fs::perms::owner_read | fs::perms::owner_write);
    fsync_path(partial, O_RDONLY);
    auto check = check_database(partial);
    if (!check.ok)
      throw std::runtime_error("the copy does not check out: " + check.problem);
    fs::rename(partial, out);
    auto dir = fs::absolute(out).parent_path().string();
    fsync_path(dir, O_RDONLY | O_DIRECTORY);
    return check;
  } catch (...) {
    std::error_code ignored;
    fs::remove(partial, ignored);
    throw;
  }
}

int lock_data_dir(const std::string& data_dir) {
  auto path = data_dir + "/parryd.lock";
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0)
    throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

backup_check restore_database(const std::string& file, const std::string& data_dir) {
  auto check = check_database(file);
  if (!check.ok)
    throw std::runtime_error(file + ": " + check.problem + "; nothing restored");
  fs::create_directories(data_dir);
  int lock = lock_data_dir(data_dir);
  if (lock < 0)
    throw std::runtime_error("a parryd is running on " + data_dir +
                             "; stop it before restoring");
  struct unlock {
    int fd;
    ~unlock() { ::close(fd); }
  } held{lock};
  auto db = data_dir + "/parry.db";
  auto restoring = db + ".restoring";
  fs::remove(restoring);
  copy_file_synced(file, restoring);
  if (fs::exists(db)) {
    // The old WAL belongs to the old database: it must never be applied to the copy.
    auto keep = db + ".before-restore-" + utc_stamp();
    fs::rename(db, keep);
    for (const char* suffix : {"-wal", "-shm"})
      if (fs::exists(db + suffix)) fs::rename(db + suffix, keep + suffix);
  }
  fs::rename(restoring, db);
  fsync_path(data_dir, O_RDONLY | O_DIRECTORY);
  return check;
}

} // namespace parry
