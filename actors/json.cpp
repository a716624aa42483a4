#include "actors/json.hpp"

#include <nlohmann/json.hpp>

#include "actors/incident.hpp"
#include "common/time.hpp"

namespace parry {

using nlohmann::json;

json to_json(const device_record& x) {
  return json{{"device_id", x.device_id},
              {"hostname", x.hostname},
              {"os", x.os},
              {"agent_version", x.agent_version},
              {"addresses", x.addresses},
              {"online", x.online},
              {"isolated", x.isolated},
              {"first_seen", format_time(x.first_seen)},
              {"last_seen", format_time(x.last_seen)}};
}

json to_json(const transition& x) {
  return json{{"state", to_string(x.state)},
              {"time", format_time(x.time)},
              {"time_us", x.time},
              {"reason", x.reason}};
}

json to_json(const action_record& x) {
  json target{{"kind", to_string(x.target_kind)}};
  if (!x.target_event_id.empty()) target["event_id"] = x.target_event_id;
  json out{{"action_id", x.action_id},
           {"type", to_string(x.type)},
           {"device_id", x.device_id},
           {"incident_id", x.incident_id},
           {"target", std::move(target)},
           {"params", x.params},
           {"state", to_string(x.state)},
           {"final", is_final(x.state)},
           {"requested_by", x.requested_by},
           {"comment", x.comment},
           {"created_at", format_time(x.created_at)},
           {"updated_at", format_time(x.updated_at)},
           {"created_at_us", x.created_at},
           {"updated_at_us", x.updated_at},
           {"expires_at", format_time(x.expires_at)},
           {"password_confirmed", x.password_confirmed},
           {"reverses", x.reverses},
           {"reversed_by", x.reversed_by}};
  // start_process: the argv the agent runs, as a list (params carry argc + arg.N).
  if (x.params.count("argc")) out["argv"] = argv_of(x.params);
  if (is_final(x.state))
    out["result"] = json{{"ok", x.result_ok},
                         {"error", x.result_error},
                         {"effect", x.result_effect},
                         {"agent_us", x.result_agent_us}};
  return out;
}

namespace {

json event_json(const bus::activity_event& e, const std::string& key_id) {
  json out{{"id", e.id},
           {"type", e.type},
           {"time", format_time(e.time)},
           {"parent_id", e.parent_id},
           {"key", e.id == key_id},
           {"detail", e.detail}};
  if (!e.file.path.empty())
    out["file"] =
        json{{"path", e.file.path}, {"sha256", e.file.sha256}, {"size", e.file.size}};
  if (e.process.pid != 0 || !e.process.image.empty())
    out["process"] = json{{"pid", e.process.pid},
                          {"start_time", format_time(e.process.start_time)},
                          {"image", e.process.image},
                          {"sha256", e.process.sha256},
                          {"cmdline", e.process.cmdline},
                          {"user", e.process.user},
                          {"parent_pid", e.process.parent_pid}};
  return out;
}

} // namespace

json to_json(const incident_record& x, bool with_events) {
  const auto& r = x.report;
  json out{{"incident_id", x.incident_id},
           {"device_id", x.device_id},
           {"status", x.status},
           {"detection", json{{"name", r.det.name},
                              {"severity", r.det.severity},
                              {"engine", r.det.engine}}},
           {"key_event_id", r.key_event_id},
           {"event_count", bus::event_count(r)},
           {"created_at", format_time(x.created_at)}};
  if (with_events) {
    auto events = json::array();
    for (const auto& e : r.events)
      events.push_back(event_json(e, r.key_event_id));
    out["events"] = std::move(events);
  }
  return out;
}

json error_json(const char* code, const std::string& message) {
  return json{{"error", json{{"code", code}, {"message", message}}}};
}

} // namespace parry
