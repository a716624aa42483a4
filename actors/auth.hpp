#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>

#include <caf/actor_clock.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/fwd.hpp"
#include "common/shared_setting.hpp"

namespace parry {

class server_metrics;

/// Authentication policy (docs/operations.md).
struct auth_config {
  /// Sessions end after this long without use.
  std::chrono::minutes session_idle{30};
  /// Failed password checks for one account from one source address that lock that
  /// account for that source (and failed confirmations that lock one session).
  int max_failures = 5;
  /// Failed logins from one source address, over all accounts, that block the source.
  int max_source_failures = 20;
  /// Failed logins for one account, over all sources, that lock the account for every
  /// source (distributed guessing). Sessions already open may still confirm.
  int max_account_failures = 100;
  /// How long a lock lasts; failures older than this are forgotten.
  std::chrono::minutes lockout{15};
  /// Password checks waiting for or on the hasher at once; more are refused (429).
  int max_hashing = 16;
  /// PBKDF2-HMAC-SHA256 iterations for new passwords.
  uint32_t pbkdf2_iterations = 600000;
  /// Lifetime of a bearer token when its creator names none, and the longest allowed.
  std::chrono::seconds token_default_ttl{std::chrono::hours{24 * 30}};
  std::chrono::seconds token_max_ttl{std::chrono::hours{24 * 365}};
  /// Counts password checks by outcome and lockouts (may be null).
  std::shared_ptr<server_metrics> metrics;
};

struct auth_state {
  static inline constexpr const char* name = "auth";

  struct session {
    principal who;
    caf::actor_clock::time_point last_used;
  };
  /// Password checks of one key (account+source, source, account or session).
  struct throttle {
    /// Failures not yet forgotten.
    int failures = 0;
    /// Checks reserved and not yet answered by the hasher.
    int pending = 0;
    caf::actor_clock::time_point last_failure;
    caf::actor_clock::time_point locked_until;
  };
  struct cached_token {
    principal who;
    caf::actor_clock::time_point fetched;
    /// Microseconds since the epoch; 0 never (tokens from before expiry existed).
    int64_t expires_at = 0;
  };

  /// Live browser sessions by token.
  std::unordered_map<std::string, session> sessions;
  /// Password checks by "username\nsource".
  std::unordered_map<std::string, throttle> by_user_source;
  /// Failed logins by source address.
  std::unordered_map<std::string, throttle> by_source;
  /// Failed logins by username, over all sources.
  std::unordered_map<std::string, throttle> by_user;
  /// Failed confirmations by SHA-256 of the session or bearer token.
  std::unordered_map<std::string, throttle> by_credential;
  /// Checks on the hasher now.
  int hashing = 0;
  /// Checks refused because the hasher had max_hashing in flight.
  uint64_t refused_busy = 0;
  /// Checks refused because a key was locked or had its attempts reserved.
  uint64_t refused_locked = 0;
  /// Bearer tokens recently checked against the store, by token hash.
  std::unordered_map<std::string, cached_token> tokens;

  /// Replaced by a reload (SIGHUP): limits apply from the next check on.
  shared_setting<auth_config> cfg;
  auth_store_actor store;
  hasher_actor hasher;
};

using auth_stateful = auth_actor::stateful_pointer<auth_state>;

/// Sessions, bearer tokens and login throttling.
auth_actor::behavior_type auth(auth_stateful self, shared_setting<auth_config> cfg,
                               auth_store_actor store, hasher_actor hasher);

/// Password hashing. Spawn it detached: each call blocks for a few hundred ms.
hasher_actor::behavior_type hasher(hasher_actor::pointer self, uint32_t iterations);

/// Seconds after which a refused (429) check may be tried again, from the error auth
/// answered; 0 when the error carries none.
int64_t retry_after_of(const caf::error& err);

} // namespace parry
