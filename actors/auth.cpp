#include "actors/auth.hpp"

#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"

namespace parry {

namespace {

// Bearer tokens found in the store are trusted this long before asking again.
constexpr auto token_cache_ttl = std::chrono::seconds{60};

caf::error wrong_credentials() {
  return make_error(ec::unauthenticated, "wrong username or password");
}

} // namespace

bool valid_role(const std::string& role) {
  return role == "administrator" || role == "security_officer" || role == "operator";
}

hasher_actor::behavior_type hasher(hasher_actor::pointer self, uint32_t iterations) {
  return {
    [iterations](atom::verify, const std::string& password, const user_record& u) {
      // An unknown user costs as much as a known one, so timing tells nothing.
      if (u.salt_hex.empty()) {
        hash_password(password, iterations);
        return false;
      }
      return verify_password(password, password_hash{u.salt_hex, u.iterations, u.hash_hex});
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

auth_actor::behavior_type auth(auth_stateful self, auth_config cfg, store_actor store,
                               hasher_actor hasher) {
  self->state.cfg = cfg;
  self->state.store = std::move(store);
  self->state.hasher = std::move(hasher);
  return {
    [self](atom::login, const std::string& username, const std::string& password)
      -> caf::result<std::string, principal> {
      auto& st = self->state;
      auto now = self->clock().now();
      if (auto i = st.failed.find(username);
          i != st.failed.end() && i->second.locked_until > now)
        return make_error(ec::locked, "account locked after repeated failed logins");
      auto rp = self->make_response_promise<std::string, principal>();
      // Hashing happens on the hasher's thread; we only wait for its answer.
      auto check = [self, rp, username, password](user_record u, bool exists) mutable {
        self->request(self->state.hasher, caf::infinite, atom::verify_v, password, u)
          .then(
            [self, rp, username, u, exists](bool good) mutable {
              auto& st = self->state;
              if (!good || !exists) {
                auto& f = st.failed[username];
                if (++f.count >= st.cfg.max_failures) {
                  f.count = 0;
                  f.locked_until = self->clock().now() + st.cfg.lockout;
                  spdlog::warn("auth: account {} locked", username);
                }
                rp.deliver(wrong_credentials());
                return;
              }
              st.failed.erase(username);
              principal who{u.username, u.role, random_hex(16), true};
              auto token = random_hex(32);
              st.sessions[token] = {who, self->clock().now()};
              spdlog::info("auth: {} logged in", username);
              rp.deliver(token, who);
            },
            [rp](caf::error& err) mutable { rp.deliver(err); });
      };
      self->request(st.store, caf::infinite, atom::user_v, username)
        .then([check](user_record& u) mutable { check(std::move(u), true); },
              [self, check, rp](caf::error& err) mutable {
                if (code_of(err) == ec::not_found)
                  check(user_record{}, false);
                else
                  rp.deliver(err);
              });
      return rp;
    },
    [self](atom::authn, bool session, const std::string& token) -> caf::result<principal> {
      auto& st = self->state;
      auto now = self->clock().now();
      if (token.empty() || token.size() > 128)
        return make_error(ec::unauthenticated, "no session or token");
      if (session) {
        auto i = st.sessions.find(token);
        if (i == st.sessions.end() || now - i->second.last_used > st.cfg.session_idle) {
          if (i != st.sessions.end())
            st.sessions.erase(i);
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
                  rp.deliver(make_error(ec::unauthenticated, "token owner is gone"));
                });
          },
          [rp](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [self](atom::token, const principal& who, const std::string& name)
      -> caf::result<std::string> {
      auto token = random_hex(32);
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.store, caf::infinite, atom::token_v, sha256_hex(token),
                    who.username, name)
        .then([rp, token](atom::ok) mutable { rp.deliver(token); },
              [rp](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [self](atom::logout, bool session, const std::string& token) -> caf::result<atom::ok> {
      if (session) {
        self->state.sessions.erase(token);
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
      self->request(self->state.store, caf::infinite, atom::user_v, std::string{"admin"})
        .then(
          [rp](const user_record&) mutable { rp.deliver(std::string{}); },
          [self, rp, password](caf::error& err) mutable {
            if (code_of(err) != ec::not_found) {
              rp.deliver(err);
              return;
            }
            auto generated = password.empty() ? random_hex(12) : std::string{};
            user_record u{"admin", "administrator", "", 0, "", now_us()};
            self
              ->request(self->state.hasher, caf::infinite, atom::hash_v,
                        password.empty() ? generated : password, u)
              .then(
                [self, rp, generated](user_record& hashed) mutable {
                  self->request(self->state.store, caf::infinite, atom::put_v, hashed)
                    .then([rp, generated](atom::ok) mutable { rp.deliver(generated); },
                          [rp](caf::error& err) mutable { rp.deliver(err); });
                },
                [rp](caf::error& err) mutable { rp.deliver(err); });
          });
      return rp;
    },
  };
}

} // namespace parry
