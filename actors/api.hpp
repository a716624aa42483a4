#pragma once

#include <functional>
#include <map>
#include <string>

#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json_fwd.hpp>

#include "actors/fwd.hpp"

namespace parry {

struct api_state {
  static inline constexpr const char* name = "api";

  auth_actor auth;
  hasher_actor hasher;
  directory_actor directory;
  store_actor store;
  /// Where reads go: never behind the writer's commits.
  store_reader_actor reader;
  action_policy policy;
  /// Bus counters for /stats; called on the api actor, must be thread-safe.
  std::function<nlohmann::json()> bus_stats;
};

using api_stateful = api_actor::stateful_pointer<api_state>;

/// The REST API of docs/rest-api.md: authenticates, checks roles and CSRF, routes.
api_actor::behavior_type api(api_stateful self, auth_actor auth, hasher_actor hasher,
                             directory_actor dir, store_actor store,
                             store_reader_actor reader, action_policy policy,
                             std::function<nlohmann::json()> bus_stats);

/// Splits "/a/b?x=1&y=%20" into path and decoded query parameters.
std::pair<std::string, std::map<std::string, std::string>>
split_target(const std::string& target);

/// True for the roles that may trigger, cancel and reverse actions.
bool may_act(const std::string& role);

} // namespace parry
