#include "actors/device.hpp"
#include "server/logging.hpp"

#include <algorithm>
#include <set>
#include <utility>

#include <caf/exit_reason.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "actors/response_action.hpp"
#include "bus/codec.hpp"
#include "bus/command_signature.hpp"
#include "common/crypto.hpp"
#include "common/domain.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"

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

/// The next per-device command sequence number: above every one signed before, and
/// at least the wall clock in microseconds, so it keeps increasing across server
/// restarts without being stored (as long as the clock does not go back).
uint64_t next_command_seq(device_stateful self) {
  auto& st = self->state;
  st.command_seq =
      std::max<uint64_t>(st.command_seq + 1, static_cast<uint64_t>(now_us()));
  return st.command_seq;
}

/// Sends a command, signed when the server has a signing key.
void send_command(device_stateful self, bus::command cmd) {
  auto& st = self->state;
  cmd.issued_at = now_us();
  if (st.cfg.signer)
    bus::sign_into(cmd, *st.cfg.signer, st.rec.device_id, next_command_seq(self));
  emit(self, bus::type::command, cmd);
}

/// Asks the agent to withdraw a command, signed like one.
void send_cancel(device_stateful self, const std::string& action_id) {
  auto& st = self->state;
  bus::cancel c;
  c.action_id = action_id;
  c.issued_at = now_us();
  c.expires_at =
      c.issued_at +
      std::chrono::duration_cast<std::chrono::microseconds>(st.cfg.cancel_ttl).count();
  if (st.cfg.signer)
    bus::sign_into(c, *st.cfg.signer, st.rec.device_id, next_command_seq(self));
  emit(self, bus::type::cancel, c);
}

/// Writes the record. `ticket`: the hello that wrote it, counted until the store
/// answers.
void persist(device_stateful self, hello_ticket ticket = {}) {
  if (!self->state.known) {
    self->state.dirty = true; // written once the device is known, never for a stranger
    return;
  }
  self->state.stored_last_seen = self->state.rec.last_seen;
  // Urgent, as its load: a device's record goes ahead of queued incident writes.
  self->request<caf::message_priority::high>(
          self->state.store, caf::duration{store_timeout}, atom::put_v, self->state.rec)
      .then([ticket](atom::ok) {},
            [self, ticket](caf::error& err) {
              spdlog::error("{}cannot store state: {}",
                            log_tags({{"device", self->state.rec.device_id}}),
                            message_of(err));
            });
}

/// Sends every cleared command that is next in line, keeping registration order.
void pump(device_stateful self) {
  auto& st = self->state;
  if (!st.rec.online) return;
  for (auto& p : st.queue) {
    if (p.transmitted || p.cancelling) continue;
    if (!p.cleared) break; // an earlier command is still being stored as sent
    send_command(self, p.cmd);
    p.transmitted = true;
  }
}

/// The device is reachable again: re-send whatever is not acknowledged, in order.
void on_online(device_stateful self) {
  auto& st = self->state;
  for (auto& p : st.queue) {
    p.transmitted = p.acknowledged; // the agent's journal holds acknowledged ones
    if (p.cancelling)
      send_cancel(self, p.cmd.action_id); // ask again
    else if (!p.cleared)
      self->send(p.action, atom::transmit_v);
  }
  pump(self);
}

void go_offline(device_stateful self, const char* why) {
  auto& st = self->state;
  if (!st.rec.online) return;
  spdlog::info("{}offline: {}", log_tags({{"device", st.rec.device_id}}), why);
  st.rec.online = false;
  --st.cfg.counters->online;
  st.welcomed = false;
  for (auto& p : st.queue)
    p.transmitted = false;
  persist(self);
}

void heard(device_stateful self, hello_ticket ticket = {}) {
  auto& st = self->state;
  st.last_heard = self->clock().now();
  st.rec.last_seen = now_us();
  if (!st.rec.online) {
    st.rec.online = true;
    ++st.cfg.counters->online;
    st.last_active = st.last_heard;
    persist(self, std::move(ticket));
    on_online(self);
  }
}

