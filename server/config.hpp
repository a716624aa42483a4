#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace parry {

/// Everything parryd can be told. Sources, each overriding the one before:
/// defaults, the TOML file (--config), PARRY_* environment variables, the command line.
struct server_config {
  /// Where the database, TLS files and logs live.
  std::string data_dir = "./parry-data";
  /// ROUTER endpoint the agents connect to.
  std::string bus_endpoint = "tcp://127.0.0.1:7400";
  /// HTTPS listen address and port (0 picks a free port).
  std::string http_address = "127.0.0.1";
  uint16_t http_port = 8443;
  /// First administrator's password (used once, when the store has no admin).
  std::string admin_password;
  /// Agents send a heartbeat this often...
  uint32_t heartbeat_interval_ms = 5000;
  /// ...and count as offline after this many are missed.
  int missed_heartbeats = 3;
  /// Largest accepted bus frame, in bytes.
  uint32_t max_frame_bytes = 1 << 20;
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
  /// trace, debug, info, warn, error.
  std::string log_level = "info";
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

  /// Empty when valid, else which key is wrong and what would be legal.
  std::string validate() const;
};

/// Reads `path` (TOML) into `cfg`; an unknown key or a value of the wrong type is
/// an error naming the key. Returns an empty string on success.
std::string load_toml(const std::string& path, server_config& cfg);

/// Applies PARRY_* variables (PARRY_DATA_DIR, PARRY_BUS_ENDPOINT, PARRY_HTTP_ADDRESS,
/// PARRY_HTTP_PORT, PARRY_ADMIN_PASSWORD, PARRY_LOG_LEVEL). Returns an error or "".
std::string load_env(server_config& cfg);

} // namespace parry
