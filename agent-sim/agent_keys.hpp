#pragma once

// The agent's bus identity, kept in its state directory: one CURVE key pair per
// device it speaks for, and the server keys it pinned when it enrolled. One file,
// `<state_dir>/agent-keys`, written atomically with mode 0600 (common/keys.hpp):
//
//   server <server CURVE public key, Z85> <server signing public key, 64 hex>
//   device <device_id> <device CURVE secret key, Z85>      (one line per device)

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "bus/curve_keys.hpp"

namespace parry::sim {

/// What an agent pinned and holds.
struct agent_keys {
  std::string server_key_z85;  ///< "" until the first enrollment.
  std::string signing_key_hex; ///< 64 hex digits; "" until the first enrollment.
  std::map<std::string, bus::curve_key_pair> devices;
};

/// File name inside the state directory.
inline constexpr const char* agent_keys_file = "agent-keys";

/// Loads `<state_dir>/agent-keys`; empty keys when the file does not exist. Throws
/// std::runtime_error for a file that is unsafe (parry::key_error's refusals) or
/// malformed.
agent_keys load_agent_keys(const std::string& state_dir);

/// Writes `<state_dir>/agent-keys` (creating the directory with mode 0700).
void save_agent_keys(const std::string& state_dir, const agent_keys& keys);

/// Where and how to enroll.
struct enrollment {
  std::string token;    ///< Enrollment token text ("" : none given).
  std::string endpoint; ///< The server's enrollment endpoint.
  std::size_t parallel = 32;
  std::chrono::milliseconds timeout{15000};
};

/// Makes sure every id in `ids` has an enrolled key: ids without one get a fresh
/// key pair enrolled with `how.token`, and the server keys from the answer are
/// pinned (they must match what was pinned before). Saves what succeeded to
/// `state_dir` even when some failed. Throws std::runtime_error naming the first
/// failures, or when keys are missing and no token was given.
void enroll_missing(agent_keys& keys, const std::vector<std::string>& ids,
                    const enrollment& how, const std::string& state_dir);

} // namespace parry::sim
