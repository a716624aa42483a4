#pragma once

// Every actor interface of parryd in one catalogue, with the records they exchange
// and the atoms that tag their messages. One comment per handler says what it does.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include "bus/messages.hpp"

CAF_BEGIN_TYPE_ID_BLOCK(parry, caf::first_custom_type_id)
CAF_ADD_ATOM(parry, parry::atom, ok, "ok")
CAF_ADD_ATOM(parry, parry::atom, put, "put")
CAF_ADD_ATOM(parry, parry::atom, get, "get")
CAF_ADD_ATOM(parry, parry::atom, update, "update")
CAF_ADD_ATOM(parry, parry::atom, query, "query")
CAF_ADD_ATOM(parry, parry::atom, flush, "flush")
CAF_ADD_ATOM(parry, parry::atom, open, "open")
CAF_ADD_ATOM(parry, parry::atom, user, "user")
CAF_ADD_ATOM(parry, parry::atom, token, "token")
CAF_ADD_ATOM(parry, parry::atom, revoke, "revoke")
CAF_ADD_ATOM(parry, parry::atom, idem, "idem")
CAF_ADD_ATOM(parry, parry::atom, hello, "hello")
CAF_ADD_ATOM(parry, parry::atom, heartbeat, "heartbeat")
CAF_ADD_ATOM(parry, parry::atom, incident, "incident")
CAF_ADD_ATOM(parry, parry::atom, ack, "ack")
CAF_ADD_ATOM(parry, parry::atom, result, "result")
CAF_ADD_ATOM(parry, parry::atom, unreach, "unreach")
CAF_ADD_ATOM(parry, parry::atom, check, "check")
CAF_ADD_ATOM(parry, parry::atom, submit, "submit")
CAF_ADD_ATOM(parry, parry::atom, transmit, "transmit")
CAF_ADD_ATOM(parry, parry::atom, sent, "sent")
CAF_ADD_ATOM(parry, parry::atom, queued, "queued")
CAF_ADD_ATOM(parry, parry::atom, done, "done")
CAF_ADD_ATOM(parry, parry::atom, start, "start")
CAF_ADD_ATOM(parry, parry::atom, resume, "resume")
CAF_ADD_ATOM(parry, parry::atom, reg, "register")
CAF_ADD_ATOM(parry, parry::atom, send, "send")
CAF_ADD_ATOM(parry, parry::atom, login, "login")
CAF_ADD_ATOM(parry, parry::atom, logout, "logout")
CAF_ADD_ATOM(parry, parry::atom, authn, "authn")
CAF_ADD_ATOM(parry, parry::atom, verify, "verify")
CAF_ADD_ATOM(parry, parry::atom, hash, "hash")
CAF_ADD_ATOM(parry, parry::atom, bootstrap, "bootstrap")
CAF_ADD_ATOM(parry, parry::atom, cancel, "cancel")
CAF_ADD_ATOM(parry, parry::atom, expire, "expire")
CAF_ADD_ATOM(parry, parry::atom, withdraw, "withdraw")
CAF_ADD_ATOM(parry, parry::atom, reverse, "reverse")
CAF_ADD_ATOM(parry, parry::atom, revert, "revert")
CAF_ADD_ATOM(parry, parry::atom, link, "link")
CAF_ADD_ATOM(parry, parry::atom, audit, "audit")
CAF_ADD_ATOM(parry, parry::atom, confirm, "confirm")
CAF_ADD_ATOM(parry, parry::atom, forget, "forget")
CAF_ADD_ATOM(parry, parry::atom, del, "delete")
CAF_ADD_ATOM(parry, parry::atom, action, "action")
CAF_END_TYPE_ID_BLOCK(parry)

