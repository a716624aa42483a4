#pragma once

#include <string>

#include <caf/typed_event_based_actor.hpp>

#include "actors/fwd.hpp"

namespace parry {

struct incident_state {
  static inline constexpr const char* name = "incident";

  /// The incident with its whole chain.
  incident_record rec;
};

using incident_stateful = incident_actor::stateful_pointer<incident_state>;

/// One live incident. It passivates itself (quits) after `idle` without messages;
/// the directory spawns it again from the store on the next request.
incident_actor::behavior_type incident(incident_stateful self, incident_record rec,
                                       caf::timespan idle);

/// What an action of `type` acts on: "device", "file" or "process"; empty for an
/// unknown type.
std::string object_of(const std::string& type);

/// True when the server can execute `type` today.
bool executable(const std::string& type);

/// Checks `req` against `rec` (DESIGN.md §2) and builds the action to register.
caf::expected<action_record> make_action(const incident_record& rec,
                                         const action_request& req);

} // namespace parry
