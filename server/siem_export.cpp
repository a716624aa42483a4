#include "server/siem_export.hpp"

#include <fcntl.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <vector>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include "common/utf8.hpp"

namespace parry {

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Bounds on each field, in bytes before escaping (which at most doubles them): with
// every field full and every byte escaped a frame stays under the 8 KiB that RFC 5425
// receivers should accept (2 KiB they must; the detail is what a long record loses).
constexpr std::size_t max_actor = 256;
constexpr std::size_t max_kind = 64;
constexpr std::size_t max_target = 512;
constexpr std::size_t max_detail = 2048;
constexpr std::size_t max_hash = 128;

// RFC 5424 facility 13, "log audit".
constexpr int facility_log_audit = 13;
// IANA's private enterprise number for documentation (RFC 5612): a site that has
// its own may want it here.
constexpr const char* sd_id = "parry@32473";
// How long a new TLS 1.3 connection waits for the receiver's session ticket.
constexpr std::chrono::milliseconds ticket_wait{2000};

struct kind_info {
  const char* kind;
  const char* name;
  int severity;
};

// Every kind the server writes (grep `audit(` and `audit_entry{` in actors/ and
// server/). Refusals of what someone tried are high, routine use is low.
constexpr kind_info kinds[] = {
    {"login", "User login", 3},
    {"password_confirmation", "Password confirmation", 3},
    {"logout", "User logout", 2},
    {"token_created", "API token created", 5},
    {"token_revoked", "API token revoked", 5},
    {"trigger", "Response action triggered", 6},
    {"trigger_refused", "Response action refused", 7},
    {"transition", "Response action state change", 3},
    {"cancel", "Response action cancelled", 5},
    {"reverse", "Response action reversal requested", 6},
    {"user_created", "User created", 6},
    {"user_changed", "User changed", 6},
    {"user_deleted", "User deleted", 7},
    {"device_enrolled", "Device enrolled", 5},
    {"enrollment_refused", "Device enrollment refused", 8},
    {"enrollment_token_created", "Enrollment token created", 5},
    {"enrollment_token_deleted", "Enrollment token deleted", 4},
    {"integrator_registered", "Integrator registered", 6},
    {"bus_key_revoked", "Bus key revoked", 6},
    {"bus_refused", "Bus message refused", 8},
};

const kind_info* find_kind(std::string_view kind) {
  for (auto& k : kinds)
    if (kind == k.kind) return &k;
  return nullptr;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

/// Well-formed UTF-8, at most `cap` bytes (cut on a character boundary, "..." added).
std::string bounded(std::string_view s, std::size_t cap) {
  auto clean = utf8_sanitized(s.substr(0, cap + 4));
  if (clean.size() <= cap && s.size() <= cap) return clean;
  return std::string{utf8_prefix(clean, cap - 3)} + "...";
}

bool is_control(unsigned char c) {
  return c < 0x20 || c == 0x7F;
}

/// An RFC 5424 header field: printable US-ASCII only, at most `cap`, "-" if empty.
std::string ascii_field(std::string_view s, std::size_t cap) {
  std::string out;
  for (unsigned char c : s.substr(0, cap))
    out += c >= 33 && c <= 126 ? static_cast<char>(c) : '_';
  return out.empty() ? "-" : out;
}

/// An RFC 5424 SD-PARAM value: UTF-8 with `"`, `\` and `]` escaped.
std::string sd_value(std::string_view s, std::size_t cap) {
  std::string out;
  for (char c : bounded(s, cap)) {
    if (c == '"' || c == '\\' || c == ']') out += '\\';
    out += c;
  }
  return out;
}

/// RFC 3339 UTC with microseconds, or "-" (NILVALUE) for a time outside 1970-9999.
std::string timestamp(int64_t time_us) {
  constexpr int64_t last_us = 253402300799999999; // 9999-12-31T23:59:59.999999Z
  if (time_us < 0 || time_us > last_us) return "-";
  std::time_t secs = static_cast<std::time_t>(time_us / 1000000);
  std::tm tm{};
  if (gmtime_r(&secs, &tm) == nullptr) return "-";
  char out[96]; // room for any int the compiler cannot rule out
  std::snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(time_us % 1000000));
  return out;
}

/// RFC 5424 severity for a CEF severity: warning, notice or informational.
int syslog_severity(int cef) {
  return cef >= 7 ? 4 : cef >= 4 ? 5 : 6;
}

std::string errno_text(int e) {
  return std::strerror(e);
}

/// The newest OpenSSL error, or `fallback`.
std::string openssl_error(const std::string& fallback) {
  unsigned long e = ERR_get_error();
  if (e == 0) return fallback;
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

struct ssl_ctx_free {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct ssl_free {
  void operator()(SSL* s) const { SSL_free(s); }
};
struct db_close {
  void operator()(sqlite3* d) const { sqlite3_close(d); }
};
struct stmt_finalize {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_finalize>;

/// Column `i` as bytes; NULL is empty, numbers and blobs come as SQLite renders them.
std::string column_text(sqlite3_stmt* s, int i) {
  auto p = sqlite3_column_text(s, i);
  auto n = sqlite3_column_bytes(s, i);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n))
           : std::string{};
}

} // namespace

// -- formatting ---------------------------------------------------------------------

int cef_severity(std::string_view kind, std::string_view detail) {
  auto k = find_kind(kind);
  int base = k ? k->severity : 5;
  if (starts_with(detail, "failed") || starts_with(detail, "refused"))
    return std::max(base, 7);
  return base;
}

std::string cef_header_escape(std::string_view s) {
  std::string out;
  for (char c : utf8_sanitized(s)) {
    if (c == '\\' || c == '|')
      out += '\\';
    else if (is_control(static_cast<unsigned char>(c)))
      c = ' ';
    out += c;
  }
  return out;
}

std::string cef_value_escape(std::string_view s) {
  std::string out;
  for (char c : utf8_sanitized(s)) {
    switch (c) {
    case '\\':
      out += "\\\\";
      break;
    case '=':
      out += "\\=";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    default:
      out += is_control(static_cast<unsigned char>(c)) ? ' ' : c;
    }
  }
  return out;
}

std::string format_cef(const audit_row& row, std::string_view version) {
  auto kind = bounded(row.kind, max_kind);
  auto k = find_kind(kind);
  auto detail = bounded(row.detail, max_detail);
  auto seq = std::to_string(row.seq);
  std::string out = "CEF:0|Parry|parryd|" + cef_header_escape(bounded(version, 64)) +
                    '|' + cef_header_escape(kind) + '|' +
                    cef_header_escape(k ? std::string{k->name} : kind) + '|' +
                    std::to_string(cef_severity(kind, detail)) + '|';
  out += "rt=" + std::to_string(row.time_us / 1000);
  out += " externalId=" + seq + " cn1=" + seq + " cn1Label=auditSeq";
  out += " suser=" + cef_value_escape(bounded(row.actor, max_actor));
  out += " act=" + cef_value_escape(kind);
  out += " cs1=" + cef_value_escape(bounded(row.target, max_target)) + " cs1Label=target";
  out += " cs2=" + cef_value_escape(bounded(row.hash, max_hash)) + " cs2Label=auditHash";
  // Last: the value most likely to hold spaces reads best at the end.
  out += " msg=" + cef_value_escape(detail);
  return out;
}

std::string format_syslog(const audit_row& row, const syslog_identity& id,
                          std::string_view payload) {
  auto kind = bounded(row.kind, max_kind);
  int pri = facility_log_audit * 8 +
            syslog_severity(cef_severity(kind, bounded(row.detail, max_detail)));
  std::string out = '<' + std::to_string(pri) + ">1 " + timestamp(row.time_us) + ' ' +
                    ascii_field(id.hostname, 255) + ' ' + ascii_field(id.app_name, 48) +
                    ' ' + ascii_field(id.procid, 128) + ' ' + ascii_field(kind, 32);
  out += std::string{" ["} + sd_id + " seq=\"" + std::to_string(row.seq) + "\" hash=\"" +
         sd_value(row.hash, max_hash) + "\"] ";
  // No BOM before the payload: CEF parsers expect "CEF:" right there, so MSG is
  // MSG-ANY (RFC 5424 6.4) that happens to be UTF-8.
  out += payload;
  return out;
}

std::string octet_frame(std::string_view msg) {
  return std::to_string(msg.size()) + ' ' + std::string{msg};
}

// -- cursor file --------------------------------------------------------------------

int64_t read_cursor(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return 0;
    throw std::runtime_error("cannot open " + path + ": " + errno_text(errno));
  }
  char buf[32] = {};
  auto n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) throw std::runtime_error(path + " is empty or unreadable");
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(buf, &end, 10);
  if (end == buf || errno != 0 || v < 0 || (*end != '\n' && *end != '\0'))
    throw std::runtime_error(path + " holds no cursor");
  return v;
}

