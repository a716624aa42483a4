#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json_fwd.hpp>

#include "actors/fwd.hpp"
#include "common/domain.hpp"
#include "common/shared_setting.hpp"
#include "common/utf8.hpp"

namespace parry {

struct incident_state {
  static inline constexpr const char* name = "incident";

  /// The incident with its whole chain.
  incident_record rec;
  /// Rules for building actions, as reloaded (shared with the directory).
  shared_setting<action_policy> policy;
};

using incident_stateful = incident_actor::stateful_pointer<incident_state>;

/// One live incident. It passivates itself (quits) after `idle` without messages;
/// the directory spawns it again from the store on the next request.
incident_actor::behavior_type incident(incident_stateful self, incident_record rec,
                                       shared_setting<action_policy> policy,
                                       caf::timespan idle);

/// Lower-cases every SHA-256 of `r` (the bus edge): hashes compare as the agent's
/// journal and prevention list store them. A value that is not a hash is kept as sent
/// (shown, and not actionable for hash-checked actions).
void normalize_hashes(bus::incident_report& r);

// shown(): text from outside quoted in a reason, in common/utf8.hpp.

/// Why the object of `e` cannot be acted on by an action of type `t` (its file's path
/// or hash, its process's image), empty when it can. Such objects are shown, never
/// offered, and a request for them is refused (ec::not_applicable, 409).
std::string not_actionable(action_type t, const bus::activity_event& e);

/// Checks start_process parameters (absolute paths, bounded sizes, allow-list) and
/// returns the params the command carries: `path`, `working_directory`, the raw
/// `arguments` text when one was given, and argv as `argc` + `arg.0`... `argv` (a
/// list given as a JSON array) wins over `arguments`; the text is split by the
/// rules of `os`, and left unsplit (no `argc`) while `os` is not known yet.
caf::expected<std::map<std::string, std::string>>
start_process_params(const std::map<std::string, std::string>& params,
                     const std::optional<std::vector<std::string>>& argv,
                     const action_policy& policy, std::optional<os_family> os);

/// True when `a` is a start_process whose `arguments` text still waits for the
/// device's OS to be split.
bool needs_device_os(const action_record& a);

/// Splits the `arguments` of `a` by the rules of `os` into `argc` + `arg.N`.
caf::error split_for_device(action_record& a, os_family os);

/// The argv `params` carry (`argc` + `arg.N`), empty when they carry none.
std::vector<std::string> argv_of(const std::map<std::string, std::string>& params);

/// Checks `req` against `rec` (DESIGN.md §2) and builds the action to register.
/// `os` is the device's OS family when known (it splits start_process arguments).
caf::expected<action_record> make_action(const incident_record& rec,
                                         const action_request& req,
                                         const action_policy& policy, int64_t now,
                                         std::optional<os_family> os = std::nullopt);

/// The `available-actions` answer for an incident (docs/rest-api.md). `device_os` is
/// the device's reported OS text (it decides how start_process arguments split).
nlohmann::json available_actions(const incident_record& rec, bool device_isolated,
                                 const action_policy& policy,
                                 std::string_view device_os = {});

} // namespace parry
