#include "actors/directory.hpp"

#include <algorithm>
#include <iterator>
#include <memory>
#include <string_view>
#include <unordered_map>

#include <caf/exit_reason.hpp>
#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "actors/incident.hpp"
#include "actors/response_action.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"
#include "server/logging.hpp"

namespace parry {

directory_state::~directory_state() {
  auto end = [](const auto& map) {
    for (auto& [id, child] : map)
      caf::anon_send_exit(child, caf::exit_reason::user_shutdown);
  };
  end(actions);
  end(incidents);
  end(devices);
  if (!cfg.counters) return;
  for (auto& [id, snap] : passive)
    if (snap.rec.online) --cfg.counters->online;
  cfg.counters->passive -= static_cast<int64_t>(passive.size());
  cfg.counters->dormant_actions -= static_cast<int64_t>(dormant_device.size());
}

namespace {

using child_kind = directory_state::child_kind;

/// Monitors `child`, just spawned, and files it under `id` in `map`, which has no
/// entry for `id` yet.
template <class Map, class Handle>
void adopt(directory_stateful self, child_kind kind, Map& map, std::string id,
           const Handle& child) {
  self->monitor(child);
  auto entry = map.emplace(std::move(id), child).first;
  self->state.children.emplace(child.id(),
                               directory_state::child_ref{kind, &entry->first});
}

/// Forgets the child with actor id `who`, so that the next message for it spawns a
/// fresh one. Returns whether it was a live child.
bool forget(directory_stateful self, caf::actor_id who) {
  auto& st = self->state;
  auto c = st.children.find(who);
  if (c == st.children.end()) return false;
  auto erase = [id = c->second.id](auto& map) { map.erase(map.find(*id)); };
  switch (c->second.kind) {
  case child_kind::device:
    st.leaving.erase(*c->second.id);
    erase(st.devices);
    break;
  case child_kind::incident:
    erase(st.incidents);
    break;
  case child_kind::action:
    erase(st.actions);
    break;
  }
  st.children.erase(c);
  return true;
}

void wake_dormant(directory_stateful self, const std::string& device_id,
                  const device_actor& dev);

/// The live actor of device `id`: the one there is, or one spawned from its
/// passivated record, or from the store. A device actor that offered its state learns
/// that it was needed meanwhile, and stays.
device_actor device_for(directory_stateful self, const std::string& id) {
  auto& st = self->state;
  auto i = st.devices.find(id);
  if (i != st.devices.end()) {
    if (!st.leaving.empty())
      if (auto l = st.leaving.find(id); l != st.leaving.end()) l->second = true;
    return i->second;
  }
  std::optional<device_snapshot> from;
  if (auto p = st.passive.find(id); p != st.passive.end()) {
    from = std::move(p->second);
    st.passive.erase(p);
    --st.cfg.counters->passive;
    ++st.cfg.counters->woken;
  }
  auto d = self->spawn(device, id, st.cfg, st.store, st.gateway,
                       caf::actor_cast<directory_actor>(self), std::move(from));
  adopt(self, child_kind::device, st.devices, id, d);
  wake_dormant(self, id, d);
  return d;
}

/// A heartbeat of a passivated device that changes nothing: handled here, without its
/// actor (last_seen is written now and then, as the actor would). Returns false when
/// the actor must see it.
bool passive_heartbeat(directory_stateful self, const std::string& id,
                       const bus::heartbeat& hb) {
  auto& st = self->state;
  auto p = st.passive.find(id);
  if (p == st.passive.end()) return false;
  auto& snap = p->second;
  if (!snap.rec.online || !snap.welcomed || snap.rec.isolated != hb.isolated)
    return false;
  snap.last_heard = self->clock().now().time_since_epoch();
  snap.rec.last_seen = now_us();
  if (snap.rec.last_seen - snap.stored_last_seen > last_seen_write_interval_us) {
    snap.stored_last_seen = snap.rec.last_seen;
    // Urgent, as the device actor's own writes of its record (same order).
    self->request<caf::message_priority::high>(st.store, caf::duration{store_timeout},
                                               atom::put_v, snap.rec)
        .then([](atom::ok) {},
              [id](caf::error& err) {
                spdlog::error("{}cannot store state: {}", log_tags({{"device", id}}),
                              message_of(err));
              });
  }
  return true;
}

/// Arms the timer that finds passivated devices whose heartbeats stopped.
void arm_sweep(directory_stateful self) {
  auto& st = self->state;
  if (st.sweeping || st.passive.empty()) return;
  st.sweeping = true;
  self->delayed_send(self, st.cfg.heartbeat_interval, atom::check_v);
}

/// Arms the timer for the earliest dormant action that must wake on its own.
void arm_expire(directory_stateful self) {
  auto& st = self->state;
  while (!st.dormant_due.empty() && !st.dormant.count(st.dormant_due.top().second))
    st.dormant_due.pop(); // its device came first
  if (st.dormant_due.empty()) return;
  auto due = st.dormant_due.top().first;
  if (st.due_armed != 0 && st.due_armed <= due) return;
  st.due_armed = due;
  self->delayed_send(self,
                     std::chrono::microseconds{std::max<int64_t>(due - now_us(), 0)},
                     atom::expire_v, due);
}

/// When a resumed action must run even if its device stays away: its time to live,
/// or the execution deadline of one the agent had accepted (zero: never).
int64_t wake_time(const action_record& rec, const action_policy& policy) {
  int64_t due = rec.expires_at;
  if (rec.state == state::acknowledged || rec.state == state::cancelling) {
    auto deadline = rec.updated_at + policy.exec_deadline_for(rec.type);
    if (due == 0 || deadline < due) due = deadline;
  }
  return due;
}

/// Calls `f` with the live actor of incident `id`, spawning it from the store.
template <class F, class G>
void with_incident(directory_stateful self, const std::string& id, F f, G on_error) {
  auto& st = self->state;
  if (auto i = st.incidents.find(id); i != st.incidents.end()) {
    f(i->second);
    return;
  }
  self->request(st.store, store_timeout, atom::get_v, atom::incident_v, id)
      .then(
          [self, id, f](incident_record& rec) mutable {
            auto& st = self->state;
            // Another request may have spawned it while we waited for the store.
            if (auto i = st.incidents.find(id); i != st.incidents.end()) {
              f(i->second);
              return;
            }
            auto inc = self->spawn(incident, std::move(rec), st.policy, st.incident_idle);
            adopt(self, child_kind::incident, st.incidents, id, inc);
            f(inc);
          },
          [on_error](caf::error& err) mutable { on_error(err); });
}

response_action_actor spawn_action(directory_stateful self, action_record rec) {
  auto& st = self->state;
  auto id = rec.action_id;
  auto dev = device_for(self, rec.device_id);
  auto deadline = std::chrono::duration_cast<caf::timespan>(
      std::chrono::microseconds{st.policy.get()->exec_deadline_for(rec.type)});
  auto act = self->spawn(response_action, std::move(rec), dev, st.store, deadline,
                         write_retry{});
  adopt(self, child_kind::action, st.actions, std::move(id), act);
  return act;
}

/// Gives `rec`, an open action read from the store, its actor and its place in the
/// queue of `dev`, its device.
void submit_resumed(directory_stateful self, const device_actor& dev, action_record rec) {
  auto type = rec.type;
  auto cmd = to_command(rec);
  auto act = spawn_action(self, std::move(rec));
  self->send(dev, atom::submit_v, type, std::move(cmd), act);
}

/// The actor of device `device_id` is live (`dev`): its dormant actions are too.
void wake_dormant(directory_stateful self, const std::string& device_id,
                  const device_actor& dev) {
  auto& st = self->state;
  auto d = st.dormant.find(device_id);
  if (d == st.dormant.end()) return;
  auto recs = std::move(d->second);
  st.dormant.erase(d);
  st.cfg.counters->dormant_actions -= static_cast<int64_t>(recs.size());
  for (auto& rec : recs) {
    st.dormant_device.erase(rec.action_id);
    submit_resumed(self, dev, std::move(rec));
  }
}

/// The trigger record of `rec`; `what` says what was asked for.
audit_entry trigger_of(const action_record& rec, const std::string& what) {
  return audit_entry{rec.requested_by, "trigger", rec.action_id,
                     std::string{to_string(rec.type)} + " on " + rec.device_id + " (" +
                         what + ")"};
}

/// Calls `go` with `rec` unless its device says no: a release is refused for a device
/// that is not isolated (DESIGN.md §2), and start_process arguments given as text are
/// split by the device's OS first. Calls `fail` with the reason otherwise.
template <class Go, class Fail>
void check_on_device(directory_stateful self, action_record rec, Go go, Fail fail) {
  bool release = rec.type == action_type::release_isolation;
  if (!release && !needs_device_os(rec)) {
    go(std::move(rec));
    return;
  }
  auto dev = device_for(self, rec.device_id);
  self->request(dev, actor_timeout, atom::get_v)
      .then(
          [rec, go, fail, release](const device_record& d) mutable {
            if (!release) {
              if (auto err = split_for_device(rec, os_family_of(d.os))) {
                fail(err);
                return;
              }
              go(std::move(rec));
              return;
            }
            if (d.isolated) {
              go(std::move(rec));
              return;
            }
            caf::error err = make_error(ec::not_applicable,
                                        "device " + d.device_id + " is not isolated");
            fail(err);
          },
          fail);
}

/// Registers `rec` once its device allows it (`check_on_device`), calling `ok` with
/// the stored record, or `fail`. `what` says what was asked for, in the audit trail.
template <class Ok, class Fail>
void register_checked(directory_stateful self, action_record rec, std::string what, Ok ok,
                      Fail fail) {
  auto go = [self, ok, fail, what](action_record rec) mutable {
    // The trigger goes into the audit trail before the transitions it causes: the
    // store handles the audit record before the action's first write.
    self->request(self->state.store, store_timeout, atom::audit_v, trigger_of(rec, what))
        .then([](atom::ok) {},
              [](caf::error& err) {
                spdlog::error("directory: cannot write the audit trail: {}",
                              message_of(err));
              });
    auto dev = device_for(self, rec.device_id);
    auto type = rec.type;
    auto cmd = to_command(rec);
    auto act = spawn_action(self, std::move(rec));
    self->request(act, actor_timeout, atom::start_v).then(ok, fail);
    // Queued on the device now, while the directory sees requests one at a time:
    // commands run in the order they were registered. The command waits in the
    // queue until the action has stored `sent`.
    self->send(dev, atom::submit_v, type, std::move(cmd), act);
  };
  check_on_device(self, std::move(rec), go, fail);
}

/// A bulk registration (POST /actions/bulk) on its way: each request's outcome, and
/// how many device checks are still out.
struct bulk_job {
  caf::typed_response_promise<std::vector<registration_outcome>> rp;
  std::vector<registration_outcome> out;
  std::vector<std::string> what; ///< What each request asked for (the audit trail).
  std::size_t checking = 0;
};

/// How long a bulk registration waits for a device to say whether it takes a command
/// at once: a device answers in microseconds, and one that is slow must not hold the
/// whole write. Without its answer the action is registered as `registered` and the
/// device asked again after the write.
constexpr caf::timespan device_answer_timeout = std::chrono::seconds{1};

/// The actions of a bulk registration on their way to the store: one per request
/// that passed its checks, with its actor, its device, its first transition and
/// what the device answered.
struct bulk_actions {
  struct one {
    std::size_t i; ///< Its request.
    response_action_actor act;
    device_actor dev;
    transition first;
    bool sent = false;       ///< The device took the command at once.
    bool unanswered = false; ///< The device did not say: it is asked again after.
  };
  std::vector<one> all;
  std::size_t asking = 0;
};

void write_bulk(directory_stateful self, const std::shared_ptr<bulk_job>& job,
                const std::shared_ptr<bulk_actions>& acts);

/// Gives every action of `job` that passed its checks its actor and its place in its
/// device's queue, in request order, as a single registration would, then stores
/// them in one write once every device said whether it takes the command at once.
/// The actions wait for the write's outcome.
void store_bulk(directory_stateful self, const std::shared_ptr<bulk_job>& job) {
  auto acts = std::make_shared<bulk_actions>();
  auto now = now_us();
  acts->asking = 1; // until every device is asked
  auto answered = [self, job, acts] {
    if (--acts->asking == 0) write_bulk(self, job, acts);
  };
  for (std::size_t i = 0; i < job->out.size(); ++i) {
    auto& o = job->out[i];
    if (o.err) continue;
    auto first = make_registered(o.rec, now);
    auto dev = device_for(self, o.rec.device_id);
    auto act = spawn_action(self, o.rec);
    self->send(act, atom::reg_v);
    auto k = acts->all.size();
    acts->all.push_back(bulk_actions::one{i, act, dev, std::move(first)});
    ++acts->asking;
    self->request(dev, device_answer_timeout, atom::submit_v, atom::reg_v, o.rec.type,
                  to_command(o.rec), act)
        .then(
            [acts, k, answered](bool sent) {
              acts->all[k].sent = sent;
              answered();
            },
            [acts, k, answered](caf::error&) {
              acts->all[k].unanswered = true;
              answered();
            });
  }
  answered();
}

/// The write of `store_bulk`: an action whose device took its command is stored as
/// `sent` too, and told so (`reg`, `sent`); the device sends the command once the
/// action says `sent`.
void write_bulk(directory_stateful self, const std::shared_ptr<bulk_job>& job,
                const std::shared_ptr<bulk_actions>& acts) {
  if (acts->all.empty()) {
    job->rp.deliver(std::move(job->out));
    return;
  }
  std::vector<action_registration> regs;
  regs.reserve(acts->all.size());
  auto sent_at = now_us(); // every device has answered by now
  for (auto& a : acts->all) {
    auto& o = job->out[a.i];
    action_registration r{trigger_of(o.rec, job->what[a.i]), o.rec, a.first, {}};
    if (a.sent) {
      o.rec.state = r.rec.state = state::sent;
      o.rec.updated_at = r.rec.updated_at = sent_at;
      r.then.push_back(transition{o.rec.action_id, state::sent, sent_at, sent_reason});
    }
    regs.push_back(std::move(r));
  }
  auto settle = [self, job, acts, sent_at](std::size_t k, const caf::error& err) {
    auto& a = acts->all[k];
    auto& o = job->out[a.i];
    if (err)
      self->send(a.act, atom::reg_v, err);
    else if (a.sent)
      self->send(a.act, atom::reg_v, atom::sent_v, sent_at);
    else
      self->send(a.act, atom::reg_v, caf::error{});
    // Its device may wait for a `sent` that nobody will ask for.
    if (a.unanswered) self->send(a.dev, atom::transmit_v, o.rec.action_id);
    if (!err) return;
    o.err = err;
    o.rec = action_record{};
  };
  self->request(self->state.store, store_timeout, atom::put_v, std::move(regs))
      .then(
          [job, acts, settle](std::vector<caf::error>& errs) {
            for (std::size_t k = 0; k < acts->all.size(); ++k)
              // None for it (never so): its action asks the store itself.
              settle(k, k < errs.size() ? errs[k]
                                        : caf::make_error(caf::sec::unexpected_response));
            job->rp.deliver(std::move(job->out));
          },
          [job, acts, settle](caf::error& err) {
            // No answer in time: the write may still commit. The actions learn from
            // the store whether it did (response_action.cpp, `reg`); the caller
            // hears that they may be registered.
            for (std::size_t k = 0; k < acts->all.size(); ++k)
              settle(k, err);
            job->rp.deliver(std::move(job->out));
          });
}

/// How long a bulk registration waits for the store's reader before it asks the store
/// instead: short, so that the store's read still fits within the REST call's own
/// deadline when the reader hangs (it also serves REST pages, one at a time).
constexpr caf::timespan reader_timeout = std::chrono::seconds{5};

/// Reads the incidents `ids` names (sorted, distinct) and calls `done` with the ones
/// stored, or `fail`. The reader goes first: it sees the last commit and does not
/// wait behind the writes queued at the store. What it lacks (stored in a group not
/// yet committed, or not at all) is asked of the store, which sees its open group
/// and every write queued before the question.
template <class Done, class Fail>
void read_incidents(directory_stateful self, std::vector<std::string> ids, Done done,
                    Fail fail) {
  auto from_store = [self, done, fail](std::vector<std::string> rest,
                                       std::vector<incident_record> found) mutable {
    if (rest.empty()) {
      done(found);
      return;
    }
    self->request(self->state.store, store_timeout, atom::get_v, atom::incidents_v,
                  std::move(rest))
        .then(
            [done, found = std::move(found)](std::vector<incident_record>& more) mutable {
              found.insert(found.end(), std::make_move_iterator(more.begin()),
                           std::make_move_iterator(more.end()));
              done(found);
            },
            fail);
  };
  if (!self->state.reader) {
    from_store(std::move(ids), {});
    return;
  }
  self->request(self->state.reader, reader_timeout, atom::get_v, atom::incidents_v, ids)
      .then(
          [ids, from_store](std::vector<incident_record>& found) mutable {
            std::vector<std::string_view> have;
            have.reserve(found.size());
            for (auto& r : found)
              have.push_back(r.incident_id);
            std::sort(have.begin(), have.end());
            std::vector<std::string> rest;
            for (auto& id : ids)
              if (!std::binary_search(have.begin(), have.end(), std::string_view{id}))
                rest.push_back(std::move(id));
            from_store(std::move(rest), std::move(found));
          },
          [ids, from_store](caf::error& err) mutable {
            spdlog::warn("directory: the store's reader did not answer ({}); the "
                         "store reads the incidents",
                         message_of(err));
            from_store(std::move(ids), {});
          });
}

/// Registers one action per request, as `register_new` would each (its incident's
/// rules, its device's checks, its trigger record), with one read of the incidents
/// (two when the reader lacks some: read_incidents) and one write of the actions.
void register_bulk(directory_stateful self, std::vector<action_request> reqs,
                   caf::typed_response_promise<std::vector<registration_outcome>> rp) {
  auto job = std::make_shared<bulk_job>();
  job->rp = std::move(rp);
  job->out.resize(reqs.size());
  std::vector<std::string> ids;
  for (auto& r : reqs) {
    job->what.push_back(std::string{to_string(r.type)} + " on " + r.incident_id);
    ids.push_back(r.incident_id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  read_incidents(
      self, std::move(ids),
      [self, job, reqs = std::move(reqs)](std::vector<incident_record>& incs) {
        std::unordered_map<std::string_view, const incident_record*> by_id;
        for (auto& inc : incs)
          by_id.emplace(inc.incident_id, &inc);
        auto policy = self->state.policy.get();
        auto now = now_us();
        job->checking = 1; // until every check is started
        auto checked = [self, job] {
          if (--job->checking == 0) store_bulk(self, job);
        };
        for (std::size_t i = 0; i < reqs.size(); ++i) {
          auto& o = job->out[i];
          auto inc = by_id.find(reqs[i].incident_id);
          if (inc == by_id.end()) {
            o.err = make_error(ec::not_found, "no incident " + reqs[i].incident_id);
            continue;
          }
          auto rec = make_action(*inc->second, reqs[i], *policy, now);
          if (!rec) {
            o.err = std::move(rec.error());
            continue;
          }
          ++job->checking;
          check_on_device(
              self, std::move(*rec),
              [job, i, checked](action_record r) {
                job->out[i].rec = std::move(r);
                checked();
              },
              [job, i, checked](const caf::error& err) {
                job->out[i].err = err;
                checked();
              });
        }
        checked();
      },
      [job](caf::error& err) {
        for (auto& o : job->out)
          o.err = err;
        job->rp.deliver(std::move(job->out));
      });
}

/// Validates `req` with its incident and registers the action it describes.
template <class Ok, class Fail>
void register_new(directory_stateful self, action_request req, Ok ok, Fail fail) {
  auto what = std::string{to_string(req.type)} + " on " + req.incident_id;
  with_incident(
      self, req.incident_id,
      [self, req, ok, fail, what](incident_actor inc) mutable {
        self->request(inc, actor_timeout, atom::reg_v, req)
            .then(
                [self, ok, fail, what](action_record& rec) mutable {
                  register_checked(self, std::move(rec), what, ok, fail);
                },
                fail);
      },
      fail);
}

/// Answers through `rp`.
auto deliver_to(caf::typed_response_promise<action_record> rp) {
  return std::make_pair([rp](action_record& r) mutable { rp.deliver(r); },
                        [rp](caf::error& err) mutable { rp.deliver(err); });
}

} // namespace

caf::expected<action_record> make_reverse(const action_record& original,
                                          const action_request& req,
                                          const action_policy& policy, int64_t now) {
  auto reverse = reverse_of(original.type);
  if (!reverse)
    return make_error(ec::not_applicable,
                      std::string{to_string(original.type)} + " cannot be reversed");
  auto type = *reverse;
  if (original.state != state::completed)
    return make_error(ec::not_applicable,
                      "action " + original.action_id + " is " +
                          to_string(original.state) +
                          ": only a completed action can be reversed");
  if (!original.reversed_by.empty())
    return make_error(ec::not_applicable, "action " + original.action_id +
                                              " is already being reversed by " +
                                              original.reversed_by);
  if (policy.needs_password(type) && !req.password_confirmed)
    return make_error(ec::unauthenticated,
                      std::string{to_string(type)} + " needs your password");
  action_record a;
  a.action_id = time_ordered_id("act-", now_us());
  a.type = type;
  a.device_id = original.device_id;
  a.incident_id = original.incident_id;
  a.target_kind = original.target_kind;
  a.target_event_id = original.target_event_id;
  a.params = original.params;
  if (type == action_type::restore_from_quarantine) {
    auto q = original.result_effect.find("quarantine_id");
    if (q == original.result_effect.end())
      return make_error(ec::not_applicable, "the quarantine left no quarantine_id");
    a.params["quarantine_id"] = q->second;
  }
  a.requested_by = req.username;
  a.comment = req.comment;
  a.password_confirmed = req.password_confirmed;
  a.expires_at = now + policy.ttl_for(type);
  a.reverses = original.action_id;
  return a;
}

directory_actor::behavior_type directory(directory_stateful self, device_config cfg,
                                         shared_setting<action_policy> policy,
                                         caf::timespan incident_idle,
                                         directory_store_actor store,
                                         incident_reader_actor reader,
                                         gateway_actor gateway) {
  auto& st = self->state;
  st.cfg = cfg;
  st.policy = std::move(policy);
  st.incident_idle = incident_idle;
  st.store = std::move(store);
  st.reader = std::move(reader);
  st.gateway = std::move(gateway);
  // A child that fails (an exception in a handler) takes no other child down: the
  // directory forgets it and spawns a fresh one on the next message for its id.
  self->set_down_handler([self](const caf::down_msg& msg) {
    if (forget(self, msg.source.id()) && msg.reason != caf::exit_reason::normal)
      spdlog::error("directory: a child actor failed: {}", caf::to_string(msg.reason));
  });
  return {
      [self](atom::hello, const std::string& id, bus::hello& h, hello_ticket& t) {
        self->send(device_for(self, id), atom::hello_v, std::move(h), std::move(t));
      },
      [self](atom::heartbeat, const std::string& id, const bus::heartbeat& hb) {
        if (!passive_heartbeat(self, id, hb))
          self->send(device_for(self, id), atom::heartbeat_v, hb);
      },
      [self](atom::incident, const std::string& id, bus::incident_report& r,
             uint64_t bytes) {
        self->send(device_for(self, id), atom::incident_v, std::move(r), bytes);
      },
      [self](atom::ack, const std::string& id, std::string& action_id) {
        self->send(device_for(self, id), atom::ack_v, std::move(action_id));
      },
      [self](atom::result, const std::string& id, bus::action_result& r) {
        self->send(device_for(self, id), atom::result_v, std::move(r));
      },
      [self](atom::cancel, const std::string& id, bus::cancel_result& r) {
        self->send(device_for(self, id), atom::cancel_v, std::move(r));
      },
      [self](atom::unreach, const std::string& id) {
        auto& st = self->state;
        auto p = st.passive.find(id);
        if (st.devices.count(id) || (p != st.passive.end() && p->second.rec.online))
          self->send(device_for(self, id), atom::unreach_v);
      },
      [self](atom::reg, action_request& req) -> caf::result<action_record> {
        auto rp = self->make_response_promise<action_record>();
        if (req.idempotency_key.empty()) {
          auto [ok, fail] = deliver_to(rp);
          register_new(self, std::move(req), ok, fail);
          return rp;
        }
        // The idempotency check and the registration are one step here: a duplicate
        // that arrives while the first is being registered waits for its answer.
        auto key = std::make_pair(req.username, req.idempotency_key);
        auto& st = self->state;
        if (auto i = st.registering.find(key); i != st.registering.end()) {
          ++st.idempotent_hits;
          i->second.push_back(rp);
          return rp;
        }
        st.registering[key].push_back(rp);
        auto answer_all = [self, key](auto&& x) {
          auto& st = self->state;
          auto i = st.registering.find(key);
          if (i == st.registering.end()) return;
          for (auto& p : i->second)
            p.deliver(x);
          st.registering.erase(i);
        };
        auto ok = [answer_all](action_record& rec) { answer_all(rec); };
        auto fail = [answer_all](caf::error& err) { answer_all(err); };
        self->request(st.store, store_timeout, atom::idem_v, key.first, key.second)
            .then(
                [self, req, ok, fail](const std::string& id) mutable {
                  if (id.empty()) {
                    register_new(self, std::move(req), ok, fail);
                    return;
                  }
                  ++self->state.idempotent_hits;
                  self->request(self->state.store, store_timeout, atom::get_v,
                                atom::action_v, id)
                      .then(ok, fail);
                },
                fail);
        return rp;
      },
      [self](atom::reg, std::vector<action_request>& reqs)
          -> caf::result<std::vector<registration_outcome>> {
        auto rp = self->make_response_promise<std::vector<registration_outcome>>();
        register_bulk(self, std::move(reqs), rp);
        return rp;
      },
      [self](atom::cancel, const std::string& id, const std::string& user,
             const std::string& comment) -> caf::result<action_record> {
        auto& st = self->state;
        // A dormant action comes to life with its device's others, in their order.
        if (auto d = st.dormant_device.find(id); d != st.dormant_device.end())
          device_for(self, std::string{d->second});
        auto rp = self->make_response_promise<action_record>();
        // Not live: it is final, or it does not exist.
        auto from_store = [self, rp, id]() mutable {
          self->request(self->state.store, store_timeout, atom::get_v, atom::action_v, id)
              .then(
                  [rp](const action_record& rec) mutable {
                    rp.deliver(make_error(ec::conflict, "action " + rec.action_id +
                                                            " is " +
                                                            to_string(rec.state) +
                                                            " and cannot be cancelled"));
                  },
                  [rp](caf::error& err) mutable { rp.deliver(err); });
        };
        auto i = st.actions.find(id);
        if (i == st.actions.end()) {
          from_store();
          return rp;
        }
        // Asked, not delegated: an action that has just ended (its down message still
        // queued here) bounces the cancel, and then the store has its final state.
        self->request(i->second, store_timeout, atom::cancel_v, user, comment)
            .then([rp](action_record& rec) mutable { rp.deliver(std::move(rec)); },
                  [rp, from_store](caf::error& err) mutable {
                    if (err == caf::sec::request_receiver_down)
                      from_store();
                    else
                      rp.deliver(std::move(err));
                  });
        return rp;
      },
      [self](atom::reverse, const std::string& id,
             const action_request& req) -> caf::result<action_record> {
        auto& st = self->state;
        // One reverse at a time per action: the store link is written only once the
        // reverse is registered, so the gap is covered here.
        if (!st.reversing.insert(id).second)
          return make_error(ec::not_applicable,
                            "action " + id + " is already being reversed");
        auto rp = self->make_response_promise<action_record>();
        auto fail = [self, rp, id](caf::error& err) mutable {
          self->state.reversing.erase(id);
          rp.deliver(err);
        };
        self->request(st.store, store_timeout, atom::get_v, atom::action_v, id)
            .then(
                [self, rp, req, id, fail](const action_record& original) mutable {
                  auto rev =
                      make_reverse(original, req, *self->state.policy.get(), now_us());
                  if (!rev) {
                    fail(rev.error());
                    return;
                  }
                  auto linked = [self, rp, id, fail](action_record& rec) mutable {
                    self->request(self->state.store, store_timeout, atom::link_v, id,
                                  rec.action_id)
                        .then(
                            [self, rp, id, rec](atom::ok) mutable {
                              self->state.reversing.erase(id);
                              rp.deliver(rec);
                            },
                            fail);
                  };
                  register_checked(self, std::move(*rev), "reverse of " + id, linked,
                                   fail);
                },
                fail);
        return rp;
      },
      [self](atom::resume) -> caf::result<uint64_t> {
        auto rp = self->make_response_promise<uint64_t>();
        self->request(self->state.store, store_timeout, atom::open_v)
            .then(
                [self, rp](std::vector<action_record>& open) mutable {
                  // In registration order, so each device gets its commands in order.
                  // An action of a device with a live actor gets its own now; the
                  // others stay records until their device's actor is needed or
                  // their time is up (a restart spawns no actor for them).
                  auto& st = self->state;
                  auto policy = st.policy.get();
                  uint64_t resumed = 0, dormant = 0;
                  for (auto& rec : open) {
                    if (st.actions.count(rec.action_id) ||
                        st.dormant_device.count(rec.action_id))
                      continue; // already resumed
                    ++resumed;
                    if (auto d = st.devices.find(rec.device_id); d != st.devices.end()) {
                      submit_resumed(self, d->second, std::move(rec));
                      continue;
                    }
                    ++dormant;
                    if (auto due = wake_time(rec, *policy); due != 0)
                      st.dormant_due.emplace(due, rec.device_id);
                    st.dormant_device.emplace(rec.action_id, rec.device_id);
                    auto& queue = st.dormant[rec.device_id];
                    queue.push_back(std::move(rec));
                  }
                  st.cfg.counters->dormant_actions += static_cast<int64_t>(dormant);
                  arm_expire(self);
                  spdlog::info("resumed {} open actions ({} wait for their device)",
                               resumed, dormant);
                  rp.deliver(resumed);
                },
                [rp](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [self](atom::get, const std::string& id) { return device_for(self, id); },
      [self](atom::passivate, const std::string& id) -> caf::result<atom::ok> {
        auto& st = self->state;
        auto i = st.devices.find(id);
        if (i == st.devices.end() || i->second.address() != self->current_sender())
          return make_error(ec::not_found, "device " + id + " has another actor");
        st.leaving[id] = false; // device_for notes anything routed to it from now on
        return atom::ok_v;
      },
      [self](atom::passivate, const std::string& id, device_snapshot& snap) {
        auto& st = self->state;
        auto l = st.leaving.find(id);
        if (l == st.leaving.end()) return false;
        bool needed = l->second;
        st.leaving.erase(l);
        auto i = st.devices.find(id);
        if (needed || i == st.devices.end() ||
            i->second.address() != self->current_sender())
          return false;
        forget(self, i->second.id());
        st.passive.emplace(id, std::move(snap));
        ++st.cfg.counters->passive;
        arm_sweep(self);
        return true;
      },
      [self](atom::keep, const std::string& id) {
        auto& st = self->state;
        if (auto i = st.devices.find(id);
            i != st.devices.end() && i->second.address() == self->current_sender())
          st.leaving.erase(id);
      },
      [self](atom::expire, int64_t armed_for) {
        auto& st = self->state;
        if (armed_for == st.due_armed) st.due_armed = 0;
        // What the timer was armed for is due, whatever the wall clock says.
        auto now = std::max(now_us(), armed_for);
        while (!st.dormant_due.empty() && st.dormant_due.top().first <= now) {
          auto id = st.dormant_due.top().second;
          st.dormant_due.pop();
          if (st.dormant.count(id)) device_for(self, id); // wakes its actions
        }
        arm_expire(self);
      },
      [self](atom::check) {
        auto& st = self->state;
        st.sweeping = false;
        auto now = self->clock().now().time_since_epoch();
        auto limit = st.cfg.heartbeat_interval * st.cfg.missed_heartbeats;
        std::vector<std::string> late;
        for (auto& [id, snap] : st.passive)
          if (snap.rec.online && now - snap.last_heard >= limit) late.push_back(id);
        // Woken, the actor finds its heartbeats missed and takes the device offline.
        for (auto& id : late)
          device_for(self, id);
        arm_sweep(self);
      },
      [self](atom::retire, const std::string& id) {
        auto& devs = self->state.devices;
        if (auto i = devs.find(id);
            i != devs.end() && i->second.address() == self->current_sender())
          forget(self, i->second.id());
        return atom::ok_v;
      },
  };
}

} // namespace parry
