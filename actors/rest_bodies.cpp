#include "actors/rest_bodies.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "bus/codec.hpp"
#include "common/utf8.hpp"

namespace parry::rest {

using nlohmann::json;

namespace {

/// Whether `v` is an integer from `lo` to `hi` (JSON's unsigned numbers past int64
/// included, which a comparison with a signed bound would wrap); sets `out` if so.
bool int_in(const json& v, int64_t lo, int64_t hi, int64_t& out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
    return false;
  auto x = v.get<int64_t>();
  if (x < lo || x > hi) return false;
  out = x;
  return true;
}

/// The body as JSON; "" (no body) reads as an empty object. Never throws.
json parse(std::string_view body) {
  if (body.empty()) return json::object();
  return json::parse(body.begin(), body.end(), nullptr, false);
}

/// Reads an optional string member: absent or null leaves `out` alone; anything but
/// a string of at most `max` bytes is false.
bool optional_string(const json& o, const char* key, std::string& out,
                     std::size_t max = 4096) {
  auto i = o.find(key);
  if (i == o.end() || i->is_null()) return true;
  if (!i->is_string() || i->get_ref<const std::string&>().size() > max) return false;
  out = i->get<std::string>();
  return true;
}

} // namespace

namespace {

/// The members a single action and a bulk request share: type, comment, password,
/// params. `type` receives the type's word as given.
std::string parse_common(const json& j, action_request& req, std::string& password,
                         std::string& type) {
  if (!optional_string(j, "type", type) || type.empty())
    return "'type' must be a non-empty string";
  if (!optional_string(j, "comment", req.comment)) return "'comment' must be a string";
  if (!optional_string(j, "password", password)) return "'password' must be a string";
  if (auto p = j.find("params"); p != j.end() && !p->is_null()) {
    if (!p->is_object() || p->size() > 32) return "'params' must be an object of strings";
    for (auto& [k, v] : p->items()) {
      // start_process argv as a list: each element a string, the limits checked later.
      if (k == "arguments" && v.is_array()) {
        if (v.size() > max_arguments ||
            !std::all_of(v.begin(), v.end(), [](const json& a) {
              return a.is_string() &&
                     a.get_ref<const std::string&>().size() <= max_arguments_bytes;
            }))
          return "'params.arguments' must be a list of at most " +
                 std::to_string(max_arguments) + " strings";
        for (const auto& a : v)
          req.argv.push_back(a.get<std::string>());
        req.argv_given = true;
        continue;
      }
      // Long enough for start_process arguments (32 KiB), which check their own limits.
      if (!v.is_string() || k.size() > 64 ||
          v.get_ref<const std::string&>().size() > 33 * 1024)
        return "'params." + utf8_sanitized(utf8_prefix(k, 64)) +
               "' must be a short string";
      req.params.emplace(k, v.get<std::string>());
    }
  }
  return {};
}

/// The members naming what is acted on: incident_id, target.kind, target.event_id.
/// `kind` receives the kind's word as given.
std::string parse_target(const json& j, action_request& req, std::string& kind) {
  if (!optional_string(j, "incident_id", req.incident_id) ||
      !bus::valid_id(req.incident_id))
    return "'incident_id' must name an incident";
  auto t = j.find("target");
  if (t == j.end() || !t->is_object()) return "'target' must be an object with a 'kind'";
  if (!optional_string(*t, "kind", kind) ||
      !optional_string(*t, "event_id", req.event_id))
    return "'target.kind' and 'target.event_id' must be strings";
  return {};
}

/// The words of type and kind, checked against the legal values.
std::string parse_words(const std::string& type, const std::string& kind,
                        action_request& req) {
  if (auto x = action_type_from_string(type))
    req.type = *x;
  else
    return "unknown action type " + shown(type) + "; legal values are " +
           legal_action_types();
  if (auto x = target_kind_from_string(kind))
    req.target_kind = *x;
  else
    return "target.kind must be one of " + legal_target_kinds() + ", not " + shown(kind);
  return {};
}

} // namespace

std::string parse_action(std::string_view body, action_request& req,
                         std::string& password, std::string& what) {
  auto j = parse(body);
  if (!j.is_object()) return "body must be a JSON object";
  std::string type, kind;
  if (auto why = parse_common(j, req, password, type); !why.empty()) return why;
  if (auto why = parse_target(j, req, kind); !why.empty()) return why;
  what = type + " on " + req.incident_id;
  return parse_words(type, kind, req);
}

std::string parse_bulk(std::string_view body, std::vector<action_request>& reqs,
                       std::string& password, std::string& what, bulk_canary& canary) {
  auto j = parse(body);
  if (!j.is_object()) return "body must be a JSON object";
  action_request common;
  std::string type;
  if (auto why = parse_common(j, common, password, type); !why.empty()) return why;
  auto t = j.find("targets");
  if (t == j.end() || !t->is_array() || t->empty() || t->size() > max_bulk_targets)
    return "'targets' must be a list of 1 to " + std::to_string(max_bulk_targets) +
           " objects";
  what = type + " on " + std::to_string(t->size()) + " targets";
  if (!action_type_from_string(type))
    return "unknown action type " + shown(type) + "; legal values are " +
           legal_action_types();
  // Params belong to start_process alone, which runs on one device at a time; each
  // target would also get its own copy of them.
  if (type == "start_process")
    return "start_process runs on one incident's device at a time: use POST /actions";
  if (!common.params.empty() || common.argv_given)
    return "'params' are not taken by /actions/bulk (no type it registers has any)";
  canary = {};
  if (auto c = j.find("canary"); c != j.end() && !c->is_null()) {
    auto most = static_cast<int64_t>(std::min(max_canary_targets, t->size() - 1));
    auto n = c->is_object() ? c->find("count") : c->end();
    int64_t count = 0;
    if (n == c->end() || most < 1 || !int_in(*n, 1, most, count))
      return "'canary' must be an object whose 'count' is an integer from 1 to " +
             std::to_string(std::max<int64_t>(most, 1)) +
             " (fewer than the targets, at most " + std::to_string(max_canary_targets) +
             ")";
    canary.count = static_cast<std::size_t>(count);
    if (auto w = c->find("wait_ms"); w != c->end() && !w->is_null()) {
      if (!int_in(*w, 100, max_canary_wait_ms, canary.wait_ms))
        return "'canary.wait_ms' must be an integer from 100 to " +
               std::to_string(max_canary_wait_ms);
    }
  }
  reqs.clear();
  reqs.reserve(t->size());
  for (std::size_t i = 0; i < t->size(); ++i) {
    const auto& x = (*t)[i];
    auto at = "targets[" + std::to_string(i) + "]: ";
    if (!x.is_object()) return at + "must be an object with 'incident_id' and 'target'";
    action_request r = common;
    std::string kind;
    if (auto why = parse_target(x, r, kind); !why.empty()) return at + why;
    if (auto why = parse_words(type, kind, r); !why.empty()) return at + why;
    reqs.push_back(std::move(r));
  }
  return {};
}

std::string parse_login(std::string_view body, std::string& user, std::string& password,
                        bool& too_long) {
  auto j = parse(body);
  if (!j.is_object() || !j.contains("username") || !j.contains("password") ||
      !j["username"].is_string() || !j["password"].is_string())
    return "body must be {\"username\": ..., \"password\": ...}";
  user = j["username"].get<std::string>();
  password = j["password"].get<std::string>();
  too_long = user.size() > 128 || password.size() > 1024;
  return {};
}

std::string parse_token(std::string_view body, std::string& name, int64_t& expires_in) {
  auto j = parse(body);
  if (!j.is_object()) return "body must be a JSON object";
  if (j.contains("name")) {
    if (!j["name"].is_string()) return "'name' must be a string";
    name =
        std::string{utf8_prefix(j["name"].get_ref<const std::string&>(), max_token_name)};
  }
  expires_in = 0;
  if (j.contains("expires_in")) {
    const auto& e = j["expires_in"];
    if (!e.is_number_integer() ||
        (e.is_number_unsigned() && e.get<uint64_t>() > INT64_MAX) || e.get<int64_t>() < 1)
      return "'expires_in' must be a positive number of seconds";
    expires_in = e.get<int64_t>();
  }
  return {};
}

namespace {

/// A positive integer field at most `max`, or why not.
std::string positive(const json& j, const char* field, int64_t max, int64_t& out) {
  if (!int_in(j[field], 1, max, out))
    return std::string{"'"} + field + "' must be an integer 1.." + std::to_string(max);
  return {};
}

} // namespace

std::string parse_enrollment_token(std::string_view body, int64_t& ttl_seconds,
                                   uint32_t& uses) {
  auto j = parse(body);
  if (!j.is_object() || !j.contains("ttl_seconds"))
    return "body must be {\"ttl_seconds\", \"uses\"?}";
  if (auto why = positive(j, "ttl_seconds", int64_t{30} * 24 * 3600, ttl_seconds);
      !why.empty())
    return why;
  uses = 1;
  if (j.contains("uses")) {
    int64_t n = 0;
    if (auto why = positive(j, "uses", UINT32_MAX, n); !why.empty()) return why;
    uses = static_cast<uint32_t>(n);
  }
  return {};
}

std::string parse_integrator(std::string_view body, std::string& name, user_role& role,
                             std::string& public_key) {
  auto j = parse(body);
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string() ||
      !j.contains("role") || !j["role"].is_string() || !j.contains("public_key") ||
      !j["public_key"].is_string())
    return "body must be {\"name\", \"role\", \"public_key\"}";
  name = j["name"].get<std::string>();
  if (!bus::valid_id(name)) return "name: 1-128 characters of [A-Za-z0-9._:-]";
  auto r = user_role_from_string(j["role"].get_ref<const std::string&>());
  if (!r) return "role must be one of " + legal_user_roles();
  role = *r;
  public_key = j["public_key"].get<std::string>();
  return {};
}

