// libFuzzer harness: the bus edge. Every input is one frame as it arrives from a
// peer; it is decoded with the server's limits as a header and as every message
// body. What decodes must survive a round trip: encoding it again and decoding that
// gives the same bytes, so the codec neither loses nor invents fields.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "bus/codec.hpp"
#include "common/utf8.hpp"

namespace {

using namespace parry::bus;

const decode_limits limits{};

template <class T> void round_trip(std::string_view frame) {
  std::string why;
  auto x = decode<T>(frame, limits, why);
  if (!x) {
    if (why.empty()) std::abort(); // a refusal always says why
    return;
  }
  auto once = encode(*x);
  auto y = decode<T>(once, limits, why);
  if (!y) std::abort(); // what we encode we must be able to read back
  if (encode(*y) != once) std::abort();
}

// The bus-level checks the gateway applies to an incident before the actors see
// it (the CAF-free part of validate_report in actors/device.cpp).
void check_report(const incident_report& r) {
  std::set<std::string> ids;
  for (const auto& e : r.events) {
    (void)valid_id(e.id);
    ids.insert(e.id);
    (void)parry::valid_utf8(e.type);
    (void)parry::utf8_prefix(e.detail, 64);
  }
  for (const auto& e : r.events)
    (void)ids.count(e.parent_id);
  (void)parry::utf8_sanitized(r.det.name);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  std::string_view frame(reinterpret_cast<const char*>(data), size);
  std::string why;
  if (auto h = decode_header(frame, limits, why)) {
    if (!valid_id(h->device_id)) std::abort(); // decode_header promised this
    if (h->type.empty() || h->type.size() > 32) std::abort();
  }
  round_trip<header>(frame);
  round_trip<hello>(frame);
  round_trip<heartbeat>(frame);
  round_trip<incident_report>(frame);
  round_trip<action_ack>(frame);
  round_trip<action_result>(frame);
  round_trip<welcome>(frame);
  round_trip<command>(frame);
  round_trip<result_ack>(frame);
  if (auto r = decode<incident_report>(frame, limits, why)) check_report(*r);
  return 0;
}
