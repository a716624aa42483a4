#include "actors/api.hpp"

#include <algorithm>

#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/auth.hpp"
#include "actors/error.hpp"
#include "actors/incident.hpp"
#include "actors/json.hpp"
#include "actors/store.hpp"
#include "bus/codec.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"

namespace parry {

using nlohmann::json;

namespace {

constexpr const char* prefix = "/api/v1";

http_response reply(int status, const json& body) {
  return http_response{status, body.dump(), {}};
}

http_response fail(ec code, const std::string& message) {
  int status = 500;
  switch (code) {
  case ec::bad_request:
    status = 400;
    break;
  case ec::unauthenticated:
    status = 401;
    break;
  case ec::forbidden:
    status = 403;
    break;
  case ec::not_found:
    status = 404;
    break;
  case ec::not_applicable:
  case ec::conflict:
    status = 409;
    break;
  case ec::locked:
    status = 429;
    break;
  default:
    break;
  }
  return reply(status, error_json(to_string(code), message));
}

http_response fail(const caf::error& err) {
  auto code = code_of(err);
  if (code == ec::unspecified || code == ec::storage)
    spdlog::error("api: {}", message_of(err));
  return fail(code, code == ec::storage ? "internal storage error" : message_of(err));
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi << 4 | lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

std::vector<std::string> segments(const std::string& path) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < path.size()) {
    auto next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    if (next > pos) out.push_back(path.substr(pos, next - pos));
    pos = next + 1;
  }
  return out;
}

std::string cookie(const std::string& token) {
  return "parry_session=" + token + "; Path=/; HttpOnly; Secure; SameSite=Strict";
}

/// Reads the action request body and the password re-entry; an error names the bad
/// field.
caf::expected<action_request> parse_action(const std::string& body,
                                           std::string& password) {
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object()) return make_error(ec::bad_request, "body must be a JSON object");
  action_request req;
  auto str = [&](const json& o, const char* key, std::string& out) -> bool {
    auto i = o.find(key);
    if (i == o.end() || i->is_null()) return true;
    if (!i->is_string() || i->get_ref<const std::string&>().size() > 4096) return false;
    out = i->get<std::string>();
    return true;
  };
  if (!str(j, "type", req.type) || req.type.empty())
    return make_error(ec::bad_request, "'type' must be a non-empty string");
  if (!str(j, "incident_id", req.incident_id) || !bus::valid_id(req.incident_id))
    return make_error(ec::bad_request, "'incident_id' must name an incident");
  if (!str(j, "comment", req.comment))
    return make_error(ec::bad_request, "'comment' must be a string");
  if (!str(j, "password", password))
    return make_error(ec::bad_request, "'password' must be a string");
  auto t = j.find("target");
  if (t == j.end() || !t->is_object())
    return make_error(ec::bad_request, "'target' must be an object with a 'kind'");
  if (!str(*t, "kind", req.target_kind) || !str(*t, "event_id", req.event_id))
    return make_error(ec::bad_request,
                      "'target.kind' and 'target.event_id' must be strings");
  if (auto p = j.find("params"); p != j.end() && !p->is_null()) {
    if (!p->is_object() || p->size() > 32)
      return make_error(ec::bad_request, "'params' must be an object of strings");
    for (auto& [k, v] : p->items()) {
      // start_process argv as a list: each element a string, the limits checked later.
      if (k == "arguments" && v.is_array()) {
        if (v.size() > max_arguments ||
            !std::all_of(v.begin(), v.end(), [](const json& a) {
              return a.is_string() &&
                     a.get_ref<const std::string&>().size() <= max_arguments_bytes;
            }))
          return make_error(ec::bad_request,
                            "'params.arguments' must be a list of at most " +
                                std::to_string(max_arguments) + " strings");
        for (const auto& a : v)
          req.argv.push_back(a.get<std::string>());
        req.argv_given = true;
        continue;
      }
      // Long enough for start_process arguments (32 KiB), which check their own limits.
      if (!v.is_string() || k.size() > 64 ||
          v.get_ref<const std::string&>().size() > 33 * 1024)
        return make_error(ec::bad_request, "'params." + k + "' must be a short string");
      req.params.emplace(k, v.get<std::string>());
    }
  }
  return req;
}

} // namespace

