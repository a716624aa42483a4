#pragma once

// parryd's configuration. Every key is declared once, in the table in config.cpp:
// its TOML key, environment variable, command-line flag, type, unit, check and doc
// line. Sources, each overriding the one before: defaults, the TOML file (--config),
// PARRY_* environment variables, the command line.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace parry {

/// Everything parryd can be told. The members hold the defaults; which key sets which
/// member, and what is legal, is in the table in config.cpp.
struct server_config {
  /// Where the database, TLS files and logs live.
  std::string data_dir = "./parry-data";
  /// ROUTER endpoint the agents connect to.
  std::string bus_endpoint = "tcp://127.0.0.1:7400";
  /// CURVE and ZAP on every bus endpoint (false: plain TCP, closed labs only).
  bool bus_curve = true;
  /// Agent connections open at once on bus_endpoint (CURVE: refused at the
  /// handshake beyond it); 0: the descriptor limit minus bus_fd_reserve.
  uint32_t bus_max_connections = 0;
  /// Descriptors left for everything but agent connections when
  /// bus_max_connections is 0 (REST, the store, enrollment, integrators).
  uint32_t bus_fd_reserve = 2048;
  /// Connections the kernel queues for bus_endpoint before libzmq accepts them
  /// (ZMQ_BACKLOG; the kernel caps it at net.core.somaxconn).
  uint32_t bus_backlog = 4096;
  uint32_t bus_io_threads = 4;
  /// Gateway processes (parry-gateway) that hold the agent connections; 0: parryd
  /// holds them itself.
  uint32_t bus_gateways = 0;
  /// ROUTER endpoint where agents enroll (CURVE only), its handshake rate and its
  /// open connections at most.
  std::string bus_enroll_endpoint = "tcp://127.0.0.1:7401";
  uint32_t bus_enroll_handshakes_per_second = 500;
  uint32_t bus_enroll_max_connections = 256;
  /// Integrators (CURVE only): the request/reply ROUTER and the events PUB endpoint.
  std::string bus_integrator_endpoint = "tcp://127.0.0.1:7402";
  std::string bus_events_endpoint = "tcp://127.0.0.1:7403";
  /// HTTPS listen address and port (0 picks a free port).
  std::string http_address = "127.0.0.1";
  uint16_t http_port = 8443;
  /// The web console's files (web/ of the source tree unless installed elsewhere).
  std::string web_dir = PARRY_WEB_DIR;
  /// First administrator's password (used once, when the store has no admin).
  std::string admin_password;
  /// Agents send a heartbeat this often...
  uint32_t heartbeat_interval_ms = 5000;
  /// ...and count as offline after this many are missed.
  int missed_heartbeats = 3;
  /// A device with nothing queued that sent only heartbeats for this long is kept as
  /// a compact record instead of an actor (0: never).
  int device_passivate_after_s = 60;
  /// Largest accepted bus frame, in bytes.
  uint32_t max_frame_bytes = 1 << 20;
  /// Device ids the bus tracks at once; a new id beyond it is refused.
  uint32_t max_devices = 10000;
  /// Incidents accepted per device per minute.
  uint32_t max_incidents_per_minute = 600;
  /// Incidents accepted per second from all devices together.
  uint32_t max_incidents_per_second = 10000;
  /// Bytes of incident reports accepted from the bus and not yet stored.
  uint32_t max_incident_bytes_in_flight = 256u << 20;
  /// Hellos accepted from the bus and not yet through (device handled, record stored).
  uint32_t max_hellos_in_flight = 2000;
  /// PBKDF2 iterations for new passwords.
  uint32_t pbkdf2_iterations = 600000;
  /// Failed logins before an account locks, and for how long.
  int max_login_failures = 5;
  uint32_t lockout_minutes = 15;
  /// Idle time after which a browser session ends.
  uint32_t session_idle_minutes = 30;
  /// Failed logins from one source address (all accounts) that block it for
  /// lockout_minutes.
  int max_source_failures = 20;
  /// Failed logins for one account from all sources that lock it for lockout_minutes.
  int max_account_failures = 100;
  /// Password checks (login, confirmation) in flight at once; more get 429.
  int max_password_checks = 16;
  /// Bearer token lifetime when POST /tokens names none, and the longest allowed, days.
  uint32_t token_default_ttl_days = 30;
  uint32_t token_max_ttl_days = 365;
  /// HTTPS connections open at once, in total and from one IP address.
  uint32_t http_max_connections = 1000;
  uint32_t http_max_connections_per_source = 64;
  /// File descriptors kept free for the rest of parryd; HTTPS refuses beyond.
  uint32_t http_fd_reserve = 256;
  /// Seconds for a TLS handshake, and for a request (or the wait for the next one).
  uint32_t http_handshake_timeout_seconds = 10;
  uint32_t http_idle_timeout_seconds = 30;
  /// Actor scheduler threads (0: one per core).
  uint32_t workers = 0;
  /// How the actor threads find work: "sharing" (one queue, idle threads sleep on
  /// it) or "stealing" (a queue per thread, idle threads poll the others' queues).
  std::string scheduler = "sharing";
  /// trace, debug, info, warn, error.
  std::string log_level = "info";
  /// text (one line a message) or json (one JSON object a line, for the journal or
  /// a log shipper).
  std::string log_format = "text";
  /// Prometheus metrics over plain HTTP (GET /metrics): listen address (empty: no
  /// metrics listener) and port (0 picks a free one).
  std::string metrics_address = "127.0.0.1";
  uint16_t metrics_port = 9469;
  /// SIEM export of the audit trail (syslog over TLS, CEF): the receiver's host name
  /// or address (empty: no export), its port, the CA file that signed its
  /// certificate, and an optional client certificate and key.
  std::string siem_host;
  uint16_t siem_port = 6514;
  std::string siem_ca_file;
  std::string siem_cert_file;
  std::string siem_key_file;
  /// [actions] password_required: types that need the caller's password again
  /// (start_process always does).
  std::vector<std::string> password_required{"prevent_run", "quarantine", "delete_file",
                                             "terminate_process", "start_process"};
  /// [actions] start_process_allowlist: executables start_process may run (empty: any).
  std::vector<std::string> start_process_allowlist;
  /// [actions] default_ttl_seconds: how long a command may wait for the agent.
  uint32_t default_ttl_seconds = 86400;
  /// [actions.ttl_seconds]: the same, per action type.
  std::map<std::string, uint32_t> ttl_seconds;
  /// [actions] default_exec_deadline_seconds: how long an acknowledged command (or a
  /// cancel request) may wait for the agent's answer before the action fails.
  uint32_t default_exec_deadline_seconds = 3600;
  /// [actions.exec_deadline_seconds]: the same, per action type.
  std::map<std::string, uint32_t> exec_deadline_seconds;

