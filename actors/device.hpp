#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor_clock.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/fwd.hpp"
#include "actors/ingest.hpp"
#include "bus/validate.hpp" // validate_report, for the device's callers

namespace parry {
class signing_key;
}

namespace parry {

/// What the device actors count together; shown by GET /stats under `devices`.
struct device_counters {
  /// Results naming an action of another device (warned and audited).
  std::atomic<uint64_t> foreign_results{0};
  /// Incidents from a device id that never said a valid hello and is not stored.
  std::atomic<uint64_t> stranger_incidents{0};
  /// Actors of such ids ended after `stranger_idle` without a hello.
  std::atomic<uint64_t> strangers_forgotten{0};
  /// Queue entries dropped because their action ended without a final state.
  std::atomic<uint64_t> dropped_dead{0};
  /// Devices online now (a gauge: up when one is heard after silence, down when it
  /// goes offline or its actor ends online; a passivated device stays counted).
  std::atomic<int64_t> online{0};
  /// Devices kept as a compact record in the directory instead of an actor (a gauge).
  std::atomic<int64_t> passive{0};
  /// Device actors that handed their state to the directory and ended.
  std::atomic<uint64_t> passivated{0};
  /// Device actors spawned again from such a record.
  std::atomic<uint64_t> woken{0};
  /// Open actions resumed from the store as records only, until their device's actor
  /// is needed or their time runs out (a gauge).
  std::atomic<int64_t> dormant_actions{0};
};

/// last_seen is written to the store at most this often (µs) by heartbeats alone.
inline constexpr int64_t last_seen_write_interval_us = 60'000'000;

/// Timing of the agent connection, shared by every device actor.
struct device_config {
  /// How often agents are told to send a heartbeat.
  std::chrono::milliseconds heartbeat_interval{5000};
  /// Heartbeats that may be missed before the device counts as offline.
  int missed_heartbeats = 3;
  /// How long `get` may wait for the stored record after a (re)start.
  std::chrono::milliseconds load_timeout{5000};
  /// A device id the store does not know and that has not said a valid hello is a
  /// stranger: nothing of it is stored, and its actor ends after this long without
  /// a message from it.
  std::chrono::milliseconds stranger_idle{60000};
  /// Shared by every device actor of one server.
  std::shared_ptr<device_counters> counters = std::make_shared<device_counters>();
  /// Incidents in flight from the bus (the gateway adds, the store or a refusal
  /// here takes off).
  std::shared_ptr<ingest_gauge> ingest = std::make_shared<ingest_gauge>();
  /// Signs every command and cancel (docs/bus-protocol.md, "Command signatures");
  /// null sends them unsigned (a plain bus, bus_curve = false).
  std::shared_ptr<const signing_key> signer;
  /// How long a cancel stays valid for the agent after it is sent.
  std::chrono::milliseconds cancel_ttl{60000};
  /// A device with nothing queued that heard nothing but heartbeats for this long
  /// hands its state to the directory and its actor ends (zero: never).
  std::chrono::milliseconds passivate_after{60000};
};

/// A command waiting for, or on its way to, the agent.
struct pending_command {
  action_type type = action_type::isolate; ///< What `cmd` asks for.
  bus::command cmd;
  response_action_actor action;
  bool cleared = false;     ///< The action stored `sent`: it may go out.
  bool transmitted = false; ///< Written to the current connection.
  bool acknowledged = false;
  /// The action stored `cancelling`: the agent is asked to withdraw the command, and
  /// it is not sent again.
  bool cancelling = false;
};

struct device_state {
  static inline constexpr const char* name = "device";

  device_state() = default;
  device_state(const device_state&) = delete;
  device_state& operator=(const device_state&) = delete;
  ~device_state() {
    if (rec.online && cfg.counters && !handed_over) --cfg.counters->online;
  }

  /// What the store and REST see.
  device_record rec;
  /// Commands in registration order; the head goes out first.
  std::vector<pending_command> queue;
  /// Last time anything arrived from the agent (actor clock, so tests control it).
  caf::actor_clock::time_point last_heard;
  /// Last time anything but a plain heartbeat happened (actor clock): the device
  /// passivates `passivate_after` later if it has nothing queued.
  caf::actor_clock::time_point last_active;
  /// Asked the directory to take its state (see `offer` in device.cpp).
  bool passivating = false;
  /// The directory took its state: it counts the device online from now on.
  bool handed_over = false;
  /// A hello (or welcome after a server restart) happened on this connection.
  bool welcomed = false;
  /// last_seen as last written to the store.
  int64_t stored_last_seen = 0;
  /// Last command sequence number signed (see next_command_seq in device.cpp).
  uint64_t command_seq = 0;
  /// Outbound header counters.
  uint64_t seq = 0;
  uint64_t msg_id = 0;
  /// Incidents this device reported since the server started.
  uint64_t incidents = 0;
  /// The stored record has been read (or the read failed or timed out): until then
  /// `get` waits, so nobody sees a restarted device as not isolated.
  bool loaded = false;
  std::vector<caf::typed_response_promise<device_record>> waiting_get;
  /// The store knows this device, or it said a valid hello: only then is anything
  /// of it stored (a stranger costs nothing durable).
  bool known = false;
  /// A write was skipped while the device was not known yet.
  bool dirty = false;
  /// Incidents that arrived before the stored record was read (at most
  /// `max_early_incidents`): stored once the device is known, refused otherwise.
  std::vector<std::pair<bus::incident_report, uint64_t>> early; ///< With wire bytes.
  static constexpr std::size_t max_early_incidents = 16;
  /// Results naming another device's action: always counted, but logged and
  /// audited at most once a minute per device (the next line says how many were
  /// held back), so a hostile agent cannot flood the log or the audit trail.
  caf::actor_clock::time_point foreign_logged{};
  uint64_t foreign_held = 0;

  device_config cfg;
  directory_store_actor store;
  gateway_actor gateway;
  /// Asked before a stranger's actor ends (null in tests of a lone device).
  directory_actor directory;
};

using device_stateful = device_actor::stateful_pointer<device_state>;

/// The actor for device `id`. Loads what the store knows of it (or goes on from
/// `from`, the state it handed over when it passivated), then follows its connection
/// and delivers its commands in order.
device_actor::behavior_type device(device_stateful self, std::string id,
                                   device_config cfg, directory_store_actor store,
                                   gateway_actor gateway, directory_actor directory,
                                   std::optional<device_snapshot> from);

} // namespace parry