/// Takes the device offline when its heartbeats stopped.
void check_heartbeats(device_stateful self) {
  auto& st = self->state;
  auto limit = st.cfg.heartbeat_interval * st.cfg.missed_heartbeats;
  if (st.rec.online && self->clock().now() - st.last_heard >= limit)
    go_offline(self, "missed heartbeats");
}

/// Something other than a plain heartbeat happened: the device is not idle.
void active(device_stateful self) {
  self->state.last_active = self->clock().now();
}

/// Nothing is queued, waited for or unsettled, and only heartbeats came for
/// `passivate_after`: the device can live on as a record in the directory.
bool idle(const device_state& st, caf::actor_clock::time_point now) {
  return st.directory && st.cfg.passivate_after.count() > 0 && st.loaded && st.known &&
         !st.dirty && st.queue.empty() && st.waiting_get.empty() && st.early.empty() &&
         st.welcomed == st.rec.online && now - st.last_active >= st.cfg.passivate_after;
}

device_snapshot snapshot_of(const device_state& st) {
  device_snapshot s;
  s.rec = st.rec;
  s.last_heard = st.last_heard.time_since_epoch();
  s.stored_last_seen = st.stored_last_seen;
  s.command_seq = st.command_seq;
  s.seq = st.seq;
  s.msg_id = st.msg_id;
  s.incidents = st.incidents;
  s.welcomed = st.welcomed;
  return s;
}

/// The directory routes nothing more here (it took the first step): if still idle,
/// hands it the state and ends once it took it; the directory says no when it sent
/// this actor anything meanwhile, which is then handled here as usual. Waiting for
/// that answer holds every other message back, so none is handled after the state
/// was taken.
void hand_over(device_stateful self) {
  auto& st = self->state;
  if (!idle(st, self->clock().now())) {
    st.passivating = false;
    self->send(st.directory, atom::keep_v, st.rec.device_id);
    return;
  }
  self->request(st.directory, actor_timeout, atom::passivate_v, st.rec.device_id,
                snapshot_of(st))
      .await(
          [self](bool taken) {
            auto& st = self->state;
            st.passivating = false;
            if (!taken) return;
            st.handed_over = true;
            ++st.cfg.counters->passivated;
            self->quit();
          },
          [self](caf::error&) { self->state.passivating = false; });
}

/// Asks the directory to hold what it routes here from now on (the first step of a
/// passivation): whatever it sent before arrives here before its answer.
void offer(device_stateful self) {
  auto& st = self->state;
  st.passivating = true;
  self->request(st.directory, actor_timeout, atom::passivate_v, st.rec.device_id)
      .then([self](atom::ok) { hand_over(self); },
            [self](caf::error&) { self->state.passivating = false; });
}

pending_command* find(device_state& st, const std::string& action_id) {
  for (auto& p : st.queue)
    if (p.cmd.action_id == action_id) return &p;
  return nullptr;
}

/// Queues the command of `action` (false: it needs none, and the action heard so).
/// Offline, the action hears that it waits; online, the caller says what comes next.
bool take(device_stateful self, action_type type, bus::command& cmd,
          const response_action_actor& action) {
  auto& st = self->state;
  active(self);
  // Isolating an isolated device with nothing else in flight changes nothing.
  if (type == action_type::isolate && st.rec.isolated && st.queue.empty()) {
    self->send(action, atom::noop_v, std::string{"device already isolated"});
    return false;
  }
  self->monitor(action);
  st.queue.push_back(pending_command{type, std::move(cmd), action});
  if (!st.rec.online) self->send(action, atom::queued_v);
  return true;
}

void welcome(device_stateful self) {
  bus::welcome w;
  w.server_time = now_us();
  w.heartbeat_interval_ms =
      static_cast<uint32_t>(self->state.cfg.heartbeat_interval.count());
  emit(self, bus::type::welcome, w);
  self->state.welcomed = true;
}

