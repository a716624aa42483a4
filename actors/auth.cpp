#include "actors/auth.hpp"
#include "server/logging.hpp"
#include "server/metrics.hpp"

#include <algorithm>

#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "common/crypto.hpp"
#include "common/domain.hpp"
#include "common/time.hpp"

namespace parry {

namespace {

// Bearer tokens found in the store are trusted this long before asking again.
constexpr auto token_cache_ttl = std::chrono::seconds{60};
// Bounded waits for the store and the hasher, shorter than the api's request
// deadline (25 s) so that its caller still hears the answer.
constexpr auto store_wait = std::chrono::seconds{20};
constexpr auto hasher_timeout = std::chrono::seconds{20};
// What a refused (429) answer says, so the api can set Retry-After.
constexpr const char* retry_marker = "; retry after ";

using clock_point = caf::actor_clock::time_point;
using throttle = auth_state::throttle;

caf::error wrong_credentials() {
  return make_error(ec::unauthenticated, "wrong username or password");
}

/// A 429 answer that names when to try again.
caf::error refused(const std::string& why, std::chrono::seconds after) {
  return make_error(ec::locked, why + retry_marker +
                                    std::to_string(std::max<int64_t>(1, after.count())) +
                                    " s");
}

void audit(auth_stateful self, std::string actor, const char* kind, std::string target,
           std::string detail) {
  self->request(self->state.store, store_wait, atom::audit_v,
                audit_entry{std::move(actor), kind, std::move(target), std::move(detail)})
      .then([](atom::ok) {},
            [](caf::error& err) {
              spdlog::error("auth: cannot write the audit trail: {}", message_of(err));
            });
}

/// Forgets failures older than the lockout window (an unlocked, idle key).
void decay(throttle& t, clock_point now, std::chrono::minutes window) {
  if (t.failures > 0 && t.locked_until <= now && now - t.last_failure > window)
    t.failures = 0;
}

bool locked(const throttle& t, clock_point now) {
  return t.locked_until > now;
}

std::chrono::seconds remaining(const throttle& t, clock_point now) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.locked_until - now) +
         std::chrono::seconds{1};
}

/// Records one failure on `t`; true when it locked `t` now.
bool fail_once(throttle& t, int max, clock_point now, std::chrono::minutes lockout) {
  t.last_failure = now;
  if (++t.failures >= max && !locked(t, now)) {
    t.locked_until = now + lockout;
    return true;
  }
  return false;
}

/// The throttles one password check goes through. Login: account+source, source and
/// account. Confirmation by an authenticated session: that session only, so nobody
/// else's failures keep a signed-in user from confirming.
struct check_keys {
  std::vector<std::pair<throttle*, int>> list;
};

/// Checks `password` for `username` on the hasher. Before hashing, the attempt is
/// reserved on every throttle in `keys` (a locked key, or one whose attempts in flight
/// would reach its limit, refuses at once); afterwards a failure is counted on each,
/// and a success clears the account+source key unless a lock went on meanwhile.
/// Counts one password check's outcome in the metrics, if there are any.
void count_check(auth_stateful self, const char* kind, const char* outcome) {
  if (auto m = self->state.cfg.get()->metrics) m->password_check(kind, outcome);
}

