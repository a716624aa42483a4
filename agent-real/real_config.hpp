#pragma once

// The real agent's configuration: one TOML file (`parry-agent --real --config F`),
// checked whole before anything runs; an error names the key and what is legal.

#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent-real/nft_isolation.hpp"

namespace parry::real {

/// A configuration that cannot be used; the text names the key.
struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct real_config {
  std::string device_id; ///< Default: the host name.
  std::string server = "tcp://127.0.0.1:7400";
  std::string enroll_server = "tcp://127.0.0.1:7401";
  std::string state_dir = "/var/lib/parry-agent"; ///< Keys, journal, quarantine.
  /// Directories file actions may touch (quarantine, restore, delete).
  std::vector<std::string> file_roots;
  /// Mount points guarded with fanotify: prevent run and IOC detection happen there
  /// only. Empty: prevent_run fails and nothing is detected.
  std::vector<std::string> guard_mounts;
  std::set<std::string> iocs;         ///< SHA-256 (lower-case hex) of files to report.
  uint32_t start_timeout_ms = 10'000; ///< start_process: killed after this.
  uint32_t heartbeat_ms = 0;          ///< 0: what the server's welcome says.
  uint32_t lease_seconds = 0;         ///< Isolation released after this; 0: never.
  bool dead_man = true; ///< Release isolation when the server stays unreachable...
  uint32_t dead_man_seconds = 900; ///< ...this long after isolation (or contact).
  std::vector<isolation_exception> exceptions;
};

/// Reads and checks `path`. Throws config_error.
real_config load_config(const std::string& path);

/// The address and port of a `tcp://ADDR:PORT` endpoint (ADDR an IPv4 literal or an
/// IPv6 literal in brackets). Throws config_error naming `key`.
std::pair<std::string, uint16_t> endpoint_address(const std::string& endpoint,
                                                  const char* key);

} // namespace parry::real