  /// Empty when every value passes its key's check, else one line per bad key
  /// naming it, the value and what would be legal.
  std::string validate() const;
};

/// Where a key's effective value came from.
enum class config_source : uint8_t {
  defaults, ///< nothing set it
  file,     ///< the TOML file
  env,      ///< a PARRY_* environment variable
  flag,     ///< the command line
};

struct config_origin {
  config_source source = config_source::defaults;
  /// The file's path, the variable's name or the flag; empty for a default.
  std::string where;
};

/// "default", "file PATH", "env PARRY_X" or "flag --x".
std::string to_string(const config_origin& o);

/// One key as a reader sees it: for --help, --print-config and the documentation.
struct config_key_info {
  std::string key;          ///< TOML key, `section.key`
  std::string env;          ///< environment variable
  std::string flag;         ///< CLI11 option names ("--a,--b"), "" when there is none
  std::string type;         ///< integer, string, list of strings, table of integers
  std::string unit;         ///< ms, bytes, seconds, ... or ""
  std::string legal;        ///< the legal values, in words
  std::string doc;          ///< what it does, one line
  std::string default_toml; ///< the default as a TOML value
  std::string default_text; ///< the default as an environment variable or flag holds it
  bool secret = false;      ///< never printed: shown as <set> or <unset>
  /// A running parryd applies a new value on SIGHUP; the others need a restart.
  bool reloads = false;
  /// The default in words where it depends on the build (a path); "" otherwise. The
  /// reference table shows it instead of default_toml.
  std::string default_words;
};

/// Every key, in table order.
const std::vector<config_key_info>& config_keys();

/// The first name of a key's flag ("--bus-endpoint" of "--bus-endpoint,--bus").
std::string primary_flag(const config_key_info& k);

/// What each layer holds, before any of it is parsed.
struct config_inputs {
  /// TOML file; empty for none.
  std::string file;
  /// Looks up an environment variable, nullptr when unset. Empty: std::getenv.
  std::function<const char*(const char*)> getenv;
  /// Values from the command line, each as (TOML key, text as typed).
  std::vector<std::pair<std::string, std::string>> flags;
};

/// A configuration and where each of its values came from.
struct loaded_config {
  server_config cfg;
  /// By TOML key; every key is present.
  std::map<std::string, config_origin> origin;
};

/// Layers defaults, the file, the environment and the flags into `out`, checking every
/// value as it is read. Returns "" or one line per problem, each naming the key, its
/// source, the bad value (never a secret's) and the legal values.
std::string load_config(const config_inputs& in, loaded_config& out);

/// One `key = value  # source` line per key; secrets as <set> or <unset>.
std::string print_config(const loaded_config& c);

/// The reference table of every key with its default, in Markdown (docs/operations.md).
std::string config_reference_markdown();

/// The keys (not secrets) whose values differ between `now` and `next` and that only
/// a restart applies, in table order.
std::vector<std::string> keys_needing_restart(const server_config& now,
                                              const server_config& next);

/// What a reload (SIGHUP) applies to a server running with `running`: `next`, with
/// every key that only a restart applies kept at its running value. `restart`
/// receives those keys whose value differs (keys_needing_restart).
server_config reloaded_config(const server_config& running, const server_config& next,
                              std::vector<std::string>& restart);

/// Agent connections the bus admits at once (bus_max_connections), or, when that
/// is 0, the open-files limit `fd_limit` minus bus_fd_reserve; a limit smaller than
/// twice the reserve gives half the limit, so the rest of the server keeps half.
std::size_t bus_connection_cap(const server_config& cfg, std::size_t fd_limit);

/// A TOML file of every key: each with its meaning, legal values and default as
/// comments; keys set by the file, the environment or a flag are written out with
/// their value, all others stay commented out (secrets are never written). The
/// packaged /etc/parry/parryd.toml is made with it.
std::string config_template_toml(const loaded_config& c);

} // namespace parry
