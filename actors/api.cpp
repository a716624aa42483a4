#include "actors/api.hpp"

#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "actors/json.hpp"
#include "bus/codec.hpp"
#include "common/crypto.hpp"

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
    case ec::bad_request: status = 400; break;
    case ec::unauthenticated: status = 401; break;
    case ec::forbidden: status = 403; break;
    case ec::not_found: status = 404; break;
    case ec::not_applicable:
    case ec::conflict: status = 409; break;
    case ec::locked: status = 429; break;
    default: break;
  }
  return reply(status, error_json(to_string(code), message));
}

http_response fail(const caf::error& err) {
  auto code = code_of(err);
  if (code == ec::unspecified || code == ec::storage)
    spdlog::error("api: {}", message_of(err));
  return fail(code, code == ec::storage ? "internal storage error" : message_of(err));
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
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
    if (next == std::string::npos)
      next = path.size();
    if (next > pos)
      out.push_back(path.substr(pos, next - pos));
    pos = next + 1;
  }
  return out;
}

std::string cookie(const std::string& token) {
  return "parry_session=" + token + "; Path=/; HttpOnly; Secure; SameSite=Strict";
}

/// Reads the action request body; an error names the bad field.
caf::expected<action_request> parse_action(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object())
    return make_error(ec::bad_request, "body must be a JSON object");
  action_request req;
  auto str = [&](const json& o, const char* key, std::string& out) -> bool {
    auto i = o.find(key);
    if (i == o.end() || i->is_null())
      return true;
    if (!i->is_string() || i->get_ref<const std::string&>().size() > 4096)
      return false;
    out = i->get<std::string>();
    return true;
  };
  if (!str(j, "type", req.type) || req.type.empty())
    return make_error(ec::bad_request, "'type' must be a non-empty string");
  if (!str(j, "incident_id", req.incident_id) || !bus::valid_id(req.incident_id))
    return make_error(ec::bad_request, "'incident_id' must name an incident");
  if (!str(j, "comment", req.comment))
    return make_error(ec::bad_request, "'comment' must be a string");
  auto t = j.find("target");
  if (t == j.end() || !t->is_object())
    return make_error(ec::bad_request, "'target' must be an object with a 'kind'");
  if (!str(*t, "kind", req.target_kind) || !str(*t, "event_id", req.event_id))
    return make_error(ec::bad_request, "'target.kind' and 'target.event_id' must be strings");
  if (auto p = j.find("params"); p != j.end() && !p->is_null()) {
    if (!p->is_object() || p->size() > 32)
      return make_error(ec::bad_request, "'params' must be an object of strings");
    for (auto& [k, v] : p->items()) {
      if (!v.is_string() || k.size() > 64 || v.get_ref<const std::string&>().size() > 4096)
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
      if (!key.empty())
        params[key] = value;
      if (amp == std::string_view::npos)
        break;
      rest.remove_prefix(amp + 1);
    }
  }
  return {percent_decode(std::string_view{target}.substr(0, q)), std::move(params)};
}

bool may_act(const std::string& role) {
  return role == "administrator" || role == "security_officer";
}

