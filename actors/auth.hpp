#pragma once

#include <chrono>
#include <string>
#include <unordered_map>

#include <caf/actor_clock.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/fwd.hpp"

namespace parry {

/// Authentication policy.
struct auth_config {
  /// Sessions end after this long without use.
  std::chrono::minutes session_idle{30};
  /// Failed logins in a row that lock an account.
  int max_failures = 5;
  /// How long a locked account stays locked.
  std::chrono::minutes lockout{15};
  /// PBKDF2-HMAC-SHA256 iterations for new passwords.
  uint32_t pbkdf2_iterations = 600000;
};

struct auth_state {
  static inline constexpr const char* name = "auth";

  struct session {
    principal who;
    caf::actor_clock::time_point last_used;
  };
  struct failures {
    int count = 0;
    caf::actor_clock::time_point locked_until;
  };
  struct cached_token {
    principal who;
    caf::actor_clock::time_point fetched;
  };

  /// Live browser sessions by token.
  std::unordered_map<std::string, session> sessions;
  /// Failed logins by username.
  std::unordered_map<std::string, failures> failed;
  /// Bearer tokens recently checked against the store, by token hash.
  std::unordered_map<std::string, cached_token> tokens;

  auth_config cfg;
  auth_store_actor store;
  hasher_actor hasher;
};

using auth_stateful = auth_actor::stateful_pointer<auth_state>;

/// Sessions, bearer tokens and login throttling.
auth_actor::behavior_type auth(auth_stateful self, auth_config cfg,
                               auth_store_actor store, hasher_actor hasher);

/// Password hashing. Spawn it detached: each call blocks for a few hundred ms.
hasher_actor::behavior_type hasher(hasher_actor::pointer self, uint32_t iterations);

/// True for the roles parryd knows.
bool valid_role(const std::string& role);

} // namespace parry
