// The response action lifecycle (DESIGN.md §4) as a state machine.
//
// clang-format off
//  registered ─┬─> queued ─> sent ─> acknowledged ─┬─> completed ─(reverse)─> reverted
//              └─> sent ─────────────────────────────┘└─> failed (reason)
//
//  registered, queued ─> expired (TTL) | cancelled (user)   the command never left
//  sent ─> cancelling ─┬─> cancelled | expired              the agent: it never ran
//   (user or TTL)      ├─> completed | failed               too late: the agent's result
//                      └─> failed                           no answer by the deadline
//  acknowledged ─> failed "no result from the agent"        execution deadline
//  sent ─> acknowledged also when a result comes first      (implied by the result)
//  any non-final ─> failed                                  the store refused the move
// clang-format on
//
// Every move is stored before it is acted on: `advance` writes the transition and only
// then runs what follows. While a write is in flight (or waiting to be retried) later
// messages wait in order, so the store sees the transitions as they happened. A move the
// table does not allow is refused and logged.

#include "actors/response_action.hpp"
#include "server/logging.hpp"

#include <algorithm>
#include <chrono>
#include <string_view>
#include <utility>

#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "common/time.hpp"

namespace parry {

namespace {

/// The transition table: every move the lifecycle allows, and no other.
/// (A new action becomes `registered` in `start`, by the store's insert.)
constexpr std::pair<action_state, action_state> moves[] = {
    {state::registered, state::queued},
    {state::registered, state::sent},
    {state::registered, state::completed}, // no-op: nothing to execute
    {state::registered, state::cancelled},
    {state::registered, state::expired},
    {state::registered, state::failed},
    {state::queued, state::sent},
    {state::queued, state::completed},
    {state::queued, state::cancelled},
    {state::queued, state::expired},
    {state::queued, state::failed},
    {state::sent, state::acknowledged},
    {state::sent, state::cancelling},
    {state::sent, state::failed},
    {state::acknowledged, state::completed},
    {state::acknowledged, state::failed},
    {state::cancelling, state::cancelled},
    {state::cancelling, state::expired},
    {state::cancelling, state::completed},
    {state::cancelling, state::failed},
    {state::completed, state::reverted}, // written by the reverse action's store call
};

using on_abandon = std::function<void(const caf::error&)>;

/// Runs `f` now, or after the write in flight (and what waits before it).
template <class F> void run(response_action_stateful self, F f) {
  auto& st = self->state;
  if (!st.writing) {
    f();
    return;
  }
  if (st.waiting.size() >= max_waiting) {
    ++st.refused;
    spdlog::warn("{}{} messages wait for the store, refused one ({} so far)",
                 action_log_tags(st.rec), st.waiting.size(), st.refused);
    return;
  }
  st.waiting.emplace_back(std::move(f));
}

/// Runs what waited, until one of them starts a write. A final action ends after.
void drain(response_action_stateful self) {
  auto& st = self->state;
  while (!st.writing && !st.waiting.empty()) {
    auto f = std::move(st.waiting.front());
    st.waiting.pop_front();
    f();
  }
  if (!st.writing && is_final(st.rec.state)) self->quit(); // the store keeps the record
}

caf::timespan backoff(const write_retry& r, int failures) {
  auto d = r.first;
  for (int i = 1; i < failures && d < r.max; ++i)
    d *= 2;
  return std::min(d, r.max);
}

void write(response_action_stateful self);

/// The store refused the write in flight: retry it later (DESIGN.md §4: nothing is
/// acted on before it is stored). After `retry.attempts` the move is abandoned and the
/// action ends `failed`, stored as soon as the store takes writes again.
void write_failed(response_action_stateful self, const caf::error& err) {
  auto& st = self->state;
  auto& w = *st.writing;
  ++w.failures;
  spdlog::error("{}cannot store state {} (attempt {}): {}", action_log_tags(st.rec),
                to_string(w.t.state), w.failures, message_of(err));
  if (!w.giving_up && w.failures > st.retry.attempts) {
    if (w.abandon) w.abandon(err);
    auto reason =
        store_refused_prefix + std::string{to_string(w.t.state)} + ": " + message_of(err);
    w.giving_up = true;
    w.abandon = nullptr;
    w.rec = st.rec;
    w.rec.state = state::failed;
    w.rec.updated_at = now_us();
    w.rec.result_ok = false;
    w.rec.result_error = reason;
    w.t = transition{w.rec.action_id, state::failed, w.rec.updated_at, reason};
    w.then = [self] {
      auto& rec = self->state.rec;
      // The command may be on the wire: its late result is recorded by the device.
      self->send(self->state.device, atom::withdraw_v, rec.action_id);
      if (!rec.reverses.empty())
        self->request(self->state.store, self->state.retry.timeout, atom::link_v,
                      rec.reverses, std::string{})
            .then([](atom::ok) {}, [](caf::error&) {});
    };
  }
  self->delayed_send(self, backoff(st.retry, w.failures), atom::retry_v);
}

void write(response_action_stateful self) {
  auto& st = self->state;
  auto& w = *st.writing;
  self->request(st.store, st.retry.timeout, atom::update_v, w.rec, w.t)
      .then(
          [self](atom::ok) {
            auto& st = self->state;
            auto w = std::move(*st.writing);
            st.writing.reset();
            st.rec = std::move(w.rec);
            spdlog::info("{}{} is {}{}{}", action_log_tags(st.rec),
                         to_string(st.rec.type), to_string(st.rec.state),
                         w.t.reason.empty() ? "" : ": ", w.t.reason);
            if (w.then) w.then();
            drain(self);
          },
          [self](caf::error& err) { write_failed(self, err); });
}

/// Stores the move to `next`, and only then runs `then` (DESIGN.md §4: a transition
/// is written before it is acted on or reported). Refuses, and logs, a move the table
/// does not allow. `abandon` runs if the move is given up after every retry.
template <class F>
bool advance(response_action_stateful self, action_state next, std::string reason, F then,
             on_abandon abandon = nullptr) {
  auto& st = self->state;
  if (!transition_allowed(st.rec.state, next)) {
    spdlog::error("{}refused the move {} -> {} ({})", action_log_tags(st.rec),
                  to_string(st.rec.state), to_string(next), reason);
    if (abandon)
      abandon(make_error(ec::conflict, "action " + st.rec.action_id + " is " +
                                           to_string(st.rec.state) +
                                           ", it cannot become " + to_string(next)));
    return false;
  }
  pending_write w;
  w.rec = st.rec;
  w.rec.state = next;
  w.rec.updated_at = now_us();
  w.t = transition{w.rec.action_id, next, w.rec.updated_at, std::move(reason)};
  w.then = std::move(then);
  w.abandon = std::move(abandon);
  st.writing = std::move(w);
  write(self);
  return true;
}

/// Starts the execution deadline.
void arm_deadline(response_action_stateful self, caf::timespan delay) {
  delay = std::max(delay, caf::timespan{0});
  self->state.deadline = self->clock().now() + delay;
  self->delayed_send(self, delay, atom::deadline_v);
}

/// A reverse action settles the action it undoes just before its own final state is
/// stored: both writes queue at the store in this order, so whoever sees the reverse's
/// final state also sees the original settled.
void settle_original(response_action_stateful self, action_state next) {
  auto& rec = self->state.rec;
  if (rec.reverses.empty()) return;
  auto err = [self](caf::error& err) {
    spdlog::error("{}cannot settle {}: {}", action_log_tags(self->state.rec),
                  self->state.rec.reverses, message_of(err));
  };
  auto timeout = self->state.retry.timeout;
  if (next == state::completed)
    self->request(self->state.store, timeout, atom::revert_v, rec.reverses, rec.action_id)
        .then([](atom::ok) {}, err);
  else // failed, expired or cancelled: the original may be reversed again
    self->request(self->state.store, timeout, atom::link_v, rec.reverses, std::string{})
        .then([](atom::ok) {}, err);
}

/// Stores a final state (settling the original first), then runs `then`; the actor
/// ends once nothing waits (the record lives on in the store).
template <class F>
void conclude(response_action_stateful self, action_state next, std::string reason,
              F then, on_abandon abandon = nullptr) {
  if (transition_allowed(self->state.rec.state, next)) settle_original(self, next);
  advance(self, next, std::move(reason), std::move(then), std::move(abandon));
}

/// Ends the action before execution: stores `next`, drops its command.
template <class F>
void withdraw(response_action_stateful self, action_state next, std::string reason,
              F then, on_abandon abandon = nullptr) {
  conclude(
      self, next, std::move(reason),
      [self, then]() mutable {
        self->send(self->state.device, atom::withdraw_v, self->state.rec.action_id);
        then();
      },
      std::move(abandon));
}

/// Stores `cancelling` and asks the agent to withdraw the command; the action ends as
/// `to` once the agent confirms it never ran.
template <class F>
void start_cancelling(response_action_stateful self, action_state to, std::string why,
                      std::string final_reason, F then, on_abandon abandon = nullptr) {
  advance(
      self, state::cancelling, std::move(why),
      [self, to, final_reason, then]() mutable {
        auto& st = self->state;
        st.cancel_to = to;
        st.cancel_reason = final_reason;
        arm_deadline(self, st.exec_deadline);
        self->send(st.device, atom::cancel_v, st.rec.action_id);
        then();
      },
      std::move(abandon));
}

/// Ends the action with the agent's result.
void finish(response_action_stateful self, bus::action_result& r) {
  auto& st = self->state;
  bool late = st.rec.state == state::cancelling;
  st.rec.result_ok = r.ok;
  st.rec.result_error = r.error;
  st.rec.result_effect = std::move(r.effect);
  // The agent's word, kept for the split of a round trip; capped so that every JSON
  // client reads it exactly (2^53 - 1).
  st.rec.result_agent_us =
      static_cast<int64_t>(std::min<uint64_t>(r.agent_us, (uint64_t{1} << 53) - 1));
  auto next = r.ok ? state::completed : state::failed;
  auto reason =
      r.ok ? std::string{"agent reported success"} : "agent reported failure: " + r.error;
  if (late) reason += " (the cancel came too late)";
  conclude(self, next, std::move(reason), [self] {
    self->send(self->state.device, atom::done_v, self->state.rec.action_id);
  });
}

/// True while the action's registration is being stored (by itself or the directory).
bool registering(const response_action_state& st) {
  return st.writing && (st.writing->by_directory || st.rec.created_at == 0);
}

/// Never registered: nothing was acted on; its place in the device's queue goes too,
/// and the actor ends.
void not_registered(response_action_stateful self, const caf::error& err) {
  auto& st = self->state;
  spdlog::error("{}cannot register: {}", action_log_tags(st.rec), message_of(err));
  self->send(st.device, atom::withdraw_v, st.rec.action_id);
  st.writing.reset();
  st.waiting.clear();
  self->quit();
}

/// The directory stored it: what waited goes on.
void registered_by_directory(response_action_stateful self) {
  self->state.writing.reset();
  drain(self);
}

/// The directory stored it as `sent` too, at `at` (µs): the device may send it.
void registered_as_sent(response_action_stateful self, int64_t at) {
  auto& st = self->state;
  st.rec.state = state::sent;
  st.rec.updated_at = at;
  spdlog::info("{}{} is sent (registered with it)", action_log_tags(st.rec),
               to_string(st.rec.type));
  self->send(st.device, atom::sent_v, st.rec.action_id);
  registered_by_directory(self);
}

/// The directory's write had no answer: the action is registered if the store has it.
/// Asked again, with the retries' back-off, until the store answers either way.
void confirm_registration(response_action_stateful self) {
  auto& st = self->state;
  self->request(st.store, st.retry.timeout, atom::get_v, atom::action_v, st.rec.action_id)
      .then(
          [self](const action_record& stored) {
            auto& w = self->state.writing;
            if (!w || !w->by_directory) return;
            if (stored.state == state::sent && self->state.rec.state == state::registered)
              registered_as_sent(self, stored.updated_at);
            else
              registered_by_directory(self);
          },
          [self](caf::error& err) {
            auto& st = self->state;
            if (!st.writing || !st.writing->by_directory) return;
            if (code_of(err) == ec::not_found) {
              not_registered(self, err);
              return;
            }
            ++st.writing->failures;
            spdlog::error("{}cannot learn whether it is registered (attempt {}): {}",
                          action_log_tags(st.rec), st.writing->failures, message_of(err));
            self->delayed_send(self, backoff(st.retry, st.writing->failures),
                               atom::retry_v);
          });
}

action_state state_after_restart(const action_record& rec) {
  return rec.expires_at > 0 && now_us() >= rec.expires_at ? state::expired
                                                          : state::cancelled;
}

} // namespace

bool ended_without_agent_result(const action_record& rec) {
  if (rec.state == state::expired || rec.state == state::cancelled) return true;
  if (rec.state != state::failed) return false;
  return rec.result_error == no_result_reason ||
         rec.result_error == no_cancel_answer_reason ||
         rec.result_error.rfind(store_refused_prefix, 0) == 0;
}

bool transition_allowed(action_state from, action_state to) {
  for (const auto& [f, t] : moves)
    if (from == f && to == t) return true;
  return false;
}

transition make_registered(action_record& rec, int64_t now) {
  rec.state = state::registered;
  rec.created_at = rec.updated_at = now;
  auto reason = "requested by " + rec.requested_by;
  if (!rec.comment.empty()) reason += ": " + rec.comment;
  return transition{rec.action_id, state::registered, now, std::move(reason)};
}

bus::command to_command(const action_record& rec) {
  bus::command cmd;
  cmd.action_id = rec.action_id;
  cmd.type = to_string(rec.type); // the wire spells it
  cmd.params = rec.params;
  cmd.expires_at = rec.expires_at;
  return cmd;
}

response_action_actor::behavior_type
response_action(response_action_stateful self, action_record rec, device_actor device,
                action_store_actor store, caf::timespan exec_deadline,
                write_retry retry) {
  auto& st = self->state;
  st.rec = std::move(rec);
  st.device = std::move(device);
  st.store = std::move(store);
  st.exec_deadline = exec_deadline;
  st.retry = retry;
  // The time to live counts from registration, also across restarts.
  if (auto left = st.rec.expires_at - now_us(); st.rec.expires_at > 0)
    self->delayed_send(self, std::chrono::microseconds{std::max<int64_t>(left, 0)},
                       atom::expire_v);
  // Resumed from the store: the deadlines count from the stored transition.
  if (st.rec.state == state::acknowledged || st.rec.state == state::cancelling) {
    auto left =
        std::chrono::microseconds{st.rec.updated_at - now_us()} + st.exec_deadline;
    arm_deadline(self, std::chrono::duration_cast<caf::timespan>(left));
  }
  if (st.rec.state == state::cancelling) {
    st.cancel_to = state_after_restart(st.rec);
    st.cancel_reason = "the agent confirmed the command never ran";
  }
  return {
      [self](atom::start) -> caf::result<action_record> {
        auto& st = self->state;
        // The directory hands the command to the device itself, in registration order.
        if (st.rec.created_at != 0) return st.rec; // resumed from the store
        action_record registered = st.rec;
        auto t = make_registered(registered, now_us());
        auto rp = self->make_response_promise<action_record>();
        // Nothing happens to the action until it is stored: later messages wait.
        st.writing = pending_write{registered, t, nullptr, nullptr};
        self->request(st.store, st.retry.timeout, atom::put_v, registered, std::move(t))
            .then(
                [self, rp](atom::ok) mutable {
                  auto& st = self->state;
                  st.rec = std::move(st.writing->rec);
                  st.writing.reset();
                  // Answers the record as registered, even if it moves on right away.
                  rp.deliver(st.rec);
                  drain(self);
                },
                [self, rp](caf::error& err) mutable {
                  // Never registered (a duplicate idempotency key, a store error).
                  rp.deliver(err);
                  not_registered(self, err);
                });
        return rp;
      },
      [self](atom::reg) {
        auto& st = self->state;
        // Stored by the directory: nothing happens to it until that write answers.
        st.writing = pending_write{};
        st.writing->rec = st.rec;
        st.writing->by_directory = true;
      },
      [self](atom::reg, atom::sent, int64_t at) {
        auto& st = self->state;
        if (!st.writing || !st.writing->by_directory) {
          spdlog::error("{}a registration outcome it did not wait for; ignored",
                        action_log_tags(st.rec));
          return;
        }
        registered_as_sent(self, at);
      },
      [self](atom::reg, const caf::error& err) {
        auto& st = self->state;
        if (!st.writing || !st.writing->by_directory) {
          spdlog::error("{}a registration outcome it did not wait for; ignored",
                        action_log_tags(st.rec));
          return;
        }
        if (!err) {
          registered_by_directory(self);
          return;
        }
        if (code_of(err) == ec::unspecified) {
          // The write's fate is unknown (no answer in time): the store says.
          spdlog::warn("{}no answer for its registration ({}); asking the store",
                       action_log_tags(st.rec), message_of(err));
          confirm_registration(self);
          return;
        }
        not_registered(self, err);
      },
      [self](atom::queued) {
        run(self, [self] {
          if (self->state.rec.state == state::registered)
            advance(self, state::queued, "device offline", [] {});
        });
      },
      [self](atom::transmit) {
        run(self, [self] {
          auto& st = self->state;
          auto clear = [self] {
            self->send(self->state.device, atom::sent_v, self->state.rec.action_id);
          };
          if (st.rec.state == state::registered || st.rec.state == state::queued)
            advance(self, state::sent, sent_reason, clear);
          else if (st.rec.state == state::sent || st.rec.state == state::acknowledged)
            clear(); // re-delivery of a command already stored as sent
          else if (st.rec.state == state::cancelling)
            self->send(st.device, atom::cancel_v, st.rec.action_id); // resumed
        });
      },
      [self](atom::ack) {
        run(self, [self] {
          if (self->state.rec.state == state::sent)
            advance(self, state::acknowledged, "agent accepted the command",
                    [self] { arm_deadline(self, self->state.exec_deadline); });
        });
      },
      [self](atom::result, bus::action_result& r) {
        run(self, [self, r]() mutable {
          auto& st = self->state;
          if (is_final(st.rec.state)) {
            self->send(st.device, atom::done_v, st.rec.action_id);
          } else if (st.rec.state == state::sent) {
            // The result came first (e.g. the ack was lost in a restart): the agent
            // did accept the command, so that is stored too.
            advance(self, state::acknowledged,
                    "agent accepted the command (implied by its result)",
                    [self, r]() mutable { finish(self, r); });
          } else if (st.rec.state == state::acknowledged ||
                     st.rec.state == state::cancelling) {
            finish(self, r);
          } else {
            spdlog::error("{}result from the agent while {}; ignored",
                          action_log_tags(st.rec), to_string(st.rec.state));
          }
        });
      },
      [self](atom::noop, std::string& note) {
        run(self, [self, note] {
          auto& st = self->state;
          if (st.rec.state != state::registered && st.rec.state != state::queued) return;
          st.rec.result_ok = true;
          st.rec.result_error.clear();
          st.rec.result_effect = {{"note", note}};
          conclude(self, state::completed, note, [] {});
        });
      },
      [self](atom::cancel, const std::string& user,
             const std::string& comment) -> caf::result<action_record> {
        auto& st = self->state;
        if (st.writing && st.waiting.size() >= max_waiting)
          return make_error(ec::storage, "action " + st.rec.action_id +
                                             " is waiting for the store; try again");
        // Not registered yet: if its registration fails, nothing would be left to
        // answer a cancel waiting behind it.
        if (registering(st))
          return make_error(ec::conflict, "action " + st.rec.action_id +
                                              " is still being registered; try again");
        auto rp = self->make_response_promise<action_record>();
        run(self, [self, rp, user, comment]() mutable {
          auto& st = self->state;
          auto reason = "cancelled by " + user + (comment.empty() ? "" : ": " + comment);
          auto deliver = [self, rp]() mutable { rp.deliver(self->state.rec); };
          auto refuse = [rp](const caf::error& err) mutable { rp.deliver(err); };
          if (st.rec.state == state::registered || st.rec.state == state::queued) {
            withdraw(self, state::cancelled, std::move(reason), deliver, refuse);
          } else if (st.rec.state == state::sent) {
            // On the wire: only the agent knows whether it still can be stopped.
            start_cancelling(self, state::cancelled,
                             "cancel requested by " + user +
                                 (comment.empty() ? "" : ": " + comment),
                             std::move(reason), deliver, refuse);
          } else if (st.rec.state == state::cancelling) {
            deliver();
          } else {
            rp.deliver(make_error(ec::conflict, "action " + st.rec.action_id + " is " +
                                                    to_string(st.rec.state) +
                                                    ": only an action the agent has not "
                                                    "acknowledged can be cancelled"));
          }
        });
        return rp;
      },
      [self](atom::cancel, bus::cancel_result& r) {
        run(self, [self, r] {
          auto& st = self->state;
          if (st.rec.state != state::cancelling) {
            spdlog::info("{}cancel answer from the agent while {}; ignored",
                         action_log_tags(st.rec), to_string(st.rec.state));
            return;
          }
          if (r.cancelled) {
            withdraw(self, st.cancel_to,
                     st.cancel_reason + " (the agent confirmed it never ran)", [] {});
            return;
          }
          // Too late: it ran or runs; the action ends with the agent's result.
          spdlog::info("{}the agent could not withdraw it: {}", action_log_tags(st.rec),
                       r.detail);
        });
      },
      [self](atom::expire) {
        run(self, [self] {
          auto& st = self->state;
          std::string why = "time to live passed before the agent accepted it";
          if (st.rec.state == state::registered || st.rec.state == state::queued)
            withdraw(self, state::expired, why, [] {});
          else if (st.rec.state == state::sent)
            start_cancelling(self, state::expired,
                             "time to live passed: withdrawing the command", why, [] {});
        });
      },
      [self](atom::deadline) {
        run(self, [self] {
          auto& st = self->state;
          if (!st.deadline || self->clock().now() < *st.deadline) return; // re-armed
          st.deadline.reset();
          const char* why = nullptr;
          if (st.rec.state == state::acknowledged)
            why = no_result_reason;
          else if (st.rec.state == state::cancelling)
            why = no_cancel_answer_reason;
          if (!why) return;
          st.rec.result_ok = false;
          st.rec.result_error = why;
          // Its late result, if any, is recorded by the device as a note.
          withdraw(self, state::failed, why, [] {});
        });
      },
      [self](atom::retry) {
        auto& w = self->state.writing;
        if (w && w->by_directory)
          confirm_registration(self);
        else if (w)
          write(self);
      },
  };
}

} // namespace parry
