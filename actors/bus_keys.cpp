#include "actors/bus_keys.hpp"
#include "server/logging.hpp"

#include <caf/event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "bus/codec.hpp"
#include "bus/enroll.hpp"
#include "bus/zap.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"

namespace parry {

namespace {

using self_ptr = bus_keys_actor::stateful_pointer<bus_keys_state>;

void audit(self_ptr self, std::string actor, const char* kind, std::string target,
           std::string detail) {
  self->request(self->state.store, store_timeout, atom::audit_v,
                audit_entry{std::move(actor), kind, std::move(target), std::move(detail)})
      .then([](atom::ok) {},
            [](caf::error& err) {
              spdlog::error("bus keys: cannot write the audit trail: {}",
                            message_of(err));
            });
}

/// The machine-stable reason an enrollment failed, from the store's error.
const char* enroll_reason(const caf::error& err) {
  switch (code_of(err)) {
  case ec::not_found:
    return "bad_token";
  case ec::conflict:
    return "token_expired";
  case ec::forbidden:
    return "already_enrolled";
  default:
    return "unavailable";
  }
}

bus::key_identity identity_of(const bus_key_record& k) {
  return {k.integrator ? bus::key_identity::kind_t::integrator
                       : bus::key_identity::kind_t::agent,
          k.name, k.role};
}

} // namespace

bus_keys_actor::behavior_type bus_keys(self_ptr self, bus_keys_config cfg,
                                       store_actor store) {
  self->state.cfg = std::move(cfg);
  self->state.store = std::move(store);
  return {
      [self](atom::enroll, const std::string& device, const std::string& key_z85,
             const std::string& hash, uint64_t msg_id) {
        auto answer = [self, device, msg_id](bus::enroll_result r) {
          bus::header h;
          h.type = bus::type::enrolled;
          h.msg_id = msg_id;
          h.device_id = device;
          h.time = now_us();
          if (self->state.cfg.reply)
            self->state.cfg.reply(device, bus::encode(h), bus::encode(r));
        };
        bus_key_record k{key_z85, false, device, "", now_us(), "enrollment token"};
        self->request(self->state.store, store_timeout, atom::enroll_v, hash, now_us(), k)
            .then(
                [self, answer, device, key_z85](const std::string&) {
                  auto raw = bus::z85_to_raw(key_z85);
                  self->state.cfg.registry->admit(
                      raw, {bus::key_identity::kind_t::agent, device, ""});
                  spdlog::info("{}bus: enrolled (key {})", log_tags({{"device", device}}),
                               bus::key_fingerprint(raw));
                  audit(self, "device:" + device, "device_enrolled", device,
                        "key " + bus::key_fingerprint(raw));
                  bus::enroll_result r;
                  r.ok = true;
                  r.server_key = self->state.cfg.server_key_z85;
                  r.signing_key = self->state.cfg.signing_key_hex;
                  answer(std::move(r));
                },
                [self, answer, device](caf::error& err) {
                  bus::enroll_result r;
                  r.reason = enroll_reason(err);
                  r.error = r.reason == std::string{"unavailable"}
                                ? "the server cannot enroll now; try again later"
                                : message_of(err);
                  spdlog::warn("{}bus: enrollment refused: {}",
                               log_tags({{"device", device}}), r.error);
                  audit(self, "device:" + device, "enrollment_refused", device, r.error);
                  answer(std::move(r));
                });
      },
      [self](atom::token, int64_t ttl_us, uint32_t uses,
             const std::string& by) -> caf::result<std::string, enrollment_token_record> {
        auto& cfg = self->state.cfg;
        if (ttl_us <= 0 || ttl_us > cfg.max_token_ttl_us)
          return make_error(ec::bad_request,
                            "ttl_seconds must be 1.." +
                                std::to_string(cfg.max_token_ttl_us / 1000000));
        if (uses < 1 || uses > cfg.max_token_uses)
          return make_error(ec::bad_request,
                            "uses must be 1.." + std::to_string(cfg.max_token_uses));
        auto token = bus::make_enrollment_token(cfg.server_key_z85);
        enrollment_token_record rec{random_hex(8), by, now_us(), now_us() + ttl_us, uses};
        auto rp = self->make_response_promise<std::string, enrollment_token_record>();
        self->request(self->state.store, store_timeout, atom::put_v,
                      bus::token_hash(token), rec)
            .then(
                [self, rp, rec, text = bus::format_token(token)](atom::ok) mutable {
                  audit(self, rec.created_by, "enrollment_token_created", rec.token_id,
                        std::to_string(rec.uses_left) + " use(s), expires at " +
                            std::to_string(rec.expires_at) + " µs");
                  rp.deliver(text, rec);
                },
                [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::put, const bus_key_record& k,
             const std::string& by) -> caf::result<atom::ok> {
        auto raw = bus::z85_to_raw(k.public_z85);
        if (raw.empty() || !k.integrator)
          return make_error(ec::bad_request, "an integrator key is 40 Z85 characters");
        // The key may be this integrator's already (a new role); never another's.
        if (auto who = self->state.cfg.registry->find(raw);
            who &&
            !(who->kind == bus::key_identity::kind_t::integrator && who->name == k.name))
          return make_error(ec::conflict, "that key belongs to " + who->user_id());
        auto rp = self->make_response_promise<atom::ok>();
        self->request(self->state.store, store_timeout, atom::put_v, k)
            .then(
                [self, rp, k, raw, by](const std::string& replaced) mutable {
                  // The old key of this integrator stops working at once.
                  if (!replaced.empty()) self->state.cfg.cut(true, k.name);
                  self->state.cfg.registry->admit(raw, identity_of(k));
                  audit(self, by, "integrator_registered", k.name,
                        "role " + k.role + ", key " + bus::key_fingerprint(raw));
                  rp.deliver(atom::ok_v);
                },
                [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::revoke, bool integrator, const std::string& name,
             const std::string& by) -> caf::result<atom::ok> {
        auto rp = self->make_response_promise<atom::ok>();
        self->request(self->state.store, store_timeout, atom::revoke_v, atom::key_v,
                      integrator, name)
            .then(
                [self, rp, integrator, name, by](const std::string& key) mutable {
                  auto raw = bus::z85_to_raw(key);
                  // Out of the registry first, so the reconnect after the cut is
                  // refused at the handshake.
                  self->state.cfg.registry->revoke_key(raw);
                  if (self->state.cfg.cut) self->state.cfg.cut(integrator, name);
                  spdlog::info("bus: {} {} revoked (key {})",
                               integrator ? "integrator" : "device", name,
                               bus::key_fingerprint(raw));
                  audit(self, by, "bus_key_revoked",
                        (integrator ? "integrator:" : "device:") + name,
                        "key " + bus::key_fingerprint(raw));
                  rp.deliver(atom::ok_v);
                },
                [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
  };
}

} // namespace parry
