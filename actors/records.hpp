#pragma once

// The records parryd's actors exchange: what is stored, what is asked, what is
// answered. Plain data with CAF inspect overloads; no behaviour. The domain's words
// (types, kinds, roles, states) are the enums of common/domain.hpp: CAF serializes
// an enum field as its underlying integer, and strings exist only at the edges.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/timespan.hpp>

#include "bus/messages.hpp"
#include "common/domain.hpp"

namespace parry {

/// Response action states (DESIGN.md §4): `state::sent` is `action_state::sent`
/// (common/domain.hpp); spelled as strings only in SQLite and JSON.
using state = action_state;

/// A device as stored and shown.
struct device_record {
  std::string device_id;
  std::string hostname;
  std::string os;
  std::string agent_version;
  std::vector<std::string> addresses;
  bool online = false;
  bool isolated = false; ///< As last reported by the agent.
  int64_t first_seen = 0;
  int64_t last_seen = 0;
};

/// What a passivated device keeps: all its actor needs to go on where it stopped, a
/// few hundred bytes held by the directory instead of an actor (issue 11, item 4).
struct device_snapshot {
  device_record rec;
  /// Last time anything arrived from the agent, on the actor clock (since its epoch).
  caf::timespan last_heard{0};
  int64_t stored_last_seen = 0;
  uint64_t command_seq = 0;
  uint64_t seq = 0;
  uint64_t msg_id = 0;
  uint64_t incidents = 0;
  bool welcomed = false;
};

/// An EDR incident: the report as the agent sent it plus what the server adds.
struct incident_record {
  std::string incident_id;
  std::string device_id;
  std::string status = "new";
  int64_t created_at = 0;
  bus::incident_report report;
  /// Not stored: the report's size on the wire (bytes), given back to the ingest
  /// gauge (actors/ingest.hpp) once the store has handled it.
  uint64_t wire_bytes = 0;
};

/// One response action.
struct action_record {
  std::string action_id;
  action_type type = action_type::isolate; ///< A word at the edges ("quarantine").
  std::string device_id;
  std::string incident_id;
  /// How the request named its target ("detection" or "event" at the edges).
  parry::target_kind target_kind = parry::target_kind::detection;
  std::string target_event_id; ///< The event acted on (for both kinds).
  std::map<std::string, std::string> params;
  std::string requested_by;
  std::string comment;
  std::string idempotency_key;
  action_state state = action_state::registered;
  int64_t created_at = 0; ///< 0 until the action stores itself (new, not resumed).
  int64_t updated_at = 0;
  bool result_ok = false;
  std::string result_error;
  std::map<std::string, std::string> result_effect;
  /// µs the command spent in the agent, as its result states (0: not stated).
  int64_t result_agent_us = 0;
  int64_t expires_at = 0; ///< The command is void after this (µs since epoch).
  bool password_confirmed = false;
  std::string reverses;    ///< The action this one undoes.
  std::string reversed_by; ///< The action that undoes (or is undoing) this one.
};

/// One step in an action's life, appended to the store before it takes effect.
struct transition {
  std::string action_id;
  action_state state = action_state::registered;
  int64_t time = 0;
  std::string reason;
};

/// What a person asked for through REST (or an integrator through the bus).
struct action_request {
  action_type type = action_type::isolate; ///< Parsed at the edge (api).
  std::string incident_id;
  parry::target_kind target_kind = parry::target_kind::detection;
  std::string event_id;
  std::map<std::string, std::string> params;
  /// start_process argv given as a JSON array (used when `argv_given`); the
  /// `arguments` param is the text form, split by the device's OS rules.
  std::vector<std::string> argv;
  bool argv_given = false;
  std::string comment;
  std::string idempotency_key;
  std::string username; ///< Already authenticated.
  user_role role = user_role::operator_;
  bool password_confirmed = false; ///< The api checked the password re-entry.
};

/// Server-wide rules for triggering actions (configurable).
struct action_policy {
  /// Types that need the caller's password again (start_process always does).
  std::vector<action_type> password_required = default_password_required();
  /// Executables start_process may run; empty means any absolute path.
  std::vector<std::string> start_process_allowlist;
  /// Time to live of a command before the agent accepts it, by type.
  std::map<action_type, int64_t> ttl_us;
  /// Time to live for types without their own entry.
  int64_t default_ttl_us = 24LL * 3600 * 1000000;
  /// Execution deadline after the agent acknowledged a command, by type: without a
  /// result by then the action ends `failed` ("no result from the agent"). Also bounds
  /// how long a `cancelling` action waits for the agent's answer.
  std::map<action_type, int64_t> exec_deadline_us;
  /// Execution deadline for types without their own entry.
  int64_t default_exec_deadline_us = 3600LL * 1000000;

