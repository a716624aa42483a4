#include "actors/gateway_bridge.hpp"

#include <algorithm>

#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/device.hpp"
#include "actors/incident.hpp"
#include "bus/validate.hpp"
#include "common/utf8.hpp"

namespace parry {

gateway_actor::behavior_type
gateway_bridge(gateway_actor::stateful_pointer<gateway_bridge_state> self,
               std::shared_ptr<bus::outbox> bus) {
  self->state.bus = std::move(bus);
  return {
      [self](atom::send, std::string& device_id, std::string& header, std::string& body) {
        self->state.bus->send(std::move(device_id), std::move(header), std::move(body));
      },
  };
}

namespace {

std::string action_id_problem(const std::string& id) {
  return bus::valid_id(id) ? std::string{} : "invalid action id";
}

bus::refusal invalid(std::string why) {
  bus::refusal r;
  r.kind = bus::refusal_kind::invalid;
  r.reason = std::move(why);
  return r;
}

/// A capacity or rate limit was reached: the agent may retry after `retry_ms`.
bus::refusal over_limit(bus::refusal_kind kind, std::string why, const char* limit,
                        uint64_t value, uint32_t retry_ms) {
  bus::refusal r;
  r.kind = kind;
  r.reason = std::move(why);
  r.limit = limit;
  r.value = value;
  r.retry_after_ms = retry_ms;
  return r;
}

} // namespace

std::optional<bus::refusal>
check_and_dispatch(const directory_actor& dir, bus::header&& h, std::string_view body,
                   const bus::decode_limits& lim, const bus::hello_limits& hl,
                   const std::shared_ptr<ingest_gauge>& gauge) {
  std::string why;
  auto& id = h.device_id;
  const auto& t = h.type;
  if (t == bus::type::hello) {
    auto m = bus::decode<bus::hello>(body, lim, why);
    if (!m) return invalid(why);
    bus::refusal r = invalid({});
    if (r.reason = bus::check_hello(*m, hl, &r.limit, &r.value); !r.reason.empty())
      return r;
    caf::anon_send(dir, atom::hello_v, std::move(id), std::move(*m),
                   gauge ? hello_ticket{gauge} : hello_ticket{});
  } else if (t == bus::type::heartbeat) {
    auto m = bus::decode<bus::heartbeat>(body, lim, why);
    if (!m) return invalid(why);
    caf::anon_send(dir, atom::heartbeat_v, std::move(id), *m);
  } else if (t == bus::type::incident) {
    bool exact = false;
    auto m = bus::decode<bus::incident_report>(body, lim, why, &exact);
    // Checked here, off the actors, so a bad report costs the sender, not the server.
    if (!m) return invalid(why);
    if (why = bus::check_utf8(*m); !why.empty()) return invalid(why);
    if (why = validate_report(*m); !why.empty()) return invalid(why);
    normalize_hashes(*m);
    // Stored as it came (the store) when the bytes say exactly what was checked:
    // a key we do not know, or one given twice, would be kept unchecked in them, so
    // such a report is stored as encoded again from what was checked.
    if (exact)
      m->wire.assign(body.data(), body.size());
    else
      m->wire = bus::encode(*m);
    // The actors and the store need only the bytes and the events' number: the
    // decoded events (about three times the bytes in memory) are freed here, on
    // the thread that made them, instead of travelling to the store's thread.
    m->events_dropped = static_cast<uint32_t>(m->events.size());
    std::vector<bus::activity_event>{}.swap(m->events);
    uint64_t bytes = 0;
    if (gauge != nullptr) {
      bytes = std::max<uint64_t>(body.size(), 1); // given back by the store
      gauge->add(bytes);
    }
    caf::anon_send(dir, atom::incident_v, std::move(id), std::move(*m), bytes);
  } else if (t == bus::type::action_ack) {
    auto m = bus::decode<bus::action_ack>(body, lim, why);
    if (!m) return invalid(why);
    if (why = action_id_problem(m->action_id); !why.empty()) return invalid(why);
    caf::anon_send(dir, atom::ack_v, std::move(id), std::move(m->action_id));
  } else if (t == bus::type::action_result) {
    auto m = bus::decode<bus::action_result>(body, lim, why);
    if (!m) return invalid(why);
    if (why = action_id_problem(m->action_id); !why.empty()) return invalid(why);
    if (why = bus::check_utf8(*m); !why.empty()) return invalid(why);
    caf::anon_send(dir, atom::result_v, std::move(id), std::move(*m));
  } else if (t == bus::type::cancel_result) {
    auto m = bus::decode<bus::cancel_result>(body, lim, why);
    if (!m) return invalid(why);
    if (why = action_id_problem(m->action_id); !why.empty()) return invalid(why);
    m->detail = std::string{utf8_prefix(utf8_sanitized(m->detail), 256)};
    caf::anon_send(dir, atom::cancel_v, std::move(id), std::move(*m));
  } else {
    return invalid("unknown message type");
  }
  return std::nullopt;
}

bool dispatch_inbound(const directory_actor& dir, bus::header&& h, std::string_view body,
                      const bus::decode_limits& lim) {
  return !check_and_dispatch(dir, std::move(h), body, lim, {}, nullptr);
}

inbound_filter::device_slot* inbound_filter::slot_for(const std::string& id,
                                                      const ingest_limits& limits,
                                                      clock::time_point now) {
  if (auto i = devices_.find(id); i != devices_.end()) return &i->second;
  if (devices_.size() >= limits.max_devices) {
    // Forget ids that never said a valid hello and have gone quiet.
    for (auto i = devices_.begin(); i != devices_.end();)
      if (!i->second.helloed && now - i->second.last >= limits.unhelloed_idle)
        i = devices_.erase(i);
      else
        ++i;
    if (devices_.size() >= limits.max_devices) return nullptr;
  }
  auto& s = devices_[id];
  s.last = now;
  s.window = now;
  return &s;
}

void inbound_filter::roll_second(clock::time_point now) {
  if (now - second_ < std::chrono::seconds{1}) return;
  // A whole second without a message counts as a quiet one.
  hellos_refused_last_second_ =
      now - second_ < std::chrono::seconds{2} ? hellos_refused_this_second_ : 0;
  hellos_refused_this_second_ = 0;
  second_ = now;
  second_count_ = 0;
}

uint32_t inbound_filter::hello_retry_ms(const ingest_limits& limits) const {
  // Refused hellos come back after this (the agent adds up to as much again): about
  // as many as get in meanwhile, so the refusals cost no more than the admissions.
  // Seconds per round of the bound refused in the last second, 1 to 30 s.
  auto rounds =
      hellos_refused_last_second_ / std::max<uint32_t>(limits.hellos_in_flight, 1);
  return static_cast<uint32_t>(std::clamp<uint64_t>(rounds, 1, 30) * 1000);
}

std::optional<bus::refusal> inbound_filter::operator()(const directory_actor& dir,
                                                       bus::header&& h,
                                                       std::string_view body,
                                                       clock::time_point now) {
  auto snapshot = ingest_.get();
  const auto& limits = *snapshot;
  auto* s = slot_for(h.device_id, limits, now);
  if (s == nullptr)
    return over_limit(bus::refusal_kind::device_cap, "too many devices", "max_devices",
                      limits.max_devices, 60000);
  s->last = now;
  bool is_hello = h.type == bus::type::hello;
  bool is_incident = h.type == bus::type::incident;
  if (is_incident) {
    if (now - s->window >= std::chrono::minutes{1}) {
      s->window = now;
      s->incidents = 0;
    }
    if (s->incidents >= limits.incidents_per_minute) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          s->window + std::chrono::minutes{1} - now);
      return over_limit(bus::refusal_kind::rate, "too many incidents from this device",
                        "max_incidents_per_minute", limits.incidents_per_minute,
                        static_cast<uint32_t>(left.count()));
    }
    roll_second(now);
    if (gauge_->bytes.load(std::memory_order_relaxed) >= limits.incident_bytes_in_flight)
      return over_limit(
          bus::refusal_kind::busy, "server busy: too many incidents waiting to be stored",
          "max_incident_bytes_in_flight", limits.incident_bytes_in_flight, 1000);
    if (second_count_ >= limits.incidents_per_second)
      return over_limit(bus::refusal_kind::busy, "server busy",
                        "max_incidents_per_second", limits.incidents_per_second, 1000);
  }
  if (is_hello) {
    roll_second(now);
    if (gauge_->hellos.load(std::memory_order_relaxed) >= limits.hellos_in_flight) {
      gauge_->hellos_refused.fetch_add(1, std::memory_order_relaxed);
      ++hellos_refused_this_second_;
      return over_limit(
          bus::refusal_kind::busy, "server busy: too many devices saying hello at once",
          "max_hellos_in_flight", limits.hellos_in_flight, hello_retry_ms(limits));
    }
  }
  auto refused = check_and_dispatch(dir, std::move(h), body, lim_, limits.hello, gauge_);
  if (refused) return refused;
  if (is_hello) s->helloed = true;
  // Counted once accepted: a malformed report does not use up the device's quota.
  if (is_incident) {
    ++s->incidents;
    ++second_count_;
  }
  return std::nullopt;
}

} // namespace parry