template <class Keys, class Done, class Fail>
void check_password(auth_stateful self, const std::string& username,
                    const std::string& password, const char* kind, Keys keys, Done done,
                    Fail fail) {
  auto& st = self->state;
  auto now = self->clock().now();
  for (auto& [t, max] : keys(st)) {
    decay(*t, now, st.cfg.get()->lockout);
    if (locked(*t, now)) {
      ++st.refused_locked;
      count_check(self, kind, "locked");
      audit(self, username, kind, username, "refused: locked");
      fail(refused("locked after repeated failed password checks", remaining(*t, now)));
      return;
    }
    if (t->failures + t->pending >= max) {
      ++st.refused_locked;
      fail(refused("too many password checks in progress", std::chrono::seconds{1}));
      return;
    }
  }
  if (st.hashing >= st.cfg.get()->max_hashing) {
    ++st.refused_busy;
    fail(refused("too many password checks in progress", std::chrono::seconds{1}));
    return;
  }
  for (auto& [t, max] : keys(st))
    ++t->pending;
  ++st.hashing;
  // Reserved: every path below gives the reservation back exactly once.
  auto release = [self, keys]() {
    auto& st = self->state;
    --st.hashing;
    for (auto& [t, max] : keys(st))
      t->pending = std::max(0, t->pending - 1);
  };
  auto check = [self, username, password, kind, keys, done, fail,
                release](user_record u, bool exists) mutable {
    self->request(self->state.hasher, hasher_timeout, atom::verify_v, password, u)
        .then(
            [self, username, u, exists, kind, keys, done, fail,
             release](bool good) mutable {
              release();
              auto& st = self->state;
              auto now = self->clock().now();
              auto list = keys(st);
              if (!good || !exists) {
                bool now_locked = false;
                for (auto& [t, max] : list)
                  now_locked |= fail_once(*t, max, now, st.cfg.get()->lockout);
                if (now_locked) {
                  spdlog::warn("{}auth: locked ({})", log_tags({{"user", username}}),
                               kind);
                  if (auto m = st.cfg.get()->metrics) m->lockout(kind);
                }
                count_check(self, kind, "wrong_password");
                audit(self, username, kind, username,
                      now_locked ? "failed: wrong password; locked"
                                 : "failed: wrong password");
                fail(wrong_credentials());
                return;
              }
              // Right password, but a lock that went on while it was hashed stands.
              for (auto& [t, max] : list)
                if (locked(*t, now)) {
                  count_check(self, kind, "locked");
                  audit(self, username, kind, username, "refused: locked");
                  fail(refused("locked after repeated failed password checks",
                               remaining(*t, now)));
                  return;
                }
              // Said only to someone who knows the password.
              if (u.disabled) {
                count_check(self, kind, "disabled");
                audit(self, username, kind, username, "refused: account disabled");
                fail(make_error(ec::unauthenticated, "account disabled"));
                return;
              }
              list.front().first->failures = 0;
              count_check(self, kind, "ok");
              audit(self, username, kind, username, "ok");
              done(principal{u.username, u.role, "", false});
            },
            [fail, release](caf::error& err) mutable {
              release();
              fail(err);
            });
  };
  self->request(st.store, store_wait, atom::user_v, username)
      .then([check](user_record& u) mutable { check(std::move(u), true); },
            [check, fail, release](caf::error& err) mutable {
              if (code_of(err) == ec::not_found) {
                check(user_record{}, false);
              } else {
                release();
                fail(err);
              }
            });
}

/// Drops throttles that hold nothing (no failures, nothing pending, no lock).
void prune(std::unordered_map<std::string, throttle>& m, clock_point now,
           std::chrono::minutes window) {
  for (auto i = m.begin(); i != m.end();) {
    decay(i->second, now, window);
    if (i->second.failures == 0 && i->second.pending == 0 && !locked(i->second, now))
      i = m.erase(i);
    else
      ++i;
  }
}

} // namespace

int64_t retry_after_of(const caf::error& err) {
  if (code_of(err) != ec::locked) return 0;
  auto msg = message_of(err);
  auto pos = msg.rfind(retry_marker);
  if (pos == std::string::npos) return 0;
  try {
    return std::stoll(msg.substr(pos + std::char_traits<char>::length(retry_marker)));
  } catch (const std::exception&) {
    return 0;
  }
}

hasher_actor::behavior_type hasher(hasher_actor::pointer self, uint32_t iterations) {
  return {
      [iterations](atom::verify, const std::string& password, const user_record& u) {
        // An unknown user costs as much as a known one, so timing tells nothing.
        if (u.salt_hex.empty()) {
          hash_password(password, iterations);
          return false;
        }
        return verify_password(password,
                               password_hash{u.salt_hex, u.iterations, u.hash_hex});
      },
      [iterations](atom::hash, const std::string& password, user_record u) {
        auto h = hash_password(password, iterations);
        u.salt_hex = h.salt_hex;
        u.iterations = h.iterations;
        u.hash_hex = h.hash_hex;
        return u;
      },
  };
}

