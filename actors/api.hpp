#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <caf/timespan.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json_fwd.hpp>

#include "actors/fwd.hpp"
#include "common/shared_setting.hpp"

namespace parry {
struct supervision_stats;
}

namespace parry {

/// What the api works with, given whole at spawn (and to its supervisor).
struct api_state {
  static inline constexpr const char* name = "api";

  auth_actor auth;
  hasher_actor hasher;
  directory_actor directory;
  store_actor store;
  /// Where reads go: never behind the writer's commits.
  store_reader_actor reader;
  /// Replaced by a reload (SIGHUP); shared with the directory.
  shared_setting<action_policy> policy;
  /// Bus counters for /stats; called on the api actor, must be thread-safe.
  std::function<nlohmann::json()> bus_stats;
  /// Every request is answered within this; past it nothing is registered for it.
  /// Below the HTTP server's own 30 s, so the caller hears the api's answer.
  caf::timespan deadline = std::chrono::seconds{25};
  /// Restarts and caught exceptions, shared with the supervisors; for /stats.
  std::shared_ptr<supervision_stats> supervision;
  /// Enrollment tokens, integrator keys, revocation (null: those routes answer 503).
  bus_keys_actor bus_keys;
  /// Sessions end after this long without use (told to the console by GET /session).
  std::chrono::minutes session_idle{30};
  /// Copies of the database for POST /backup (null: that route answers 503).
  backup_actor backup;
  /// True while a backup is being taken: a second one is refused (409).
  bool backup_running = false;
};

using api_stateful = api_actor::stateful_pointer<api_state>;

/// The REST API of docs/rest-api.md: authenticates, checks roles and CSRF, routes.
api_actor::behavior_type api(api_stateful self, api_state deps);

/// The route a request goes to, as metrics label it: "GET /actions/{id}" (the
/// pattern below /api/v1), or "unmatched". Never any part of the request itself.
std::string route_label(const std::string& method, const std::string& target);

/// Splits "/a/b?x=1&y=%20" into path and decoded query parameters.
std::pair<std::string, std::map<std::string, std::string>>
split_target(const std::string& target);

} // namespace parry
