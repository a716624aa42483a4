#include "bus/validate.hpp"

#include <set>

#include "bus/codec.hpp"
#include "common/utf8.hpp"

namespace parry::bus {

const char* to_string(refusal_kind k) {
  switch (k) {
  case refusal_kind::malformed:
    return "malformed";
  case refusal_kind::oversized:
    return "oversized";
  case refusal_kind::spoofed:
    return "spoofed";
  case refusal_kind::invalid:
    return "invalid";
  case refusal_kind::device_cap:
    return "device_cap";
  case refusal_kind::rate:
    return "rate";
  case refusal_kind::busy:
    return "busy";
  }
  return "unknown";
}

namespace {

std::string field(const char* name, const std::string& s, std::size_t max,
                  const char* limit_name, std::string* limit, uint64_t* value) {
  if (!valid_utf8(s)) return std::string{name} + " is not valid UTF-8";
  if (s.size() > max) {
    if (limit) *limit = limit_name;
    if (value) *value = max;
    return std::string{name} + " is over " + std::to_string(max) + " bytes";
  }
  return {};
}

} // namespace

std::string check_hello(const hello& h, const hello_limits& lim, std::string* limit,
                        uint64_t* value) {
  auto why =
      field("hostname", h.hostname, lim.max_hostname, "max_hostname_bytes", limit, value);
  if (why.empty()) why = field("os", h.os, lim.max_os, "max_os_bytes", limit, value);
  if (why.empty())
    why = field("agent_version", h.agent_version, lim.max_agent_version,
                "max_agent_version_bytes", limit, value);
  if (!why.empty()) return why;
  if (h.addresses.size() > lim.max_addresses) {
    if (limit) *limit = "max_addresses";
    if (value) *value = lim.max_addresses;
    return "more than " + std::to_string(lim.max_addresses) + " addresses";
  }
  for (const auto& a : h.addresses)
    if (why = field("address", a, lim.max_address, "max_address_bytes", limit, value);
        !why.empty())
      return why;
  return {};
}

std::string check_utf8(const incident_report& r) {
  auto bad = [](const std::string& s) { return !valid_utf8(s); };
  if (bad(r.report_id)) return "report_id is not valid UTF-8";
  if (bad(r.key_event_id)) return "key_event_id is not valid UTF-8";
  if (bad(r.det.name) || bad(r.det.severity) || bad(r.det.engine))
    return "detection is not valid UTF-8";
  for (const auto& e : r.events) {
    if (bad(e.id) || bad(e.type) || bad(e.parent_id) || bad(e.detail))
      return "event field is not valid UTF-8";
    if (bad(e.file.path) || bad(e.file.sha256)) return "event file is not valid UTF-8";
    const auto& p = e.process;
    if (bad(p.image) || bad(p.sha256) || bad(p.cmdline) || bad(p.user))
      return "event process is not valid UTF-8";
  }
  return {};
}

std::string check_utf8(const action_result& r) {
  if (!valid_utf8(r.action_id)) return "action_id is not valid UTF-8";
  if (!valid_utf8(r.error)) return "error is not valid UTF-8";
  for (const auto& [k, v] : r.effect)
    if (!valid_utf8(k) || !valid_utf8(v)) return "effect is not valid UTF-8";
  return {};
}

} // namespace parry::bus

namespace parry {

std::string validate_report(const bus::incident_report& r) {
  if (!bus::valid_id(r.report_id)) return "invalid report_id";
  if (r.events.empty()) return "incident has no events";
  if (r.det.name.empty()) return "detection has no name";
  std::set<std::string> ids;
  for (const auto& e : r.events) {
    if (!bus::valid_id(e.id)) return "invalid event id";
    if (e.type.empty() || e.type.size() > 64) return "invalid event type";
    if (!ids.insert(e.id).second) return "duplicate event id " + e.id;
  }
  for (const auto& e : r.events)
    if (!e.parent_id.empty() && ids.count(e.parent_id) == 0)
      return "event " + e.id + " has unknown parent " + e.parent_id;
  if (ids.count(r.key_event_id) == 0)
    return "key event " + r.key_event_id + " is not in the chain";
  return {};
}

} // namespace parry