  bool needs_password(action_type type) const;
  int64_t ttl_for(action_type type) const;
  int64_t exec_deadline_for(action_type type) const;
};

/// One record to append to the audit trail.
struct audit_entry {
  std::string actor;
  std::string kind;
  std::string target;
  std::string detail;
};

/// One action registered together with others in one store write (POST
/// /actions/bulk): its trigger audit record, the action as stored, its first
/// transition (`registered`) and those stored with it: `sent` when its device took
/// the command at once (`rec.state` is then the last of them).
struct action_registration {
  audit_entry trigger;
  action_record rec;
  transition first;
  std::vector<transition> then;
};

/// What became of one request of a bulk registration: the action as registered, or
/// the error that refused it (`err` set, `rec` empty).
struct registration_outcome {
  action_record rec;
  caf::error err;
};

/// A user account.
struct user_record {
  std::string username;
  user_role role = user_role::operator_;
  std::string salt_hex;
  uint32_t iterations = 0;
  std::string hash_hex;
  int64_t created_at = 0;
  bool disabled = false; ///< Cannot sign in or use a token until enabled again.
};

/// A bearer token as stored and listed; the token itself is never kept.
struct token_record {
  std::string token_id;   ///< 16 hex digits; names the token in GET/DELETE /tokens.
  std::string name;       ///< Given by its creator, at most 128 bytes.
  std::string username;   ///< Owner.
  int64_t created_at = 0; ///< Microseconds since the epoch.
  int64_t expires_at = 0; ///< Microseconds since the epoch; 0 for never (old tokens).
};

/// A CURVE key admitted to the bus (docs/bus-protocol.md, "CURVE and ZAP").
struct bus_key_record {
  std::string public_z85;  ///< The key, 40 Z85 characters.
  bool integrator = false; ///< false: an agent key, `name` is its device_id.
  std::string name;        ///< The device_id, or the integrator's name.
  std::string role;        ///< Integrators: a user_role word; agents: "".
  int64_t created_at = 0;  ///< Microseconds since the epoch.
  std::string created_by;  ///< Who enrolled or registered it.
};

/// A one-time (or N-time) enrollment token as stored: never the token itself.
struct enrollment_token_record {
  std::string token_id;   ///< 16 hex digits, to list and revoke it.
  std::string created_by; ///< The administrator who made it.
  int64_t created_at = 0; ///< Microseconds since the epoch.
  int64_t expires_at = 0; ///< Microseconds since the epoch; refused from then on.
  uint32_t uses_left = 1; ///< Enrollments it still allows.
};

/// Who is making a request, once authenticated.
struct principal {
  std::string username;
  user_role role = user_role::operator_;
  std::string csrf_token; ///< Empty for bearer tokens, which need no CSRF check.
  bool via_session = false;
  /// An integrator on the bus, authenticated by its CURVE key: its key is the
  /// credential, so no password re-entry is asked of it. `username` is
  /// "integrator:<name>" in the audit trail.
  bool integrator = false;
};

/// One page of a list read: at most `limit` rows after `cursor`.
struct page_request {
  int64_t limit = 0; ///< Rows; 0 is the list's default, more than its maximum is capped.
  std::string
      cursor; ///< Opaque, from the previous page's `next_cursor`; "" for the first.
  std::map<std::string, std::string> filters; ///< device_id, state, incident_id, after.
};

/// One HTTP request as the api actor sees it (parsed by the HTTP thread).
struct http_request {
  std::string method;
  std::string target; ///< Path and query string.
  std::string body;
  std::string bearer;  ///< From `Authorization: Bearer`.
  std::string session; ///< From the `parry_session` cookie.
  std::string csrf;    ///< From `X-CSRF-Token`.
  std::string idempotency_key;
  std::string source; ///< The peer's IP address, set by the HTTP server.
  /// A check that is not use: the session's idle time keeps running (the event
  /// stream's periodic check that its session still stands).
  bool passive = false;
  /// A WebSocket upgrade request (GET /events).
  bool upgrade = false;
};

/// The answer the HTTP thread writes back.
struct http_response {
  int status = 200;
  std::string body;
  std::vector<std::string> set_cookies;
  /// Further headers (Retry-After, Allow).
  std::map<std::string, std::string> headers;
  /// A file sent as the body instead of `body` (POST /backup), removed once the
  /// HTTP thread has opened it.
  std::string file;
};

template <class Inspector> auto inspect(Inspector& f, audit_entry& x) {
  return f(x.actor, x.kind, x.target, x.detail);
}
template <class Inspector> auto inspect(Inspector& f, action_policy& x) {
  return f(x.password_required, x.start_process_allowlist, x.ttl_us, x.default_ttl_us,
           x.exec_deadline_us, x.default_exec_deadline_us);
}
template <class Inspector> auto inspect(Inspector& f, device_record& x) {
  return f(x.device_id, x.hostname, x.os, x.agent_version, x.addresses, x.online,
           x.isolated, x.first_seen, x.last_seen);
}
template <class Inspector> auto inspect(Inspector& f, device_snapshot& x) {
  return f(x.rec, x.last_heard, x.stored_last_seen, x.command_seq, x.seq, x.msg_id,
           x.incidents, x.welcomed);
}
template <class Inspector> auto inspect(Inspector& f, bus_key_record& x) {
  return f(x.public_z85, x.integrator, x.name, x.role, x.created_at, x.created_by);
}
template <class Inspector> auto inspect(Inspector& f, enrollment_token_record& x) {
  return f(x.token_id, x.created_by, x.created_at, x.expires_at, x.uses_left);
}
template <class Inspector> auto inspect(Inspector& f, incident_record& x) {
  return f(x.incident_id, x.device_id, x.status, x.created_at, x.report, x.wire_bytes);
}
template <class Inspector> auto inspect(Inspector& f, action_record& x) {
  return f(x.action_id, x.type, x.device_id, x.incident_id, x.target_kind,
           x.target_event_id, x.params, x.requested_by, x.comment, x.idempotency_key,
           x.state, x.created_at, x.updated_at, x.result_ok, x.result_error,
           x.result_effect, x.result_agent_us, x.expires_at, x.password_confirmed,
           x.reverses, x.reversed_by);
}
template <class Inspector> auto inspect(Inspector& f, transition& x) {
  return f(x.action_id, x.state, x.time, x.reason);
}
template <class Inspector> auto inspect(Inspector& f, action_request& x) {
  return f(x.type, x.incident_id, x.target_kind, x.event_id, x.params, x.argv,
           x.argv_given, x.comment, x.idempotency_key, x.username, x.role,
           x.password_confirmed);
}
template <class Inspector> auto inspect(Inspector& f, action_registration& x) {
  return f(x.trigger, x.rec, x.first, x.then);
}
template <class Inspector> auto inspect(Inspector& f, registration_outcome& x) {
  return f(x.rec, x.err);
}
template <class Inspector> auto inspect(Inspector& f, user_record& x) {
  return f(x.username, x.role, x.salt_hex, x.iterations, x.hash_hex, x.created_at,
           x.disabled);
}
template <class Inspector> auto inspect(Inspector& f, principal& x) {
  return f(x.username, x.role, x.csrf_token, x.via_session, x.integrator);
}
template <class Inspector> auto inspect(Inspector& f, page_request& x) {
  return f(x.limit, x.cursor, x.filters);
}
template <class Inspector> auto inspect(Inspector& f, http_request& x) {
  return f(x.method, x.target, x.body, x.bearer, x.session, x.csrf, x.idempotency_key,
           x.source, x.passive, x.upgrade);
}
template <class Inspector> auto inspect(Inspector& f, token_record& x) {
  return f(x.token_id, x.name, x.username, x.created_at, x.expires_at);
}
template <class Inspector> auto inspect(Inspector& f, http_response& x) {
  return f(x.status, x.body, x.set_cookies, x.headers, x.file);
}

} // namespace parry