void write_cursor(const std::string& path, int64_t seq) {
  auto tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + tmp + ": " + errno_text(errno));
  auto text = std::to_string(seq) + '\n';
  int err = 0;
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::fsync(fd) != 0)
    err = errno ? errno : EIO;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + errno_text(err));
  }
  // The rename itself is durable only once the directory is.
  auto dir = std::filesystem::path(path).parent_path();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// -- options and stats --------------------------------------------------------------

std::string siem_options::validate() const {
  if (host.empty()) return "siem_host: empty; a host name or IP address is needed";
  if (port == 0) return "siem_port: 0; 1-65535 (6514 is RFC 5425's port)";
  if (cert_file.empty() != key_file.empty())
    return "siem_cert_file and siem_key_file: give both or neither";
  // The rest is set by the server, not by an operator.
  if (db_path.empty()) return "siem db_path: empty";
  if (cursor_file.empty()) return "siem cursor_file: empty";
  if (batch == 0 || batch > 10000) return "siem batch: 1-10000";
  if (poll.count() <= 0) return "siem poll: must be positive";
  if (min_backoff.count() <= 0 || max_backoff < min_backoff)
    return "siem max_backoff: positive and not below min_backoff";
  if (io_timeout.count() <= 0 || ack_timeout.count() <= 0)
    return "siem io_timeout and ack_timeout: must be positive";
  return {};
}

