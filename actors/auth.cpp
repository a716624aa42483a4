#include "actors/auth.hpp"

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

caf::error wrong_credentials() {
  return make_error(ec::unauthenticated, "wrong username or password");
}

void audit(auth_stateful self, std::string actor, const char* kind, std::string target,
           std::string detail) {
  self->request(self->state.store, caf::infinite, atom::audit_v,
                audit_entry{std::move(actor), kind, std::move(target), std::move(detail)})
      .then([](atom::ok) {},
            [](caf::error& err) {
              spdlog::error("auth: cannot write the audit trail: {}", message_of(err));
            });
}

/// Checks `password` for `username` on the hasher, counting failures toward the
/// lockout; `done(principal)` on success, `rp`-style `fail(error)` otherwise.
template <class Done, class Fail>
void check_password(auth_stateful self, const std::string& username,
                    const std::string& password, const char* kind, Done done, Fail fail) {
  auto& st = self->state;
  auto now = self->clock().now();
  if (auto i = st.failed.find(username);
      i != st.failed.end() && i->second.locked_until > now) {
    audit(self, username, kind, username, "refused: account locked");
    fail(make_error(ec::locked, "account locked after repeated failed logins"));
    return;
  }
  // Hashing happens on the hasher's thread; we only wait for its answer.
  auto check = [self, username, password, kind, done, fail](user_record u,
                                                            bool exists) mutable {
    self->request(self->state.hasher, caf::infinite, atom::verify_v, password, u)
        .then(
            [self, username, u, exists, kind, done, fail](bool good) mutable {
              auto& st = self->state;
              if (!good || !exists) {
                auto& f = st.failed[username];
                if (++f.count >= st.cfg.max_failures) {
                  f.count = 0;
                  f.locked_until = self->clock().now() + st.cfg.lockout;
                  spdlog::warn("auth: account {} locked", username);
                  audit(self, username, kind, username,
                        "failed: wrong password; account locked");
                } else {
                  audit(self, username, kind, username, "failed: wrong password");
                }
                fail(wrong_credentials());
                return;
              }
              st.failed.erase(username);
              audit(self, username, kind, username, "ok");
              done(principal{u.username, u.role, "", false});
            },
            [fail](caf::error& err) mutable { fail(err); });
  };
  self->request(st.store, caf::infinite, atom::user_v, username)
      .then([check](user_record& u) mutable { check(std::move(u), true); },
            [check, fail](caf::error& err) mutable {
              if (code_of(err) == ec::not_found)
                check(user_record{}, false);
              else
                fail(err);
            });
}

} // namespace

bool valid_role(const std::string& role) {
  return user_role_from_string(role).has_value();
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

auth_actor::behavior_type auth(auth_stateful self, auth_config cfg,
                               auth_store_actor store, hasher_actor hasher) {
  self->state.cfg = cfg;
  self->state.store = std::move(store);
  self->state.hasher = std::move(hasher);
  return {
      [self](atom::login, const std::string& username,
             const std::string& password) -> caf::result<std::string, principal> {
        auto rp = self->make_response_promise<std::string, principal>();
        check_password(
            self, username, password, "login",
            [self, rp](principal who) mutable {
              who.csrf_token = random_hex(16);
              who.via_session = true;
              auto token = random_hex(32);
              self->state.sessions[token] = {who, self->clock().now()};
              spdlog::info("auth: {} logged in", who.username);
              rp.deliver(token, who);
            },
            [rp](caf::error err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::confirm, const std::string& username,
             const std::string& password) -> caf::result<atom::ok> {
        auto rp = self->make_response_promise<atom::ok>();
        check_password(
            self, username, password, "password_confirmation",
            [rp](principal) mutable { rp.deliver(atom::ok_v); },
            [rp](caf::error err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::forget, const std::string& username) {
        auto& st = self->state;
        for (auto i = st.sessions.begin(); i != st.sessions.end();)
          i = i->second.who.username == username ? st.sessions.erase(i) : std::next(i);
        for (auto i = st.tokens.begin(); i != st.tokens.end();)
          i = i->second.who.username == username ? st.tokens.erase(i) : std::next(i);
      },
      [self](atom::authn, bool session,
             const std::string& token) -> caf::result<principal> {
        auto& st = self->state;
        auto now = self->clock().now();
        if (token.empty() || token.size() > 128)
          return make_error(ec::unauthenticated, "no session or token");
        if (session) {
          auto i = st.sessions.find(token);
          if (i == st.sessions.end() || now - i->second.last_used > st.cfg.session_idle) {
            if (i != st.sessions.end()) st.sessions.erase(i);
            return make_error(ec::unauthenticated, "session expired or unknown");
          }
          i->second.last_used = now;
          return i->second.who;
        }
        auto hash = sha256_hex(token);
        if (auto i = st.tokens.find(hash);
            i != st.tokens.end() && now - i->second.fetched < token_cache_ttl)
          return i->second.who;
        auto rp = self->make_response_promise<principal>();
        self->request(st.store, caf::infinite, atom::token_v, hash)
            .then(
                [self, rp, hash](const std::string& username) mutable {
                  self->request(self->state.store, caf::infinite, atom::user_v, username)
                      .then(
                          [self, rp, hash](const user_record& u) mutable {
                            principal who{u.username, u.role, "", false};
                            self->state.tokens[hash] = {who, self->clock().now()};
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
      [self](atom::token, const principal& who,
             const std::string& name) -> caf::result<std::string> {
        auto token = random_hex(32);
        auto rp = self->make_response_promise<std::string>();
        self->request(self->state.store, caf::infinite, atom::token_v, sha256_hex(token),
                      who.username, name)
            .then(
                [self, rp, token, who, name](atom::ok) mutable {
                  audit(self, who.username, "token_created", who.username, name);
                  rp.deliver(token);
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
        self->request(self->state.store, caf::infinite, atom::revoke_v, hash)
            .then([rp](atom::ok) mutable { rp.deliver(atom::ok_v); },
                  [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::bootstrap, const std::string& password) -> caf::result<std::string> {
        auto rp = self->make_response_promise<std::string>();
        self->request(self->state.store, caf::infinite, atom::user_v,
                      std::string{"admin"})
            .then([rp](const user_record&) mutable { rp.deliver(std::string{}); },
                  [self, rp, password](caf::error& err) mutable {
                    if (code_of(err) != ec::not_found) {
                      rp.deliver(err);
                      return;
                    }
                    auto generated = password.empty() ? random_hex(12) : std::string{};
                    user_record u{"admin", "administrator", "", 0, "", now_us()};
                    self->request(self->state.hasher, caf::infinite, atom::hash_v,
                                  password.empty() ? generated : password, u)
                        .then(
                            [self, rp, generated](user_record& hashed) mutable {
                              self->request(self->state.store, caf::infinite, atom::put_v,
                                            hashed)
                                  .then(
                                      [rp, generated](atom::ok) mutable {
                                        rp.deliver(generated);
                                      },
                                      [rp](caf::error& err) mutable { rp.deliver(err); });
                            },
                            [rp](caf::error& err) mutable { rp.deliver(err); });
                  });
        return rp;
      },
  };
}

} // namespace parry
