#include "actors/gateway_bridge.hpp"

#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/device.hpp"
#include "actors/incident.hpp"

namespace parry {

gateway_actor::behavior_type
gateway_bridge(gateway_actor::stateful_pointer<gateway_bridge_state> self,
               std::shared_ptr<bus::gateway> bus) {
  self->state.bus = std::move(bus);
  return {
      [self](atom::send, std::string& device_id, std::string& header, std::string& body) {
        self->state.bus->send(std::move(device_id), std::move(header), std::move(body));
      },
  };
}

namespace {

std::string action_id_problem(const std::string& id) {
  return bus::valid_id(id) ? std::string{} : "invalid action id";
}

} // namespace

bool dispatch_inbound(const directory_actor& dir, bus::header&& h, std::string_view body,
                      const bus::decode_limits& lim) {
  std::string why;
  auto& id = h.device_id;
  const auto& t = h.type;
  auto bad = [&] {
    spdlog::warn("bus: dropped {} from {}: {}", t, id, why);
    return false;
  };
  if (t == bus::type::hello) {
    auto m = bus::decode<bus::hello>(body, lim, why);
    if (!m) return bad();
    caf::anon_send(dir, atom::hello_v, std::move(id), std::move(*m));
  } else if (t == bus::type::heartbeat) {
    auto m = bus::decode<bus::heartbeat>(body, lim, why);
    if (!m) return bad();
    caf::anon_send(dir, atom::heartbeat_v, std::move(id), *m);
  } else if (t == bus::type::incident) {
    auto m = bus::decode<bus::incident_report>(body, lim, why);
    // Checked here, off the actors, so a bad report costs the sender, not the server.
    if (!m || !(why = validate_report(*m)).empty()) return bad();
    normalize_hashes(*m);
    caf::anon_send(dir, atom::incident_v, std::move(id), std::move(*m));
  } else if (t == bus::type::action_ack) {
    auto m = bus::decode<bus::action_ack>(body, lim, why);
    if (!m || !(why = action_id_problem(m->action_id)).empty()) return bad();
    caf::anon_send(dir, atom::ack_v, std::move(id), std::move(m->action_id));
  } else if (t == bus::type::action_result) {
    auto m = bus::decode<bus::action_result>(body, lim, why);
    if (!m || !(why = action_id_problem(m->action_id)).empty()) return bad();
    caf::anon_send(dir, atom::result_v, std::move(id), std::move(*m));
  } else {
    why = "unknown message type";
    return bad();
  }
  return true;
}

} // namespace parry