std::string siem_stats::last_error() const {
  std::lock_guard<std::mutex> g{m_};
  return last_error_;
}

void siem_stats::set_last_error(std::string e) {
  std::lock_guard<std::mutex> g{m_};
  last_error_ = std::move(e);
}

// -- the thread ---------------------------------------------------------------------

/// The exporter thread's state: database, connection, cursor. Lives on that thread.
struct siem_exporter::worker {
  enum class woke { ready, notified, timeout, stop };

  const siem_options& opts;
  siem_stats& stats;
  const std::atomic<bool>& stopping;
  int wake_fd;
  syslog_identity ident;

  std::unique_ptr<sqlite3, db_close> db;
  stmt_ptr select_rows, select_max;
  std::unique_ptr<SSL_CTX, ssl_ctx_free> ctx;
  std::unique_ptr<SSL, ssl_free> ssl;
  int fd = -1;
  int64_t cursor = 0;
  int64_t max_sent = 0;       ///< highest seq sent by this process, to count resends
  bool warned_behind = false; ///< the table ends before the cursor, and we said so
  bool ticket = false;        ///< the receiver sent a TLS 1.3 session ticket

  worker(const siem_options& o, siem_stats& s, const std::atomic<bool>& stop, int wake)
      : opts(o), stats(s), stopping(stop), wake_fd(wake) {
    ident.app_name = opts.app_name;
    ident.hostname = opts.hostname;
    if (ident.hostname.empty()) {
      char h[256] = {};
      if (::gethostname(h, sizeof h - 1) == 0) ident.hostname = h;
    }
    ident.procid = std::to_string(::getpid());
  }
  ~worker() { drop(); }

  void fail(const std::string& what) {
    spdlog::warn("siem: {}", what);
    stats.set_last_error(what);
  }

  /// Waits for `events` on `fd` (none if fd < 0), the self-pipe or `until`. A wake
  /// that is not a stop ends the wait only when `on_notify` says so.
  woke wait(int sock, short events, clock_type::time_point until, bool on_notify) {
    for (;;) {
      if (stopping) return woke::stop;
      auto left = std::chrono::ceil<std::chrono::milliseconds>(until - clock_type::now());
      if (left.count() <= 0) return woke::timeout;
      pollfd p[2] = {{wake_fd, POLLIN, 0}, {sock, events, 0}};
      int n = ::poll(p, sock >= 0 ? 2 : 1,
                     static_cast<int>(std::min<int64_t>(left.count(), INT_MAX)));
      if (n < 0 && errno != EINTR) return woke::timeout;
      if (n <= 0) continue;
      if (p[0].revents) {
        char buf[64];
        while (::read(wake_fd, buf, sizeof buf) > 0) {
        }
        if (stopping) return woke::stop;
        if (on_notify) return woke::notified;
      }
      if (sock >= 0 && p[1].revents) return woke::ready;
    }
  }

