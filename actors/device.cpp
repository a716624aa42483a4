#include "actors/device.hpp"

#include <set>

#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "bus/codec.hpp"
#include "common/crypto.hpp"
#include "common/domain.hpp"
#include "common/time.hpp"

namespace parry {

namespace {

/// Frames one server -> agent message and hands it to the gateway.
template <class Body>
void emit(device_stateful self, const char* type, const Body& body) {
  auto& st = self->state;
  bus::header h;
  h.type = type;
  h.msg_id = ++st.msg_id;
  h.device_id = st.rec.device_id;
  h.seq = ++st.seq;
  h.time = now_us();
  self->send(st.gateway, atom::send_v, st.rec.device_id, bus::encode(h),
             bus::encode(body));
}

void persist(device_stateful self) {
  self->state.stored_last_seen = self->state.rec.last_seen;
  self->request(self->state.store, caf::infinite, atom::put_v, self->state.rec)
      .then([](atom::ok) {},
            [self](caf::error& err) {
              spdlog::error("device {}: cannot store state: {}",
                            self->state.rec.device_id, message_of(err));
            });
}

/// Sends every cleared command that is next in line, keeping registration order.
void pump(device_stateful self) {
  auto& st = self->state;
  if (!st.rec.online) return;
  for (auto& p : st.queue) {
    if (p.transmitted) continue;
    if (!p.cleared) break; // an earlier command is still being stored as sent
    p.cmd.issued_at = now_us();
    emit(self, bus::type::command, p.cmd);
    p.transmitted = true;
  }
}

/// The device is reachable again: re-send whatever is not acknowledged, in order.
void on_online(device_stateful self) {
  auto& st = self->state;
  for (auto& p : st.queue) {
    p.transmitted = p.acknowledged; // the agent's journal holds acknowledged ones
    if (!p.cleared) self->send(p.action, atom::transmit_v);
  }
  pump(self);
}

void go_offline(device_stateful self, const char* why) {
  auto& st = self->state;
  if (!st.rec.online) return;
  spdlog::info("device {} offline: {}", st.rec.device_id, why);
  st.rec.online = false;
  st.welcomed = false;
  for (auto& p : st.queue)
    p.transmitted = false;
  persist(self);
}

void heard(device_stateful self) {
  auto& st = self->state;
  st.last_heard = self->clock().now();
  st.rec.last_seen = now_us();
  if (!st.rec.online) {
    st.rec.online = true;
    persist(self);
    self->delayed_send(self, st.cfg.heartbeat_interval, atom::check_v);
    on_online(self);
  }
}

pending_command* find(device_state& st, const std::string& action_id) {
  for (auto& p : st.queue)
    if (p.cmd.action_id == action_id) return &p;
  return nullptr;
}

void welcome(device_stateful self) {
  bus::welcome w;
  w.server_time = now_us();
  w.heartbeat_interval_ms =
      static_cast<uint32_t>(self->state.cfg.heartbeat_interval.count());
  emit(self, bus::type::welcome, w);
  self->state.welcomed = true;
}

} // namespace

std::string validate_report(const bus::incident_report& r) {
  if (!bus::valid_id(r.report_id)) return "invalid report_id";
  if (r.events.empty()) return "incident has no events";
  if (r.det.name.empty()) return "detection has no name";
  std::set<std::string> ids;
  for (const auto& e : r.events) {
    if (!bus::valid_id(e.id)) return "invalid event id";
    if (e.type.empty() || e.type.size() > 64) return "invalid event type";
    if (!ids.insert(e.id).second) return "duplicate event id " + e.id;
  }
  for (const auto& e : r.events)
    if (!e.parent_id.empty() && ids.count(e.parent_id) == 0)
      return "event " + e.id + " has unknown parent " + e.parent_id;
  if (ids.count(r.key_event_id) == 0)
    return "key event " + r.key_event_id + " is not in the chain";
  return {};
}

device_actor::behavior_type device(device_stateful self, std::string id,
                                   device_config cfg, store_actor store,
                                   gateway_actor gateway) {
  auto& st = self->state;
  st.rec.device_id = id;
  st.cfg = cfg;
  st.store = std::move(store);
  st.gateway = std::move(gateway);
  st.last_heard = self->clock().now();
  // What the store knows fills in a device that is heard from before its hello.
  self->request(st.store, caf::infinite, atom::get_v, id)
      .then(
          [self](device_record& rec) {
            auto& st = self->state;
            if (st.rec.hostname.empty()) {
              rec.online = st.rec.online;
              rec.last_seen = std::max(rec.last_seen, st.rec.last_seen);
              if (st.rec.online) rec.isolated = st.rec.isolated;
              st.rec = std::move(rec);
            }
          },
          [](caf::error&) {
            // A new device: nothing stored yet.
          });
  return {
      [self](atom::hello, bus::hello& h) {
        auto& st = self->state;
        bool was_online = st.rec.online;
        st.rec.hostname = std::move(h.hostname);
        st.rec.os = std::move(h.os);
        st.rec.agent_version = std::move(h.agent_version);
        st.rec.addresses = std::move(h.addresses);
        st.rec.isolated = h.isolated;
        if (st.rec.first_seen == 0) st.rec.first_seen = now_us();
        welcome(self);
        if (was_online) {
          // A reconnect we had not noticed: same as coming back online.
          st.last_heard = self->clock().now();
          st.rec.last_seen = now_us();
          persist(self);
          on_online(self);
        } else {
          heard(self); // stores the record with what hello said
        }
      },
      [self](atom::heartbeat, const bus::heartbeat& hb) {
        auto& st = self->state;
        bool changed = st.rec.isolated != hb.isolated;
        st.rec.isolated = hb.isolated;
        bool was_online = st.rec.online;
        heard(self);
        // After a server restart the agent skips hello: welcome it so it re-sends
        // any result we have not confirmed.
        if (!st.welcomed) welcome(self);
        // last_seen is written now and then, not on every heartbeat.
        if ((changed && was_online) ||
            st.rec.last_seen - st.stored_last_seen > 60'000'000)
          persist(self);
      },
      [self](atom::incident, bus::incident_report& r) {
        auto& st = self->state;
        heard(self);
        // The gateway checked the report (validate_report) before it got here.
        incident_record rec;
        rec.incident_id = "inc-" + random_hex(10);
        rec.device_id = st.rec.device_id;
        rec.created_at = now_us();
        rec.report = std::move(r);
        ++st.incidents;
        self->request(st.store, caf::infinite, atom::put_v, std::move(rec))
            .then([](const std::string&) {},
                  [self](caf::error& err) {
                    spdlog::error("device {}: cannot store incident: {}",
                                  self->state.rec.device_id, message_of(err));
                  });
      },
      [self](atom::ack, const std::string& action_id) {
        heard(self);
        if (auto p = find(self->state, action_id); p && !p->acknowledged) {
          p->acknowledged = true;
          self->send(p->action, atom::ack_v);
        }
      },
      [self](atom::result, bus::action_result& r) {
        heard(self);
        if (auto p = find(self->state, r.action_id)) {
          // The result is the agent's own report of its isolation state.
          auto& rec = self->state.rec;
          bool was = rec.isolated;
          if (r.ok && p->cmd.type == to_string(action_type::isolate))
            rec.isolated = true;
          else if (r.ok && p->cmd.type == to_string(action_type::release_isolation))
            rec.isolated = false;
          if (rec.isolated != was) persist(self);
          self->send(p->action, atom::result_v, std::move(r));
          return;
        }
        // Not ours any more (already final, or unknown): confirm so the agent stops.
        spdlog::info("device {}: result for finished or unknown action {} ({})",
                     self->state.rec.device_id, r.action_id, r.ok ? "ok" : r.error);
        emit(self, bus::type::result_ack, bus::result_ack{r.action_id});
      },
      [self](atom::unreach) { go_offline(self, "connection lost"); },
      [self](atom::check) {
        auto& st = self->state;
        if (!st.rec.online) return;
        auto limit = st.cfg.heartbeat_interval * st.cfg.missed_heartbeats;
        if (self->clock().now() - st.last_heard >= limit)
          go_offline(self, "missed heartbeats");
        else
          self->delayed_send(self, st.cfg.heartbeat_interval, atom::check_v);
      },
      [self](atom::submit, bus::command& cmd, response_action_actor& action) {
        auto& st = self->state;
        // Isolating an isolated device with nothing else in flight changes nothing.
        if (cmd.type == to_string(action_type::isolate) && st.rec.isolated &&
            st.queue.empty()) {
          self->send(action, atom::noop_v, std::string{"device already isolated"});
          return;
        }
        st.queue.push_back(pending_command{std::move(cmd), action});
        if (st.rec.online)
          self->send(action, atom::transmit_v);
        else
          self->send(action, atom::queued_v);
      },
      [self](atom::sent, const std::string& action_id) {
        if (auto p = find(self->state, action_id)) {
          p->cleared = true;
          pump(self);
        }
      },
      [self](atom::done, const std::string& action_id) {
        auto& st = self->state;
        emit(self, bus::type::result_ack, bus::result_ack{action_id});
        for (auto i = st.queue.begin(); i != st.queue.end(); ++i)
          if (i->cmd.action_id == action_id) {
            st.queue.erase(i);
            break;
          }
        pump(self);
      },
      [self](atom::withdraw, const std::string& action_id) {
        auto& q = self->state.queue;
        for (auto i = q.begin(); i != q.end(); ++i)
          if (i->cmd.action_id == action_id) {
            if (i->transmitted)
              // Already on the wire: the agent may still run it. Its result will be
              // confirmed (unknown action) and logged, and the record stays final.
              spdlog::warn("device {}: withdrew {} after sending it",
                           self->state.rec.device_id, action_id);
            q.erase(i);
            break;
          }
        pump(self);
      },
      [self](atom::get) { return self->state.rec; },
  };
}

} // namespace parry
