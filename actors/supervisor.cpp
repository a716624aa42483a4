#include "actors/supervisor.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/api.hpp"
#include "actors/auth.hpp"

namespace parry {

namespace {

struct supervisor_state {
  static inline constexpr const char* name = "supervisor";
  /// The supervised actor as it is now.
  caf::actor child;
};

/// Delegates every message to its child and starts a new child when the old one ends
/// (an exception, an error exit). Exits, and ends its child, on an exit message.
caf::behavior supervisor(caf::stateful_actor<supervisor_state>* self, std::string what,
                         std::function<caf::actor()> make,
                         std::shared_ptr<supervision_stats> stats,
                         std::atomic<uint64_t> supervision_stats::*restarts) {
  auto start = [self, make] {
    self->state.child = make();
    self->monitor(self->state.child);
  };
  start();
  self->set_down_handler([self, what, start, stats, restarts](caf::down_msg& dm) {
    if (dm.source != self->state.child) return;
    ++((*stats).*restarts);
    spdlog::error("{} ended ({}); started again", what, to_string(dm.reason));
    start();
  });
  self->set_exit_handler([self](caf::exit_msg& em) {
    self->demonitor(self->state.child);
    self->send_exit(self->state.child, em.reason);
    self->quit(em.reason);
  });
  self->set_default_handler(
      [self](caf::scheduled_actor*, caf::message_view& x) -> caf::result<caf::message> {
        auto rp = self->make_response_promise();
        rp.delegate(self->state.child, x.move_content_to_message());
        return caf::delegated<caf::message>{};
      });
  // Nothing of its own: everything goes through the default handler.
  return {[](atom::flush) {}};
}

} // namespace

api_actor spawn_supervised_api(caf::actor_system& sys, api_state deps) {
  auto stats = deps.supervision;
  auto make = [&sys, deps] { return caf::actor_cast<caf::actor>(sys.spawn(api, deps)); };
  return caf::actor_cast<api_actor>(sys.spawn(supervisor, std::string{"api"}, make, stats,
                                              &supervision_stats::api_restarts));
}

auth_actor spawn_supervised_auth(caf::actor_system& sys,
                                 std::shared_ptr<supervision_stats> stats,
                                 shared_setting<auth_config> cfg, store_actor store,
                                 hasher_actor hasher) {
  auto make = [&sys, cfg, store, hasher] {
    return caf::actor_cast<caf::actor>(sys.spawn(auth, cfg, store, hasher));
  };
  return caf::actor_cast<auth_actor>(sys.spawn(supervisor, std::string{"auth"}, make,
                                               stats, &supervision_stats::auth_restarts));
}

} // namespace parry