  // -- database ---------------------------------------------------------------------

  bool open_db() {
    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(opts.db_path.c_str(), &raw,
                             SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    db.reset(raw);
    if (rc == SQLITE_OK) {
      sqlite3_busy_timeout(raw, 1000);
      // substr bounds what a hostile row can make us allocate.
      select_rows = prepare("SELECT seq, time, substr(actor, 1, 1024), "
                            "substr(kind, 1, 256), substr(target, 1, 2048), "
                            "substr(detail, 1, 16384), substr(hash, 1, 256) "
                            "FROM audit WHERE seq > ? ORDER BY seq LIMIT ?");
      select_max = prepare("SELECT max(seq) FROM audit");
      if (select_rows && select_max) return true;
    }
    fail("cannot read the audit table in " + opts.db_path + ": " +
         (raw ? sqlite3_errmsg(raw) : "out of memory"));
    close_db();
    return false;
  }

  stmt_ptr prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db.get(), sql, -1, &s, nullptr);
    return stmt_ptr{s};
  }

  void close_db() {
    select_rows.reset();
    select_max.reset();
    db.reset();
  }

  /// The next batch after the cursor into `rows`; false on a database error.
  bool read_batch(std::vector<audit_row>& rows) {
    if (!db && !open_db()) return false;
    auto s = select_rows.get();
    sqlite3_bind_int64(s, 1, cursor);
    sqlite3_bind_int64(s, 2, static_cast<int64_t>(opts.batch));
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      audit_row r;
      r.seq = sqlite3_column_int64(s, 0);
      r.time_us = sqlite3_column_int64(s, 1);
      r.actor = column_text(s, 2);
      r.kind = column_text(s, 3);
      r.target = column_text(s, 4);
      r.detail = column_text(s, 5);
      r.hash = column_text(s, 6);
      rows.push_back(std::move(r));
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
      fail(std::string{"reading the audit table: "} + sqlite3_errmsg(db.get()));
      rows.clear();
      close_db();
      return false;
    }
    if (sqlite3_step(select_max.get()) == SQLITE_ROW) {
      auto max = sqlite3_column_int64(select_max.get(), 0);
      stats.backlog = std::max<int64_t>(0, max - cursor);
      // A database restored from an older backup ends before the cursor: what it
      // gets next would go unsent until it catches up. Said once, loudly.
      if (max < cursor && !warned_behind)
        fail("the audit table ends at " + std::to_string(max) + ", before the cursor " +
             std::to_string(cursor) + " in " + opts.cursor_file +
             " (restored database?); remove that file to send the table again");
      warned_behind = max < cursor;
    }
    sqlite3_reset(select_max.get());
    return true;
  }

  // -- connection -------------------------------------------------------------------

  void drop() {
    ssl.reset();
    ctx.reset();
    if (fd >= 0) ::close(fd);
    fd = -1;
    stats.connected = false;
  }

  /// Sends close_notify (once, without waiting for the answer) and closes.
  void close_gracefully() {
    if (ssl) SSL_shutdown(ssl.get());
    drop();
  }

  /// A TCP connection to the receiver, or -1 with the reason in `why`.
  int tcp_connect(std::string& why) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    auto port = std::to_string(opts.port);
    if (int rc = ::getaddrinfo(opts.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
      why = std::string{"cannot resolve: "} + gai_strerror(rc);
      return -1;
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> hold{res, freeaddrinfo};
    auto until = clock_type::now() + opts.io_timeout;
    for (auto a = res; a; a = a->ai_next) {
      int s = ::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (s < 0) {
        why = errno_text(errno);
        continue;
      }
      int err = ::connect(s, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
      if (err == EINPROGRESS) {
        auto w = wait(s, POLLOUT, until, false);
        socklen_t len = sizeof err;
        if (w == woke::ready)
          ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        else
          err = w == woke::stop ? ECANCELED : ETIMEDOUT;
      }
      if (err == 0) return s;
      why = errno_text(err);
      ::close(s);
      if (err == ECANCELED) break;
    }
    return -1;
  }

  std::unique_ptr<SSL_CTX, ssl_ctx_free> make_ctx(std::string& why) {
    std::unique_ptr<SSL_CTX, ssl_ctx_free> c{SSL_CTX_new(TLS_client_method())};
    if (!c) {
      why = openssl_error("cannot create a TLS context");
      return nullptr;
    }
    SSL_CTX_set_min_proto_version(c.get(), TLS1_2_VERSION);
    SSL_CTX_set_verify(c.get(), SSL_VERIFY_PEER, nullptr);
    // Only to hear of session tickets (confirm_tls13); none is kept or resumed.
    SSL_CTX_set_session_cache_mode(c.get(), SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c.get(), [](SSL* s, SSL_SESSION*) {
      if (auto seen = static_cast<bool*>(SSL_get_app_data(s))) *seen = true;
      return 0;
    });
    // Verified either way: against the configured CAs, else the system's.
    if (opts.ca_file.empty() ? SSL_CTX_set_default_verify_paths(c.get()) != 1
                             : SSL_CTX_load_verify_locations(
                                   c.get(), opts.ca_file.c_str(), nullptr) != 1) {
      why = "cannot load siem_ca_file '" + opts.ca_file + "': " + openssl_error("?");
      return nullptr;
    }
    if (!opts.cert_file.empty() &&
        (SSL_CTX_use_certificate_chain_file(c.get(), opts.cert_file.c_str()) != 1 ||
         SSL_CTX_use_PrivateKey_file(c.get(), opts.key_file.c_str(), SSL_FILETYPE_PEM) !=
             1 ||
         SSL_CTX_check_private_key(c.get()) != 1)) {
      why = "cannot load siem_cert_file/siem_key_file: " + openssl_error("?");
      return nullptr;
    }
    return c;
  }

  /// Runs `op` (SSL_connect, SSL_write, ...) until it succeeds; false on an error,
  /// stop or `until`, with the reason in `why`.
  template <class Op> bool ssl_io(Op op, clock_type::time_point until, std::string& why) {
    for (;;) {
      ERR_clear_error();
      errno = 0;
      int r = op();
      if (r > 0) return true;
      int e = SSL_get_error(ssl.get(), r);
      short ev = e == SSL_ERROR_WANT_READ    ? POLLIN
                 : e == SSL_ERROR_WANT_WRITE ? POLLOUT
                                             : 0;
      if (ev == 0) {
        why = e == SSL_ERROR_ZERO_RETURN ? "closed by the receiver"
              : e == SSL_ERROR_SYSCALL ? (errno ? errno_text(errno) : "connection closed")
                                       : openssl_error("TLS error");
        return false;
      }
      auto w = wait(fd, ev, until, false);
      if (w == woke::stop) {
        why = "stopping";
        return false;
      }
      if (w == woke::timeout) {
        why = "timed out";
        return false;
      }
    }
  }

  bool connect() {
    std::string why;
    fd = tcp_connect(why);
    if (fd < 0) {
      ++stats.connect_failures;
      fail("cannot connect to " + opts.host + ':' + std::to_string(opts.port) + ": " +
           why);
      return false;
    }
    ctx = make_ctx(why);
    if (ctx) ssl.reset(SSL_new(ctx.get()));
    if (ssl && !set_peer(why)) ssl.reset();
    if (ssl) SSL_set_app_data(ssl.get(), &ticket);
    auto until = clock_type::now() + opts.io_timeout;
    if (!ssl || !ssl_io([&] { return SSL_connect(ssl.get()); }, until, why) ||
        !confirm_tls13(why)) {
      if (ssl && SSL_get_verify_result(ssl.get()) != X509_V_OK)
        why += std::string{" ("} +
               X509_verify_cert_error_string(SSL_get_verify_result(ssl.get())) + ")";
      if (!stopping) {
        ++stats.tls_failures;
        fail("TLS with " + opts.host + ':' + std::to_string(opts.port) + ": " + why);
      }
      drop();
      return false;
    }
    stats.connected = true;
    spdlog::info("siem: connected to {}:{} ({})", opts.host, opts.port,
                 SSL_get_version(ssl.get()));
    return true;
  }

  /// TLS 1.3 ends the client's handshake before the receiver has checked the client
  /// certificate: a receiver that refuses it (or wanted one) says so after our first
  /// bytes, which its TCP stack acknowledges all the same, and the cursor would move
  /// over records nobody took. So wait for its verdict: a session ticket (sent
  /// once the handshake is complete on its side) or an alert. A receiver that sends
  /// no tickets costs `ticket_wait` per connection and is trusted then.
  bool confirm_tls13(std::string& why) {
    if (SSL_version(ssl.get()) != TLS1_3_VERSION) return true;
    ticket = false;
    auto until = clock_type::now() +
                 std::min<std::chrono::milliseconds>(opts.io_timeout, ticket_wait);
    char buf[512];
    for (;;) {
      ERR_clear_error();
      int r = SSL_read(ssl.get(), buf, sizeof buf);
      if (r > 0) continue;
      int e = SSL_get_error(ssl.get(), r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        why = e == SSL_ERROR_SSL ? openssl_error("TLS error") : "closed by the receiver";
        return false;
      }
      if (ticket) break;
      auto w = wait(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, until, false);
      if (w == woke::stop) {
        why = "stopping";
        return false;
      }
      if (w == woke::timeout) break;
    }
    return true;
  }

  /// Binds the socket and the name the receiver's certificate must carry.
  bool set_peer(std::string& why) {
    SSL_set_fd(ssl.get(), fd);
    auto param = SSL_get0_param(ssl.get());
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    bool ip = X509_VERIFY_PARAM_set1_ip_asc(param, opts.host.c_str()) == 1;
    // RFC 6066 forbids IP literals in SNI.
    if (!ip && (SSL_set1_host(ssl.get(), opts.host.c_str()) != 1 ||
                SSL_set_tlsext_host_name(ssl.get(), opts.host.c_str()) != 1)) {
      why = "cannot set the expected host name";
      return false;
    }
    return true;
  }

  /// The receiver may only close (or send session tickets): drains what it sent and
  /// drops the connection once it is gone.
  void check_closed() {
    char buf[512];
    for (;;) {
      ERR_clear_error();
      int r = SSL_read(ssl.get(), buf, sizeof buf);
      if (r > 0) continue;
      int e = SSL_get_error(ssl.get(), r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
      fail("the receiver closed the connection");
      drop();
      return;
    }
  }

  void set_cork(bool on) {
    int v = on ? 1 : 0;
    ::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, sizeof v);
  }

  // -- delivery ---------------------------------------------------------------------

  /// A record sent and the connection byte count after its last byte.
  struct in_flight {
    int64_t seq;
    uint64_t end;
  };

  /// Bytes the receiver's TCP stack acknowledged on this connection, handshake
  /// included, or 0 when the kernel cannot say.
  uint64_t acked_bytes() {
    uint64_t written = BIO_number_written(SSL_get_wbio(ssl.get()));
    int unacked = 0;
    if (::ioctl(fd, SIOCOUTQ, &unacked) != 0 || unacked < 0) return 0;
    return written - std::min<uint64_t>(written, static_cast<uint64_t>(unacked));
  }

  /// Moves the cursor over the acknowledged prefix of `sent` from `next` on.
  void advance(const std::vector<in_flight>& sent, std::size_t& next) {
    auto acked = acked_bytes();
    auto from = next;
    while (next < sent.size() && sent[next].end <= acked)
      ++next;
    if (next == from) return;
    cursor = sent[next - 1].seq;
    try {
      write_cursor(opts.cursor_file, cursor);
    } catch (const std::exception& e) {
      // Kept in memory all the same: a crash resends from the older file cursor,
      // while not moving on would resend the same records for ever.
      fail(e.what());
    }
    stats.acknowledged += next - from;
    stats.backlog =
        std::max<int64_t>(0, stats.backlog - static_cast<int64_t>(next - from));
    stats.cursor = cursor;
  }

  /// Waits (bounded) until the receiver acknowledged every record in `sent`.
  bool await_acks(const std::vector<in_flight>& sent) {
    std::size_t next = 0;
    auto until = clock_type::now() + opts.ack_timeout;
    auto step = 1ms;
    for (;;) {
      advance(sent, next);
      if (next == sent.size()) return true;
      tcp_info info{};
      socklen_t len = sizeof info;
      if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
          (info.tcpi_state != TCP_ESTABLISHED && info.tcpi_state != TCP_CLOSE_WAIT)) {
        fail("the connection broke with records unacknowledged");
        return false;
      }
      // No event says "acknowledged": look again soon, then less often.
      auto w = wait(-1, 0, std::min(until, clock_type::now() + step), false);
      if (w == woke::stop) {
        advance(sent, next); // what came in meanwhile need not be sent again
        return false;
      }
      if (clock_type::now() >= until) {
        fail("the receiver did not acknowledge within ack_timeout");
        return false;
      }
      step = std::min(step * 2, std::chrono::milliseconds{50});
    }
  }

  /// Sends `rows` and waits for their acknowledgement; false when the connection
  /// must go (the cursor has moved over what was acknowledged all the same).
  bool deliver(const std::vector<audit_row>& rows) {
    std::vector<in_flight> sent;
    sent.reserve(rows.size());
    std::string why;
    set_cork(true); // one stream of full segments, not a packet per record
    for (auto& r : rows) {
      auto frame =
          octet_frame(format_syslog(r, ident, format_cef(r, opts.product_version)));
      auto until = clock_type::now() + opts.io_timeout;
      if (!ssl_io([&] { return SSL_write(ssl.get(), frame.data(), int(frame.size())); },
                  until, why))
        break;
      sent.push_back({r.seq, BIO_number_written(SSL_get_wbio(ssl.get()))});
      ++stats.sent;
      if (r.seq <= max_sent) ++stats.resent;
      max_sent = std::max(max_sent, r.seq);
    }
    set_cork(false);
    if (sent.size() < rows.size()) {
      std::size_t next = 0;
      advance(sent, next);
      if (!stopping) fail("sending to the receiver: " + why);
      return false;
    }
    return await_acks(sent);
  }

  // -- the loop ---------------------------------------------------------------------

  void load_cursor() {
    try {
      cursor = read_cursor(opts.cursor_file);
    } catch (const std::exception& e) {
      // Starting over only duplicates; refusing to start would lose.
      fail(std::string{e.what()} + "; sending the audit trail from its start");
      cursor = 0;
    }
    stats.cursor = cursor;
  }

  void run() {
    load_cursor();
    auto backoff = opts.min_backoff;
    auto back_off = [&] {
      wait(-1, 0, clock_type::now() + backoff, false);
      backoff = std::min(backoff * 2, opts.max_backoff);
    };
    std::vector<audit_row> rows;
    while (!stopping) {
      rows.clear();
      if (!read_batch(rows)) {
        back_off();
        continue;
      }
      if (rows.empty()) {
        auto w = wait(fd, POLLIN, clock_type::now() + opts.poll, true);
        if (w == woke::ready) check_closed();
        continue;
      }
      if (!ssl && !connect()) {
        back_off();
        continue;
      }
      if (!deliver(rows)) {
        drop();
        back_off();
        continue;
      }
      backoff = opts.min_backoff;
    }
    close_gracefully();
    close_db();
  }
};

