#pragma once

#include <functional>
#include <map>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include "actors/device.hpp"
#include "actors/fwd.hpp"
#include "common/shared_setting.hpp"

namespace parry {

struct directory_state {
  static inline constexpr const char* name = "directory";

  /// Ends every live child: they are monitored, not linked (a link costs the
  /// directory a scan of all its links on each spawn and each exit), so they end
  /// here, when the directory does for whatever reason.
  ~directory_state();

  enum class child_kind : uint8_t { device, incident, action };
  /// What a live child is, by its actor id, so that its down message finds its entry
  /// without a scan. `id` points at the key in `devices`, `incidents` or `actions`:
  /// the two entries are added by `adopt` and removed by `forget`, together.
  struct child_ref {
    child_kind kind;
    const std::string* id;
  };
  std::unordered_map<caf::actor_id, child_ref> children;

  /// Live device actors by device id (a device that is idle passivates into
  /// `passive`; one with dormant actions has none until they wake).
  std::unordered_map<std::string, device_actor> devices;
  /// Live incident actors by incident id (they passivate when idle).
  std::unordered_map<std::string, incident_actor> incidents;
  /// Live response actions by action id.
  std::unordered_map<std::string, response_action_actor> actions;

  /// Devices whose actor passivated (issue 11, item 4), by device id. Heartbeats of an
  /// online one are handled here; anything else spawns its actor from the record.
  std::unordered_map<std::string, device_snapshot> passive;
  /// Device actors that offered their state, by device id: whether anything was routed
  /// to them since (then they stay live).
  std::unordered_map<std::string, bool> leaving;
  /// The check timer for passivated devices' heartbeats is armed.
  bool sweeping = false;

  /// Open actions resumed from the store without an actor, by device id in
  /// registration order: they come to life, in that order, with their device's actor
  /// (no device has both a live actor and dormant actions).
  std::unordered_map<std::string, std::vector<action_record>> dormant;
  /// The device of each dormant action, by action id.
  std::unordered_map<std::string, std::string> dormant_device;
  /// When dormant actions must come to life anyway (their time to live or execution
  /// deadline, µs since the epoch), with their device id: earliest first.
  std::priority_queue<std::pair<int64_t, std::string>,
                      std::vector<std::pair<int64_t, std::string>>,
                      std::greater<std::pair<int64_t, std::string>>>
      dormant_due;
  /// The time (µs) the expire timer is armed for; zero when none is.
  int64_t due_armed = 0;
  /// Actions whose reverse is being registered right now.
  std::set<std::string> reversing;
  /// Registrations in flight by (user, idempotency key), with every request waiting
  /// for the same answer: a concurrent duplicate gets the first one's record.
  std::map<std::pair<std::string, std::string>,
           std::vector<caf::typed_response_promise<action_record>>>
      registering;
  /// Duplicate registrations answered with an earlier action.
  uint64_t idempotent_hits = 0;

  device_config cfg;
  /// Replaced by a reload (SIGHUP); live incidents share it.
  shared_setting<action_policy> policy;
  caf::timespan incident_idle;
  directory_store_actor store;
  /// Reads committed incidents on a connection of its own (store_reader), so that a
  /// bulk registration's check does not queue behind the writer; null: the store.
  incident_reader_actor reader;
  gateway_actor gateway;
};

using directory_stateful = directory_actor::stateful_pointer<directory_state>;

/// Maps ids to live actors and spawns them on demand.
directory_actor::behavior_type directory(directory_stateful self, device_config cfg,
                                         shared_setting<action_policy> policy,
                                         caf::timespan incident_idle,
                                         directory_store_actor store,
                                         incident_reader_actor reader,
                                         gateway_actor gateway);

/// Builds the action that undoes `original` for `req`'s user, or says why it cannot.
caf::expected<action_record> make_reverse(const action_record& original,
                                          const action_request& req,
                                          const action_policy& policy, int64_t now);

} // namespace parry
