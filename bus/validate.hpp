#pragma once

// Checks on decoded bus bodies that the codec's structural limits cannot express:
// every string is well-formed UTF-8, and the fields of `hello` have bounds of their
// own (they are stored and listed for every device). No CAF, no sockets.

#include <cstddef>
#include <cstdint>
#include <string>

#include "bus/messages.hpp"

namespace parry::bus {

/// Why the gateway refused an inbound message; one counter per kind.
enum class refusal_kind : uint8_t {
  malformed,  ///< Not [header][body], not msgpack, bad header.
  oversized,  ///< A frame over max_frame_bytes.
  spoofed,    ///< Header names another device than the connection's routing id.
  invalid,    ///< Body does not decode or fails validation (UTF-8, bounds, ids).
  device_cap, ///< A new device beyond max_devices.
  rate,       ///< Incidents over the per-device cap per minute.
  busy,       ///< Incidents over the server-wide cap per second.
};

/// Number of refusal kinds (for counter arrays).
inline constexpr std::size_t refusal_kinds = 7;

/// Stable name of a kind, used as counter key and in logs.
const char* to_string(refusal_kind k);

/// A refusal, with what the agent is told in its `rejected` message.
struct refusal {
  refusal_kind kind = refusal_kind::invalid;
  std::string reason;          ///< Short, for logs and `rejected.reason`.
  std::string limit;           ///< Name of the limit hit, "" when none.
  uint64_t value = 0;          ///< The limit's value.
  uint32_t retry_after_ms = 0; ///< > 0 when sending again later may succeed.
};

/// Bounds on the fields of `hello`, in bytes and entries.
struct hello_limits {
  std::size_t max_hostname = 255;
  std::size_t max_os = 255;
  std::size_t max_agent_version = 255;
  std::size_t max_addresses = 64;
  std::size_t max_address = 64;
};

/// "" when `h` is acceptable, else a reason naming the field. Sets `limit`/`value`
/// when a bound was broken.
std::string check_hello(const hello& h, const hello_limits& lim,
                        std::string* limit = nullptr, uint64_t* value = nullptr);

/// "" when every string in `r` is well-formed UTF-8, else a reason naming the field.
std::string check_utf8(const incident_report& r);

/// "" when every string in `r` is well-formed UTF-8, else a reason naming the field.
std::string check_utf8(const action_result& r);

} // namespace parry::bus

namespace parry {

/// Checks an incident report before it reaches the actors (the gateway calls it):
/// ids, key event, parent links. Returns an empty string when it is acceptable, else
/// why not.
std::string validate_report(const bus::incident_report& r);

} // namespace parry
