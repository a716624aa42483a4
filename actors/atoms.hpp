#pragma once

// The atoms that tag parryd's messages, grouped by the actor that handles them.
// Atom text: at most 10 characters of [A-Za-z0-9_].

#include <caf/type_id.hpp>

CAF_BEGIN_TYPE_ID_BLOCK(parry, caf::first_custom_type_id)
// Replies shared by many handlers.
CAF_ADD_ATOM(parry, parry::atom, ok, "ok")

// store: generic verbs over its records.
CAF_ADD_ATOM(parry, parry::atom, put, "put")
CAF_ADD_ATOM(parry, parry::atom, get, "get")
CAF_ADD_ATOM(parry, parry::atom, update, "update")
CAF_ADD_ATOM(parry, parry::atom, query, "query")
CAF_ADD_ATOM(parry, parry::atom, flush, "flush")
CAF_ADD_ATOM(parry, parry::atom, open, "open")
CAF_ADD_ATOM(parry, parry::atom, idem, "idem")
CAF_ADD_ATOM(parry, parry::atom, link, "link")
CAF_ADD_ATOM(parry, parry::atom, revert, "revert")
CAF_ADD_ATOM(parry, parry::atom, audit, "audit")
CAF_ADD_ATOM(parry, parry::atom, del, "delete")
CAF_ADD_ATOM(parry, parry::atom, action, "action")
// store: what a read asks for.
CAF_ADD_ATOM(parry, parry::atom, devices, "devices")
CAF_ADD_ATOM(parry, parry::atom, device, "device")
CAF_ADD_ATOM(parry, parry::atom, incidents, "incidents")
CAF_ADD_ATOM(parry, parry::atom, actions, "actions")
CAF_ADD_ATOM(parry, parry::atom, users, "users")
CAF_ADD_ATOM(parry, parry::atom, stats, "stats")

// store + auth: accounts and tokens.
CAF_ADD_ATOM(parry, parry::atom, user, "user")
CAF_ADD_ATOM(parry, parry::atom, token, "token")
CAF_ADD_ATOM(parry, parry::atom, revoke, "revoke")

// directory + device: what the gateway reports from the bus.
CAF_ADD_ATOM(parry, parry::atom, hello, "hello")
CAF_ADD_ATOM(parry, parry::atom, heartbeat, "heartbeat")
CAF_ADD_ATOM(parry, parry::atom, incident, "incident")
CAF_ADD_ATOM(parry, parry::atom, ack, "ack")
CAF_ADD_ATOM(parry, parry::atom, result, "result")
CAF_ADD_ATOM(parry, parry::atom, unreach, "unreach")

// device: its timer and its command queue.
CAF_ADD_ATOM(parry, parry::atom, check, "check")
CAF_ADD_ATOM(parry, parry::atom, submit, "submit")
CAF_ADD_ATOM(parry, parry::atom, sent, "sent")
/// device: the action stored its final state (argument: action id).
CAF_ADD_ATOM(parry, parry::atom, done, "done")
CAF_ADD_ATOM(parry, parry::atom, withdraw, "withdraw")
/// device: timer, a stranger that stayed quiet ends.
CAF_ADD_ATOM(parry, parry::atom, retire, "retire")

// response_action: its lifecycle.
CAF_ADD_ATOM(parry, parry::atom, start, "start")
CAF_ADD_ATOM(parry, parry::atom, queued, "queued")
CAF_ADD_ATOM(parry, parry::atom, transmit, "transmit")
/// response_action: the device needs no execution (argument: the note).
CAF_ADD_ATOM(parry, parry::atom, noop, "noop")
CAF_ADD_ATOM(parry, parry::atom, cancel, "cancel")
CAF_ADD_ATOM(parry, parry::atom, expire, "expire")
/// response_action: timer, retry the transition write that failed.
CAF_ADD_ATOM(parry, parry::atom, retry, "retry")
/// response_action: timer, the execution deadline after acknowledgement.
CAF_ADD_ATOM(parry, parry::atom, deadline, "deadline")

// directory: registration and recovery.
CAF_ADD_ATOM(parry, parry::atom, reg, "register")
CAF_ADD_ATOM(parry, parry::atom, reverse, "reverse")
CAF_ADD_ATOM(parry, parry::atom, resume, "resume")
/// directory: a device actor offers its state and ends (issue 11, item 4).
CAF_ADD_ATOM(parry, parry::atom, passivate, "passivate")
/// directory: the device that offered its state stays live after all.
CAF_ADD_ATOM(parry, parry::atom, keep, "keep")

// gateway bridge.
CAF_ADD_ATOM(parry, parry::atom, send, "send")

// auth and hasher.
CAF_ADD_ATOM(parry, parry::atom, login, "login")
CAF_ADD_ATOM(parry, parry::atom, logout, "logout")
CAF_ADD_ATOM(parry, parry::atom, authn, "authn")
CAF_ADD_ATOM(parry, parry::atom, verify, "verify")
CAF_ADD_ATOM(parry, parry::atom, hash, "hash")
CAF_ADD_ATOM(parry, parry::atom, bootstrap, "bootstrap")
CAF_ADD_ATOM(parry, parry::atom, confirm, "confirm")
CAF_ADD_ATOM(parry, parry::atom, forget, "forget")
CAF_ADD_ATOM(parry, parry::atom, locked, "locked")
CAF_ADD_ATOM(parry, parry::atom, list, "list")

// store: bus keys and enrollment (issue 7).
CAF_ADD_ATOM(parry, parry::atom, key, "key")
CAF_ADD_ATOM(parry, parry::atom, enroll, "enroll")

// backup_service: a copy of the live database for POST /backup (issue 10).
CAF_ADD_ATOM(parry, parry::atom, backup, "backup")
CAF_END_TYPE_ID_BLOCK(parry)
