#include "actors/response_action.hpp"

#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "common/time.hpp"

namespace parry {

namespace {

/// Stores the move to `next`, and only then runs `then` (DESIGN.md §4: a
/// transition is written before it is acted on or reported).
template <class F>
void advance(response_action_stateful self, const char* next, std::string reason,
             F then) {
  auto& rec = self->state.rec;
  rec.state = next;
  rec.updated_at = now_us();
  transition t{rec.action_id, next, rec.updated_at, std::move(reason)};
  self->request(self->state.store, caf::infinite, atom::update_v, rec, std::move(t))
    .then([then](atom::ok) mutable { then(); },
          [self, next](caf::error& err) {
            // Without the record we must not act: stop here, loudly. A restart
            // resumes the action from its last stored state.
            spdlog::error("action {}: cannot store state {}: {}",
                          self->state.rec.action_id, next, message_of(err));
            self->quit(err);
          });
}

void submit(response_action_stateful self) {
  self->send(self->state.device, atom::submit_v, to_command(self->state.rec),
             caf::actor_cast<response_action_actor>(self));
}

} // namespace

bus::command to_command(const action_record& rec) {
  bus::command cmd;
  cmd.action_id = rec.action_id;
  cmd.type = rec.type;
  cmd.params = rec.params;
  return cmd;
}

response_action_actor::behavior_type response_action(response_action_stateful self,
                                                     action_record rec,
                                                     device_actor device,
                                                     store_actor store) {
  self->state.rec = std::move(rec);
  self->state.device = std::move(device);
  self->state.store = std::move(store);
  return {
    [self](atom::start) -> caf::result<action_record> {
      auto& st = self->state;
      if (!st.rec.state.empty())
        return st.rec; // resumed: the directory re-submits in registration order
      st.rec.state = state::registered;
      st.rec.created_at = st.rec.updated_at = now_us();
      auto reason = "requested by " + st.rec.requested_by;
      if (!st.rec.comment.empty())
        reason += ": " + st.rec.comment;
      transition t{st.rec.action_id, state::registered, st.rec.created_at, reason};
      auto rp = self->make_response_promise<action_record>();
      self->request(st.store, caf::infinite, atom::put_v, st.rec, std::move(t))
        .then(
          [self, rp](atom::ok) mutable {
            rp.deliver(self->state.rec);
            submit(self);
          },
          [self, rp](caf::error& err) mutable {
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
      advance(self, next, std::move(reason), [self] {
        self->send(self->state.device, atom::done_v, self->state.rec.action_id);
        self->quit();
      });
    },
    [self](atom::done, std::string& note) {
      auto& st = self->state;
      st.rec.result_ok = true;
      st.rec.result_error.clear();
      st.rec.result_effect = {{"note", note}};
      advance(self, state::completed, note, [self] { self->quit(); });
    },
  };
}

} // namespace parry
