#pragma once

// The messages that cross the bus (DESIGN.md §5). Every frame pair is
// [header][body], both msgpack maps with named keys: unknown keys are ignored and
// missing keys keep the defaults below, so old and new agents interoperate.
//
// Each struct also has an `inspect` overload so the server can carry it inside
// CAF messages; `inspect` is a plain template here, the bus does not include CAF.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "bus/map_decode.hpp"

namespace parry::bus {

/// Protocol version spoken by this build.
inline constexpr int protocol_version = 1;

/// Message type names as they appear in `header::type`.
namespace type {
inline constexpr const char* hello = "hello";
inline constexpr const char* heartbeat = "heartbeat";
inline constexpr const char* incident = "incident";
inline constexpr const char* action_ack = "action_ack";
inline constexpr const char* action_result = "action_result";
inline constexpr const char* welcome = "welcome";
inline constexpr const char* command = "command";
inline constexpr const char* result_ack = "result_ack";
inline constexpr const char* cancel = "cancel";
inline constexpr const char* cancel_result = "cancel_result";
inline constexpr const char* rejected = "rejected";
} // namespace type

/// First frame of every message.
struct header {
  int v = protocol_version;
  std::string type;
  uint64_t msg_id = 0;   ///< Sender-unique, for logs and deduplication.
  std::string device_id; ///< Must equal the ROUTER routing id on the server side.
  uint64_t seq = 0;      ///< Per-direction sequence number.
  int64_t time = 0;      ///< Sender's wall clock, microseconds since the epoch.
  PARRY_MSGPACK_MAP(v, type, msg_id, device_id, seq, time)
};

/// Agent -> server, first message on every (re)connect.
struct hello {
  std::string hostname;
  std::string os;
  std::string agent_version;
  std::vector<std::string> addresses;
  bool isolated = false; ///< Isolation state the agent currently enforces.
  PARRY_MSGPACK_MAP(hostname, os, agent_version, addresses, isolated)
};

/// Agent -> server, periodic liveness.
struct heartbeat {
  bool isolated = false;
  PARRY_MSGPACK_MAP(isolated)
};

/// The file an activity event is about (empty path when none).
struct file_info {
  std::string path;
  std::string sha256; ///< Lower-case hex.
  uint64_t size = 0;
  PARRY_MSGPACK_MAP(path, sha256, size)
};

/// The process an activity event is about (pid 0 when none).
struct process_info {
  uint32_t pid = 0;
  int64_t start_time = 0; ///< Microseconds since the epoch; with pid, identifies it.
  std::string image;      ///< Absolute path of the executable.
  std::string sha256;
  std::string cmdline;
  std::string user;
  uint32_t parent_pid = 0;
  PARRY_MSGPACK_MAP(pid, start_time, image, sha256, cmdline, user, parent_pid)
};

/// One step of a threat development chain.
struct activity_event {
  std::string id;        ///< Unique within its incident.
  std::string type;      ///< file_created, process_started, file_modified, ...
  int64_t time = 0;      ///< Microseconds since the epoch.
  std::string parent_id; ///< Event that caused this one, empty for a root.
  file_info file;
  process_info process;
  std::string detail; ///< Free text (remote address of a connection, module...).
  PARRY_MSGPACK_MAP(id, type, time, parent_id, file, process, detail)
};

/// The EPP detection at the heart of an incident.
struct detection {
  std::string name;     ///< Verdict, e.g. "HEUR:Trojan.Win32.Generic".
  std::string severity; ///< low, medium, high, critical.
  std::string engine;
  PARRY_MSGPACK_MAP(name, severity, engine)
};

/// Agent -> server: an EPP detection with the chain built around it.
struct incident_report {
  std::string report_id; ///< Agent-unique; a re-sent report is recognised by it.
  detection det;
  std::string key_event_id; ///< Event holding the threat detection object.
  std::vector<activity_event> events;
  /// Not a field on the wire: the msgpack bytes this report was decoded from, kept
  /// by the server so that the store writes them as they came instead of encoding
  /// the report again. Empty for a report built in memory.
  std::string wire;
  /// Not a field on the wire either: events the server dropped once it had checked
  /// them (it stores `wire`, which holds them, and needs only their number).
  uint32_t events_dropped = 0;
  PARRY_MSGPACK_MAP(report_id, det, key_event_id, events)
};

/// How many events `r` came with, kept or dropped.
inline std::size_t event_count(const incident_report& r) {
  return r.events.size() + r.events_dropped;
}

/// Agent -> server: the command with this id was received and will be executed.
struct action_ack {
  std::string action_id;
  PARRY_MSGPACK_MAP(action_id)
};

/// Agent -> server: how a command ended. Re-sent until a `result_ack` arrives.
struct action_result {
  std::string action_id;
  bool ok = false;
  std::string error;                         ///< Why it failed, empty when ok.
  std::map<std::string, std::string> effect; ///< What it did (rules applied, ...).
  /// Microseconds the command spent in the agent: from the command's arrival to this
  /// result (one clock, the agent's). The same in every re-send; 0 when not stated.
  uint64_t agent_us = 0;
  PARRY_MSGPACK_MAP(action_id, ok, error, effect, agent_us)
};

/// Server -> agent: answer to `hello`.
struct welcome {
  int64_t server_time = 0;
  uint32_t heartbeat_interval_ms = 5000;
  PARRY_MSGPACK_MAP(server_time, heartbeat_interval_ms)
};

/// Server -> agent: execute a response action. Signed (docs/bus-protocol.md,
/// "Command signatures") over action_id, device_id, type, params, issued_at,
/// expires_at and seq.
struct command {
  std::string action_id;
  std::string type; ///< isolate, release_isolation, ...
  std::map<std::string, std::string> params;
  int64_t issued_at = 0;  ///< Microseconds since the epoch.
  int64_t expires_at = 0; ///< Microseconds since the epoch; refused from then on.
  std::string device_id;  ///< The device the server signed it for.
  uint64_t seq = 0;       ///< Per-device command sequence number, increasing.
  std::string sig;        ///< Ed25519 signature, 128 lower-case hex digits.
  PARRY_MSGPACK_MAP(action_id, type, params, issued_at, expires_at, device_id, seq, sig)
};

/// Server -> agent: the result for this action is stored; stop re-sending it.
struct result_ack {
  std::string action_id;
  PARRY_MSGPACK_MAP(action_id)
};

/// Server -> agent: the message with this `msg_id` was not accepted. A limit was hit
/// (`limit` names it, `value` is its value) or the message was invalid (`limit`
/// empty). `retry_after_ms` > 0: the same message may be sent again after that long
/// (a rate or capacity limit); 0: sending it again unchanged will fail again.
struct rejected {
  uint64_t msg_id = 0; ///< The refused message's header msg_id (0: unreadable).
  std::string type;    ///< The refused message's header type ("" : unreadable).
  std::string limit;   ///< Name of the limit, e.g. "max_frame_bytes"; "" if none.
  uint64_t value = 0;  ///< The limit's value, in the unit its name says.
  std::string reason;  ///< Short machine-stable reason, e.g. "frame_too_large".
  uint32_t retry_after_ms = 0;
  PARRY_MSGPACK_MAP(msg_id, type, limit, value, reason, retry_after_ms)
};

/// Server -> agent: withdraw the command with this id if it has not started. The
/// agent answers with `cancel_result`, also for a command it never received.
struct cancel {
  std::string action_id;
  /// Signed like a command whose type is "cancel" and whose params are empty.
  int64_t issued_at = 0;
  int64_t expires_at = 0;
  std::string device_id;
  uint64_t seq = 0;
  std::string sig;
  PARRY_MSGPACK_MAP(action_id, issued_at, expires_at, device_id, seq, sig)
};

/// Agent -> server: answer to `cancel`. `cancelled` true means the command did not
/// run and never will (the agent journals the id); false means it ran or is running,
/// and its `action_result` follows (or has been sent).
struct cancel_result {
  std::string action_id;
  bool cancelled = false;
  std::string detail; ///< Free text for the log, e.g. "already executed".
  PARRY_MSGPACK_MAP(action_id, cancelled, detail)
};

// -- inspect overloads (used by CAF on the server side) -------------------------

template <class Inspector> auto inspect(Inspector& f, header& x) {
  return f(x.v, x.type, x.msg_id, x.device_id, x.seq, x.time);
}
template <class Inspector> auto inspect(Inspector& f, hello& x) {
  return f(x.hostname, x.os, x.agent_version, x.addresses, x.isolated);
}
template <class Inspector> auto inspect(Inspector& f, heartbeat& x) {
  return f(x.isolated);
}
template <class Inspector> auto inspect(Inspector& f, file_info& x) {
  return f(x.path, x.sha256, x.size);
}
template <class Inspector> auto inspect(Inspector& f, process_info& x) {
  return f(x.pid, x.start_time, x.image, x.sha256, x.cmdline, x.user, x.parent_pid);
}
template <class Inspector> auto inspect(Inspector& f, activity_event& x) {
  return f(x.id, x.type, x.time, x.parent_id, x.file, x.process, x.detail);
}
template <class Inspector> auto inspect(Inspector& f, detection& x) {
  return f(x.name, x.severity, x.engine);
}
template <class Inspector> auto inspect(Inspector& f, incident_report& x) {
  return f(x.report_id, x.det, x.key_event_id, x.events, x.wire, x.events_dropped);
}
template <class Inspector> auto inspect(Inspector& f, action_result& x) {
  return f(x.action_id, x.ok, x.error, x.effect, x.agent_us);
}
template <class Inspector> auto inspect(Inspector& f, cancel& x) {
  return f(x.action_id, x.issued_at, x.expires_at, x.device_id, x.seq, x.sig);
}
template <class Inspector> auto inspect(Inspector& f, cancel_result& x) {
  return f(x.action_id, x.cancelled, x.detail);
}
template <class Inspector> auto inspect(Inspector& f, command& x) {
  return f(x.action_id, x.type, x.params, x.issued_at, x.expires_at, x.device_id, x.seq,
           x.sig);
}

} // namespace parry::bus