api_actor::behavior_type api(api_stateful self, auth_actor auth, directory_actor dir,
                             store_actor store, std::function<json()> bus_stats) {
  self->state.auth = std::move(auth);
  self->state.directory = std::move(dir);
  self->state.store = std::move(store);
  self->state.bus_stats = std::move(bus_stats);

  // Answers a read from the store as-is.
  auto read = [self](query q, caf::typed_response_promise<http_response> rp) mutable {
    self->request(self->state.store, caf::infinite, std::move(q))
      .then([rp](std::string& body) mutable { rp.deliver(http_response{200, body, {}}); },
            [rp](caf::error& err) mutable { rp.deliver(fail(err)); });
  };

  // Handles a request once the caller is known.
  auto route = [self, read](const http_request& req, const principal& who,
                            caf::typed_response_promise<http_response> rp) mutable {
    auto [path, params] = split_target(req.target);
    auto seg = segments(path.substr(std::string{prefix}.size()));
    const auto& m = req.method;
    auto& st = self->state;
    if (m != "GET" && who.via_session
        && !equal_constant_time(req.csrf, who.csrf_token)) {
      rp.deliver(fail(ec::forbidden, "missing or wrong X-CSRF-Token"));
      return;
    }
    auto one = [&](const char* what) {
      if (!bus::valid_id(seg[1])) {
        rp.deliver(fail(ec::not_found, std::string{"no "} + what + " " + seg[1]));
        return;
      }
      read(query{what, seg[1], {}}, rp);
    };
    if (m == "GET" && seg.size() == 1 && seg[0] == "devices")
      return read(query{"devices", "", params}, rp);
    if (m == "GET" && seg.size() == 2 && seg[0] == "devices")
      return one("device");
    if (m == "GET" && seg.size() == 1 && seg[0] == "incidents")
      return read(query{"incidents", "", params}, rp);
    if (m == "GET" && seg.size() == 2 && seg[0] == "incidents")
      return one("incident");
    if (m == "GET" && seg.size() == 1 && seg[0] == "actions")
      return read(query{"actions", "", params}, rp);
    if (m == "GET" && seg.size() == 2 && seg[0] == "actions")
      return one("action");
    if (m == "GET" && seg.size() == 1 && seg[0] == "stats") {
      self->request(st.store, caf::infinite, query{"stats", "", {}})
        .then(
          [self, rp](const std::string& body) mutable {
            auto j = json::parse(body);
            if (self->state.bus_stats)
              j["bus"] = self->state.bus_stats();
            rp.deliver(reply(200, j));
          },
          [rp](caf::error& err) mutable { rp.deliver(fail(err)); });
      return;
    }
    if (m == "POST" && seg.size() == 1 && seg[0] == "logout") {
      bool session = req.bearer.empty();
      self
        ->request(st.auth, caf::infinite, atom::logout_v, session,
                  session ? req.session : req.bearer)
        .then(
          [rp](atom::ok) mutable {
            auto r = reply(200, json::object());
            r.set_cookies.push_back("parry_session=; Path=/; HttpOnly; Secure; "
                                    "SameSite=Strict; Max-Age=0");
            rp.deliver(std::move(r));
          },
          [rp](caf::error& err) mutable { rp.deliver(fail(err)); });
      return;
    }
    if (m == "POST" && seg.size() == 1 && seg[0] == "tokens") {
      auto body = json::parse(req.body.empty() ? "{}" : req.body, nullptr, false);
      std::string name;
      if (body.is_object() && body.contains("name") && body["name"].is_string())
        name = body["name"].get<std::string>().substr(0, 128);
      self->request(st.auth, caf::infinite, atom::token_v, who, name)
        .then(
          [rp, who](const std::string& token) mutable {
            rp.deliver(reply(201, json{{"token", token},
                                       {"user", json{{"username", who.username},
                                                     {"role", who.role}}}}));
          },
          [rp](caf::error& err) mutable { rp.deliver(fail(err)); });
      return;
    }
    if (m == "POST" && seg.size() == 1 && seg[0] == "actions") {
      if (!may_act(who.role)) {
        rp.deliver(fail(ec::forbidden, "role " + who.role + " may not trigger actions"));
        return;
      }
      auto parsed = parse_action(req.body);
      if (!parsed) {
        rp.deliver(fail(parsed.error()));
        return;
      }
      auto areq = std::move(*parsed);
      areq.username = who.username;
      areq.role = who.role;
      areq.idempotency_key = req.idempotency_key;
      // Registers, or answers the action an earlier request with this key made.
      auto registered = [self, read, rp, areq]() mutable {
        self->request(self->state.directory, caf::infinite, atom::reg_v, areq)
          .then(
            [rp](const action_record& rec) mutable {
              rp.deliver(reply(202, json{{"action", to_json(rec)}}));
            },
            [self, read, rp, areq](caf::error& err) mutable {
              if (code_of(err) != ec::conflict || areq.idempotency_key.empty()) {
                rp.deliver(fail(err));
                return;
              }
              // Lost a race with the same key: answer the winner's action.
              self
                ->request(self->state.store, caf::infinite, atom::idem_v, areq.username,
                          areq.idempotency_key)
                .then(
                  [read, rp](const std::string& id) mutable {
                    read(query{"action", id, {}}, rp);
                  },
                  [rp](caf::error& e) mutable { rp.deliver(fail(e)); });
            });
      };
      if (areq.idempotency_key.empty())
        return registered();
      if (areq.idempotency_key.size() > 128) {
        rp.deliver(fail(ec::bad_request, "Idempotency-Key is longer than 128 characters"));
        return;
      }
      self
        ->request(st.store, caf::infinite, atom::idem_v, areq.username,
                  areq.idempotency_key)
        .then(
          [read, rp, registered](const std::string& id) mutable {
            if (id.empty())
              registered();
            else
              read(query{"action", id, {}}, rp);
          },
          [rp](caf::error& e) mutable { rp.deliver(fail(e)); });
      return;
    }
    rp.deliver(fail(ec::not_found, "no such endpoint: " + m + " " + path));
  };

  return {
    [self, route](const http_request& req) mutable -> caf::result<http_response> {
      auto [path, params] = split_target(req.target);
      if (path.compare(0, std::string{prefix}.size(), prefix) != 0)
        return fail(ec::not_found, "no such endpoint: " + path);
      auto rest = path.substr(std::string{prefix}.size());
      if (rest == "/health")
        return reply(200, json{{"status", "ok"}});
      auto rp = self->make_response_promise<http_response>();
      auto& st = self->state;
      if (rest == "/login" && req.method == "POST") {
        auto body = json::parse(req.body, nullptr, false);
        if (!body.is_object() || !body.contains("username") || !body.contains("password")
            || !body["username"].is_string() || !body["password"].is_string())
          return fail(ec::bad_request, "body must be {\"username\": ..., \"password\": ...}");
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
        .then([route, req, rp](const principal& who) mutable { route(req, who, rp); },
              [rp](caf::error& err) mutable { rp.deliver(fail(err)); });
      return rp;
    },
  };
}

} // namespace parry