auth_actor::behavior_type auth(auth_stateful self, shared_setting<auth_config> cfg,
                               auth_store_actor store, hasher_actor hasher) {
  self->state.cfg = cfg;
  self->state.store = std::move(store);
  self->state.hasher = std::move(hasher);
  // Keys with nothing in them are dropped once a minute, so guessing with many names
  // or addresses cannot grow the tables without bound beyond one lockout window.
  self->delayed_send(self, std::chrono::minutes{1}, atom::check_v);
  return {
      [self](atom::check) {
        auto& st = self->state;
        auto now = self->clock().now();
        for (auto* m :
             {&st.by_user_source, &st.by_source, &st.by_user, &st.by_credential})
          prune(*m, now, st.cfg.get()->lockout);
        for (auto i = st.sessions.begin(); i != st.sessions.end();)
          i = now - i->second.last_used > st.cfg.get()->session_idle
                  ? st.sessions.erase(i)
                  : std::next(i);
        self->delayed_send(self, std::chrono::minutes{1}, atom::check_v);
      },
      [self](atom::login, const std::string& username, const std::string& password,
             const std::string& source) -> caf::result<std::string, principal> {
        auto rp = self->make_response_promise<std::string, principal>();
        auto keys = [username, source](auth_state& st) {
          return std::vector<std::pair<throttle*, int>>{
              {&st.by_user_source[username + '\n' + source], st.cfg.get()->max_failures},
              {&st.by_source[source], st.cfg.get()->max_source_failures},
              {&st.by_user[username], st.cfg.get()->max_account_failures}};
        };
        check_password(
            self, username, password, "login", keys,
            [self, rp](principal who) mutable {
              who.csrf_token = random_hex(16);
              who.via_session = true;
              auto token = random_hex(32);
              self->state.sessions[token] = {who, self->clock().now()};
              spdlog::info("{}auth: logged in", log_tags({{"user", who.username}}));
              rp.deliver(token, who);
            },
            [rp](caf::error err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::confirm, const std::string& username, const std::string& credential,
             const std::string& password) -> caf::result<atom::ok> {
        auto rp = self->make_response_promise<atom::ok>();
        auto key = sha256_hex(credential);
        auto keys = [key](auth_state& st) {
          return std::vector<std::pair<throttle*, int>>{
              {&st.by_credential[key], st.cfg.get()->max_failures}};
        };
        check_password(
            self, username, password, "password_confirmation", keys,
            [rp](principal) mutable { rp.deliver(atom::ok_v); },
            [rp](caf::error err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::locked) -> std::vector<std::string> {
        auto& st = self->state;
        auto now = self->clock().now();
        std::vector<std::string> out;
        for (const auto& [name, t] : st.by_user)
          if (locked(t, now)) out.push_back(name);
        for (const auto& [key, t] : st.by_user_source)
          if (locked(t, now)) out.push_back(key.substr(0, key.find('\n')));
        std::sort(out.begin(), out.end());
        out.erase(std::unique(out.begin(), out.end()), out.end());
        return out;
      },
      [self](atom::forget, const std::string& username) {
        auto& st = self->state;
        for (auto i = st.sessions.begin(); i != st.sessions.end();)
          i = i->second.who.username == username ? st.sessions.erase(i) : std::next(i);
        for (auto i = st.tokens.begin(); i != st.tokens.end();)
          i = i->second.who.username == username ? st.tokens.erase(i) : std::next(i);
      },
      [self](atom::authn, bool session, const std::string& token,
             bool use) -> caf::result<principal> {
        auto& st = self->state;
        auto now = self->clock().now();
        if (token.empty() || token.size() > 128)
          return make_error(ec::unauthenticated, "no session or token");
        if (session) {
          auto i = st.sessions.find(token);
          if (i == st.sessions.end() ||
              now - i->second.last_used > st.cfg.get()->session_idle) {
            if (i != st.sessions.end()) st.sessions.erase(i);
            return make_error(ec::unauthenticated, "session expired or unknown");
          }
          if (use) i->second.last_used = now;
          return i->second.who;
        }
        auto hash = sha256_hex(token);
        if (auto i = st.tokens.find(hash);
            i != st.tokens.end() && now - i->second.fetched < token_cache_ttl) {
          if (i->second.expires_at != 0 && i->second.expires_at <= now_us()) {
            st.tokens.erase(i);
            return make_error(ec::unauthenticated, "token expired");
          }
          return i->second.who;
        }
        auto rp = self->make_response_promise<principal>();
        self->request(st.store, store_wait, atom::token_v, hash)
            .then(
                [self, rp, hash](const token_record& t) mutable {
                  if (t.expires_at != 0 && t.expires_at <= now_us()) {
                    rp.deliver(make_error(ec::unauthenticated, "token expired"));
                    return;
                  }
                  self->request(self->state.store, store_wait, atom::user_v, t.username)
                      .then(
                          [self, rp, hash, t](const user_record& u) mutable {
                            if (u.disabled) {
                              rp.deliver(
                                  make_error(ec::unauthenticated, "account disabled"));
                              return;
                            }
                            principal who{u.username, u.role, "", false};
                            self->state.tokens[hash] = {who, self->clock().now(),
                                                        t.expires_at};
                            rp.deliver(who);
                          },
                          [rp](caf::error&) mutable {
                            rp.deliver(
                                make_error(ec::unauthenticated, "token owner is gone"));
                          });
                },
                [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::token, const principal& who, const std::string& name,
             int64_t ttl_seconds) -> caf::result<std::string, token_record> {
        auto& st = self->state;
        auto now = self->clock().now();
        // A locked account mints nothing, whichever session asks.
        if (auto i = st.by_user.find(who.username);
            i != st.by_user.end() && locked(i->second, now))
          return refused("account locked", remaining(i->second, now));
        if (ttl_seconds < 0 || ttl_seconds > st.cfg.get()->token_max_ttl.count())
          return make_error(ec::bad_request,
                            "expires_in must be between 1 and " +
                                std::to_string(st.cfg.get()->token_max_ttl.count()) +
                                " seconds");
        if (ttl_seconds == 0) ttl_seconds = st.cfg.get()->token_default_ttl.count();
        auto token = random_hex(32);
        token_record rec;
        rec.token_id = random_hex(8);
        rec.name = name;
        rec.username = who.username;
        rec.created_at = now_us();
        rec.expires_at = rec.created_at + ttl_seconds * 1000000;
        auto rp = self->make_response_promise<std::string, token_record>();
        self->request(st.store, store_wait, atom::token_v, sha256_hex(token), rec)
            .then(
                [self, rp, token, rec](atom::ok) mutable {
                  audit(self, rec.username, "token_created", rec.token_id, rec.name);
                  rp.deliver(token, rec);
                },
                [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::token, atom::list, const principal& who,
             bool all) -> caf::result<std::vector<token_record>> {
        auto rp = self->make_response_promise<std::vector<token_record>>();
        auto owner = all && may_administer(who.role) ? std::string{} : who.username;
        self->request(self->state.store, store_wait, atom::token_v, atom::list_v, owner)
            .then([rp](std::vector<token_record>& xs) mutable { rp.deliver(xs); },
                  [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::revoke, const principal& who,
             const std::string& token_id) -> caf::result<atom::ok> {
        // Owners revoke their own; administrators anyone's.
        auto owner = may_administer(who.role) ? std::string{} : who.username;
        auto rp = self->make_response_promise<atom::ok>();
        self->request(self->state.store, store_wait, atom::revoke_v, atom::token_v,
                      token_id, owner)
            .then(
                [self, rp, who, token_id](const std::string& username) mutable {
                  auto& st = self->state;
                  for (auto i = st.tokens.begin(); i != st.tokens.end();)
                    i = i->second.who.username == username ? st.tokens.erase(i)
                                                           : std::next(i);
                  audit(self, who.username, "token_revoked", token_id,
                        "owner " + username);
                  rp.deliver(atom::ok_v);
                },
                [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::logout, bool session,
             const std::string& token) -> caf::result<atom::ok> {
        if (session) {
          if (auto i = self->state.sessions.find(token);
              i != self->state.sessions.end()) {
            audit(self, i->second.who.username, "logout", i->second.who.username,
                  "session");
            self->state.sessions.erase(i);
          }
          return atom::ok_v;
        }
        auto hash = sha256_hex(token);
        self->state.tokens.erase(hash);
        auto rp = self->make_response_promise<atom::ok>();
        self->request(self->state.store, store_wait, atom::revoke_v, hash)
            .then([rp](atom::ok) mutable { rp.deliver(atom::ok_v); },
                  [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::bootstrap, const std::string& password) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        self->request(self->state.store, store_wait, atom::user_v, std::string{"admin"})
            .then(
                [rp](const user_record&) mutable { rp.deliver(std::string{}); },
                [self, rp, password](caf::error& err) mutable {
                  if (code_of(err) != ec::not_found) {
                    rp.deliver(err);
                    return;
                  }
                  auto generated = password.empty() ? random_hex(12) : std::string{};
                  user_record u{"admin", user_role::administrator, "", 0, "", now_us()};
                  self->request(self->state.hasher, std::chrono::minutes{2}, atom::hash_v,
                                password.empty() ? generated : password, u)
                      .then(
                          [self, rp, generated](user_record& hashed) mutable {
                            self->request(self->state.store, store_wait, atom::put_v,
                                          hashed)
                                .then([rp, generated](
                                          atom::ok) mutable { rp.deliver(generated); },
                                      [rp](caf::error& err) mutable { rp.deliver(err); });
                          },
                          [rp](caf::error& err) mutable { rp.deliver(err); });
                });
        return rp;
      },
  };
}

} // namespace parry
