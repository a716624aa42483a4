#include "actors/incident.hpp"

#include <algorithm>
#include <cctype>

#include <caf/after.hpp>
#include <caf/expected.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/error.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"

namespace parry {

namespace {

constexpr std::size_t max_path = 4096;
constexpr std::size_t max_args = 64;
constexpr std::size_t max_args_bytes = 32 * 1024;

// Types a person may request through POST /actions. allow_run and
// restore_from_quarantine exist only as reverses of the action they undo.
const char* const requestable[] = {
    "isolate",    "release_isolation", "start_process",    "prevent_run",
    "quarantine", "delete_file",       "terminate_process"};

bool has_control(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

/// Absolute (POSIX or Windows drive/UNC), no `..` component, no control characters.
bool absolute_clean_path(const std::string& p) {
  if (p.empty() || p.size() > max_path || has_control(p)) return false;
  bool posix = p[0] == '/';
  bool drive = p.size() >= 3 && std::isalpha(static_cast<unsigned char>(p[0])) &&
               p[1] == ':' && (p[2] == '\\' || p[2] == '/');
  bool unc = p.rfind("\\\\", 0) == 0;
  if (!posix && !drive && !unc) return false;
  std::size_t start = 0;
  while (start <= p.size()) {
    auto end = p.find_first_of("/\\", start);
    if (end == std::string::npos) end = p.size();
    if (p.compare(start, end - start, "..") == 0 && end - start == 2) return false;
    start = end + 1;
  }
  return true;
}

} // namespace

std::string object_of(const std::string& type) {
  if (type == "isolate" || type == "release_isolation" || type == "start_process")
    return "device";
  if (type == "prevent_run" || type == "quarantine" || type == "delete_file" ||
      type == "allow_run" || type == "restore_from_quarantine")
    return "file";
  if (type == "terminate_process") return "process";
  return {};
}

std::string reverse_of(const std::string& type) {
  if (type == "isolate") return "release_isolation";
  if (type == "prevent_run") return "allow_run";
  if (type == "quarantine") return "restore_from_quarantine";
  return {};
}

bool applies_to(const std::string& type, const std::string& event_type) {
  auto object = object_of(type);
  if (object == "device") return true;
  if (object == "file")
    return event_type == "file_created" || event_type == "process_started";
  if (object == "process") return event_type == "process_started";
  return false;
}

caf::expected<std::vector<std::string>> split_arguments(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quote == '\'') {
      if (c == '\'')
        quote = 0;
      else
        word += c;
    } else if (quote == '"') {
      if (c == '"')
        quote = 0;
      else if (c == '\\' && i + 1 < text.size() &&
               (text[i + 1] == '"' || text[i + 1] == '\\'))
        word += text[++i];
      else
        word += c;
    } else if (c == ' ' || c == '\t') {
      if (in_word) out.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      in_word = true;
      if (c == '\'' || c == '"')
        quote = c;
      else if (c == '\\' && i + 1 < text.size())
        word += text[++i];
      else
        word += c;
    }
  }
  if (quote != 0) return make_error(ec::bad_request, "unbalanced quote in 'arguments'");
  if (in_word) out.push_back(std::move(word));
  return out;
}

caf::expected<std::map<std::string, std::string>>
start_process_params(const std::map<std::string, std::string>& params,
                     const action_policy& policy) {
  auto get = [&](const char* key) {
    auto i = params.find(key);
    return i == params.end() ? std::string{} : i->second;
  };
  for (const auto& [k, v] : params)
    if (k != "path" && k != "working_directory" && k != "arguments")
      return make_error(ec::bad_request, "unknown start_process parameter '" + k + "'");
  auto path = get("path");
  if (path.empty()) return make_error(ec::bad_request, "start_process needs 'path'");
  if (path.find('\0') != std::string::npos || !absolute_clean_path(path))
    return make_error(
        ec::bad_request,
        "'path' must be an absolute path without '..' or control characters");
  auto cwd = get("working_directory");
  if (!cwd.empty() && !absolute_clean_path(cwd))
    return make_error(ec::bad_request, "'working_directory' must be an absolute path");
  auto args = get("arguments");
  if (args.size() > max_args_bytes)
    return make_error(ec::bad_request, "'arguments' is longer than 32 KiB");
  if (has_control(args))
    return make_error(ec::bad_request, "'arguments' contains control characters");
  auto argv = split_arguments(args);
  if (!argv) return argv.error();
  if (argv->size() > max_args)
    return make_error(ec::bad_request, "more than 64 arguments");
  if (!policy.start_process_allowlist.empty()) {
    bool allowed = false;
    for (const auto& a : policy.start_process_allowlist)
      allowed = allowed || a == path;
    if (!allowed)
      return make_error(ec::bad_request,
                        "'" + path + "' is not on the start_process allow-list");
  }
  std::map<std::string, std::string> out{{"path", path},
                                         {"working_directory", cwd},
                                         {"arguments", args},
                                         {"argc", std::to_string(argv->size())}};
  for (std::size_t i = 0; i < argv->size(); ++i)
    out["arg." + std::to_string(i)] = (*argv)[i];
  return out;
}

