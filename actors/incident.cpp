#include "actors/incident.hpp"

#include <algorithm>
#include <stdexcept>

#include <caf/after.hpp>
#include <caf/expected.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/error.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"

namespace parry {

namespace {

/// The file an action on `e` acts on: its file, or for a process start without a
/// file, the process's image.
std::pair<std::string, std::string> file_of(const bus::activity_event& e) {
  if (e.file.path.empty() &&
      event_type_from_string(e.type) == event_type::process_started)
    return {e.process.image, e.process.sha256};
  return {e.file.path, e.file.sha256};
}

caf::error bad(const std::string& why) {
  return make_error(ec::bad_request, why);
}

} // namespace

void normalize_hashes(bus::incident_report& r) {
  for (auto& e : r.events) {
    e.file.sha256 = normalized_sha256(std::move(e.file.sha256));
    e.process.sha256 = normalized_sha256(std::move(e.process.sha256));
  }
}

std::string not_actionable(action_type t, const bus::activity_event& e) {
  switch (object_of(t)) {
  case action_object::device:
    return {};
  case action_object::file: {
    auto [path, sha] = file_of(e);
    if (path.empty()) return "the event names no file";
    if (auto why = path_problem(path); !why.empty())
      return "the file's path " + shown(path) + " cannot be acted on: " + why;
    if (checks_sha256(t) && !is_sha256(sha))
      return "the file's sha256 " + shown(sha) + " is not 64 hexadecimal digits";
    return {};
  }
  case action_object::process: {
    if (e.process.pid == 0) return "the event names no process";
    if (auto why = path_problem(e.process.image); !why.empty())
      return "the process's image " + shown(e.process.image) +
             " cannot be acted on: " + why;
    return {};
  }
  }
  return {};
}

std::vector<std::string> argv_of(const std::map<std::string, std::string>& params) {
  std::vector<std::string> out;
  auto n = params.find("argc");
  if (n == params.end()) return out;
  std::size_t argc = 0;
  try {
    argc = std::min<std::size_t>(std::stoul(n->second), max_arguments);
  } catch (const std::exception&) {
    return out;
  }
  for (std::size_t i = 0; i < argc; ++i) {
    auto a = params.find("arg." + std::to_string(i));
    out.push_back(a == params.end() ? std::string{} : a->second);
  }
  return out;
}

namespace {

caf::error put_argv(std::map<std::string, std::string>& out,
                    const std::vector<std::string>& argv) {
  if (auto why = arguments_problem(argv); !why.empty()) return bad(why);
  out["argc"] = std::to_string(argv.size());
  for (std::size_t i = 0; i < argv.size(); ++i)
    out["arg." + std::to_string(i)] = argv[i];
  return {};
}

caf::error split_into(std::map<std::string, std::string>& out, const std::string& text,
                      os_family os) {
  std::string why;
  auto argv = split_arguments(text, os, why);
  if (!argv) return bad(why);
  return put_argv(out, *argv);
}

} // namespace

caf::expected<std::map<std::string, std::string>>
start_process_params(const std::map<std::string, std::string>& params,
                     const std::optional<std::vector<std::string>>& argv,
                     const action_policy& policy, std::optional<os_family> os) {
  auto get = [&](const char* key) {
    auto i = params.find(key);
    return i == params.end() ? std::string{} : i->second;
  };
  for (const auto& [k, v] : params)
    if (k != "path" && k != "working_directory" && k != "arguments")
      return bad("unknown start_process parameter '" + k + "'");
  auto path = get("path");
  if (path.empty()) return bad("start_process needs 'path'");
  if (auto why = path_problem(path); !why.empty()) return bad("'path': " + why);
  auto cwd = get("working_directory");
  if (!cwd.empty())
    if (auto why = path_problem(cwd); !why.empty())
      return bad("'working_directory': " + why);
  auto args = get("arguments");
  if (argv && params.count("arguments"))
    return bad("give 'arguments' either as a list or as text, not both");
  if (args.size() > max_arguments_bytes)
    return bad("'arguments' is longer than " +
               std::to_string(max_arguments_bytes / 1024) + " KiB");
  if (!valid_utf8(args)) return bad("'arguments' is not valid UTF-8");
  for (unsigned char c : args)
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return bad("'arguments' contains control characters");
  if (!policy.start_process_allowlist.empty()) {
    bool allowed = false;
    for (const auto& a : policy.start_process_allowlist)
      allowed = allowed || a == path;
    if (!allowed) return bad("'" + path + "' is not on the start_process allow-list");
  }
  std::map<std::string, std::string> out{{"path", path}, {"working_directory", cwd}};
  if (argv) {
    if (auto err = put_argv(out, *argv)) return err;
    return out;
  }
  out["arguments"] = args;
  if (args.empty()) {
    out["argc"] = "0";
    return out;
  }
  // Check the syntax now (POSIX is the stricter: it refuses unbalanced quotes), split
  // for real once the device's OS is known.
  std::string why;
  if (!split_arguments(args, os.value_or(os_family::posix), why)) return bad(why);
  if (os)
    if (auto err = split_into(out, args, *os)) return err;
  return out;
}

bool needs_device_os(const action_record& a) {
  return a.type == action_type::start_process && a.params.count("arguments") &&
         !a.params.count("argc");
}

caf::error split_for_device(action_record& a, os_family os) {
  auto i = a.params.find("arguments");
  if (i == a.params.end()) return {};
  auto text = i->second;
  return split_into(a.params, text, os);
}

caf::expected<action_record> make_action(const incident_record& rec,
                                         const action_request& req,
                                         const action_policy& policy, int64_t now,
                                         std::optional<os_family> os) {
  auto type = req.type;
  std::string name = to_string(type);
  if (!is_requestable(type))
    return make_error(ec::not_applicable,
                      name + " undoes an earlier action: use POST /actions/{id}/reverse"
                             " on that action");
  const auto& chain = rec.report;
  std::string event_id;
  switch (req.target_kind) {
  case target_kind::detection:
    event_id = chain.key_event_id;
    break;
  case target_kind::event:
    event_id = req.event_id;
    break;
  }
  const bus::activity_event* event = nullptr;
  for (const auto& e : chain.events)
    if (e.id == event_id) event = &e;
  if (event == nullptr)
    return make_error(ec::not_found,
                      "incident " + rec.incident_id + " has no event " + shown(event_id));
  auto etype = event_type_from_string(event->type);
  if (!applies_to(type, etype))
    return make_error(ec::not_applicable,
                      name + " does not apply to an event of type " + shown(event->type));
  if (auto why = not_actionable(type, *event); !why.empty())
    return make_error(ec::not_applicable,
                      name + " cannot act on event " + shown(event_id) + ": " + why);
  action_record a;
  if (type == action_type::start_process) {
    std::optional<std::vector<std::string>> argv;
    if (req.argv_given) argv = req.argv;
    auto params = start_process_params(req.params, argv, policy, os);
    if (!params) return params.error();
    a.params = std::move(*params);
  } else if (!req.params.empty() || req.argv_given) {
    return bad(name + " takes no parameters");
  } else {
    switch (object_of(type)) {
    case action_object::device:
      break;
    case action_object::file: {
      auto [path, sha] = file_of(*event);
      a.params = {{"path", path}, {"sha256", normalized_sha256(sha)}};
      break;
    }
    case action_object::process:
      a.params = {{"pid", std::to_string(event->process.pid)},
                  {"start_time", std::to_string(event->process.start_time)},
                  {"image", event->process.image}};
      break;
    }
  }
  if (policy.needs_password(type) && !req.password_confirmed)
    return make_error(ec::unauthenticated, name + " needs your password");
  a.action_id = time_ordered_id("act-", now_us());
  a.type = req.type;
  a.device_id = rec.device_id;
  a.incident_id = rec.incident_id;
  a.target_kind = req.target_kind;
  a.target_event_id = event_id;
  a.requested_by = req.username;
  a.comment = req.comment;
  a.idempotency_key = req.idempotency_key;
  a.password_confirmed = req.password_confirmed;
  a.expires_at = now + policy.ttl_for(type);
  return a;
}

nlohmann::json available_actions(const incident_record& rec, bool device_isolated,
                                 const action_policy& policy,
                                 std::string_view device_os) {
  using nlohmann::json;
  auto device_actions = json::array();
  auto event_actions = json::array();
  auto password = json::array();
  for (action_type t : all_action_types) {
    if (policy.needs_password(t)) password.push_back(to_string(t));
    if (!is_requestable(t)) continue;
    if (acts_on_device(t)) {
      if (t != action_type::release_isolation || device_isolated)
        device_actions.push_back(to_string(t));
    }
  }
  auto target = [](const bus::activity_event& e, target_kind kind) {
    auto actions = json::array();
    auto refused = json::array();
    auto etype = event_type_from_string(e.type);
    for (action_type t : all_action_types) {
      if (!is_requestable(t) || acts_on_device(t) || !applies_to(t, etype)) continue;
      if (auto why = not_actionable(t, e); !why.empty())
        refused.push_back(json{{"type", to_string(t)}, {"reason", why}});
      else
        actions.push_back(to_string(t));
    }
    json out{{"kind", to_string(kind)},
             {"event_id", utf8_sanitized(e.id)},
             {"event_type", utf8_sanitized(e.type)},
             {"actions", std::move(actions)}};
    if (!refused.empty()) out["not_actionable"] = std::move(refused);
    return out;
  };
  auto targets = json::array();
  for (const auto& e : rec.report.events)
    if (e.id == rec.report.key_event_id)
      targets.push_back(target(e, target_kind::detection));
  for (const auto& e : rec.report.events)
    if (e.id != rec.report.key_event_id) targets.push_back(target(e, target_kind::event));
  return json{{"incident_id", rec.incident_id},
              {"device_id", rec.device_id},
              {"device_isolated", device_isolated},
              {"device_os_family", to_string(os_family_of(device_os))},
              {"device_actions", std::move(device_actions)},
              {"targets", std::move(targets)},
              {"password_required", std::move(password)}};
}

incident_actor::behavior_type incident(incident_stateful self, incident_record rec,
                                       shared_setting<action_policy> policy,
                                       caf::timespan idle) {
  self->state.rec = std::move(rec);
  self->state.policy = std::move(policy);
  return {
      [self](atom::reg, const action_request& req) -> caf::result<action_record> {
        auto a = make_action(self->state.rec, req, *self->state.policy.get(), now_us());
        if (!a) return a.error();
        return std::move(*a);
      },
      caf::after(idle) >> [self] { self->quit(); },
  };
}

} // namespace parry
