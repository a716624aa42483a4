#pragma once

#include <string>
#include <unordered_map>

#include <caf/typed_event_based_actor.hpp>

#include "actors/device.hpp"
#include "actors/fwd.hpp"

namespace parry {

struct directory_state {
  static inline constexpr const char* name = "directory";

  /// Device actors by device id: every device heard from, or with open actions.
  std::unordered_map<std::string, device_actor> devices;
  /// Live incident actors by incident id (they passivate when idle).
  std::unordered_map<std::string, incident_actor> incidents;

  device_config cfg;
  caf::timespan incident_idle;
  store_actor store;
  gateway_actor gateway;
};

using directory_stateful = directory_actor::stateful_pointer<directory_state>;

/// Maps ids to live actors and spawns them on demand.
directory_actor::behavior_type directory(directory_stateful self, device_config cfg,
                                         caf::timespan incident_idle, store_actor store,
                                         gateway_actor gateway);

} // namespace parry