std::string parse_new_user(std::string_view body, user_record& user,
                           std::string& password) {
  auto j = parse(body);
  if (!j.is_object() || !j.contains("username") || !j["username"].is_string() ||
      !j.contains("password") || !j["password"].is_string() || !j.contains("role") ||
      !j["role"].is_string())
    return "body must be {\"username\", \"password\", \"role\"}";
  user.username = j["username"].get<std::string>();
  if (!valid_username(user.username))
    return "username: 1-64 characters of [A-Za-z0-9._-]";
  auto role = user_role_from_string(j["role"].get_ref<const std::string&>());
  if (!role) return "role must be one of " + legal_user_roles();
  user.role = *role;
  password = j["password"].get<std::string>();
  return password_problem(password);
}

std::string parse_user_change(std::string_view body, std::optional<user_role>& role,
                              std::string& password, std::optional<bool>& disabled) {
  auto j = parse(body);
  if (!j.is_object()) return "body must be a JSON object";
  if (j.contains("disabled")) {
    if (!j["disabled"].is_boolean()) return "disabled must be true or false";
    disabled = j["disabled"].get<bool>();
  }
  if (j.contains("role")) {
    if (j["role"].is_string())
      role = user_role_from_string(j["role"].get_ref<const std::string&>());
    if (!role) return "role must be one of " + legal_user_roles();
  }
  if (j.contains("password")) {
    if (!j["password"].is_string()) return "password must be a string";
    password = j["password"].get<std::string>();
    if (auto why = password_problem(password); !why.empty()) return why;
  }
  return {};
}

std::string parse_reverse(std::string_view body, std::string& comment,
                          std::string& password) {
  auto j = parse(body);
  if (!j.is_object()) return "body must be a JSON object";
  comment = comment_of(body);
  if (j.contains("password") && j["password"].is_string())
    password = j["password"].get<std::string>();
  return {};
}

std::string comment_of(std::string_view body) {
  auto j = parse(body);
  if (!j.is_object() || !j.contains("comment") || !j["comment"].is_string()) return {};
  return std::string{
      utf8_prefix(j["comment"].get_ref<const std::string&>(), max_comment)};
}

bool valid_username(const std::string& name) {
  return !name.empty() && name.size() <= 64 &&
         name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789._-") == std::string::npos;
}

std::string password_problem(const std::string& password) {
  if (password.size() < 12) return "password must have at least 12 characters";
  if (password.size() > 1024) return "password must have at most 1024 characters";
  return {};
}

} // namespace parry::rest
