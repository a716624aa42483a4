#pragma once

// Encoding and bounded decoding of bus frames. Every decode checks the frame size
// first and hands msgpack explicit limits on nesting depth and container and string
// sizes, so a hostile frame costs at most a bounded amount of memory and time.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "bus/messages.hpp"

namespace parry::bus {

/// Bounds applied to every decoded frame.
struct decode_limits {
  std::size_t max_frame = 1 << 20; ///< Bytes in one frame.
  std::size_t max_depth = 8;       ///< Nesting of maps and arrays.
  std::size_t max_array = 20000;   ///< Elements in one array.
  std::size_t max_map = 256;       ///< Pairs in one map.
  std::size_t max_str = 64 * 1024; ///< Bytes in one string.
  std::size_t max_bin = 64 * 1024; ///< Bytes in one binary blob.
};

/// Serialises any bus message into one frame.
template <class T> std::string encode(const T& x) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, x);
  return std::string(buf.data(), buf.size());
}

/// Parses one frame into a msgpack object tree within `lim`. On failure returns
/// nothing and sets `why` to a short reason fit for a log line or counter.
std::optional<msgpack::object_handle>
parse_frame(std::string_view frame, const decode_limits& lim, std::string& why);

/// Decodes one frame into `T` (a struct with PARRY_MSGPACK_MAP). Missing keys
/// keep their defaults, unknown keys are ignored, a value of the wrong kind fails.
/// `exact` (when given) tells whether every map in the frame held only known keys,
/// each once: only then do the frame's bytes say exactly what the struct says.
template <class T>
std::optional<T> decode(std::string_view frame, const decode_limits& lim,
                        std::string& why, bool* exact = nullptr) {
  auto oh = parse_frame(frame, lim, why);
  if (!oh) return std::nullopt;
  if (oh->get().type != msgpack::type::MAP) {
    why = "not a map";
    return std::nullopt;
  }
  try {
    T out;
    detail::met_extra_keys = false;
    oh->get().convert(out);
    if (exact != nullptr) *exact = !detail::met_extra_keys;
    return out;
  } catch (const std::exception&) {
    why = "field of wrong type";
    return std::nullopt;
  }
}

/// Decodes and checks a header: supported version, known-looking type, and (unless
/// `device_required` is false: integrators) a valid device id.
std::optional<header> decode_header(std::string_view frame, const decode_limits& lim,
                                    std::string& why, bool device_required = true);

/// Limits on identifiers carried in headers and bodies.
inline constexpr std::size_t max_id_length = 128;

/// True when `id` is 1..max_id_length characters of [A-Za-z0-9._:-].
bool valid_id(std::string_view id);

} // namespace parry::bus