siem_exporter::siem_exporter(siem_options opts) : opts_(std::move(opts)) {
  if (auto bad = opts_.validate(); !bad.empty()) throw std::invalid_argument(bad);
  if (::pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0)
    throw std::runtime_error("siem: cannot create a pipe: " + errno_text(errno));
}

siem_exporter::~siem_exporter() {
  stop();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void siem_exporter::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void siem_exporter::stop() {
  stopping_ = true;
  notify();
  if (thread_.joinable()) thread_.join();
}

void siem_exporter::notify() {
  char b = 1;
  // Full pipe: a wake is pending already.
  [[maybe_unused]] auto n = ::write(wake_[1], &b, 1);
}

void siem_exporter::run() {
  // A receiver that resets the connection must give EPIPE, not a SIGPIPE that ends
  // the server: OpenSSL writes with write(2), so the signal is blocked on this thread.
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);
  try {
    worker w{opts_, stats_, stopping_, wake_[0]};
    w.run();
  } catch (const std::exception& e) {
    // Nothing above throws by design; if it does, the exporter ends loudly and the
    // cursor still says where to resume.
    stats_.connected = false;
    stats_.set_last_error(std::string{"exporter ended: "} + e.what());
    spdlog::error("siem: exporter ended: {}", e.what());
  }
}

} // namespace parry