void store_incident(device_stateful self, bus::incident_report r, uint64_t bytes) {
  auto& st = self->state;
  incident_record rec;
  rec.created_at = now_us();
  rec.incident_id = time_ordered_id("inc-", rec.created_at);
  rec.device_id = st.rec.device_id;
  rec.report = std::move(r);
  rec.wire_bytes = bytes; // the store gives them back to the ingest gauge
  ++st.incidents;
  // Unanswered: the store logs and counts an incident it cannot store.
  self->send(st.store, atom::put_v, atom::incident_v, std::move(rec));
}

/// Tells a stranger (not stored, no valid hello yet) that it must say hello first.
void refuse_stranger(device_stateful self, const char* type) {
  bus::rejected r;
  r.type = type;
  r.limit = "hello";
  r.reason = "unknown device: send hello first";
  emit(self, bus::type::rejected, r);
}

/// The device is known now: what waited for that is stored.
void became_known(device_stateful self) {
  auto& st = self->state;
  if (st.known) return;
  st.known = true;
  for (auto& [r, bytes] : st.early)
    store_incident(self, std::move(r), bytes);
  st.early.clear();
  if (st.dirty) {
    st.dirty = false;
    persist(self);
  }
}

/// The stored record is in (or will not come): answer whoever waited for it.
/// `found`: the store knows the device.
void loaded(device_stateful self, bool found) {
  auto& st = self->state;
  st.loaded = true;
  for (auto& rp : st.waiting_get)
    rp.deliver(st.rec);
  st.waiting_get.clear();
  if (found) {
    became_known(self);
    // Heard from before its record was read (a server restart: the agent skips
    // hello): welcome it now rather than at its next heartbeat.
    if (st.rec.online && !st.welcomed) welcome(self);
  } else if (!st.known) {
    // A stranger: its early incidents are refused, and its actor ends when it
    // stays quiet.
    st.cfg.counters->stranger_incidents += st.early.size();
    for (auto& e : st.early) {
      st.cfg.ingest->done(e.second);
      refuse_stranger(self, bus::type::incident);
    }
    st.early.clear();
    self->delayed_send(self, st.cfg.stranger_idle, atom::retire_v);
  }
}

/// A result for an action that is no longer live. If it ended without the agent's
/// result (expired, cancelled, failed by a deadline or the store), the result is kept
/// as a note in its transitions; then the agent is told it is stored.
void late_result(device_stateful self, bus::action_result r) {
  auto& st = self->state;
  auto confirm = [self, id = r.action_id] {
    emit(self, bus::type::result_ack, bus::result_ack{id});
  };
  self->request(st.store, st.cfg.load_timeout, atom::get_v, atom::action_v, r.action_id)
      .then(
          [self, r, confirm](action_record& rec) mutable {
            auto& st = self->state;
            if (rec.device_id != st.rec.device_id) {
              ++st.cfg.counters->foreign_results;
              auto now = self->clock().now();
              if (st.foreign_logged != caf::actor_clock::time_point{} &&
                  now - st.foreign_logged < std::chrono::minutes{1}) {
                ++st.foreign_held;
                return;
              }
              st.foreign_logged = now;
              auto held = std::exchange(st.foreign_held, uint64_t{0});
              auto more = held > 0 ? " (and " + std::to_string(held) +
                                         " more in the last minute not logged)"
                                   : std::string{};
              spdlog::warn(
                  "{}result for {}, an action of device {}; ignored{}",
                  log_tags({{"device", st.rec.device_id}, {"action", rec.action_id}}),
                  rec.action_id, rec.device_id, more);
              self->request(st.store, store_timeout, atom::audit_v,
                            audit_entry{"device:" + st.rec.device_id, "bus_refused",
                                        rec.action_id,
                                        "result for an action of device " +
                                            rec.device_id + more})
                  .then([](atom::ok) {},
                        [self](caf::error& err) {
                          spdlog::error("{}cannot write the audit trail: {}",
                                        log_tags({{"device", self->state.rec.device_id}}),
                                        message_of(err));
                        });
              return;
            }
            if (!is_final(rec.state) || !ended_without_agent_result(rec)) {
              confirm(); // a re-sent result we already hold
              return;
            }
            std::string note = "late result from the agent: ";
            note += r.ok ? "ok" : "failed: " + r.error;
            for (const auto& [k, v] : r.effect)
              note += ", " + k + "=" + v;
            note = std::string{utf8_prefix(note, 1024)};
            spdlog::warn("{}is {}: {}", action_log_tags(rec), to_string(rec.state), note);
            rec.updated_at = now_us();
            transition t{rec.action_id, rec.state, rec.updated_at, note};
            self->request(st.store, st.cfg.load_timeout, atom::update_v, rec, t)
                .then([confirm](atom::ok) mutable { confirm(); },
                      [self](caf::error& err) {
                        // Not confirmed: the agent re-sends it later.
                        spdlog::error("{}cannot record a late result: {}",
                                      log_tags({{"device", self->state.rec.device_id}}),
                                      message_of(err));
                      });
          },
          [self, r, confirm](caf::error& err) mutable {
            spdlog::info("{}result for unknown action {} ({}): {}",
                         log_tags({{"device", self->state.rec.device_id}}), r.action_id,
                         r.ok ? "ok" : r.error, message_of(err));
            if (code_of(err) == ec::not_found) confirm();
          });
}

} // namespace

