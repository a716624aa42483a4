#include "actors/response_action.hpp"

#include <algorithm>
#include <chrono>
#include <string_view>

#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "common/time.hpp"

namespace parry {

namespace {

/// Stores the move to `next`, and only then runs `then` (DESIGN.md §4: a
/// transition is written before it is acted on or reported).
template <class F>
void advance(response_action_stateful self, action_state next, std::string reason,
             F then) {
  auto& rec = self->state.rec;
  rec.state = next;
  rec.updated_at = now_us();
  transition t{rec.action_id, next, rec.updated_at, std::move(reason)};
  self->request(self->state.store, caf::infinite, atom::update_v, rec, std::move(t))
      .then([then](atom::ok) mutable { then(); },
            [self, next](caf::error& err) {
              // Without the record we must not act: stop here, loudly. A restart
              // resumes the action from its last stored state. A normal exit, so the
              // failure stays with this action.
              spdlog::error("action {}: cannot store state {}: {}",
                            self->state.rec.action_id, to_string(next), message_of(err));
              self->quit();
            });
}

/// True while the agent has not accepted the command: it may still be withdrawn.
bool withdrawable(action_state st) {
  return st == state::registered || st == state::queued || st == state::sent;
}

/// A reverse action settles the action it undoes just before its own final state is
/// stored: both writes queue at the store in this order, so whoever sees the reverse's
/// final state also sees the original settled.
void settle_original(response_action_stateful self, action_state next) {
  auto& rec = self->state.rec;
  if (rec.reverses.empty()) return;
  auto err = [self](caf::error& err) {
    spdlog::error("action {}: cannot settle {}: {}", self->state.rec.action_id,
                  self->state.rec.reverses, message_of(err));
  };
  if (next == state::completed)
    self->request(self->state.store, caf::infinite, atom::revert_v, rec.reverses,
                  rec.action_id)
        .then([](atom::ok) {}, err);
  else // failed, expired or cancelled: the original may be reversed again
    self->request(self->state.store, caf::infinite, atom::link_v, rec.reverses,
                  std::string{})
        .then([](atom::ok) {}, err);
}

/// Stores a final state (settling the original first), then runs `then` and ends:
/// the record lives on in the store.
template <class F>
void conclude(response_action_stateful self, action_state next, std::string reason,
              F then) {
  settle_original(self, next);
  advance(self, next, std::move(reason), [self, then]() mutable {
    then();
    self->quit();
  });
}

/// Ends the action before execution: stores `next`, drops its command.
template <class F>
void withdraw(response_action_stateful self, action_state next, std::string reason,
              F then) {
  conclude(self, next, std::move(reason), [self, then]() mutable {
    self->send(self->state.device, atom::withdraw_v, self->state.rec.action_id);
    then();
  });
}

} // namespace

bus::command to_command(const action_record& rec) {
  bus::command cmd;
  cmd.action_id = rec.action_id;
  cmd.type = rec.type;
  cmd.params = rec.params;
  cmd.expires_at = rec.expires_at;
  return cmd;
}

response_action_actor::behavior_type response_action(response_action_stateful self,
                                                     action_record rec,
                                                     device_actor device,
                                                     store_actor store) {
  self->state.rec = std::move(rec);
  self->state.device = std::move(device);
  self->state.store = std::move(store);
  // The time to live counts from registration, also across restarts.
  if (auto left = self->state.rec.expires_at - now_us(); self->state.rec.expires_at > 0)
    self->delayed_send(self, std::chrono::microseconds{std::max<int64_t>(left, 0)},
                       atom::expire_v);
  return {
      [self](atom::start) -> caf::result<action_record> {
        auto& st = self->state;
        // The directory hands the command to the device itself, in registration order.
        if (st.rec.created_at != 0) return st.rec; // resumed from the store
        st.rec.state = state::registered;
        st.rec.created_at = st.rec.updated_at = now_us();
        auto reason = "requested by " + st.rec.requested_by;
        if (!st.rec.comment.empty()) reason += ": " + st.rec.comment;
        transition t{st.rec.action_id, state::registered, st.rec.created_at, reason};
        auto rp = self->make_response_promise<action_record>();
        self->request(st.store, caf::infinite, atom::put_v, st.rec, std::move(t))
            // Answers the record as registered, even if it has moved on meanwhile.
            .then([rp, registered = st.rec](atom::ok) mutable { rp.deliver(registered); },
                  [self, rp](caf::error& err) mutable {
                    // Never registered: its place in the device's queue goes too.
                    self->send(self->state.device, atom::withdraw_v,
                               self->state.rec.action_id);
                    rp.deliver(err);
                    self->quit();
                  });
        return rp;
      },
      [self](atom::queued) {
        if (self->state.rec.state == state::registered)
          advance(self, state::queued, "device offline", [] {});
      },
      [self](atom::transmit) {
        auto& st = self->state;
        auto clear = [self] {
          self->send(self->state.device, atom::sent_v, self->state.rec.action_id);
        };
        if (st.rec.state == state::registered || st.rec.state == state::queued)
          advance(self, state::sent, "delivered to the agent", clear);
        else
          clear(); // re-delivery of a command already stored as sent
      },
      [self](atom::ack) {
        if (self->state.rec.state == state::sent)
          advance(self, state::acknowledged, "agent accepted the command", [] {});
      },
      [self](atom::result, bus::action_result& r) {
        auto& st = self->state;
        if (is_final(st.rec.state)) {
          self->send(st.device, atom::done_v, st.rec.action_id);
          return;
        }
        st.rec.result_ok = r.ok;
        st.rec.result_error = r.error;
        st.rec.result_effect = std::move(r.effect);
        auto next = r.ok ? state::completed : state::failed;
        auto reason = r.ok ? std::string{"agent reported success"}
                           : "agent reported failure: " + r.error;
        conclude(self, next, std::move(reason), [self] {
          self->send(self->state.device, atom::done_v, self->state.rec.action_id);
        });
      },
      [self](atom::noop, std::string& note) {
        auto& st = self->state;
        st.rec.result_ok = true;
        st.rec.result_error.clear();
        st.rec.result_effect = {{"note", note}};
        conclude(self, state::completed, note, [] {});
      },
      [self](atom::cancel, const std::string& user,
             const std::string& comment) -> caf::result<action_record> {
        auto& st = self->state;
        if (!withdrawable(st.rec.state))
          return make_error(ec::conflict, "action " + st.rec.action_id + " is " +
                                              to_string(st.rec.state) +
                                              ": only an action the agent has not "
                                              "acknowledged can be cancelled");
        auto reason = "cancelled by " + user + (comment.empty() ? "" : ": " + comment);
        auto rp = self->make_response_promise<action_record>();
        withdraw(self, state::cancelled, std::move(reason),
                 [self, rp]() mutable { rp.deliver(self->state.rec); });
        return rp;
      },
      [self](atom::expire) {
        if (withdrawable(self->state.rec.state))
          withdraw(self, state::expired,
                   "time to live passed before the agent accepted it", [] {});
      },
  };
}

} // namespace parry
