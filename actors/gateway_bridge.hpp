#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"
#include "actors/ingest.hpp"
#include "bus/gateway.hpp"
#include "common/shared_setting.hpp"

namespace parry {

struct gateway_bridge_state {
  static inline constexpr const char* name = "gateway";

  /// The socket thread's outbound queue.
  std::shared_ptr<bus::outbox> bus;
};

/// Hands outbound frames from actors to the gateway thread.
gateway_actor::behavior_type
gateway_bridge(gateway_actor::stateful_pointer<gateway_bridge_state> self,
               std::shared_ptr<bus::outbox> bus);

/// Bounds on what agents may make the server do (per device and server-wide).
struct ingest_limits {
  /// Device ids tracked at once; a new id beyond it is refused (`device_cap`).
  std::size_t max_devices = 10000;
  /// Incidents accepted per device per minute (`rate`).
  uint32_t incidents_per_minute = 600;
  /// Incidents accepted per second from all devices together (`busy`).
  uint32_t incidents_per_second = 10000;
  /// Hellos accepted and not yet through (their device handled them and stored what
  /// they said); beyond it a hello is refused (`busy`) and told when to come back.
  uint32_t hellos_in_flight = 2000;
  /// Bytes of incident reports accepted but not yet stored, all devices together;
  /// beyond it a report is refused (`busy`) until the store catches up.
  uint64_t incident_bytes_in_flight = 256ull << 20;
  /// A tracked id that never said a valid hello is forgotten after this long
  /// without a message.
  std::chrono::seconds unhelloed_idle{120};
  bus::hello_limits hello;
};

/// Decodes and checks inbound bodies on the gateway thread and sends what passes to
/// the directory. Keeps per-device accounting (hello seen, incident rate); only the
/// gateway thread calls it.
class inbound_filter {
public:
  using clock = std::chrono::steady_clock;

  /// `ingest` may be replaced by a reload (SIGHUP) while the gateway runs.
  inbound_filter(bus::decode_limits lim, shared_setting<ingest_limits> ingest,
                 std::shared_ptr<ingest_gauge> gauge = std::make_shared<ingest_gauge>())
      : lim_(lim), ingest_(std::move(ingest)), gauge_(std::move(gauge)) {}

  /// Checks one message; on success sends it to `dir` and returns nothing.
  std::optional<bus::refusal> operator()(const directory_actor& dir, bus::header&& h,
                                         std::string_view body, clock::time_point now);

  std::size_t tracked() const { return devices_.size(); }

private:
  struct device_slot {
    bool helloed = false;
    clock::time_point last{};
    clock::time_point window{}; ///< Start of the current minute of incidents.
    uint32_t incidents = 0;
  };

  /// Starts a new second of the per-second counts when one has passed.
  void roll_second(clock::time_point now);
  /// How long a hello refused as busy is told to wait, in ms.
  uint32_t hello_retry_ms(const ingest_limits& limits) const;
  // The slot of `id`, or nothing when a new id would exceed max_devices.
  device_slot* slot_for(const std::string& id, const ingest_limits& limits,
                        clock::time_point now);

  bus::decode_limits lim_;
  shared_setting<ingest_limits> ingest_;
  std::shared_ptr<ingest_gauge> gauge_;
  std::unordered_map<std::string, device_slot> devices_;
  clock::time_point second_{};
  uint32_t second_count_ = 0;
  uint64_t hellos_refused_last_second_ = 0; ///< Sets how long a refused hello waits.
  uint64_t hellos_refused_this_second_ = 0;
};

/// Decodes one inbound body by its header's type, checks it (UTF-8, bounds, ids,
/// the incident chain) and sends it to the directory, without per-device
/// accounting. An incident sent on is added to `gauge` (if any), and a hello carries
/// a ticket of it (actors/ingest.hpp). Returns why it was refused, or nothing.
std::optional<bus::refusal>
check_and_dispatch(const directory_actor& dir, bus::header&& h, std::string_view body,
                   const bus::decode_limits& lim, const bus::hello_limits& hl = {},
                   const std::shared_ptr<ingest_gauge>& gauge = {});

/// The same, as a yes/no: false for a body that was refused.
bool dispatch_inbound(const directory_actor& dir, bus::header&& h, std::string_view body,
                      const bus::decode_limits& lim);

} // namespace parry
