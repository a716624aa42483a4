#pragma once

#include <caf/typed_event_based_actor.hpp>

#include "actors/fwd.hpp"

namespace parry {

struct response_action_state {
  static inline constexpr const char* name = "response_action";

  /// The action as last stored.
  action_record rec;
  /// Where its command executes.
  device_actor device;
  action_store_actor store;
};

using response_action_stateful =
    response_action_actor::stateful_pointer<response_action_state>;

/// One response action. `rec.state` empty means new: `start` stores it as
/// registered. A non-final state means resumed from the store after a restart.
response_action_actor::behavior_type response_action(response_action_stateful self,
                                                     action_record rec,
                                                     device_actor device,
                                                     action_store_actor store);

/// The bus command that carries `rec` to the agent.
bus::command to_command(const action_record& rec);

} // namespace parry
