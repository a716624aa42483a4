#include "bus/codec.hpp"

namespace parry::bus {

std::optional<msgpack::object_handle>
parse_frame(std::string_view frame, const decode_limits& lim, std::string& why) {
  if (frame.empty()) {
    why = "empty frame";
    return std::nullopt;
  }
  if (frame.size() > lim.max_frame) {
    why = "frame too large";
    return std::nullopt;
  }
  msgpack::unpack_limit limit(lim.max_array, lim.max_map, lim.max_str, lim.max_bin,
                              /*ext=*/0, lim.max_depth);
  try {
    std::size_t offset = 0;
    auto oh =
        msgpack::unpack(frame.data(), frame.size(), offset, nullptr, nullptr, limit);
    if (offset != frame.size()) {
      why = "trailing bytes";
      return std::nullopt;
    }
    return oh;
  } catch (const msgpack::depth_size_overflow&) {
    why = "nesting too deep";
  } catch (const msgpack::size_overflow&) {
    why = "size limit exceeded";
  } catch (const std::exception&) {
    why = "malformed msgpack";
  }
  return std::nullopt;
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > max_id_length) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::optional<header> decode_header(std::string_view frame, const decode_limits& lim,
                                    std::string& why, bool device_required) {
  auto h = decode<header>(frame, lim, why);
  if (!h) return std::nullopt;
  if (h->v < 1 || h->v > protocol_version) {
    why = "unsupported protocol version";
    return std::nullopt;
  }
  if (h->type.empty() || h->type.size() > 32) {
    why = "missing message type";
    return std::nullopt;
  }
  if (device_required && !valid_id(h->device_id)) {
    why = "invalid device id";
    return std::nullopt;
  }
  return h;
}

} // namespace parry::bus
