#pragma once

// Signed commands (issue 7): the canonical bytes a command is signed over, signing
// and verifying them with Ed25519, and the agent-side guard that admits a command
// only once, only for its own device and only before it expires.
//
// The encoding is documented byte for byte in docs/bus-protocol.md ("Command
// signatures"); a change to it is a new domain tag, never an edit of "parry-cmd-v1".

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <unordered_set>

#include "bus/messages.hpp"
#include "common/keys.hpp"

namespace parry::bus {

/// Domain-separation tag, the first field of every signed command encoding.
inline constexpr std::string_view command_signature_domain = "parry-cmd-v1";

/// What a command signature covers.
struct command_fields {
  std::string action_id;
  std::string device_id; ///< The device the command is for.
  std::string type;      ///< isolate, release_isolation, ... (`command::type`).
  std::map<std::string, std::string> params; ///< `command::params`.
  int64_t issued_at = 0;                     ///< Microseconds since the epoch.
  int64_t expires_at = 0; ///< Microseconds since the epoch; the guard needs > now.
  uint64_t seq = 0;       ///< Per-device command sequence number, from 1, increasing.
};

/// The fields of `c` as sent to `device_id` with sequence number `seq`.
command_fields fields_of(const command& c, std::string device_id, uint64_t seq);

/// The signed fields a command carries (its own device_id and seq).
command_fields fields_of(const command& c);

/// The signed fields of a cancel: type "cancel", no params.
command_fields fields_of(const cancel& c);

/// Puts device_id, seq and the signature (hex) into `c`.
void sign_into(command& c, const parry::signing_key& key, const std::string& device_id,
               uint64_t seq);
void sign_into(cancel& c, const parry::signing_key& key, const std::string& device_id,
               uint64_t seq);

/// The raw signature of hex text `sig`; "" when it is not 128 hex digits.
std::string signature_bytes(std::string_view sig_hex);

/// The canonical bytes signed for `f`:
///   str(domain) str(action_id) str(device_id) str(type)
///   u32(number of params) { str(key) str(value) } in ascending bytewise key order
///   i64(issued_at) i64(expires_at) u64(seq)
/// where str(x) = u32(byte length of x) followed by the bytes of x, and every
/// integer is big-endian (i64 two's complement). Every variable part is length
/// prefixed, so two different commands never encode the same. Throws
/// std::length_error for a string or map above 2^32 - 1 bytes or entries.
std::string encode_for_signature(const command_fields& f);

/// Ed25519 signature (64 bytes) of encode_for_signature(f).
std::string sign_command(const parry::signing_key& key, const command_fields& f);

/// True only if `signature` is `public_key`'s (32 raw bytes) signature of `f`. Any
/// malformed input is false; never throws.
bool verify_command(std::string_view public_key, const command_fields& f,
                    std::string_view signature) noexcept;

/// Why command_guard refused a command, in the order the guard checks.
enum class command_refusal {
  bad_signature,   ///< Not signed by the pinned server key (or malformed signature).
  wrong_device,    ///< Signed, but for another device_id.
  expired,         ///< now >= expires_at (an expires_at of 0 counts as expired).
  action_replayed, ///< This action_id was already accepted (within the memory bound).
  seq_replayed,    ///< seq is not above the last accepted seq.
};
inline constexpr std::size_t command_refusal_count = 5;

/// Machine-stable name: "bad_signature", "wrong_device", "expired",
/// "action_replayed", "seq_replayed".
const char* to_string(command_refusal r);

/// The guard's answer for one command.
struct guard_verdict {
  bool accepted = false;
  command_refusal reason = command_refusal::bad_signature; ///< Only when refused.
  std::string text; ///< Human-readable reason (valid UTF-8, ≤ ~300 bytes); "" if ok.
  explicit operator bool() const { return accepted; }
};

/// The agent's gate for commands: holds the pinned server signing key and the
/// agent's own device_id. A command is accepted only if its signature is valid,
/// it is for this device, now < expires_at, its action_id was not accepted before,
/// and its seq is above every seq accepted before; accepting records seq and
/// action_id. A cancel (type "cancel") is checked the same way except for the
/// repeated action_id: it names the command it withdraws and may be asked again (its
/// seq still stops a replay). A refusal changes nothing but its counter.
///
/// Memory is bounded: the last `remembered_actions` accepted action_ids are kept
/// (oldest forgotten first, counted in forgotten()). A forgotten id cannot come
/// back unnoticed as the same signed command, because its seq is at most the last
/// accepted seq; only a freshly signed command (new seq) could reuse an id older
/// than the window, which the agent's journal (executed at most once per
/// action_id) still catches.
class command_guard {
public:
  static constexpr std::size_t default_remembered_actions = 4096;

  /// `server_public_key`: the pinned Ed25519 key, 32 raw bytes. `last_seq`: the
  /// highest seq accepted before (from the agent's journal; 0 for a fresh agent).
  command_guard(std::string server_public_key, std::string device_id,
                uint64_t last_seq = 0,
                std::size_t remembered_actions = default_remembered_actions);

  /// Decides on one command received at `now_us` (µs since the epoch).
  guard_verdict check(const command_fields& f, std::string_view signature,
                      int64_t now_us);

  /// Highest seq accepted so far.
  uint64_t last_seq() const { return last_seq_; }
  /// Number of action_ids currently remembered (≤ the bound).
  std::size_t remembered() const { return order_.size(); }
  /// Action ids dropped from memory to keep the bound.
  uint64_t forgotten() const { return forgotten_; }
  /// Commands refused for `r` so far.
  uint64_t refused(command_refusal r) const {
    return refused_[static_cast<std::size_t>(r)];
  }

private:
  guard_verdict refuse(command_refusal r, std::string text);

  std::string server_key_;
  std::string device_id_;
  uint64_t last_seq_;
  std::size_t max_remembered_;
  std::deque<std::string> order_;
  std::unordered_set<std::string> seen_;
  uint64_t forgotten_ = 0;
  std::array<uint64_t, command_refusal_count> refused_{};
};

} // namespace parry::bus
