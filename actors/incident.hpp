#pragma once

#include <set>
#include <string>
#include <vector>

#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json_fwd.hpp>

#include "actors/fwd.hpp"

namespace parry {

struct incident_state {
  static inline constexpr const char* name = "incident";

  /// The incident with its whole chain.
  incident_record rec;
  /// Rules for building actions.
  action_policy policy;
};

using incident_stateful = incident_actor::stateful_pointer<incident_state>;

/// One live incident. It passivates itself (quits) after `idle` without messages;
/// the directory spawns it again from the store on the next request.
incident_actor::behavior_type incident(incident_stateful self, incident_record rec,
                                       action_policy policy, caf::timespan idle);

/// What an action of `type` acts on: "device", "file" or "process"; empty for an
/// unknown type.
std::string object_of(const std::string& type);

/// The action that undoes `type`, or "" when it cannot be undone.
std::string reverse_of(const std::string& type);

/// True when `type` applies to an activity event of type `event_type` (DESIGN.md §2).
bool applies_to(const std::string& type, const std::string& event_type);

/// Splits startup keys into argv the way a shell splits words (whitespace, single and
/// double quotes, backslash escapes) without running anything. Fails on unbalanced
/// quotes.
caf::expected<std::vector<std::string>> split_arguments(const std::string& text);

/// Checks start_process parameters (absolute paths, no control characters, bounded
/// sizes, allow-list) and returns the params the command carries, argv included.
caf::expected<std::map<std::string, std::string>>
start_process_params(const std::map<std::string, std::string>& params,
                     const action_policy& policy);

/// Checks `req` against `rec` (DESIGN.md §2) and builds the action to register.
caf::expected<action_record> make_action(const incident_record& rec,
                                         const action_request& req,
                                         const action_policy& policy, int64_t now);

/// The `available-actions` answer for an incident (docs/rest-api.md).
nlohmann::json available_actions(const incident_record& rec, bool device_isolated,
                                 const action_policy& policy);

} // namespace parry