std::pair<std::string, std::map<std::string, std::string>>
split_target(const std::string& target) {
  auto q = target.find('?');
  std::map<std::string, std::string> params;
  if (q != std::string::npos) {
    std::string_view rest{target};
    rest.remove_prefix(q + 1);
    while (!rest.empty()) {
      auto amp = rest.find('&');
      auto part = rest.substr(0, amp);
      auto eq = part.find('=');
      auto key = percent_decode(part.substr(0, eq));
      auto value = eq == std::string_view::npos ? std::string{}
                                                : percent_decode(part.substr(eq + 1));
      if (!key.empty()) params[key] = value;
      if (amp == std::string_view::npos) break;
      rest.remove_prefix(amp + 1);
    }
  }
  return {percent_decode(std::string_view{target}.substr(0, q)), std::move(params)};
}

bool may_act(const std::string& role) {
  auto r = user_role_from_string(role);
  return r && may_trigger(*r);
}

namespace {

using promise = caf::typed_response_promise<http_response>;

/// One authenticated request on its way through the routes.
struct call {
  api_stateful self;
  http_request req;
  principal who;
  std::vector<std::string> seg;
  std::map<std::string, std::string> params;
  promise rp;

  void answer(http_response r) { rp.deliver(std::move(r)); }
  void answer(const caf::error& err) { rp.deliver(fail(err)); }
  void answer(ec code, const std::string& message) { rp.deliver(fail(code, message)); }
  /// An error handler for request(...).then.
  auto on_error() {
    return [rp = rp](caf::error& err) mutable { rp.deliver(fail(err)); };
  }
  json body() const {
    return json::parse(req.body.empty() ? "{}" : req.body, nullptr, false);
  }
};

void audit(api_stateful self, const std::string& actor, const char* kind,
           const std::string& target, const std::string& detail) {
  self->request(self->state.store, caf::infinite, atom::audit_v,
                audit_entry{actor, kind, target, detail})
      .then([](atom::ok) {},
            [](caf::error& err) {
              spdlog::error("api: cannot write the audit trail: {}", message_of(err));
            });
}

/// Answers a read from the store as-is.
template <class... Ts> void read(call c, Ts... xs) {
  c.self->request(c.self->state.reader, caf::infinite, atom::query_v, std::move(xs)...)
      .then(
          [c](std::string& body) mutable {
            c.answer(http_response{200, body, {}});
          },
          c.on_error());
}

/// Answers one page of a list from the store, or 400 for bad paging parameters.
template <class What> void read_page(call c, What what) {
  auto page = parse_page(c.params);
  if (!page) return c.answer(page.error());
  read(c, what, std::move(*page));
}

/// Runs `then` once the caller's password is confirmed, when `type` needs it.
template <class F>
void with_password(call c, const std::string& type, const std::string& password, F then) {
  if (!c.self->state.policy.needs_password(type)) {
    then(false);
    return;
  }
  auto refuse = [c, type](const caf::error& err) mutable {
    audit(c.self, c.who.username, "trigger_refused", type, message_of(err));
    c.answer(err);
  };
  if (password.empty()) {
    refuse(make_error(ec::unauthenticated, type + " needs your password in 'password'"));
    return;
  }
  c.self
      ->request(c.self->state.auth, caf::infinite, atom::confirm_v, c.who.username,
                password)
      .then([then](atom::ok) mutable { then(true); },
            [refuse](caf::error& err) mutable { refuse(err); });
}

/// Registers through the directory and answers 202, auditing the outcome.
template <class... Ts> void register_via_directory(call c, std::string what, Ts... xs) {
  c.self->request(c.self->state.directory, caf::infinite, xs...)
      .then(
          [c](const action_record& rec) mutable {
            // The directory audited the trigger before the action's first transition.
            c.answer(reply(202, json{{"action", to_json(rec)}}));
          },
          [c, what](caf::error& err) mutable {
            audit(c.self, c.who.username, "trigger_refused", what, message_of(err));
            c.answer(err);
          });
}

void post_action(call c) {
  if (!may_act(c.who.role))
    return c.answer(ec::forbidden, "role " + c.who.role + " may not trigger actions");
  std::string password;
  auto parsed = parse_action(c.req.body, password);
  if (!parsed) return c.answer(parsed.error());
  auto areq = std::move(*parsed);
  areq.username = c.who.username;
  areq.role = c.who.role;
  areq.idempotency_key = c.req.idempotency_key;
  if (areq.idempotency_key.size() > 128)
    return c.answer(ec::bad_request, "Idempotency-Key is longer than 128 characters");
  auto what = areq.type + " on " + areq.incident_id;
  auto go = [c, areq, what, password]() mutable {
    with_password(c, areq.type, password, [c, areq, what](bool confirmed) mutable {
      areq.password_confirmed = confirmed;
      register_via_directory(c, what, atom::reg_v, areq);
    });
  };
  if (areq.idempotency_key.empty()) return go();
  // The same key from the same user answers the action it registered first.
  c.self
      ->request(c.self->state.store, caf::infinite, atom::idem_v, areq.username,
                areq.idempotency_key)
      .then(
          [c, go](const std::string& id) mutable {
            if (id.empty())
              go();
            else
              read(c, atom::action_v, id);
          },
          c.on_error());
}

void cancel_action(call c, const std::string& id) {
  if (!may_act(c.who.role))
    return c.answer(ec::forbidden, "role " + c.who.role + " may not cancel actions");
  std::string comment;
  if (auto j = c.body(); j.contains("comment") && j["comment"].is_string())
    comment = j["comment"].get<std::string>().substr(0, 4096);
  c.self
      ->request(c.self->state.directory, caf::infinite, atom::cancel_v, id,
                c.who.username, comment)
      .then(
          [c](const action_record& rec) mutable {
            audit(c.self, c.who.username, "cancel", rec.action_id, "ok");
            c.answer(reply(200, json{{"action", to_json(rec)}}));
          },
          [c, id](caf::error& err) mutable {
            audit(c.self, c.who.username, "cancel", id, "refused: " + message_of(err));
            c.answer(err);
          });
}

void reverse_action(call c, const std::string& id) {
  if (!may_act(c.who.role))
    return c.answer(ec::forbidden, "role " + c.who.role + " may not reverse actions");
  auto j = c.body();
  if (!j.is_object()) return c.answer(ec::bad_request, "body must be a JSON object");
  action_request areq;
  areq.username = c.who.username;
  areq.role = c.who.role;
  if (j.contains("comment") && j["comment"].is_string())
    areq.comment = j["comment"].get<std::string>().substr(0, 4096);
  std::string password;
  if (j.contains("password") && j["password"].is_string())
    password = j["password"].get<std::string>();
  // The reverse's type decides whether a password is needed: look at the original.
  c.self->request(c.self->state.store, caf::infinite, atom::get_v, atom::action_v, id)
      .then(
          [c, id, areq, password](const action_record& original) mutable {
            auto type = reverse_of(original.type);
            with_password(c, type.empty() ? original.type : type, password,
                          [c, id, areq](bool confirmed) mutable {
                            areq.password_confirmed = confirmed;
                            audit(c.self, c.who.username, "reverse", id, "requested");
                            register_via_directory(c, "reverse of " + id, atom::reverse_v,
                                                   id, areq);
                          });
          },
          c.on_error());
}

void available(call c, const std::string& id) {
  auto& st = c.self->state;
  c.self->request(st.store, caf::infinite, atom::get_v, atom::incident_v, id)
      .then(
          [c](const incident_record& inc) mutable {
            c.self
                ->request(c.self->state.store, caf::infinite, atom::get_v, inc.device_id)
                .then(
                    [c, inc](const device_record& d) mutable {
                      c.answer(reply(200, available_actions(inc, d.isolated,
                                                            c.self->state.policy, d.os)));
                    },
                    [c, inc](caf::error&) mutable {
                      c.answer(reply(
                          200, available_actions(inc, false, c.self->state.policy)));
                    });
          },
          c.on_error());
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

/// Stores `u` (new or changed) after hashing `password` when given.
template <class Store>
void hash_then(call c, user_record u, const std::string& password, Store store) {
  if (password.empty()) return store(std::move(u));
  c.self->request(c.self->state.hasher, caf::infinite, atom::hash_v, password, u)
      .then([store](user_record& hashed) mutable { store(std::move(hashed)); },
            c.on_error());
}

void users(call c) {
  auto& m = c.req.method;
  auto& st = c.self->state;
  if (c.seg.size() == 1 && m == "GET") return read_page(c, atom::users_v);
  auto j = c.body();
  if (c.seg.size() == 1 && m == "POST") {
    if (!j.is_object() || !j.contains("username") || !j["username"].is_string() ||
        !j.contains("password") || !j["password"].is_string() || !j.contains("role") ||
        !j["role"].is_string())
      return c.answer(ec::bad_request,
                      "body must be {\"username\", \"password\", \"role\"}");
    user_record u{j["username"].get<std::string>(),
                  j["role"].get<std::string>(),
                  "",
                  0,
                  "",
                  now_us()};
    if (!valid_username(u.username))
      return c.answer(ec::bad_request, "username: 1-64 characters of [A-Za-z0-9._-]");
    if (!valid_role(u.role))
      return c.answer(ec::bad_request, "role must be one of " + legal_user_roles());
    auto password = j["password"].get<std::string>();
    if (auto why = password_problem(password); !why.empty())
      return c.answer(ec::bad_request, why);
    return hash_then(c, std::move(u), password, [c](user_record u) mutable {
      c.self->request(c.self->state.store, caf::infinite, atom::put_v, u)
          .then(
              [c, u](atom::ok) mutable {
                audit(c.self, c.who.username, "user_created", u.username,
                      "role " + u.role);
                c.answer(reply(201, json{{"user", json{{"username", u.username},
                                                       {"role", u.role},
                                                       {"created_at",
                                                        format_time(u.created_at)}}}}));
              },
              [c](caf::error& err) mutable {
                if (code_of(err) == ec::conflict)
                  c.answer(ec::conflict, "that user exists already");
                else
                  c.answer(err);
              });
    });
  }
  if (c.seg.size() != 2 || !valid_username(c.seg[1]))
    return c.answer(ec::not_found, "no such user");
  auto name = c.seg[1];
  if (m == "DELETE") {
    c.self->request(st.store, caf::infinite, atom::del_v, name)
        .then(
            [c, name](atom::ok) mutable {
              c.self->send(c.self->state.auth, atom::forget_v, name);
              audit(c.self, c.who.username, "user_deleted", name, "ok");
              c.answer(reply(200, json::object()));
            },
            c.on_error());
    return;
  }
  if (m != "PATCH")
    return c.answer(ec::not_found, "no such endpoint: " + m + " /users/" + name);
  if (!j.is_object()) return c.answer(ec::bad_request, "body must be a JSON object");
  std::string role, password;
  if (j.contains("role")) {
    if (!j["role"].is_string() || !valid_role(j["role"].get<std::string>()))
      return c.answer(ec::bad_request, "role must be one of " + legal_user_roles());
    role = j["role"].get<std::string>();
  }
  if (j.contains("password")) {
    if (!j["password"].is_string())
      return c.answer(ec::bad_request, "password must be a string");
    password = j["password"].get<std::string>();
    if (auto why = password_problem(password); !why.empty())
      return c.answer(ec::bad_request, why);
  }
  c.self->request(st.store, caf::infinite, atom::user_v, name)
      .then(
          [c, role, password](user_record u) mutable {
            if (!role.empty()) u.role = role;
            hash_then(c, std::move(u), password, [c, password](user_record u) mutable {
              c.self->request(c.self->state.store, caf::infinite, atom::update_v, u)
                  .then(
                      [c, u, password](atom::ok) mutable {
                        c.self->send(c.self->state.auth, atom::forget_v, u.username);
                        audit(c.self, c.who.username, "user_changed", u.username,
                              "role " + u.role +
                                  (password.empty() ? "" : ", new password"));
                        c.answer(reply(200, json{{"user", json{{"username", u.username},
                                                               {"role", u.role}}}}));
                      },
                      c.on_error());
            });
          },
          c.on_error());
}

/// Routes an authenticated request.
void route(call c) {
  const auto& m = c.req.method;
  const auto& seg = c.seg;
  auto& st = c.self->state;
  if (m != "GET" && c.who.via_session &&
      !equal_constant_time(c.req.csrf, c.who.csrf_token))
    return c.answer(ec::forbidden, "missing or wrong X-CSRF-Token");
  if (seg.empty()) return c.answer(ec::not_found, "no such endpoint");
  const auto& top = seg[0];
  // Everything below an id: the id must look like one before it goes anywhere.
  if (seg.size() >= 2 && !bus::valid_id(seg[1]))
    return c.answer(ec::not_found, "no " + top + " " + seg[1]);
  auto one = [&](auto what) { read(c, what, seg[1]); };
  if (m == "GET" && seg.size() == 1 && top == "devices")
    return read_page(c, atom::devices_v);
  if (m == "GET" && seg.size() == 2 && top == "devices") return one(atom::device_v);
  if (m == "GET" && seg.size() == 1 && top == "incidents")
    return read_page(c, atom::incidents_v);
  if (m == "GET" && seg.size() == 2 && top == "incidents") return one(atom::incident_v);
  if (m == "GET" && seg.size() == 3 && top == "incidents" &&
      seg[2] == "available-actions")
    return available(c, seg[1]);
  if (m == "GET" && seg.size() == 1 && top == "actions")
    return read_page(c, atom::actions_v);
  if (m == "GET" && seg.size() == 2 && top == "actions") return one(atom::action_v);
  if (m == "POST" && seg.size() == 1 && top == "actions") return post_action(c);
  if (m == "POST" && seg.size() == 3 && top == "actions" && seg[2] == "cancel")
    return cancel_action(c, seg[1]);
  if (m == "POST" && seg.size() == 3 && top == "actions" && seg[2] == "reverse")
    return reverse_action(c, seg[1]);
  if (top == "users" || top == "audit") {
    if (c.who.role != "administrator")
      return c.answer(ec::forbidden, top + " is for administrators");
    if (top == "users") return users(c);
    if (m == "GET" && seg.size() == 1) {
      // From the writer: its head in memory is what exposes records cut off the end.
      auto page = parse_page(c.params);
      if (!page) return c.answer(page.error());
      c.self->request(st.store, caf::infinite, atom::query_v, atom::audit_v, *page)
          .then(
              [c](std::string& body) mutable {
                c.answer(http_response{200, body, {}});
              },
              c.on_error());
      return;
    }
  }
  if (m == "GET" && seg.size() == 1 && top == "stats") {
    c.self->request(st.reader, caf::infinite, atom::query_v, atom::stats_v)
        .then(
            [c](const std::string& body) mutable {
              auto j = json::parse(body);
              if (c.self->state.bus_stats) j["bus"] = c.self->state.bus_stats();
              c.answer(reply(200, j));
            },
            c.on_error());
    return;
  }
  if (m == "POST" && seg.size() == 1 && top == "logout") {
    bool session = c.req.bearer.empty();
    c.self
        ->request(st.auth, caf::infinite, atom::logout_v, session,
                  session ? c.req.session : c.req.bearer)
        .then(
            [c](atom::ok) mutable {
              auto r = reply(200, json::object());
              r.set_cookies.push_back("parry_session=; Path=/; HttpOnly; Secure; "
                                      "SameSite=Strict; Max-Age=0");
              c.answer(std::move(r));
            },
            c.on_error());
    return;
  }
  if (m == "POST" && seg.size() == 1 && top == "tokens") {
    auto body = c.body();
    std::string name;
    if (body.is_object() && body.contains("name") && body["name"].is_string())
      name = body["name"].get<std::string>().substr(0, 128);
    c.self->request(st.auth, caf::infinite, atom::token_v, c.who, name)
        .then(
            [c](const std::string& token) mutable {
              c.answer(reply(201, json{{"token", token},
                                       {"user", json{{"username", c.who.username},
                                                     {"role", c.who.role}}}}));
            },
            c.on_error());
    return;
  }
  c.answer(ec::not_found, "no such endpoint: " + m + " /api/v1/" + top);
}

} // namespace

api_actor::behavior_type api(api_stateful self, auth_actor auth, hasher_actor hasher,
                             directory_actor dir, store_actor store,
                             store_reader_actor reader, action_policy policy,
                             std::function<json()> bus_stats) {
  auto& st = self->state;
  st.auth = std::move(auth);
  st.hasher = std::move(hasher);
  st.directory = std::move(dir);
  st.store = std::move(store);
  st.reader = std::move(reader);
  st.policy = std::move(policy);
  st.bus_stats = std::move(bus_stats);
  return {
      [self](const http_request& req) -> caf::result<http_response> {
        auto [path, params] = split_target(req.target);
        if (path.compare(0, std::string{prefix}.size(), prefix) != 0)
          return fail(ec::not_found, "no such endpoint: " + path);
        auto rest = path.substr(std::string{prefix}.size());
        if (rest == "/health") return reply(200, json{{"status", "ok"}});
        auto rp = self->make_response_promise<http_response>();
        auto& st = self->state;
        if (rest == "/login" && req.method == "POST") {
          auto body = json::parse(req.body, nullptr, false);
          if (!body.is_object() || !body.contains("username") ||
              !body.contains("password") || !body["username"].is_string() ||
              !body["password"].is_string())
            return fail(ec::bad_request,
                        "body must be {\"username\": ..., \"password\": ...}");
          auto user = body["username"].get<std::string>();
          auto pass = body["password"].get<std::string>();
          if (user.size() > 128 || pass.size() > 1024)
            return fail(ec::unauthenticated, "wrong username or password");
          self->request(st.auth, caf::infinite, atom::login_v, user, pass)
              .then(
                  [rp](const std::string& token, const principal& who) mutable {
                    auto r = reply(200, json{{"csrf_token", who.csrf_token},
                                             {"user", json{{"username", who.username},
                                                           {"role", who.role}}}});
                    r.set_cookies.push_back(cookie(token));
                    rp.deliver(std::move(r));
                  },
                  [rp](caf::error& err) mutable { rp.deliver(fail(err)); });
          return rp;
        }
        bool session = req.bearer.empty();
        const auto& token = session ? req.session : req.bearer;
        self->request(st.auth, caf::infinite, atom::authn_v, session, token)
            .then(
                [self, req, rp, path = path,
                 params = params](const principal& who) mutable {
                  auto seg = segments(path.substr(std::string{prefix}.size()));
                  route(call{self, req, who, std::move(seg), std::move(params), rp});
                },
                [rp](caf::error& err) mutable { rp.deliver(fail(err)); });
        return rp;
      },
  };
}

} // namespace parry