namespace parry {

// -- records --------------------------------------------------------------------

/// Response action states (DESIGN.md §4), as stored and shown.
namespace state {
inline constexpr const char* registered = "registered";
inline constexpr const char* queued = "queued";
inline constexpr const char* sent = "sent";
inline constexpr const char* acknowledged = "acknowledged";
inline constexpr const char* completed = "completed";
inline constexpr const char* failed = "failed";
inline constexpr const char* expired = "expired";
inline constexpr const char* cancelled = "cancelled";
inline constexpr const char* reverted = "reverted";
} // namespace state

/// True for states an action never leaves.
bool is_final(const std::string& st);

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

/// An EDR incident: the report as the agent sent it plus what the server adds.
struct incident_record {
  std::string incident_id;
  std::string device_id;
  std::string status = "new";
  int64_t created_at = 0;
  bus::incident_report report;
};

/// One response action.
struct action_record {
  std::string action_id;
  std::string type;
  std::string device_id;
  std::string incident_id;
  std::string target_kind;     ///< "detection" or "event".
  std::string target_event_id; ///< The event acted on (for both kinds).
  std::map<std::string, std::string> params;
  std::string requested_by;
  std::string comment;
  std::string idempotency_key;
  std::string state;
  int64_t created_at = 0;
  int64_t updated_at = 0;
  bool result_ok = false;
  std::string result_error;
  std::map<std::string, std::string> result_effect;
  int64_t expires_at = 0; ///< The command is void after this (µs since epoch).
  bool password_confirmed = false;
  std::string reverses;    ///< The action this one undoes.
  std::string reversed_by; ///< The action that undoes (or is undoing) this one.
};

/// One step in an action's life, appended to the store before it takes effect.
struct transition {
  std::string action_id;
  std::string state;
  int64_t time = 0;
  std::string reason;
};

/// What a person asked for through REST (or an integrator through the bus).
struct action_request {
  std::string type;
  std::string incident_id;
  std::string target_kind;
  std::string event_id;
  std::map<std::string, std::string> params;
  std::string comment;
  std::string idempotency_key;
  std::string username; ///< Already authenticated.
  std::string role;
  bool password_confirmed = false; ///< The api checked the password re-entry.
};

/// Server-wide rules for triggering actions (configurable).
struct action_policy {
  /// Types that need the caller's password again (start_process always does).
  std::vector<std::string> password_required{"prevent_run", "quarantine", "delete_file",
                                             "terminate_process", "start_process"};
  /// Executables start_process may run; empty means any absolute path.
  std::vector<std::string> start_process_allowlist;
  /// Time to live of a command before the agent accepts it, by type.
  std::map<std::string, int64_t> ttl_us;
  /// Time to live for types without their own entry.
  int64_t default_ttl_us = 24LL * 3600 * 1000000;

