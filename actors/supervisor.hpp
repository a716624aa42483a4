#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include <caf/fwd.hpp>
#include <nlohmann/json_fwd.hpp>

#include "actors/actors.hpp"
#include "common/shared_setting.hpp"

namespace parry {

struct api_state;

struct auth_config;

/// What supervision saw since start, for /stats. Written by actors, read by anyone.
struct supervision_stats {
  /// Times the api actor ended and was started again.
  std::atomic<uint64_t> api_restarts{0};
  /// Times the auth actor ended and was started again.
  std::atomic<uint64_t> auth_restarts{0};
  /// Exceptions caught at the api's edge and answered 500.
  std::atomic<uint64_t> api_exceptions{0};
};

/// The api actor behind a supervisor. The handle answers for the whole life of the
/// system: requests are delegated to the current api; when it ends for any reason
/// but a shutdown it is started again and `api_restarts` counted.
api_actor spawn_supervised_api(caf::actor_system& sys, api_state deps);

/// The auth actor behind a supervisor, like the api. A restarted auth has lost its
/// sessions and lockout counters: users log in again.
auth_actor spawn_supervised_auth(caf::actor_system& sys,
                                 std::shared_ptr<supervision_stats> stats,
                                 shared_setting<auth_config> cfg, store_actor store,
                                 hasher_actor hasher);

} // namespace parry
