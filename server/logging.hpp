#pragma once

// parryd's log lines. Every line that concerns an action, a device, an incident or a
// user starts with tags naming them ("[action=a1 device=d7] cannot store ..."): in
// text format they stay in the line, in JSON format they become fields of their own
// ({"action":"a1","device":"d7","msg":"cannot store ..."}), so a log shipper can
// filter on them without parsing prose.

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace spdlog {
class formatter;
}

namespace parry {

/// The tags of a line: "[action=ID device=ID] ", or "" when every value is empty.
/// Names are action, device, incident, user. A value is cut to 128 bytes and any
/// byte that would end it (space, ']', '=', control) becomes '_': a hostile name
/// cannot forge a tag or a field.
std::string
log_tags(std::initializer_list<std::pair<const char*, std::string_view>> tags);

/// The tags of a line about an action: its id, device, incident and who asked for it.
template <class Record> std::string action_log_tags(const Record& r) {
  return log_tags({{"action", r.action_id},
                   {"device", r.device_id},
                   {"incident", r.incident_id},
                   {"user", r.requested_by}});
}

/// Formats each line as one JSON object: time (RFC 3339, UTC, microseconds), level,
/// the tags as fields, and msg. Text that is not UTF-8 is replaced, never dropped.
std::unique_ptr<spdlog::formatter> json_log_formatter();

/// Sets the default logger's level ("info", ...) and format ("text" or "json").
void configure_logging(const std::string& level, const std::string& format);

} // namespace parry
