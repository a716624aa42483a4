#pragma once

// The bus_keys actor (actors.hpp): enrollment, enrollment tokens, integrator keys and
// revocation. The store holds the truth; this actor keeps the gateways' in-memory
// key registry in step with it (admit after the store committed, revoke after the
// store removed) and cuts a revoked party's open connection.

#include <functional>
#include <memory>
#include <string>

#include <caf/typed_event_based_actor.hpp>

#include "actors/fwd.hpp"

namespace parry::bus {
class key_registry;
}

namespace parry {

/// What the bus_keys actor works with.
struct bus_keys_config {
  std::shared_ptr<bus::key_registry> registry;
  std::string server_key_z85;  ///< Server CURVE public key (in tokens and answers).
  std::string signing_key_hex; ///< Server Ed25519 public key, 64 hex digits.
  /// Sends [header][body] to an enrolling connection (the enrollment gateway).
  std::function<void(std::string device_id, std::string header, std::string body)> reply;
  /// Cuts the open connection of a device (false) or integrator (true) by name.
  std::function<void(bool integrator, const std::string& name)> cut;
  /// Longest token lifetime and most uses one token may carry.
  int64_t max_token_ttl_us = int64_t{30} * 24 * 3600 * 1000000;
  uint32_t max_token_uses = 100000;
};

struct bus_keys_state {
  static inline constexpr const char* name = "bus_keys";
  bus_keys_config cfg;
  store_actor store;
};

bus_keys_actor::behavior_type
bus_keys(bus_keys_actor::stateful_pointer<bus_keys_state> self, bus_keys_config cfg,
         store_actor store);

} // namespace parry
