#pragma once

// Ships the audit trail to a SIEM: RFC 5424 syslog over TLS (RFC 5425 octet-counted
// frames) with a CEF payload, one message per audit record, at least once.
//
// The exporter is a thread of its own with its own read-only SQLite connection (the
// store writes in WAL mode, so reading never blocks it). It sends the records after
// a durable cursor and moves the cursor only over records whose last byte the
// receiver's TCP stack has acknowledged (SIOCOUTQ): a receiver that dies mid-stream
// gets the unacknowledged tail again after the reconnect. Duplicates are possible,
// losses are not; the SIEM de-duplicates on the audit seq (structured data `seq`,
// CEF `externalId`). Bytes a receiver acknowledged but never processed (it crashed
// with them in its socket buffer) are beyond what syslog over TCP can tell.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace parry {

/// One row of the audit table, as read: every text is untrusted bytes.
struct audit_row {
  int64_t seq = 0;
  int64_t time_us = 0; ///< microseconds since the epoch
  std::string actor;
  std::string kind;
  std::string target;
  std::string detail;
  std::string hash;
};

/// Who sends: the RFC 5424 HOSTNAME, APP-NAME and PROCID fields.
struct syslog_identity {
  std::string hostname;
  std::string app_name = "parryd";
  std::string procid;
};

/// CEF severity (0-10) of an audit record: by kind, raised for failures and
/// refusals (a detail starting with "failed" or "refused").
int cef_severity(std::string_view kind, std::string_view detail);

/// `s` escaped for a CEF header field: `\` and `|` escaped, control characters
/// (newlines included) replaced by a space, ill-formed UTF-8 by U+FFFD.
std::string cef_header_escape(std::string_view s);

/// `s` escaped for a CEF extension value: `\`, `=`, CR and LF escaped, other
/// control characters replaced by a space, ill-formed UTF-8 by U+FFFD.
std::string cef_value_escape(std::string_view s);

/// The CEF message for `row`; `version` is the product version in the header.
/// Every field is cut to a bound (on a character boundary, marked "...").
std::string format_cef(const audit_row& row, std::string_view version);

/// The RFC 5424 message carrying `payload` for `row` (facility log audit, severity
/// from the CEF severity, MSGID the kind, structured data with seq and hash).
std::string format_syslog(const audit_row& row, const syslog_identity& id,
                          std::string_view payload);

/// `msg` framed for RFC 5425: "LEN SP MSG", LEN the byte count of `msg`.
std::string octet_frame(std::string_view msg);

/// The cursor stored in `path`: 0 when the file does not exist. Throws
/// std::runtime_error when it exists but cannot be read or holds no number.
int64_t read_cursor(const std::string& path);

/// Stores `seq` in `path` durably: temporary file, fsync, rename, fsync of the
/// directory. Throws std::runtime_error.
void write_cursor(const std::string& path, int64_t seq);

/// Configuration of the exporter: host, port and the files come from the config keys
/// siem_host, siem_port, siem_ca_file, siem_cert_file and siem_key_file; the rest is
/// the server's to set.
struct siem_options {
  std::string host;        ///< receiver host name or IP literal, checked in its cert
  uint16_t port = 6514;    ///< RFC 5425's port
  std::string ca_file;     ///< CAs of the receiver's certificate; empty: the system's
  std::string cert_file;   ///< optional client certificate (PEM chain) ...
  std::string key_file;    ///< ... and its key; both or neither
  std::string db_path;     ///< the server's SQLite database
  std::string cursor_file; ///< durable cursor, e.g. <data_dir>/siem.cursor
  std::string app_name = "parryd";
  std::string hostname;                  ///< RFC 5424 HOSTNAME; empty: gethostname()
  std::string product_version = "0.1.0"; ///< CEF device version
  std::chrono::milliseconds poll{1000};  ///< look for records without notify()
  std::chrono::milliseconds min_backoff{500};
  std::chrono::milliseconds max_backoff{30000};
  std::chrono::milliseconds io_timeout{10000};  ///< connect, handshake, each write
  std::chrono::milliseconds ack_timeout{10000}; ///< for the receiver's TCP acks
  std::size_t batch = 256;                      ///< records read and sent per round

  /// Empty when usable, else what is wrong, naming the key.
  std::string validate() const;
};

/// What the exporter did, readable from any thread.
struct siem_stats {
  std::atomic<uint64_t> sent{0};             ///< messages written to a connection
  std::atomic<uint64_t> acknowledged{0};     ///< records the cursor moved over
  std::atomic<uint64_t> resent{0};           ///< messages for records sent before
  std::atomic<uint64_t> connect_failures{0}; ///< TCP connects that failed
  std::atomic<uint64_t> tls_failures{0};     ///< TLS setups that failed or were refused
  std::atomic<int64_t> cursor{0};            ///< last acknowledged seq
  std::atomic<int64_t> backlog{0};           ///< max seq in the table minus cursor
  std::atomic<bool> connected{false};

  /// The last failure, empty if none yet.
  std::string last_error() const;
  void set_last_error(std::string e);

private:
  mutable std::mutex m_;
  std::string last_error_;
};

/// The exporter thread. start() once; stop() (or the destructor) ends it within a
/// bounded time: every wait also watches a self-pipe (name resolution aside:
/// getaddrinfo cannot be interrupted, so give an IP address or a name in /etc/hosts
/// where that matters).
class siem_exporter {
public:
  /// Throws std::invalid_argument when `opts.validate()` fails.
  explicit siem_exporter(siem_options opts);
  ~siem_exporter();
  siem_exporter(const siem_exporter&) = delete;
  siem_exporter& operator=(const siem_exporter&) = delete;

  void start();
  /// Idempotent; the cursor keeps what was acknowledged.
  void stop();
  /// New records were committed: look now rather than at the next poll.
  void notify();
  const siem_stats& stats() const { return stats_; }

private:
  struct worker;
  void run();

  siem_options opts_;
  siem_stats stats_;
  std::atomic<bool> stopping_{false};
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

} // namespace parry
