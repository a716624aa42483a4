// parryctl incidents, incident and available: incidents as a table, one incident
// with its chain, and which actions apply to which of its targets.

#include "ctl/cli.hpp"

#include <iostream>
#include <string>
#include <vector>

namespace parry::ctl {

namespace {

std::string detection_text(const json& incident) {
  const auto& det = sub(incident, "detection");
  std::string name = str(det, "name");
  std::string extra = str(det, "severity");
  if (!str(det, "engine").empty())
    extra += (extra.empty() ? "" : ", ") + str(det, "engine");
  if (name.empty()) name = "-";
  return extra.empty() ? name : name + " (" + extra + ")";
}

int cmd_incidents(session& s, const std::string& device, int limit) {
  auto q = parry::ctl::query_string(
      {{"device_id", device}, {"limit", limit > 0 ? std::to_string(limit) : ""}});
  auto r = s.call("GET", "/api/v1/incidents" + q);
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  std::vector<std::vector<std::string>> rows;
  for (const auto& i : sub(r.body, "incidents"))
    rows.push_back({cell(i, "incident_id"), cell(i, "device_id"), cell(i, "status"),
                    cell(sub(i, "detection"), "severity"),
                    cell(sub(i, "detection"), "name"), cell(i, "event_count"),
                    cell(i, "created_at")});
  if (rows.empty())
    std::cout << "no incidents\n";
  else
    std::cout << parry::ctl::format_table(
        {"INCIDENT", "DEVICE", "STATUS", "SEVERITY", "DETECTION", "EVENTS", "CREATED"},
        rows);
  return 0;
}

int cmd_incident(session& s, const std::string& id) {
  auto r = s.call("GET", id_path("incidents", id));
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  const auto& i = sub(r.body, "incident");
  std::cout << parry::ctl::format_fields({{"incident", cell(i, "incident_id")},
                                          {"device", cell(i, "device_id")},
                                          {"status", cell(i, "status")},
                                          {"detection", detection_text(i)},
                                          {"key event", cell(i, "key_event_id")},
                                          {"events", cell(i, "event_count")},
                                          {"created", cell(i, "created_at")}})
            << "\nchain:\n"
            << parry::ctl::render_chain(i);
  return 0;
}

int cmd_available(session& s, const std::string& incident_id) {
  auto r = s.call("GET", available_path(incident_id));
  if (s.opts().json) return print_json(r), 0;
  auto incident = s.call("GET", id_path("incidents", incident_id));
  std::cout << parry::ctl::render_available_actions(r.body,
                                                    sub(incident.body, "incident"));
  return 0;
}

} // namespace

command_group add_incident_commands(CLI::App& app) {
  struct options {
    std::string id;
    std::string device;
    int limit = 0;
  };
  auto o = std::make_shared<options>();
  auto* incidents = app.add_subcommand("incidents", "list incidents, newest first");
  incidents->add_option("--device", o->device, "only this device");
  incidents->add_option("--limit", o->limit, "at most this many")->check(positive);
  auto* incident = app.add_subcommand("incident", "show an incident and its chain");
  incident->add_option("id", o->id, "incident id")->required();
  auto* available = app.add_subcommand(
      "available", "show which actions apply to which targets of an incident");
  available->alias("actions-for");
  available->add_option("--incident", o->id, "incident id")->required();
  return [=](session& s) -> std::optional<int> {
    if (incidents->parsed()) return cmd_incidents(s, o->device, o->limit);
    if (incident->parsed()) return cmd_incident(s, o->id);
    if (available->parsed()) return cmd_available(s, o->id);
    return std::nullopt;
  };
}

} // namespace parry::ctl