  bool needs_password(const std::string& type) const;
  int64_t ttl_for(const std::string& type) const;
};

/// One record to append to the audit trail.
struct audit_entry {
  std::string actor;
  std::string kind;
  std::string target;
  std::string detail;
};

/// A user account.
struct user_record {
  std::string username;
  std::string role;
  std::string salt_hex;
  uint32_t iterations = 0;
  std::string hash_hex;
  int64_t created_at = 0;
};

/// Who is making a request, once authenticated.
struct principal {
  std::string username;
  std::string role;
  std::string csrf_token; ///< Empty for bearer tokens, which need no CSRF check.
  bool via_session = false;
};

/// A read the REST layer asks of the store; rendered to JSON there.
struct query {
  std::string what; ///< devices, device, incidents, incident, actions, action, stats
  std::string id;
  std::map<std::string, std::string> filters;
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
};

/// The answer the HTTP thread writes back.
struct http_response {
  int status = 200;
  std::string body;
  std::vector<std::string> set_cookies;
};

template <class Inspector> auto inspect(Inspector& f, audit_entry& x) {
  return f(x.actor, x.kind, x.target, x.detail);
}
template <class Inspector> auto inspect(Inspector& f, action_policy& x) {
  return f(x.password_required, x.start_process_allowlist, x.ttl_us, x.default_ttl_us);
}
template <class Inspector> auto inspect(Inspector& f, device_record& x) {
  return f(x.device_id, x.hostname, x.os, x.agent_version, x.addresses, x.online,
           x.isolated, x.first_seen, x.last_seen);
}
template <class Inspector> auto inspect(Inspector& f, incident_record& x) {
  return f(x.incident_id, x.device_id, x.status, x.created_at, x.report);
}
template <class Inspector> auto inspect(Inspector& f, action_record& x) {
  return f(x.action_id, x.type, x.device_id, x.incident_id, x.target_kind,
           x.target_event_id, x.params, x.requested_by, x.comment, x.idempotency_key,
           x.state, x.created_at, x.updated_at, x.result_ok, x.result_error,
           x.result_effect, x.expires_at, x.password_confirmed, x.reverses,
           x.reversed_by);
}
template <class Inspector> auto inspect(Inspector& f, transition& x) {
  return f(x.action_id, x.state, x.time, x.reason);
}
template <class Inspector> auto inspect(Inspector& f, action_request& x) {
  return f(x.type, x.incident_id, x.target_kind, x.event_id, x.params, x.comment,
           x.idempotency_key, x.username, x.role, x.password_confirmed);
}
template <class Inspector> auto inspect(Inspector& f, user_record& x) {
  return f(x.username, x.role, x.salt_hex, x.iterations, x.hash_hex, x.created_at);
}
template <class Inspector> auto inspect(Inspector& f, principal& x) {
  return f(x.username, x.role, x.csrf_token, x.via_session);
}
template <class Inspector> auto inspect(Inspector& f, query& x) {
  return f(x.what, x.id, x.filters);
}
template <class Inspector> auto inspect(Inspector& f, http_request& x) {
  return f(x.method, x.target, x.body, x.bearer, x.session, x.csrf, x.idempotency_key);
}
template <class Inspector> auto inspect(Inspector& f, http_response& x) {
  return f(x.status, x.body, x.set_cookies);
}

// -- actor interfaces -------------------------------------------------------------

/// The embedded store: the only actor that touches SQLite. Writes arriving together
/// share one transaction (group commit); a write is answered once committed.
using store_actor = caf::typed_actor<
    // Inserts or updates a device.
    caf::replies_to<atom::put, device_record>::with<atom::ok>,
    // Stores a new incident; answers its id (the existing one for a re-sent report).
    caf::replies_to<atom::put, incident_record>::with<std::string>,
    // Stores a new action with its first transition.
    caf::replies_to<atom::put, action_record, transition>::with<atom::ok>,
    // Updates an action's state and result and appends the transition.
    caf::replies_to<atom::update, action_record, transition>::with<atom::ok>,
    // Loads one incident.
    caf::replies_to<atom::get, atom::incident, std::string>::with<incident_record>,
    // Loads one device.
    caf::replies_to<atom::get, std::string>::with<device_record>,
    // Finds the action registered by `user` under an idempotency key ("" if none).
    caf::replies_to<atom::idem, std::string, std::string>::with<std::string>,
    // Every action not yet in a final state, in registration order.
    caf::replies_to<atom::open>::with<std::vector<action_record>>,
    // Loads a user account.
    caf::replies_to<atom::user, std::string>::with<user_record>,
    // Creates a user account; fails with conflict if it exists.
    caf::replies_to<atom::put, user_record>::with<atom::ok>,
    // Stores a bearer token by its SHA-256, for a user, with a name.
    caf::replies_to<atom::token, std::string, std::string, std::string>::with<atom::ok>,
    // Finds the user a token hash belongs to.
    caf::replies_to<atom::token, std::string>::with<std::string>,
    // Deletes a token by hash.
    caf::replies_to<atom::revoke, std::string>::with<atom::ok>,
    // Loads one action.
    caf::replies_to<atom::get, atom::action, std::string>::with<action_record>,
    // Links an action to the one reversing it ("" unlinks after a failed reverse).
    caf::replies_to<atom::link, std::string, std::string>::with<atom::ok>,
    // Marks a completed action reverted by the given reverse action.
    caf::replies_to<atom::revert, std::string, std::string>::with<atom::ok>,
    // Appends a record to the hash-chained audit trail.
    caf::replies_to<atom::audit, audit_entry>::with<atom::ok>,
    // Changes a user's role and/or password hash; ends their tokens.
    caf::replies_to<atom::update, user_record>::with<atom::ok>,
    // Deletes a user and their tokens; refuses the last administrator.
    caf::replies_to<atom::del, std::string>::with<atom::ok>,
    // A read for the REST API, answered as JSON text.
    caf::replies_to<query>::with<std::string>,
    // Commits the open transaction and answers the writes in it.
    caf::reacts_to<atom::flush>>;

/// Answers the REST API's reads on a database connection of its own, so a read never
/// waits behind the writer's group commits (WAL: it sees the last commit).
using store_reader_actor = caf::typed_actor<caf::replies_to<query>::with<std::string>>;

/// Bridge to the bus gateway thread: frames handed here are queued for the socket.
using gateway_actor = caf::typed_actor<
    // Queues [header][body] for the device's connection.
    caf::reacts_to<atom::send, std::string, std::string, std::string>>;

/// One response action, owning its lifecycle (DESIGN.md §4).
using response_action_actor = caf::typed_actor<
    // Stores the action as registered (or resumes it) and hands it to its device.
    caf::replies_to<atom::start>::with<action_record>,
    // The device is offline: the command waits.
    caf::reacts_to<atom::queued>,
    // The device can take the command now: store `sent`, then let it go.
    caf::reacts_to<atom::transmit>,
    // The agent acknowledged the command.
    caf::reacts_to<atom::ack>,
    // The agent reported how it ended.
    caf::reacts_to<atom::result, bus::action_result>,
    // The device decided the command needs no execution (e.g. already isolated).
    caf::reacts_to<atom::done, std::string>,
    // A user cancels it (before the agent acknowledged it): user, comment.
    caf::replies_to<atom::cancel, std::string, std::string>::with<action_record>,
    // Timer: its time to live has passed.
    caf::reacts_to<atom::expire>>;

/// One device: its connection state, heartbeat deadline and ordered command queue.
using device_actor = caf::typed_actor<
    // Agent (re)connected.
    caf::reacts_to<atom::hello, bus::hello>,
    // Agent is alive.
    caf::reacts_to<atom::heartbeat, bus::heartbeat>,
    // Agent reported an incident.
    caf::reacts_to<atom::incident, bus::incident_report>,
    // Agent acknowledged an action.
    caf::reacts_to<atom::ack, std::string>,
    // Agent reported an action's result.
    caf::reacts_to<atom::result, bus::action_result>,
    // The gateway could not deliver to this device.
    caf::reacts_to<atom::unreach>,
    // Timer: has the device missed its heartbeats?
    caf::reacts_to<atom::check>,
    // An action wants its command executed on this device, in registration order.
    caf::reacts_to<atom::submit, bus::command, response_action_actor>,
    // The action stored `sent`: the command may go out.
    caf::reacts_to<atom::sent, std::string>,
    // The action stored its final state: confirm the result to the agent.
    caf::reacts_to<atom::done, std::string>,
    // The action ended before execution (cancelled, expired): drop its command.
    caf::reacts_to<atom::withdraw, std::string>,
    // Current view of the device.
    caf::replies_to<atom::get>::with<device_record>>;

/// One incident, answering which actions apply and validating requests.
using incident_actor = caf::typed_actor<
    // Validates a request against the chain and builds the action record.
    caf::replies_to<atom::reg, action_request>::with<action_record>>;

/// Maps ids to live actors and spawns them on demand.
using directory_actor = caf::typed_actor<
    // Inbound from the gateway, routed to the device actor.
    caf::reacts_to<atom::hello, std::string, bus::hello>,
    caf::reacts_to<atom::heartbeat, std::string, bus::heartbeat>,
    caf::reacts_to<atom::incident, std::string, bus::incident_report>,
    caf::reacts_to<atom::ack, std::string, std::string>,
    caf::reacts_to<atom::result, std::string, bus::action_result>,
    caf::reacts_to<atom::unreach, std::string>,
    // Registers a response action; answers once it is stored.
    caf::replies_to<atom::reg, action_request>::with<action_record>,
    // Cancels an action: id, user, comment.
    caf::replies_to<atom::cancel, std::string, std::string,
                    std::string>::with<action_record>,
    // Registers the reverse of an action: id, the request (user, comment, password).
    caf::replies_to<atom::reverse, std::string, action_request>::with<action_record>,
    // Resumes every non-final action from the store (at start-up).
    caf::replies_to<atom::resume>::with<uint64_t>,
    // The live device actor for an id (spawned if needed).
    caf::replies_to<atom::get, std::string>::with<device_actor>>;

/// Slow password hashing, on a thread of its own so it never stalls other actors.
using hasher_actor = caf::typed_actor<
    // Checks a password against a stored account.
    caf::replies_to<atom::verify, std::string, user_record>::with<bool>,
    // Hashes a new password into an account record.
    caf::replies_to<atom::hash, std::string, user_record>::with<user_record>>;

/// Sessions, bearer tokens and login throttling.
using auth_actor = caf::typed_actor<
    // Username + password -> session token, principal.
    caf::replies_to<atom::login, std::string, std::string>::with<std::string, principal>,
    // Session token or bearer token -> principal (first arg: true for a session).
    caf::replies_to<atom::authn, bool, std::string>::with<principal>,
    // Creates a bearer token for a principal.
    caf::replies_to<atom::token, principal, std::string>::with<std::string>,
    // Revokes a session or bearer token.
    caf::replies_to<atom::logout, bool, std::string>::with<atom::ok>,
    // Makes sure the first administrator exists; answers the generated password or "".
    caf::replies_to<atom::bootstrap, std::string>::with<std::string>,
    // Password re-entry for a sensitive action: fails (and counts) when wrong.
    caf::replies_to<atom::confirm, std::string, std::string>::with<atom::ok>,
    // A user changed or was deleted: end their sessions and cached tokens.
    caf::reacts_to<atom::forget, std::string>>;

/// The REST API: routes one HTTP request.
using api_actor = caf::typed_actor<caf::replies_to<http_request>::with<http_response>>;

} // namespace parry
