#pragma once

// Every actor interface of parryd in one catalogue. One comment per handler says
// what it does.

#include <cstdint>
#include <string>
#include <vector>

#include <caf/replies_to.hpp>
#include <caf/timespan.hpp>
#include <caf/typed_actor.hpp>

#include "actors/atoms.hpp"
#include "actors/ingest.hpp"
#include "actors/records.hpp"

namespace parry {

/// Nothing inside parryd waits forever: a request that is not answered in time ends
/// with caf::sec::request_timeout, which its handler logs or passes on.
/// One request to the store, read or write, including the group commit it joins.
inline constexpr caf::timespan store_timeout = std::chrono::seconds{30};
/// A request to an actor that may itself wait for the store once before answering.
inline constexpr caf::timespan actor_timeout = store_timeout + std::chrono::seconds{5};

/// The embedded store is the only actor that touches SQLite. Its interface is
/// composed of narrow ones, and each collaborator holds the one it needs (a
/// `store_actor` converts to each of them). Writes arriving together share one
/// transaction (group commit), each in a savepoint of its own; a write is answered
/// once committed, or with the error that stopped it (docs/architecture.md).

/// Response actions: records, transitions, reverse links (response_action).
using action_store_actor = caf::typed_actor<
    // Stores a new action with its first transition.
    caf::replies_to<atom::put, action_record, transition>::with<atom::ok>,
    // Stores new actions, each with its trigger audit record and first transition and
    // in a savepoint of its own; answers, in order, what refused each (none: stored),
    // once all of them have committed or failed.
    caf::replies_to<atom::put,
                    std::vector<action_registration>>::with<std::vector<caf::error>>,
    // Updates an action's state and result and appends the transition; not_found
    // when no such action is stored.
    caf::replies_to<atom::update, action_record, transition>::with<atom::ok>,
    // Loads one action.
    caf::replies_to<atom::get, atom::action, std::string>::with<action_record>,
    // Finds the action registered by `user` under an idempotency key ("" if none).
    caf::replies_to<atom::idem, std::string, std::string>::with<std::string>,
    // Every action not yet in a final state, in registration order.
    caf::replies_to<atom::open>::with<std::vector<action_record>>,
    // Links an action to the one reversing it ("" unlinks after a failed reverse);
    // not_found when no such action is stored.
    caf::replies_to<atom::link, std::string, std::string>::with<atom::ok>,
    // Marks a completed action reverted by the given reverse action; not_found for
    // an unknown action, conflict when it is not completed.
    caf::replies_to<atom::revert, std::string, std::string>::with<atom::ok>>;

/// Devices and incidents (device).
using inventory_store_actor = caf::typed_actor<
    // Inserts or updates a device.
    caf::replies_to<atom::put, device_record>::with<atom::ok>,
    // Loads one device.
    caf::replies_to<atom::get, std::string>::with<device_record>,
    // Stores a new incident; answers its id (the existing one for a re-sent report).
    caf::replies_to<atom::put, incident_record>::with<std::string>,
    // The same for an incident from the bus, unanswered: nobody waits for it (a
    // request would cost a timer and an answer per report), so the store logs and
    // counts one it cannot store (parry_incidents_failed_total).
    caf::reacts_to<atom::put, atom::incident, incident_record>,
    // Loads one incident.
    caf::replies_to<atom::get, atom::incident, std::string>::with<incident_record>>;

/// Loads the incidents named, in no particular order: one not stored (or unreadable,
/// which is logged) is left out. Served by the store, which sees its open group, and
/// by store_reader, which sees the last commit.
using incident_reader_actor = caf::typed_actor<
    caf::replies_to<atom::get, atom::incidents,
                    std::vector<std::string>>::with<std::vector<incident_record>>>;

/// User accounts and bearer tokens (auth, api).
using account_store_actor = caf::typed_actor<
    // Loads a user account.
    caf::replies_to<atom::user, std::string>::with<user_record>,
    // Creates a user account; fails with conflict if it exists.
    caf::replies_to<atom::put, user_record>::with<atom::ok>,
    // Changes a user's role and/or password hash; ends their tokens.
    caf::replies_to<atom::update, user_record>::with<atom::ok>,
    // Deletes a user and their tokens; refuses the last administrator.
    caf::replies_to<atom::del, std::string>::with<atom::ok>,
    // Stores a bearer token by its SHA-256 with its record (id, owner, name, expiry).
    caf::replies_to<atom::token, std::string, token_record>::with<atom::ok>,
    // Finds the record of a token by its hash.
    caf::replies_to<atom::token, std::string>::with<token_record>,
    // Lists the tokens of one user ("" for every user), never the tokens themselves.
    caf::replies_to<atom::token, atom::list,
                    std::string>::with<std::vector<token_record>>,
    // Deletes a token by hash.
    caf::replies_to<atom::revoke, std::string>::with<atom::ok>,
    // Deletes a token by id, if owned by the user given ("" for any); answers its owner.
    caf::replies_to<atom::revoke, atom::token, std::string,
                    std::string>::with<std::string>>;

/// Who may use the bus: admitted CURVE keys and enrollment tokens (issue 7).
using bus_key_store_actor = caf::typed_actor<
    // Every admitted key (loaded into the gateway's registry at start).
    caf::replies_to<atom::list, atom::key>::with<std::vector<bus_key_record>>,
    // Admits a key, replacing the key of the same device or integrator; answers the
    // replaced key ("" if none).
    caf::replies_to<atom::put, bus_key_record>::with<std::string>,
    // Removes the key of a device (false) or integrator (true) by name; answers the
    // removed key; not_found when there is none.
    caf::replies_to<atom::revoke, atom::key, bool, std::string>::with<std::string>,
    // Stores an enrollment token by its SHA-256.
    caf::replies_to<atom::put, std::string, enrollment_token_record>::with<atom::ok>,
    // Uses an enrollment token (by hash) at the given time (µs) to admit an agent key
    // for a device: one step, so a one-time token admits exactly one key. not_found
    // for an unknown or used-up token, conflict for an expired one, forbidden when
    // the device has another key (the same key again succeeds and uses nothing).
    // Answers "": the key replaced, which enrollment never does (revoke replaces).
    caf::replies_to<atom::enroll, std::string, int64_t,
                    bus_key_record>::with<std::string>>;

/// Enrollment tokens for GET and DELETE /enrollment-tokens.
using enrollment_token_store_actor = caf::typed_actor<
    // Every token not used up, newest first (expired ones included, marked by time).
    caf::replies_to<atom::list, atom::enroll>::with<std::vector<enrollment_token_record>>,
    // Deletes a token by its id; not_found when there is none.
    caf::replies_to<atom::del, atom::enroll, std::string>::with<atom::ok>>;

/// The hash-chained audit trail.
using audit_store_actor = caf::typed_actor<
    // Appends a record.
    caf::replies_to<atom::audit, audit_entry>::with<atom::ok>,
    // A page of records with the writer's head, as JSON text (docs/rest-api.md).
    caf::replies_to<atom::query, atom::audit, page_request>::with<std::string>>;

/// What the directory needs: actions, the inventory, and the audit trail for the
/// trigger records it writes (it hands the narrower handles on to device and
/// response_action actors).
using directory_store_actor =
    action_store_actor::extend_with<inventory_store_actor, audit_store_actor,
                                    incident_reader_actor>;

/// What auth needs: accounts, and the audit trail for what it decides.
using auth_store_actor = account_store_actor::extend_with<audit_store_actor>;

/// The REST API's reads, answered as JSON text (docs/rest-api.md). A page request
/// answers at most `limit` rows and about `max_page_bytes` of JSON, with the cursor
/// of the next page; a bad cursor or filter is bad_request, a missing object
/// not_found. Served by store_reader on a connection of its own, so a read never
/// waits behind the writer's group commits (WAL: it sees the last commit), and by
/// the store itself. The incidents a bulk registration checks its targets against
/// come the same way (directory.cpp).
using store_reader_actor = caf::typed_actor<
    caf::replies_to<atom::query, atom::devices, page_request>::with<std::string>,
    caf::replies_to<atom::query, atom::device, std::string>::with<std::string>,
    caf::replies_to<atom::query, atom::incidents, page_request>::with<std::string>,
    caf::replies_to<atom::query, atom::incident, std::string>::with<std::string>,
    caf::replies_to<atom::query, atom::actions, page_request>::with<std::string>,
    caf::replies_to<atom::query, atom::action, std::string>::with<std::string>,
    caf::replies_to<atom::query, atom::users, page_request>::with<std::string>,
    caf::replies_to<atom::query,
                    atom::stats>::with<std::string>>::extend_with<incident_reader_actor>;

/// Copies the store's write-ahead log into the database file from a connection of
/// its own (actors/checkpointer.hpp), so that no commit of the store waits for it.
using checkpointer_actor = caf::typed_actor<
    // Checkpoints now; answers the pages in the log and how many of them are in the
    // database file after it. Fails with ec::storage when SQLite says no.
    caf::replies_to<atom::flush>::with<int64_t, int64_t>,
    // The timer: checkpoints, then asks again after the interval.
    caf::reacts_to<atom::check>>;

/// The whole store: every narrow interface, the reads, and its group commit.
using store_actor = action_store_actor::extend_with<
    inventory_store_actor, account_store_actor, audit_store_actor, store_reader_actor,
    bus_key_store_actor, enrollment_token_store_actor,
    caf::typed_actor<
        // Commits the open transaction and answers the writes in it.
        caf::reacts_to<atom::flush>,
        // The checkpointer to wake while the log grows (store_options::
        // wal_restart_pages).
        caf::reacts_to<atom::link, checkpointer_actor>>>;

/// Bridge to the bus gateway thread: frames handed here are queued for the socket.
using gateway_actor = caf::typed_actor<
    // Queues [header][body] for the device's connection.
    caf::reacts_to<atom::send, std::string, std::string, std::string>>;

/// Who may use the bus (issue 7): enrollment, tokens, integrator keys, revocation.
/// Keeps the gateways' key registry in step with the store.
using bus_keys_actor = caf::typed_actor<
    // From the enrollment endpoint: device_id, its CURVE public key (Z85), the
    // token's hash, the request's msg_id. Answered on the bus with `enrolled`.
    caf::reacts_to<atom::enroll, std::string, std::string, std::string, uint64_t>,
    // Creates an enrollment token: lifetime (µs), uses, creator; answers the token
    // text (shown once, never stored) and its record.
    caf::replies_to<atom::token, int64_t, uint32_t,
                    std::string>::with<std::string, enrollment_token_record>,
    // Registers an integrator key (or replaces that integrator's key).
    caf::replies_to<atom::put, bus_key_record, std::string>::with<atom::ok>,
    // Revokes the key of a device (false) or integrator (true) by name, for a user;
    // cuts its open connection. not_found when it has no key.
    caf::replies_to<atom::revoke, bool, std::string, std::string>::with<atom::ok>>;

/// One response action, owning its lifecycle (DESIGN.md §4).
using response_action_actor = caf::typed_actor<
    // Stores the action as registered (or resumes it) and hands it to its device.
    caf::replies_to<atom::start>::with<action_record>,
    // The directory stores it, as registered, in one write with others (POST
    // /actions/bulk): everything after this waits for that write...
    caf::reacts_to<atom::reg>,
    // ...whose outcome comes next: none (stored; it goes on), or the store's error
    // that refused it (it ends, and its command is withdrawn), or another error (no
    // answer in time): it asks the store whether it is stored, until it knows.
    caf::reacts_to<atom::reg, caf::error>,
    // Stored, and as `sent` too, at that time (µs since the epoch; its device had
    // taken the command at once): it tells the device the command may go out, and
    // goes on.
    caf::reacts_to<atom::reg, atom::sent, int64_t>,
    // The device is offline: the command waits.
    caf::reacts_to<atom::queued>,
    // The device can take the command now: store `sent`, then let it go.
    caf::reacts_to<atom::transmit>,
    // The agent acknowledged the command.
    caf::reacts_to<atom::ack>,
    // The agent reported how it ended.
    caf::reacts_to<atom::result, bus::action_result>,
    // The device decided the command needs no execution (e.g. already isolated).
    caf::reacts_to<atom::noop, std::string>,
    // A user cancels it (before the agent acknowledged it): user, comment. A `sent`
    // one answers as `cancelling`: it ends when the agent says whether it ran.
    caf::replies_to<atom::cancel, std::string, std::string>::with<action_record>,
    // The agent's answer to a `cancel` of this command.
    caf::reacts_to<atom::cancel, bus::cancel_result>,
    // Timer: its time to live has passed.
    caf::reacts_to<atom::expire>,
    // Timer: the execution deadline (after acknowledged, or while cancelling).
    caf::reacts_to<atom::deadline>,
    // Timer: write the transition that the store refused, again.
    caf::reacts_to<atom::retry>>;

/// One device: its connection state, heartbeat deadline and ordered command queue.
using device_actor = caf::typed_actor<
    // Agent (re)connected; the ticket counts the hello until its record is stored.
    caf::reacts_to<atom::hello, bus::hello, hello_ticket>,
    // Agent is alive.
    caf::reacts_to<atom::heartbeat, bus::heartbeat>,
    // Agent reported an incident (with its size on the wire, in bytes, which the
    // device gives back to the ingest gauge once the store answered).
    caf::reacts_to<atom::incident, bus::incident_report, uint64_t>,
    // Agent acknowledged an action.
    caf::reacts_to<atom::ack, std::string>,
    // Agent reported an action's result.
    caf::reacts_to<atom::result, bus::action_result>,
    // The gateway could not deliver to this device.
    caf::reacts_to<atom::unreach>,
    // Timer: has the device missed its heartbeats?
    caf::reacts_to<atom::check>,
    // Timer: a stranger (not stored, no valid hello) that stayed quiet ends.
    caf::reacts_to<atom::retire>,
    // An action wants its command (of that type) executed on this device, in
    // registration order.
    caf::reacts_to<atom::submit, action_type, bus::command, response_action_actor>,
    // The same for an action the directory is about to store (POST /actions/bulk):
    // true when the device is online and takes the command at once, without a
    // `transmit` to the action; the registration then stores `sent` too, and the
    // action says `sent` as usual. False: as `submit` (`queued`, or a no-op).
    caf::replies_to<atom::submit, atom::reg, action_type, bus::command,
                    response_action_actor>::with<bool>,
    // The directory had no answer to that: if the command still waits for its
    // `sent` and the device is online, its action is asked to `transmit`.
    caf::reacts_to<atom::transmit, std::string>,
    // The action stored `sent`: the command may go out.
    caf::reacts_to<atom::sent, std::string>,
    // The action stored its final state: confirm the result to the agent.
    caf::reacts_to<atom::done, std::string>,
    // The action ended before execution (cancelled, expired): drop its command.
    caf::reacts_to<atom::withdraw, std::string>,
    // The action stored `cancelling`: ask the agent to withdraw the command.
    caf::reacts_to<atom::cancel, std::string>,
    // The agent answered a `cancel`.
    caf::reacts_to<atom::cancel, bus::cancel_result>,
    // Current view of the device.
    caf::replies_to<atom::get>::with<device_record>>;

/// One incident, answering which actions apply and validating requests.
using incident_actor = caf::typed_actor<
    // Validates a request against the chain and builds the action record.
    caf::replies_to<atom::reg, action_request>::with<action_record>>;

/// Maps ids to live actors and spawns them on demand.
using directory_actor = caf::typed_actor<
    // Inbound from the gateway, routed to the device actor.
    caf::reacts_to<atom::hello, std::string, bus::hello, hello_ticket>,
    caf::reacts_to<atom::heartbeat, std::string, bus::heartbeat>,
    caf::reacts_to<atom::incident, std::string, bus::incident_report, uint64_t>,
    caf::reacts_to<atom::ack, std::string, std::string>,
    caf::reacts_to<atom::result, std::string, bus::action_result>,
    caf::reacts_to<atom::unreach, std::string>,
    caf::reacts_to<atom::cancel, std::string, bus::cancel_result>,
    // A device actor of a stranger (device.cpp) asks to end: the directory forgets it
    // and answers, after every message it had sent it.
    caf::replies_to<atom::retire, std::string>::with<atom::ok>,
    // An idle device actor offers its state (device.cpp, `offer`): first the id, and
    // the directory notes whether it sends the actor anything from now on; then the
    // state, and the answer says whether the directory took it (the actor ends) or
    // sent it something meanwhile (it stays). `keep`: it stays, without a second step.
    caf::replies_to<atom::passivate, std::string>::with<atom::ok>,
    caf::replies_to<atom::passivate, std::string, device_snapshot>::with<bool>,
    caf::reacts_to<atom::keep, std::string>,
    // Timer: wakes the devices of dormant actions whose time (µs since the epoch, the
    // one it was armed for) is up.
    caf::reacts_to<atom::expire, int64_t>,
    // Timer: passivated devices that missed their heartbeats are woken to go offline.
    caf::reacts_to<atom::check>,
    // Registers a response action; answers once it is stored. A request with the
    // idempotency key of an earlier (or concurrent) one answers that one's record.
    caf::replies_to<atom::reg, action_request>::with<action_record>,
    // Registers one action per request (POST /actions/bulk, no idempotency keys),
    // each as the one above would, stored in one write; answers, in order, each
    // action as registered or the error that refused it.
    caf::replies_to<atom::reg,
                    std::vector<action_request>>::with<std::vector<registration_outcome>>,
    // Cancels an action: id, user, comment.
    caf::replies_to<atom::cancel, std::string, std::string,
                    std::string>::with<action_record>,
    // Registers the reverse of an action: id, the request (user, comment, password).
    caf::replies_to<atom::reverse, std::string, action_request>::with<action_record>,
    // Resumes every non-final action from the store (at start-up).
    caf::replies_to<atom::resume>::with<uint64_t>,
    // The live device actor for an id (spawned if needed).
    caf::replies_to<atom::get, std::string>::with<device_actor>>;

/// How long a backup for POST /backup may take (the api waits this long for it, and
/// the HTTP front end for the api's answer to it, plus a little).
inline constexpr caf::timespan backup_timeout = std::chrono::minutes{15};

/// Copies of the live database for POST /backup (server/backup.hpp), on a thread of
/// its own: one at a time, each read in one transaction while the server writes.
using backup_actor = caf::typed_actor<
    // Takes a checked copy into a new file of the outgoing directory; answers its
    // path, size (bytes), audit records and the hash of the last one. Fails with
    // ec::storage (the reason is logged) when it cannot.
    caf::replies_to<atom::backup>::with<std::string, int64_t, int64_t, std::string>>;

/// Slow password hashing, on a thread of its own so it never stalls other actors.
using hasher_actor = caf::typed_actor<
    // Checks a password against a stored account.
    caf::replies_to<atom::verify, std::string, user_record>::with<bool>,
    // Hashes a new password into an account record.
    caf::replies_to<atom::hash, std::string, user_record>::with<user_record>>;

/// Sessions, bearer tokens and login throttling.
using auth_actor = caf::typed_actor<
    // Username, password, source address -> session token, principal. Throttled per
    // account and source, per source and per account.
    caf::replies_to<atom::login, std::string, std::string, std::string>::with<std::string,
                                                                              principal>,
    // Session token or bearer token -> principal (first arg: true for a session).
    // (session?, session or bearer token, counts as use?)
    caf::replies_to<atom::authn, bool, std::string, bool>::with<principal>,
    // Creates a bearer token for a principal: name, lifetime in seconds (0: default).
    caf::replies_to<atom::token, principal, std::string, int64_t>::with<std::string,
                                                                        token_record>,
    // Lists tokens: the principal's own, or every user's for an administrator (true).
    caf::replies_to<atom::token, atom::list, principal,
                    bool>::with<std::vector<token_record>>,
    // Revokes a token by id: its owner or an administrator.
    caf::replies_to<atom::revoke, principal, std::string>::with<atom::ok>,
    // Revokes a session or bearer token.
    caf::replies_to<atom::logout, bool, std::string>::with<atom::ok>,
    // Makes sure the first administrator exists; answers the generated password or "".
    caf::replies_to<atom::bootstrap, std::string>::with<std::string>,
    // Password re-entry for a sensitive action: username, the session or bearer token
    // asking, password. Fails (and counts against that session only) when wrong.
    caf::replies_to<atom::confirm, std::string, std::string, std::string>::with<atom::ok>,
    // The usernames locked now (for GET /users), sorted.
    caf::replies_to<atom::locked>::with<std::vector<std::string>>,
    // A user changed or was deleted: end their sessions and cached tokens.
    caf::reacts_to<atom::forget, std::string>,
    // Timer: drop idle throttles and sessions.
    caf::reacts_to<atom::check>>;

/// The REST API: routes one HTTP request.
using api_actor =
    caf::typed_actor<caf::replies_to<http_request>::with<http_response>,
                     // The same for a caller already authenticated elsewhere (an
                     // integrator on the bus): no session or token is looked at, the role
                     // is checked as usual.
                     caf::replies_to<http_request, principal>::with<http_response>>;

} // namespace parry
