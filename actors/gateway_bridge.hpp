#pragma once

#include <memory>

#include <caf/typed_event_based_actor.hpp>

#include "actors/fwd.hpp"
#include "bus/gateway.hpp"

namespace parry {

struct gateway_bridge_state {
  static inline constexpr const char* name = "gateway";

  /// The socket thread's outbound queue.
  std::shared_ptr<bus::gateway> bus;
};

/// Hands outbound frames from actors to the gateway thread.
gateway_actor::behavior_type
gateway_bridge(gateway_actor::stateful_pointer<gateway_bridge_state> self,
               std::shared_ptr<bus::gateway> bus);

/// Decodes one inbound body by its header's type and sends it to the directory.
/// Runs on the gateway thread; returns false for a body that does not decode.
bool dispatch_inbound(const directory_actor& dir, bus::header&& h, std::string_view body,
                      const bus::decode_limits& lim);

} // namespace parry