device_actor::behavior_type device(device_stateful self, std::string id,
                                   device_config cfg, directory_store_actor store,
                                   gateway_actor gateway, directory_actor directory,
                                   std::optional<device_snapshot> from) {
  auto& st = self->state;
  st.directory = std::move(directory);
  st.rec.device_id = id;
  st.cfg = cfg;
  st.store = std::move(store);
  st.gateway = std::move(gateway);
  st.last_heard = st.last_active = self->clock().now();
  // One timer for the heartbeat deadline and the passivation, for the actor's life.
  self->delayed_send(self, st.cfg.heartbeat_interval, atom::check_v);
  if (from) {
    // Woken from the directory's record: it knew the device, so nothing is loaded.
    st.rec = std::move(from->rec);
    st.last_heard = caf::actor_clock::time_point{from->last_heard};
    st.stored_last_seen = from->stored_last_seen;
    st.command_seq = from->command_seq;
    st.seq = from->seq;
    st.msg_id = from->msg_id;
    st.incidents = from->incidents;
    st.welcomed = from->welcomed;
    st.loaded = st.known = true;
    check_heartbeats(self); // woken because they stopped, perhaps
  } else {
    // What the store knows fills in a device that is heard from before its hello.
    // Urgent: read from the writer's connection (it sees the writes not committed
    // yet) ahead of the incident writes queued there, which may take longer than
    // load_timeout to drain under an ingest burst. (A caf::duration: CAF 0.17's
    // std::chrono overload of request forgets the priority.)
    self->request<caf::message_priority::high>(
            st.store, caf::duration{st.cfg.load_timeout}, atom::get_v, id)
        .then(
            [self](device_record& rec) {
              auto& st = self->state;
              if (st.rec.hostname.empty()) {
                rec.online = st.rec.online;
                rec.last_seen = std::max(rec.last_seen, st.rec.last_seen);
                if (st.rec.online) rec.isolated = st.rec.isolated;
                st.rec = std::move(rec);
              }
              loaded(self, true);
            },
            [self](caf::error& err) {
              // A new device (nothing stored yet), or the store did not answer in time:
              // then it may well be known, and nothing it says is thrown away.
              bool absent = code_of(err) == ec::not_found;
              if (!absent)
                spdlog::error("{}cannot load its record: {}",
                              log_tags({{"device", self->state.rec.device_id}}),
                              message_of(err));
              loaded(self, !absent);
            });
  }
  // An action that ends without telling (it failed) must not block the queue.
  self->set_down_handler([self](const caf::down_msg& msg) {
    auto& q = self->state.queue;
    auto before = q.size();
    q.erase(std::remove_if(q.begin(), q.end(),
                           [&](const pending_command& p) {
                             return p.action.address() == msg.source;
                           }),
            q.end());
    // At shutdown the directory ends every action: each stays open in the store and
    // resumes at the next start, so that is nothing to report.
    if (q.size() != before && msg.reason != caf::exit_reason::user_shutdown) {
      self->state.cfg.counters->dropped_dead += before - q.size();
      spdlog::error("{}an action ended without a final state; dropped its "
                    "command",
                    log_tags({{"device", self->state.rec.device_id}}));
      pump(self);
    }
  });
  return {
      [self](atom::hello, bus::hello& h, hello_ticket& ticket) {
        auto& st = self->state;
        bool was_online = st.rec.online;
        // The same hello again (an agent that missed our welcome) changes nothing
        // to store: it is welcomed again, and costs no write.
        bool same = was_online && st.known && st.rec.hostname == h.hostname &&
                    st.rec.os == h.os && st.rec.agent_version == h.agent_version &&
                    st.rec.addresses == h.addresses && st.rec.isolated == h.isolated;
        st.rec.hostname = std::move(h.hostname);
        st.rec.os = std::move(h.os);
        st.rec.agent_version = std::move(h.agent_version);
        st.rec.addresses = std::move(h.addresses);
        st.rec.isolated = h.isolated;
        if (st.rec.first_seen == 0) st.rec.first_seen = now_us();
        became_known(self); // a valid hello (the gateway checked it)
        active(self);
        welcome(self);
        if (was_online) {
          // A reconnect we had not noticed: same as coming back online.
          st.last_heard = self->clock().now();
          st.rec.last_seen = now_us();
          if (!same ||
              st.rec.last_seen - st.stored_last_seen > last_seen_write_interval_us)
            persist(self, std::move(ticket));
          on_online(self);
        } else {
          heard(self, std::move(ticket)); // stores the record with what hello said
        }
      },
      [self](atom::heartbeat, const bus::heartbeat& hb) {
        auto& st = self->state;
        bool changed = st.rec.isolated != hb.isolated;
        st.rec.isolated = hb.isolated;
        bool was_online = st.rec.online;
        heard(self);
        // After a server restart the agent skips hello: welcome it so it re-sends
        // any result we have not confirmed. A stranger is told to say hello.
        if (changed) active(self);
        if (!st.welcomed && st.known)
          welcome(self);
        else if (st.loaded && !st.known)
          refuse_stranger(self, bus::type::heartbeat);
        // last_seen is written now and then, not on every heartbeat.
        if ((changed && was_online) ||
            st.rec.last_seen - st.stored_last_seen > last_seen_write_interval_us)
          persist(self);
      },
      [self](atom::incident, bus::incident_report& r, uint64_t bytes) {
        auto& st = self->state;
        heard(self);
        active(self);
        // The gateway checked the report (validate_report) before it got here.
        if (st.known) {
          store_incident(self, std::move(r), bytes);
        } else if (!st.loaded && st.early.size() < device_state::max_early_incidents) {
          st.early.emplace_back(std::move(r), bytes); // stored once it is known
        } else {
          ++st.cfg.counters->stranger_incidents;
          st.cfg.ingest->done(bytes);
          refuse_stranger(self, bus::type::incident);
        }
      },
      [self](atom::ack, const std::string& action_id) {
        heard(self);
        active(self);
        if (auto p = find(self->state, action_id); p && !p->acknowledged) {
          p->acknowledged = true;
          self->send(p->action, atom::ack_v);
        }
      },
      [self](atom::result, bus::action_result& r) {
        heard(self);
        active(self);
        if (auto p = find(self->state, r.action_id)) {
          // The result is the agent's own report of its isolation state.
          auto& rec = self->state.rec;
          bool was = rec.isolated;
          if (r.ok && p->type == action_type::isolate)
            rec.isolated = true;
          else if (r.ok && p->type == action_type::release_isolation)
            rec.isolated = false;
          if (rec.isolated != was) persist(self);
          self->send(p->action, atom::result_v, std::move(r));
          return;
        }
        // Not ours any more (already final, or unknown): record it, then confirm so
        // the agent stops.
        late_result(self, std::move(r));
      },
      [self](atom::unreach) {
        active(self);
        go_offline(self, "connection lost");
      },
      [self](atom::retire) {
        auto& st = self->state;
        if (st.known) return;
        auto quiet = self->clock().now() - st.last_heard;
        if (quiet < st.cfg.stranger_idle) {
          self->delayed_send(self, st.cfg.stranger_idle - quiet, atom::retire_v);
          return;
        }
        ++st.cfg.counters->strangers_forgotten;
        if (!st.directory) {
          self->quit();
          return;
        }
        // The directory forgets it first and answers after every message it had
        // sent here, so nothing meant for this actor is lost. Whatever came in
        // meanwhile was handled (a hello stored the device; a fresh actor loads it).
        self->request(st.directory, actor_timeout, atom::retire_v, st.rec.device_id)
            .then([self](atom::ok) { self->quit(); },
                  [self](caf::error&) {
                    self->delayed_send(self, self->state.cfg.stranger_idle,
                                       atom::retire_v);
                  });
      },
      [self](atom::check) {
        auto& st = self->state;
        check_heartbeats(self);
        self->delayed_send(self, st.cfg.heartbeat_interval, atom::check_v);
        if (!st.passivating && idle(st, self->clock().now())) offer(self);
      },
      [self](atom::submit, action_type type, bus::command& cmd,
             response_action_actor& action) {
        if (take(self, type, cmd, action) && self->state.rec.online)
          self->send(action, atom::transmit_v);
      },
      [self](atom::submit, atom::reg, action_type type, bus::command& cmd,
             response_action_actor& action) {
        // Online: its registration stores `sent` too, so no `transmit` goes to it.
        return take(self, type, cmd, action) && self->state.rec.online;
      },
      [self](atom::transmit, const std::string& action_id) {
        auto p = find(self->state, action_id);
        if (p && !p->cleared && !p->cancelling && self->state.rec.online)
          self->send(p->action, atom::transmit_v);
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
            if (i->transmitted && !i->cancelling)
              // Already on the wire: the agent may still run it. Its result will be
              // confirmed (unknown action) and logged, and the record stays final.
              spdlog::warn("{}withdrew {} after sending it",
                           log_tags({{"device", self->state.rec.device_id}}), action_id);
            q.erase(i);
            break;
          }
        pump(self);
      },
      [self](atom::cancel, const std::string& action_id) {
        auto& st = self->state;
        auto p = find(st, action_id);
        if (!p) {
          spdlog::warn("{}cancel of {}, which is not queued here",
                       log_tags({{"device", st.rec.device_id}}), action_id);
          return;
        }
        p->cancelling = true;
        if (st.rec.online) send_cancel(self, action_id);
        pump(self); // later commands need not wait for the answer
      },
      [self](atom::cancel, bus::cancel_result& r) {
        heard(self);
        active(self);
        if (auto p = find(self->state, r.action_id)) {
          self->send(p->action, atom::cancel_v, std::move(r));
          return;
        }
        spdlog::info("{}cancel answer for {}, which is not queued here",
                     log_tags({{"device", self->state.rec.device_id}}), r.action_id);
      },
      [self](atom::get) -> caf::result<device_record> {
        auto& st = self->state;
        active(self);
        if (st.loaded) return st.rec;
        auto rp = self->make_response_promise<device_record>();
        st.waiting_get.push_back(rp);
        return rp;
      },
  };
}

} // namespace parry
