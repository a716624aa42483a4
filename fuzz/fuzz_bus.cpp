// libFuzzer harness: the bus edge. Every input is one frame as it arrives from a
// peer; it is decoded with the server's limits as a header and as every message
// body (agents', enrollment's and integrators'). What decodes must survive a round trip:
// encoding it again and decoding that gives the same bytes, so the codec neither loses
// nor invents fields. A decoded incident then goes through the server's own check
// (validate_report, the gateway calls it), and what that accepts must keep the promises
// the actors rely on.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "bus/codec.hpp"
#include "bus/enroll.hpp"
#include "bus/integrator.hpp"
#include "bus/validate.hpp"

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

// What the actors may rely on once validate_report accepted a report.
void check_accepted(const incident_report& r) {
  if (!valid_id(r.report_id) || r.events.empty() || r.det.name.empty()) std::abort();
  std::set<std::string> ids;
  for (const auto& e : r.events) {
    if (!valid_id(e.id) || e.type.empty() || e.type.size() > 64) std::abort();
    if (!ids.insert(e.id).second) std::abort();
  }
  for (const auto& e : r.events)
    if (!e.parent_id.empty() && ids.count(e.parent_id) == 0) std::abort();
  if (ids.count(r.key_event_id) == 0) std::abort();
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
  // The enrollment endpoint (anyone may connect) and the integrators' requests.
  round_trip<enroll_request>(frame);
  round_trip<enroll_result>(frame);
  round_trip<api_request>(frame);
  round_trip<api_reply>(frame);
  if (auto r = decode<incident_report>(frame, limits, why))
    if (parry::validate_report(*r).empty()) check_accepted(*r);
  return 0;
}
