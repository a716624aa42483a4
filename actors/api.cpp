#include "actors/api.hpp"

#include <algorithm>

#include <caf/event_based_actor.hpp>
#include <caf/sec.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/auth.hpp"
#include "actors/error.hpp"
#include "actors/incident.hpp"
#include "actors/json.hpp"
#include "actors/rest_bodies.hpp"
#include "actors/store.hpp"
#include "actors/supervisor.hpp"
#include "bus/codec.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"

namespace parry {

using nlohmann::json;

namespace {

constexpr const char* prefix = "/api/v1";

/// Every JSON the api writes: invalid UTF-8 that slipped into a record (an agent's
/// report, an old row) is replaced by U+FFFD instead of throwing.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

http_response reply(int status, const json& body) {
  return http_response{status, dump(body), {}, {}, {}};
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
  case ec::storage:
    status = 503; // the store could not read or write; nothing of the request stuck
    break;
  default:
    break;
  }
  return reply(status, error_json(to_string(code), message));
}

http_response unavailable(const std::string& message);

http_response fail(const caf::error& err) {
  // A collaborator that did not answer within the request's deadline.
  if (err == caf::sec::request_timeout)
    return unavailable("the server did not finish in time; nothing was registered");
  auto code = code_of(err);
  if (code == ec::unspecified || code == ec::storage)
    spdlog::error("api: {}", message_of(err));
  auto r = fail(code, code == ec::storage ? "internal storage error" : message_of(err));
  if (auto secs = retry_after_of(err); secs > 0)
    r.headers["Retry-After"] = std::to_string(secs);
  return r;
}

http_response unavailable(const std::string& message) {
  return reply(503, error_json("unavailable", message));
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

namespace {

using promise = caf::typed_response_promise<http_response>;
using clock_point = caf::actor_clock::time_point;

/// One request on its way through its route.
struct call {
  api_stateful self;
  http_request req;
  principal who;
  /// The values of the route's `{...}` segments, in order.
  std::vector<std::string> args;
  std::map<std::string, std::string> params;
  promise rp;
  clock_point deadline;

  void answer(http_response r) { rp.deliver(std::move(r)); }
  void answer(const caf::error& err) { rp.deliver(fail(err)); }
  void answer(ec code, const std::string& message) { rp.deliver(fail(code, message)); }
  /// An error handler for request(...).then.
  auto on_error() {
    return [rp = rp](caf::error& err) mutable { rp.deliver(fail(err)); };
  }
  /// What is left of the request's time, for the timeouts of its requests.
  caf::timespan left() const {
    auto d = deadline - self->clock().now();
    return std::max(caf::timespan{std::chrono::milliseconds{1}},
                    std::chrono::duration_cast<caf::timespan>(d));
  }
  bool expired() const { return self->clock().now() >= deadline; }
  /// The session or bearer token this request came with.
  const std::string& credential() const {
    return req.bearer.empty() ? req.session : req.bearer;
  }
};

/// An exception in a handler ends in a 500 for its caller, not in the end of the api.
template <class F> void guarded(call& c, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    if (c.self->state.supervision) ++c.self->state.supervision->api_exceptions;
    spdlog::error("api: {} {}: {}", c.req.method, utf8_sanitized(c.req.target), e.what());
    c.answer(reply(500, error_json("internal", "internal error; see the server log")));
  }
}

void audit(api_stateful self, const std::string& actor, const char* kind,
           const std::string& target, const std::string& detail) {
  self->request(self->state.store, std::chrono::seconds{20}, atom::audit_v,
                audit_entry{actor, kind, target, detail})
      .then([](atom::ok) {},
            [](caf::error& err) {
              spdlog::error("api: cannot write the audit trail: {}", message_of(err));
            });
}

/// Answers a read from the store as-is.
template <class... Ts> void read(call c, Ts... xs) {
  c.self->request(c.self->state.reader, c.left(), atom::query_v, std::move(xs)...)
      .then(
          [c](std::string& body) mutable {
            c.answer(http_response{200, body, {}, {}, {}});
          },
          c.on_error());
}

/// Answers one page of a list from the store, or 400 for bad paging parameters.
template <class What> void read_page(call c, What what) {
  auto page = parse_page(c.params);
  if (!page) return c.answer(page.error());
  read(c, what, std::move(*page));
}

/// Runs `then` once the caller's password is confirmed, when `type` needs it. The
/// confirmation is throttled per session: other people's failures never stop it.
template <class F>
void with_password(call c, action_type type, const std::string& password, F then) {
  // An integrator's CURVE key is its credential; it has no password to re-enter.
  if (!c.self->state.policy.get()->needs_password(type) || c.who.integrator) {
    then(false);
    return;
  }
  std::string name = to_string(type);
  auto refuse = [c, name](const caf::error& err) mutable {
    audit(c.self, c.who.username, "trigger_refused", name, message_of(err));
    c.answer(err);
  };
  if (password.empty()) {
    refuse(make_error(ec::unauthenticated, name + " needs your password in 'password'"));
    return;
  }
  c.self
      ->request(c.self->state.auth, c.left(), atom::confirm_v, c.who.username,
                c.credential(), password)
      .then([then](atom::ok) mutable { then(true); },
            [refuse](caf::error& err) mutable { refuse(err); });
}

/// Registers through the directory and answers 202, auditing the outcome. A caller
/// whose time is up has been told 503 already: nothing is registered for it.
template <class... Ts> void register_via_directory(call c, std::string what, Ts... xs) {
  if (c.expired()) {
    audit(c.self, c.who.username, "trigger_refused", what, "request timed out");
    return c.answer(unavailable("the request took too long; nothing was registered"));
  }
  c.self->request(c.self->state.directory, c.left(), xs...)
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

// -- handlers, one per route (see the table below) ----------------------------------

void health(call c) {
  c.answer(reply(200, json{{"status", "ok"}}));
}

/// Who is signed in, for the console after a reload (the cookie is HttpOnly). The
/// CSRF token is readable only by pages of this origin.
void get_session(call c) {
  auto password = json::array();
  for (action_type t : all_action_types)
    if (c.self->state.policy.get()->needs_password(t)) password.push_back(to_string(t));
  c.answer(reply(
      200,
      json{{"user", json{{"username", c.who.username}, {"role", to_string(c.who.role)}}},
           {"csrf_token", c.who.csrf_token},
           {"idle_timeout_s",
            std::chrono::duration_cast<std::chrono::seconds>(c.self->state.session_idle)
                .count()},
           {"password_required", std::move(password)}}));
}

/// The event stream's admission: the HTTPS front end upgrades the connection to a
/// WebSocket only on this 200 (server/event_stream.hpp). Without an upgrade it is
/// 426.
void events(call c) {
  if (!c.req.upgrade)
    return c.answer(reply(426, error_json("upgrade_required",
                                          "GET /events is a WebSocket: send the upgrade "
                                          "headers")));
  c.answer(reply(200, json{{"user", json{{"username", c.who.username},
                                         {"role", to_string(c.who.role)}}}}));
}

void login(call c) {
  std::string user, pass;
  bool too_long = false;
  if (auto why = rest::parse_login(c.req.body, user, pass, too_long); !why.empty())
    return c.answer(ec::bad_request, why);
  if (too_long) return c.answer(ec::unauthenticated, "wrong username or password");
  c.self->request(c.self->state.auth, c.left(), atom::login_v, user, pass, c.req.source)
      .then(
          [c](const std::string& token, const principal& who) mutable {
            auto r = reply(200, json{{"csrf_token", who.csrf_token},
                                     {"user", json{{"username", who.username},
                                                   {"role", to_string(who.role)}}}});
            r.set_cookies.push_back(cookie(token));
            c.answer(std::move(r));
          },
          c.on_error());
}

void logout(call c) {
  bool session = c.req.bearer.empty();
  c.self->request(c.self->state.auth, c.left(), atom::logout_v, session, c.credential())
      .then(
          [c](atom::ok) mutable {
            auto r = reply(200, json::object());
            r.set_cookies.push_back("parry_session=; Path=/; HttpOnly; Secure; "
                                    "SameSite=Strict; Max-Age=0");
            c.answer(std::move(r));
          },
          c.on_error());
}

json token_json(const token_record& t) {
  return json{{"token_id", t.token_id},
              {"name", t.name},
              {"username", t.username},
              {"created_at", format_time(t.created_at)},
              {"expires_at",
               t.expires_at == 0 ? json(nullptr) : json(format_time(t.expires_at))}};
}

void post_token(call c) {
  std::string name;
  int64_t ttl = 0;
  if (auto why = rest::parse_token(c.req.body, name, ttl); !why.empty())
    return c.answer(ec::bad_request, why);
  c.self->request(c.self->state.auth, c.left(), atom::token_v, c.who, name, ttl)
      .then(
          [c](const std::string& token, const token_record& rec) mutable {
            auto j = token_json(rec);
            j["token"] = token;
            j["user"] =
                json{{"username", c.who.username}, {"role", to_string(c.who.role)}};
            c.answer(reply(201, j));
          },
          c.on_error());
}

void list_tokens(call c) {
  c.self->request(c.self->state.auth, c.left(), atom::token_v, atom::list_v, c.who, true)
      .then(
          [c](const std::vector<token_record>& xs) mutable {
            auto out = json::array();
            for (const auto& t : xs)
              out.push_back(token_json(t));
            c.answer(reply(200, json{{"tokens", std::move(out)}}));
          },
          c.on_error());
}

void delete_token(call c) {
  c.self->request(c.self->state.auth, c.left(), atom::revoke_v, c.who, c.args[0])
      .then([c](atom::ok) mutable { c.answer(reply(200, json::object())); },
            c.on_error());
}

// -- the bus: enrollment tokens, integrator keys, revocation -------------------------

/// 503 when the server runs without CURVE (no bus_keys actor): nothing to enroll.
bool without_curve(call& c) {
  if (c.self->state.bus_keys) return false;
  c.answer(unavailable("the bus runs without CURVE (bus_curve = false): there are no "
                       "keys to enroll, register or revoke"));
  return true;
}

json enrollment_token_json(const enrollment_token_record& t) {
  return json{{"token_id", t.token_id},
              {"created_by", t.created_by},
              {"created_at", format_time(t.created_at)},
              {"expires_at", format_time(t.expires_at)},
              {"uses_left", t.uses_left}};
}

void post_enrollment_token(call c) {
  if (without_curve(c)) return;
  int64_t ttl = 0;
  uint32_t uses = 1;
  if (auto why = rest::parse_enrollment_token(c.req.body, ttl, uses); !why.empty())
    return c.answer(ec::bad_request, why);
  c.self
      ->request(c.self->state.bus_keys, c.left(), atom::token_v, ttl * 1000000, uses,
                c.who.username)
      .then(
          [c](const std::string& token, const enrollment_token_record& rec) mutable {
            auto j = enrollment_token_json(rec);
            j["token"] = token;
            c.answer(reply(201, j));
          },
          c.on_error());
}

void list_enrollment_tokens(call c) {
  c.self->request(c.self->state.store, c.left(), atom::list_v, atom::enroll_v)
      .then(
          [c](const std::vector<enrollment_token_record>& xs) mutable {
            auto out = json::array();
            for (const auto& t : xs)
              out.push_back(enrollment_token_json(t));
            c.answer(reply(200, json{{"enrollment_tokens", std::move(out)}}));
          },
          c.on_error());
}

void delete_enrollment_token(call c) {
  c.self->request(c.self->state.store, c.left(), atom::del_v, atom::enroll_v, c.args[0])
      .then(
          [c](atom::ok) mutable {
            audit(c.self, c.who.username, "enrollment_token_deleted", c.args[0], "");
            c.answer(reply(200, json::object()));
          },
          c.on_error());
}

void list_bus_keys(call c) {
  c.self->request(c.self->state.store, c.left(), atom::list_v, atom::key_v)
      .then(
          [c](const std::vector<bus_key_record>& xs) mutable {
            auto out = json::array();
            for (const auto& k : xs)
              out.push_back(json{{"kind", k.integrator ? "integrator" : "agent"},
                                 {"name", k.name},
                                 {"role", k.integrator ? json(k.role) : json(nullptr)},
                                 {"public_key", k.public_z85},
                                 {"created_at", format_time(k.created_at)},
                                 {"created_by", k.created_by}});
            c.answer(reply(200, json{{"bus_keys", std::move(out)}}));
          },
          c.on_error());
}

void post_integrator(call c) {
  if (without_curve(c)) return;
  std::string name, key;
  user_role role = user_role::operator_;
  if (auto why = rest::parse_integrator(c.req.body, name, role, key); !why.empty())
    return c.answer(ec::bad_request, why);
  bus_key_record k{key, true, name, to_string(role), now_us(), c.who.username};
  c.self->request(c.self->state.bus_keys, c.left(), atom::put_v, k, c.who.username)
      .then(
          [c, name, role](atom::ok) mutable {
            c.answer(reply(201, json{{"name", name}, {"role", to_string(role)}}));
          },
          c.on_error());
}

/// DELETE /devices/{id}/key and /integrators/{name}.
void revoke_bus_key(call c, bool integrator) {
  if (without_curve(c)) return;
  c.self
      ->request(c.self->state.bus_keys, c.left(), atom::revoke_v, integrator, c.args[0],
                c.who.username)
      .then([c](atom::ok) mutable { c.answer(reply(200, json::object())); },
            c.on_error());
}
void revoke_device_key(call c) {
  revoke_bus_key(std::move(c), false);
}
void revoke_integrator(call c) {
  revoke_bus_key(std::move(c), true);
}

void list_devices(call c) {
  read_page(c, atom::devices_v);
}
void get_device(call c) {
  read(c, atom::device_v, c.args[0]);
}
void list_incidents(call c) {
  read_page(c, atom::incidents_v);
}
void get_incident(call c) {
  read(c, atom::incident_v, c.args[0]);
}
void list_actions(call c) {
  read_page(c, atom::actions_v);
}
void get_action(call c) {
  read(c, atom::action_v, c.args[0]);
}

void available(call c) {
  auto& st = c.self->state;
  c.self->request(st.store, c.left(), atom::get_v, atom::incident_v, c.args[0])
      .then(
          [c](const incident_record& inc) mutable {
            c.self->request(c.self->state.store, c.left(), atom::get_v, inc.device_id)
                .then(
                    [c, inc](const device_record& d) mutable {
                      c.answer(reply(200, available_actions(inc, d.isolated,
                                                            *c.self->state.policy.get(),
                                                            d.os)));
                    },
                    [c, inc](caf::error&) mutable {
                      c.answer(reply(200, available_actions(
                                              inc, false, *c.self->state.policy.get())));
                    });
          },
          c.on_error());
}

void post_action(call c) {
  std::string password, what;
  action_request areq;
  if (auto why = rest::parse_action(c.req.body, areq, password, what); !why.empty()) {
    // A well-formed request for an unknown type or kind is a refused trigger.
    if (!what.empty()) audit(c.self, c.who.username, "trigger_refused", what, why);
    return c.answer(ec::bad_request, why);
  }
  areq.username = c.who.username;
  areq.role = c.who.role;
  areq.idempotency_key = c.req.idempotency_key;
  if (areq.idempotency_key.size() > 128)
    return c.answer(ec::bad_request, "Idempotency-Key is longer than 128 characters");
  auto go = [c, areq, what, password]() mutable {
    with_password(c, areq.type, password, [c, areq, what](bool confirmed) mutable {
      areq.password_confirmed = confirmed;
      register_via_directory(c, what, atom::reg_v, areq);
    });
  };
  if (areq.idempotency_key.empty()) return go();
  // The same key from the same user answers the action it registered first.
  c.self
      ->request(c.self->state.store, c.left(), atom::idem_v, areq.username,
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

/// How often a bulk registration's canary looks at its actions' states.
constexpr auto canary_poll = std::chrono::milliseconds{100};
/// Of a bulk request's time, what a canary's wait leaves for registering the rest.
constexpr caf::timespan canary_reserve = std::chrono::seconds{5};

/// A canary's wait (POST /actions/bulk): asked `query`, it answers, in order, whether
/// each action is final and its state word ("" while it cannot be read), once every
/// one is final or `wait` has passed. It reads from the store's reader, every
/// canary_poll, and ends once it has answered.
caf::behavior canary_watch(caf::event_based_actor* self, store_reader_actor reader,
                           std::vector<std::string> ids, caf::timespan wait) {
  struct watch {
    std::vector<std::string> ids;
    std::vector<std::string> states;
    std::vector<bool> final;
    caf::response_promise rp;
    caf::actor_clock::time_point deadline;
    std::size_t asking = 0;
  };
  auto w = std::make_shared<watch>();
  w->ids = std::move(ids);
  w->states.assign(w->ids.size(), "");
  w->final.assign(w->ids.size(), false);
  auto settle = [self, w] {
    bool all = std::all_of(w->final.begin(), w->final.end(), [](bool f) { return f; });
    if (all || self->clock().now() >= w->deadline) {
      w->rp.deliver(w->final, w->states);
      self->quit();
    } else {
      self->delayed_send(self, canary_poll, atom::check_v);
    }
  };
  auto poll = [self, w, reader, settle] {
    for (std::size_t i = 0; i < w->ids.size(); ++i) {
      if (w->final[i]) continue;
      ++w->asking;
      // Never past the deadline by more than a poll.
      auto left = w->deadline - self->clock().now();
      auto bound =
          std::clamp<caf::timespan>(std::chrono::duration_cast<caf::timespan>(left),
                                    canary_poll, std::chrono::seconds{5});
      self->request(reader, bound, atom::query_v, atom::action_v, w->ids[i])
          .then(
              [w, i, settle](std::string& body) {
                auto j = json::parse(body, nullptr, false);
                const auto& a =
                    j.is_object() ? j.value("action", json::object()) : json{};
                if (a.is_object()) {
                  w->states[i] = a.value("state", std::string{});
                  w->final[i] = a.value("final", false);
                }
                if (--w->asking == 0) settle();
              },
              [w, settle](caf::error&) {
                if (--w->asking == 0) settle();
              });
    }
    if (w->asking == 0) settle();
  };
  return {
      [self, w, wait, poll](atom::query) {
        w->rp = self->make_response_promise();
        w->deadline = self->clock().now() + wait;
        poll();
      },
      [poll](atom::check) { poll(); },
  };
}

/// A bulk registration's answer, filled in the order of its targets.
struct bulk_answer {
  json results = json::array();
  std::size_t registered = 0;
  std::vector<std::string> action_ids; ///< Of the registered ones, in order.
  json canary;                         ///< null: no canary asked for.
};

/// Registers `reqs` through the directory in one request, adds each target's outcome
/// to `out`, then calls `next`. A refusal is audited with the same words a refused
/// POST /actions leaves.
template <class F>
void register_targets(call c, std::vector<action_request> reqs,
                      std::shared_ptr<bulk_answer> out, F next) {
  auto word = std::string{to_string(reqs.front().type)};
  std::vector<std::string> incident_ids;
  incident_ids.reserve(reqs.size());
  for (const auto& r : reqs)
    incident_ids.push_back(r.incident_id);
  auto refused = [c, word, out](const std::string& incident_id, const caf::error& err) {
    audit(c.self, c.who.username, "trigger_refused", word + " on " + incident_id,
          message_of(err));
    // No answer in time: the directory may still register it.
    auto f = err == caf::sec::request_timeout
                 ? unavailable("no answer in time; the action may be "
                               "registered: look for it before trying again")
                 : fail(err);
    out->results.push_back(json{{"incident_id", incident_id},
                                {"status", f.status},
                                {"error", json::parse(f.body)["error"]}});
  };
  c.self->request(c.self->state.directory, c.left(), atom::reg_v, std::move(reqs))
      .then(
          [incident_ids, refused, out,
           next](std::vector<registration_outcome>& outs) mutable {
            for (std::size_t i = 0; i < incident_ids.size(); ++i) {
              if (i >= outs.size()) {
                refused(incident_ids[i],
                        make_error(ec::storage, "the directory left it out"));
              } else if (outs[i].err) {
                refused(incident_ids[i], outs[i].err);
              } else {
                out->action_ids.push_back(outs[i].rec.action_id);
                out->results.push_back(json{{"incident_id", incident_ids[i]},
                                            {"action", to_json(outs[i].rec)}});
                ++out->registered;
              }
            }
            next();
          },
          [incident_ids, refused, next](caf::error& err) mutable {
            for (const auto& id : incident_ids)
              refused(id, err);
            next();
          });
}

/// The targets after a canary that did not pass: each refused, 409 `canary_failed`,
/// and audited.
void not_after_canary(call c, const std::vector<action_request>& rest,
                      const std::string& why, bulk_answer& out) {
  for (const auto& r : rest) {
    auto target = std::string{to_string(r.type)} + " on " + r.incident_id;
    audit(c.self, c.who.username, "trigger_refused", target, "canary: " + why);
    out.results.push_back(json{
        {"incident_id", r.incident_id},
        {"status", 409},
        {"error", {{"code", "canary_failed"}, {"message", "not acted on: " + why}}}});
  }
}

/// POST /actions/bulk once the body and the password are good: every target at once,
/// or the canary's first and then, if each of its actions completed, the rest.
void register_bulk(call c, std::vector<action_request> reqs, rest::bulk_canary canary) {
  auto out = std::make_shared<bulk_answer>();
  auto answer = [c, out]() mutable {
    auto n = out->results.size();
    json body{{"registered", out->registered},
              {"refused", n - out->registered},
              {"results", std::move(out->results)}};
    if (!out->canary.is_null()) body["canary"] = std::move(out->canary);
    c.answer(reply(202, body));
  };
  if (canary.count == 0) return register_targets(c, std::move(reqs), out, answer);
  // Held once, whichever way the canary goes.
  auto rest = std::make_shared<std::vector<action_request>>(
      std::make_move_iterator(reqs.begin() + canary.count),
      std::make_move_iterator(reqs.end()));
  reqs.resize(canary.count);
  auto n = canary.count;
  out->canary = json{{"count", n}, {"completed", 0}, {"passed", false}};
  auto after = [c, out, n, canary, rest, answer]() mutable {
    if (out->registered < n) {
      not_after_canary(c, *rest,
                       std::to_string(n - out->registered) + " of the " +
                           std::to_string(n) + " canary targets were refused",
                       *out);
      return answer();
    }
    // The rest must still be registered and answered within the call's time.
    auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::min<caf::timespan>(
            std::chrono::milliseconds{canary.wait_ms}, c.left() - canary_reserve));
    if (wait.count() <= 0) {
      not_after_canary(c, *rest, "no time left in the request to wait for the canary",
                       *out);
      return answer();
    }
    auto watch = c.self->spawn(canary_watch, c.self->state.reader, out->action_ids,
                               caf::timespan{wait});
    c.self->request(watch, c.left(), atom::query_v)
        .then(
            [c, out, n, wait, rest, answer](std::vector<bool>& final,
                                            std::vector<std::string>& states) mutable {
              std::string why;
              std::size_t completed = 0;
              for (std::size_t i = 0; i < states.size(); ++i) {
                if (states[i] == "completed") {
                  ++completed;
                  continue;
                }
                if (!why.empty()) continue;
                auto state = states[i].empty() ? std::string{"unknown"} : states[i];
                why = final[i]
                          ? "canary action " + out->action_ids[i] + " ended " + state
                          : "canary action " + out->action_ids[i] + " still " + state +
                                " after " + std::to_string(wait.count()) + " ms";
              }
              out->canary["completed"] = completed;
              if (completed < n) {
                not_after_canary(c, *rest, why, *out);
                return answer();
              }
              if (c.left() < canary_reserve / 2) {
                not_after_canary(c, *rest, "no time left in the request after the canary",
                                 *out);
                return answer();
              }
              out->canary["passed"] = true;
              register_targets(c, std::move(*rest), out, answer);
            },
            [c, out, rest, answer](caf::error& err) mutable {
              not_after_canary(c, *rest, "the canary's wait failed: " + message_of(err),
                               *out);
              answer();
            });
  };
  register_targets(c, std::move(reqs), out, std::move(after));
}

/// POST /actions/bulk: one action per target, each registered through the directory
/// as POST /actions registers one (its own lifecycle, trigger and audit records).
/// With a canary, the first targets alone, and the rest once each of those completed.
/// Answers 202 once every target has its outcome, in the order of the targets.
void post_actions_bulk(call c) {
  std::string password, what;
  std::vector<action_request> reqs;
  rest::bulk_canary canary;
  if (auto why = rest::parse_bulk(c.req.body, reqs, password, what, canary);
      !why.empty()) {
    if (!what.empty()) audit(c.self, c.who.username, "trigger_refused", what, why);
    return c.answer(ec::bad_request, why);
  }
  if (!c.req.idempotency_key.empty())
    return c.answer(ec::bad_request,
                    "Idempotency-Key is not taken by /actions/bulk; send each action "
                    "with POST /actions to retry it safely");
  for (auto& r : reqs) {
    r.username = c.who.username;
    r.role = c.who.role;
  }
  c.req.body.clear(); // parsed: the call is copied below, its body need not be
  auto type = reqs.front().type;
  with_password(c, type, password,
                [c, what, canary, reqs = std::move(reqs)](bool confirmed) mutable {
                  if (c.expired()) {
                    audit(c.self, c.who.username, "trigger_refused", what,
                          "request timed out");
                    return c.answer(
                        unavailable("the request took too long; nothing was registered"));
                  }
                  for (auto& r : reqs)
                    r.password_confirmed = confirmed;
                  register_bulk(c, std::move(reqs), canary);
                });
}

void cancel_action(call c) {
  auto id = c.args[0];
  auto comment = rest::comment_of(c.req.body);
  c.self
      ->request(c.self->state.directory, c.left(), atom::cancel_v, id, c.who.username,
                comment)
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

void reverse_action(call c) {
  auto id = c.args[0];
  action_request areq;
  std::string password;
  if (auto why = rest::parse_reverse(c.req.body, areq.comment, password); !why.empty())
    return c.answer(ec::bad_request, why);
  areq.username = c.who.username;
  areq.role = c.who.role;
  // The reverse's type decides whether a password is needed: look at the original.
  c.self->request(c.self->state.store, c.left(), atom::get_v, atom::action_v, id)
      .then(
          [c, id, areq, password](const action_record& original) mutable {
            auto type = reverse_of(original.type).value_or(original.type);
            with_password(c, type, password, [c, id, areq](bool confirmed) mutable {
              areq.password_confirmed = confirmed;
              audit(c.self, c.who.username, "reverse", id, "requested");
              register_via_directory(c, "reverse of " + id, atom::reverse_v, id, areq);
            });
          },
          c.on_error());
}

void get_audit(call c) {
  // From the writer: its head in memory is what exposes records cut off the end.
  auto page = parse_page(c.params);
  if (!page) return c.answer(page.error());
  c.self->request(c.self->state.store, c.left(), atom::query_v, atom::audit_v, *page)
      .then(
          [c](std::string& body) mutable {
            c.answer(http_response{200, body, {}, {}, {}});
          },
          c.on_error());
}

/// Stores `u` (new or changed) after hashing `password` when given.
template <class Store>
void hash_then(call c, user_record u, const std::string& password, Store store) {
  if (password.empty()) return store(std::move(u));
  c.self->request(c.self->state.hasher, c.left(), atom::hash_v, password, u)
      .then([store](user_record& hashed) mutable { store(std::move(hashed)); },
            c.on_error());
}

void list_users(call c) {
  auto page = parse_page(c.params);
  if (!page) return c.answer(page.error());
  c.self->request(c.self->state.reader, c.left(), atom::query_v, atom::users_v, *page)
      .then(
          [c](const std::string& body) mutable {
            // `locked` lives in the auth actor, not in the store.
            c.self->request(c.self->state.auth, c.left(), atom::locked_v)
                .then(
                    [c, body](const std::vector<std::string>& locked) mutable {
                      auto j = json::parse(body, nullptr, false);
                      if (!j.is_object() || !j.contains("users") ||
                          !j["users"].is_array())
                        return c.answer(http_response{200, body, {}, {}, {}});
                      for (auto& u : j["users"]) {
                        auto name = u.value("username", std::string{});
                        u["locked"] =
                            std::binary_search(locked.begin(), locked.end(), name);
                      }
                      c.answer(reply(200, j));
                    },
                    c.on_error());
          },
          c.on_error());
}

void post_user(call c) {
  user_record u;
  std::string password;
  if (auto why = rest::parse_new_user(c.req.body, u, password); !why.empty())
    return c.answer(ec::bad_request, why);
  u.created_at = now_us();
  hash_then(c, std::move(u), password, [c](user_record u) mutable {
    c.self->request(c.self->state.store, c.left(), atom::put_v, u)
        .then(
            [c, u](atom::ok) mutable {
              audit(c.self, c.who.username, "user_created", u.username,
                    std::string{"role "} + to_string(u.role));
              c.answer(
                  reply(201, json{{"user", json{{"username", u.username},
                                                {"role", to_string(u.role)},
                                                {"created_at", format_time(u.created_at)},
                                                {"locked", false},
                                                {"disabled", false}}}}));
            },
            [c](caf::error& err) mutable {
              if (code_of(err) == ec::conflict)
                c.answer(ec::conflict, "that user exists already");
              else
                c.answer(err);
            });
  });
}

void delete_user(call c) {
  auto name = c.args[0];
  c.self->request(c.self->state.store, c.left(), atom::del_v, name)
      .then(
          [c, name](atom::ok) mutable {
            c.self->send(c.self->state.auth, atom::forget_v, name);
            audit(c.self, c.who.username, "user_deleted", name, "ok");
            c.answer(reply(200, json::object()));
          },
          c.on_error());
}

void patch_user(call c) {
  auto name = c.args[0];
  std::optional<user_role> role;
  std::string password;
  std::optional<bool> disabled;
  if (auto why = rest::parse_user_change(c.req.body, role, password, disabled);
      !why.empty())
    return c.answer(ec::bad_request, why);
  c.self->request(c.self->state.store, c.left(), atom::user_v, name)
      .then(
          [c, role, password, disabled](user_record u) mutable {
            if (role) u.role = *role;
            if (disabled) u.disabled = *disabled;
            hash_then(c, std::move(u), password, [c, password](user_record u) mutable {
              c.self->request(c.self->state.store, c.left(), atom::update_v, u)
                  .then(
                      [c, u, password](atom::ok) mutable {
                        c.self->send(c.self->state.auth, atom::forget_v, u.username);
                        audit(c.self, c.who.username, "user_changed", u.username,
                              std::string{"role "} + to_string(u.role) +
                                  (u.disabled ? ", disabled" : ", enabled") +
                                  (password.empty() ? "" : ", new password"));
                        c.answer(
                            reply(200, json{{"user", json{{"username", u.username},
                                                          {"role", to_string(u.role)},
                                                          {"disabled", u.disabled}}}}));
                      },
                      c.on_error());
            });
          },
          c.on_error());
}

void stats(call c) {
  c.self->request(c.self->state.reader, c.left(), atom::query_v, atom::stats_v)
      .then(
          [c](const std::string& body) mutable {
            auto j = json::parse(body, nullptr, false);
            if (!j.is_object()) j = json::object();
            auto& st = c.self->state;
            if (st.bus_stats) j.update(st.bus_stats());
            if (st.supervision)
              j["supervision"] =
                  json{{"api_restarts", st.supervision->api_restarts.load()},
                       {"auth_restarts", st.supervision->auth_restarts.load()},
                       {"api_exceptions", st.supervision->api_exceptions.load()}};
            c.answer(reply(200, j));
          },
          c.on_error());
}

/// A copy of the live database, streamed as the answer's body (the HTTP front end
/// sends the file and removes it). One at a time; each one is audited.
void post_backup(call c) {
  auto& st = c.self->state;
  // Only the exact path: the HTTPS front end waits long enough for a backup only
  // for this spelling of it (no trailing slash, no escapes).
  if (std::string_view{c.req.target}.substr(0, c.req.target.find('?')) !=
      std::string{prefix} + "/backup")
    return c.answer(ec::not_found, "no such endpoint; use POST /api/v1/backup");
  if (!st.backup) return c.answer(unavailable("backups are not available here"));
  if (st.backup_running)
    return c.answer(ec::conflict, "a backup is being taken; try again when it ends");
  st.backup_running = true;
  c.self->request(st.backup, backup_timeout, atom::backup_v)
      .then(
          [c](std::string& path, int64_t bytes, int64_t records,
              std::string& head) mutable {
            c.self->state.backup_running = false;
            auto name = "parry-backup-" + format_time(now_us()) + ".db";
            std::replace(name.begin(), name.end(), ':', '-');
            audit(c.self, c.who.username, "backup_taken", name,
                  std::to_string(bytes) + " bytes, " + std::to_string(records) +
                      " audit records, head " + head);
            http_response r;
            r.file = std::move(path);
            r.headers["Content-Type"] = "application/vnd.sqlite3";
            r.headers["Content-Disposition"] = "attachment; filename=\"" + name + "\"";
            r.headers["X-Parry-Audit-Records"] = std::to_string(records);
            r.headers["X-Parry-Audit-Head"] = head;
            c.answer(std::move(r));
          },
          [c](caf::error& err) mutable {
            c.self->state.backup_running = false;
            audit(c.self, c.who.username, "backup_taken", "", "failed");
            c.answer(err);
          });
}

// -- the route table: hold it against docs/rest-api.md ------------------------------

/// Who may call a route.
enum class access {
  anyone,        ///< No session or token needed.
  user,          ///< Any authenticated user.
  actor,         ///< administrator or security_officer (may_trigger).
  administrator, ///< administrator only.
};

struct route {
  const char* method;
  /// Below /api/v1; `{id}` takes one segment that is a valid id, `{name}` a username.
  const char* pattern;
  access who;
  void (*handle)(call);
};

const route routes[] = {
    {"GET", "/health", access::anyone, health},
    {"POST", "/login", access::anyone, login},
    {"POST", "/logout", access::user, logout},
    {"GET", "/session", access::user, get_session},
    {"GET", "/events", access::user, events},
    {"POST", "/tokens", access::user, post_token},
    {"GET", "/tokens", access::user, list_tokens},
    {"DELETE", "/tokens/{id}", access::user, delete_token},
    {"GET", "/devices", access::user, list_devices},
    {"GET", "/devices/{id}", access::user, get_device},
    {"GET", "/incidents", access::user, list_incidents},
    {"GET", "/incidents/{id}", access::user, get_incident},
    {"GET", "/incidents/{id}/available-actions", access::user, available},
    {"GET", "/actions", access::user, list_actions},
    {"POST", "/actions", access::actor, post_action},
    {"POST", "/actions/bulk", access::actor, post_actions_bulk},
    {"GET", "/actions/{id}", access::user, get_action},
    {"POST", "/actions/{id}/cancel", access::actor, cancel_action},
    {"POST", "/actions/{id}/reverse", access::actor, reverse_action},
    {"GET", "/audit", access::administrator, get_audit},
    {"GET", "/users", access::administrator, list_users},
    {"POST", "/users", access::administrator, post_user},
    {"PATCH", "/users/{name}", access::administrator, patch_user},
    {"DELETE", "/users/{name}", access::administrator, delete_user},
    {"GET", "/stats", access::user, stats},
    {"POST", "/backup", access::administrator, post_backup},
    {"POST", "/enrollment-tokens", access::administrator, post_enrollment_token},
    {"GET", "/enrollment-tokens", access::administrator, list_enrollment_tokens},
    {"DELETE", "/enrollment-tokens/{id}", access::administrator, delete_enrollment_token},
    {"GET", "/bus-keys", access::administrator, list_bus_keys},
    {"DELETE", "/devices/{id}/key", access::administrator, revoke_device_key},
    {"POST", "/integrators", access::administrator, post_integrator},
    {"DELETE", "/integrators/{id}", access::administrator, revoke_integrator},
};

/// Matches `seg` against `pattern`, collecting the `{...}` segments into `args`.
/// `bad_arg` is set when the shape matches but an argument is not a valid id or name.
bool matches(const char* pattern, const std::vector<std::string>& seg,
             std::vector<std::string>& args, bool& bad_arg) {
  auto want = segments(pattern);
  if (want.size() != seg.size()) return false;
  args.clear();
  bad_arg = false;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (want[i] == "{id}" || want[i] == "{name}") {
      if (want[i] == "{id}" ? !bus::valid_id(seg[i]) : !rest::valid_username(seg[i]))
        bad_arg = true;
      args.push_back(seg[i]);
    } else if (want[i] != seg[i]) {
      return false;
    }
  }
  return true;
}

const char* role_problem(access who, user_role role) {
  switch (who) {
  case access::anyone:
  case access::user:
    return nullptr;
  case access::actor:
    return may_trigger(role) ? nullptr : "may not trigger, cancel or reverse actions";
  case access::administrator:
    return may_administer(role) ? nullptr : "is not an administrator";
  }
  return "unknown access rule";
}

bool headers_valid(const http_request& r) {
  return valid_utf8(r.method) && valid_utf8(r.bearer) && valid_utf8(r.session) &&
         valid_utf8(r.csrf) && valid_utf8(r.idempotency_key) && valid_utf8(r.source);
}

/// What the bus offers integrators (docs/bus-protocol.md, "Integrators"): reading
/// incidents, devices, actions and stats, and triggering, cancelling and reversing
/// actions. Accounts, tokens, keys and the audit trail stay with people over HTTPS.
bool offered_to_integrators(const std::string& method, const std::string& path) {
  auto under = [&](std::string_view p) {
    std::string_view full{path};
    std::string want = std::string{prefix} + std::string{p};
    return full.substr(0, want.size()) == want &&
           (full.size() == want.size() || full[want.size()] == '/' ||
            full[want.size()] == '?');
  };
  if (method == "GET")
    return under("/incidents") || under("/devices") || under("/actions") ||
           under("/health") || under("/stats");
  return method == "POST" && under("/actions");
}

/// Authenticates (unless the route is for anyone), checks role and CSRF, runs it.
void dispatch(call c, const route& r) {
  if (r.who == access::anyone) return guarded(c, [&] { r.handle(c); });
  if (c.who.integrator) {
    if (auto why = role_problem(r.who, c.who.role))
      return c.answer(ec::forbidden,
                      c.who.username + " (role " + to_string(c.who.role) + ") " + why);
    return guarded(c, [&] { r.handle(c); });
  }
  bool session = c.req.bearer.empty();
  c.self
      ->request(c.self->state.auth, c.left(), atom::authn_v, session, c.credential(),
                !c.req.passive)
      .then(
          [c, &r](const principal& who) mutable {
            c.who = who;
            if (auto why = role_problem(r.who, who.role))
              return c.answer(ec::forbidden,
                              std::string{"role "} + to_string(who.role) + " " + why);
            if (c.req.method != "GET" && who.via_session &&
                !equal_constant_time(c.req.csrf, who.csrf_token))
              return c.answer(ec::forbidden, "missing or wrong X-CSRF-Token");
            guarded(c, [&] { r.handle(c); });
          },
          c.on_error());
}

} // namespace

std::string route_label(const std::string& method, const std::string& target) {
  auto path = std::string_view{target}.substr(0, target.find('?'));
  std::string_view pre{prefix};
  if (path.substr(0, pre.size()) != pre) return "unmatched";
  auto seg = segments(std::string{path.substr(pre.size())});
  std::vector<std::string> args;
  for (const auto& r : routes) {
    bool bad = false;
    if (r.method == method && matches(r.pattern, seg, args, bad) && !bad)
      return method + " " + r.pattern;
  }
  return "unmatched";
}

namespace {

/// Finds the request's route: 400 for text that is not UTF-8, 404 for an unknown
/// path, 405 (with Allow) for a known path and another method.
void route_request(call c) {
  auto [path, params] = split_target(c.req.target);
  if (!headers_valid(c.req) || !valid_utf8(path))
    return c.answer(ec::bad_request, "request target or header is not valid UTF-8");
  for (const auto& [k, v] : params)
    if (!valid_utf8(k) || !valid_utf8(v))
      return c.answer(ec::bad_request, "query parameter is not valid UTF-8");
  std::string_view pre{prefix};
  if (path.compare(0, pre.size(), pre) != 0 ||
      (path.size() > pre.size() && path[pre.size()] != '/'))
    return c.answer(ec::not_found,
                    "no such endpoint: " + std::string{utf8_prefix(path, 256)});
  auto seg = segments(path.substr(pre.size()));
  c.params = std::move(params);
  std::string allow;
  std::vector<std::string> args;
  bool bad_arg = false;
  const route* found = nullptr;
  bool shape_ok = false;
  for (const auto& r : routes) {
    bool bad = false;
    std::vector<std::string> a;
    if (!matches(r.pattern, seg, a, bad)) continue;
    if (r.method != c.req.method) {
      if (!bad) allow += (allow.empty() ? "" : ", ") + std::string{r.method};
      continue;
    }
    if (bad) {
      bad_arg = true;
      args = std::move(a);
      continue;
    }
    found = &r;
    shape_ok = true;
    args = std::move(a);
    break;
  }
  if (!shape_ok && bad_arg)
    return c.answer(ec::not_found,
                    "no " + seg[0] + " " + std::string{utf8_prefix(args.back(), 64)});
  if (found == nullptr && !allow.empty()) {
    auto r = reply(405, error_json("method_not_allowed",
                                   c.req.method + " is not allowed here; use " + allow));
    r.headers["Allow"] = allow;
    return c.answer(std::move(r));
  }
  if (found == nullptr)
    return c.answer(ec::not_found, "no such endpoint: " + c.req.method + " " +
                                       std::string{utf8_prefix(path, 256)});
  c.args = std::move(args);
  dispatch(std::move(c), *found);
}

} // namespace

api_actor::behavior_type api(api_stateful self, api_state deps) {
  self->state = std::move(deps);
  return {
      [self](const http_request& req) -> caf::result<http_response> {
        auto rp = self->make_response_promise<http_response>();
        call c{self, req, {}, {}, {}, rp, self->clock().now() + self->state.deadline};
        guarded(c, [&] { route_request(c); });
        return rp;
      },
      [self](const http_request& req,
             const principal& who) -> caf::result<http_response> {
        auto rp = self->make_response_promise<http_response>();
        call c{self, req, who, {}, {}, rp, self->clock().now() + self->state.deadline};
        c.who.integrator = true;
        guarded(c, [&] {
          if (!offered_to_integrators(req.method, split_target(req.target).first))
            return c.answer(ec::forbidden, req.method + " " +
                                               std::string{utf8_prefix(req.target, 128)} +
                                               " is not offered to integrators");
          route_request(c);
        });
        return rp;
      },
  };
}

} // namespace parry