caf::expected<action_record> make_action(const incident_record& rec,
                                         const action_request& req,
                                         const action_policy& policy, int64_t now) {
  auto object = object_of(req.type);
  if (object.empty())
    return make_error(ec::bad_request, "unknown action type '" + req.type + "'");
  if (std::find(std::begin(requestable), std::end(requestable), req.type) ==
      std::end(requestable))
    return make_error(ec::not_applicable,
                      req.type +
                          " undoes an earlier action: use POST /actions/{id}/reverse"
                          " on that action");
  const auto& chain = rec.report;
  std::string event_id;
  if (req.target_kind == "detection")
    event_id = chain.key_event_id;
  else if (req.target_kind == "event")
    event_id = req.event_id;
  else
    return make_error(ec::bad_request, "target.kind must be 'detection' or 'event'");
  const bus::activity_event* event = nullptr;
  for (const auto& e : chain.events)
    if (e.id == event_id) event = &e;
  if (event == nullptr)
    return make_error(ec::not_found,
                      "incident " + rec.incident_id + " has no event '" + event_id + "'");
  if (!applies_to(req.type, event->type))
    return make_error(ec::not_applicable,
                      req.type + " does not apply to an event of type " + event->type);
  action_record a;
  if (req.type == "start_process") {
    auto params = start_process_params(req.params, policy);
    if (!params) return params.error();
    a.params = std::move(*params);
  } else if (!req.params.empty()) {
    return make_error(ec::bad_request, req.type + " takes no parameters");
  } else if (object == "file") {
    // A process start acts on its image file when the event names no other file.
    auto path = event->file.path, sha = event->file.sha256;
    if (path.empty() && event->type == "process_started") {
      path = event->process.image;
      sha = event->process.sha256;
    }
    if (path.empty() || sha.empty())
      return make_error(ec::not_applicable, "event " + event_id + " names no file");
    a.params = {{"path", path}, {"sha256", sha}};
  } else if (object == "process") {
    if (event->process.pid == 0)
      return make_error(ec::not_applicable, "event " + event_id + " names no process");
    a.params = {{"pid", std::to_string(event->process.pid)},
                {"start_time", std::to_string(event->process.start_time)},
                {"image", event->process.image}};
  }
  if (policy.needs_password(req.type) && !req.password_confirmed)
    return make_error(ec::unauthenticated, req.type + " needs your password");
  a.action_id = "act-" + random_hex(12);
  a.type = req.type;
  a.device_id = rec.device_id;
  a.incident_id = rec.incident_id;
  a.target_kind = req.target_kind;
  a.target_event_id = event_id;
  a.requested_by = req.username;
  a.comment = req.comment;
  a.idempotency_key = req.idempotency_key;
  a.password_confirmed = req.password_confirmed;
  a.expires_at = now + policy.ttl_for(req.type);
  return a;
}

nlohmann::json available_actions(const incident_record& rec, bool device_isolated,
                                 const action_policy& policy) {
  using nlohmann::json;
  auto device_actions = json::array({"isolate", "start_process"});
  if (device_isolated) device_actions.push_back("release_isolation");
  auto for_event = [](const bus::activity_event& e) {
    auto out = json::array();
    for (const char* t :
         {"prevent_run", "quarantine", "delete_file", "terminate_process"})
      if (applies_to(t, e.type)) out.push_back(t);
    return out;
  };
  auto targets = json::array();
  for (const auto& e : rec.report.events)
    if (e.id == rec.report.key_event_id)
      targets.push_back(json{{"kind", "detection"},
                             {"event_id", e.id},
                             {"event_type", e.type},
                             {"actions", for_event(e)}});
  for (const auto& e : rec.report.events)
    if (e.id != rec.report.key_event_id)
      targets.push_back(json{{"kind", "event"},
                             {"event_id", e.id},
                             {"event_type", e.type},
                             {"actions", for_event(e)}});
  auto password = json::array();
  for (const char* t :
       {"isolate", "release_isolation", "start_process", "prevent_run", "allow_run",
        "quarantine", "restore_from_quarantine", "delete_file", "terminate_process"})
    if (policy.needs_password(t)) password.push_back(t);
  return json{
      {"incident_id", rec.incident_id},     {"device_id", rec.device_id},
      {"device_isolated", device_isolated}, {"device_actions", std::move(device_actions)},
      {"targets", std::move(targets)},      {"password_required", std::move(password)}};
}

incident_actor::behavior_type incident(incident_stateful self, incident_record rec,
                                       action_policy policy, caf::timespan idle) {
  self->state.rec = std::move(rec);
  self->state.policy = std::move(policy);
  return {
      [self](atom::reg, const action_request& req) -> caf::result<action_record> {
        auto a = make_action(self->state.rec, req, self->state.policy, now_us());
        if (!a) return a.error();
        return std::move(*a);
      },
      caf::after(idle) >> [self] { self->quit(); },
  };
}

} // namespace parry
