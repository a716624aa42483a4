#pragma once

// The integrators' side of the bus (docs/bus-protocol.md, "Integrators"): a
// request/reply endpoint (integrators connect DEALER sockets) that offers what the
// REST API offers them, and a PUB endpoint of events. Each message is [header][body]
// as on the agents' bus (events have a topic frame first); header.device_id means
// nothing here and may be "".

#include <cstdint>
#include <map>
#include <string>

#include <msgpack.hpp>

#include "bus/map_decode.hpp"

namespace parry::bus {

namespace type {
inline constexpr const char* request = "request";   ///< integrator -> server
inline constexpr const char* snapshot = "snapshot"; ///< integrator -> server
inline constexpr const char* reply = "reply";       ///< server -> integrator
inline constexpr const char* event = "event";       ///< server -> subscribers (PUB)
} // namespace type

/// Integrator -> server: one REST call, as docs/rest-api.md describes it.
struct api_request {
  std::string method;          ///< GET or POST.
  std::string path;            ///< "/api/v1/..." with its query string.
  std::string body;            ///< JSON text, "" for none.
  std::string idempotency_key; ///< As the Idempotency-Key header; "" for none.
  PARRY_MSGPACK_MAP(method, path, body, idempotency_key)
};

/// Server -> integrator: the answer to `request` or `snapshot`.
struct api_reply {
  uint64_t request_id = 0; ///< The msg_id of the request answered.
  int32_t status = 0;      ///< HTTP status code, as REST would answer.
  std::string body;        ///< JSON text, as REST would answer.
  PARRY_MSGPACK_MAP(request_id, status, body)
};

/// The event families; each counts its own `seq` from 1 (per server start).
namespace topic {
inline constexpr const char* incident = "incident";
inline constexpr const char* action = "action";
inline constexpr const char* device = "device";
} // namespace topic

/// Body of `incident.created`.
struct incident_event {
  std::string incident_id;
  std::string device_id;
  std::string detection; ///< The detection's name (verdict).
  std::string severity;
  int64_t created_at = 0; ///< µs since the epoch.
  uint32_t events = 0;    ///< Activity events in its chain.
  PARRY_MSGPACK_MAP(incident_id, device_id, detection, severity, created_at, events)
};

/// Body of `action.<state>` (registered, sent, acknowledged, completed, failed, ...).
struct action_event {
  std::string action_id;
  std::string type; ///< isolate, ...
  std::string state;
  std::string device_id;
  std::string incident_id;
  std::string requested_by;
  int64_t updated_at = 0; ///< µs since the epoch.
  bool result_ok = false;
  std::string result_error;
  PARRY_MSGPACK_MAP(action_id, type, state, device_id, incident_id, requested_by,
                    updated_at, result_ok, result_error)
};

/// Body of `device.updated`.
struct device_event {
  std::string device_id;
  std::string hostname;
  bool online = false;
  bool isolated = false;
  int64_t last_seen = 0; ///< µs since the epoch.
  PARRY_MSGPACK_MAP(device_id, hostname, online, isolated, last_seen)
};

} // namespace parry::bus
