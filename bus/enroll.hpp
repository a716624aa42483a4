#pragma once

// Enrollment (docs/bus-protocol.md, "Enrollment"): how an agent with a token gets its
// CURVE key admitted for its device_id and learns the server's keys to pin.
//
// The token an administrator hands out carries a secret and the server's CURVE public
// key. The agent connects to the enrollment endpoint with its own key pair as a CURVE
// client pinned to that server key (so the token only ever goes to the real server,
// encrypted), with its device_id as routing id, and sends one `enroll` message. The
// server admits the key of that very connection (the ZAP User-Id names it) and
// answers `enrolled` with its CURVE and signing public keys.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "bus/curve_keys.hpp"
#include "bus/map_decode.hpp"

namespace parry::bus {

/// Message types of the enrollment endpoint (`header::type`).
namespace type {
inline constexpr const char* enroll = "enroll";
inline constexpr const char* enrolled = "enrolled";
} // namespace type

/// Agent -> server on the enrollment endpoint.
struct enroll_request {
  std::string token;      ///< The enrollment token as given (enrollment_token text).
  std::string public_key; ///< The agent's CURVE public key, Z85 (40 characters).
  PARRY_MSGPACK_MAP(token, public_key)
};

/// Server -> agent: the answer to `enroll`.
struct enroll_result {
  bool ok = false;
  /// Machine-stable reason when !ok: "bad_token", "token_expired", "already_enrolled",
  /// "unavailable".
  std::string reason;
  std::string error;       ///< Human-readable, when !ok.
  std::string server_key;  ///< Server CURVE public key, Z85 (pin it), when ok.
  std::string signing_key; ///< Server Ed25519 public key, 64 hex digits, when ok.
  PARRY_MSGPACK_MAP(ok, reason, error, server_key, signing_key)
};

/// An enrollment token: "pe1_" + 64 hex digits of secret + "_" + 64 hex digits of the
/// server's CURVE public key (133 characters, safe in any shell).
struct enrollment_token {
  std::string secret_hex;     ///< 64 lower-case hex digits (32 random bytes).
  std::string server_key_z85; ///< The server CURVE public key the agent pins.
};

/// A new token for the server whose CURVE public key is `server_key_z85`.
enrollment_token make_enrollment_token(const std::string& server_key_z85);

/// The token's text (see enrollment_token).
std::string format_token(const enrollment_token& t);

/// Parses token text; nothing when it is not a well-formed token.
std::optional<enrollment_token> parse_token(std::string_view text);

/// What the server stores and looks tokens up by: SHA-256 of the secret, in hex.
std::string token_hash(const enrollment_token& t);

/// One device to enroll: its id (the routing id) and its key pair.
struct enroll_item {
  std::string device_id;
  curve_key_pair keys;
};

/// How enrolling one device ended.
struct enroll_outcome {
  std::string device_id;
  bool ok = false;
  std::string reason; ///< enroll_result::reason, or "timeout" / "rejected".
  std::string error;
  std::string server_key;  ///< Z85, when ok.
  std::string signing_key; ///< 64 hex digits, when ok.
};

/// Enrolls each item at `endpoint` (tcp:// or ipc://) with `token`, at most
/// `parallel` connections at a time, each given `timeout` for its answer. A server
/// that does not hold the token's key never completes the handshake: that item ends
/// "timeout". Outcomes are in the order of `items`. Blocks; opens its own ZeroMQ
/// context. Throws std::runtime_error when sockets cannot be made.
std::vector<enroll_outcome> enroll_devices(const std::string& endpoint,
                                           const enrollment_token& token,
                                           const std::vector<enroll_item>& items,
                                           std::size_t parallel,
                                           std::chrono::milliseconds timeout);

} // namespace parry::bus
