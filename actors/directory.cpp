#include "actors/directory.hpp"

#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "actors/incident.hpp"
#include "actors/response_action.hpp"

namespace parry {

namespace {

device_actor device_for(directory_stateful self, const std::string& id) {
  auto& st = self->state;
  auto i = st.devices.find(id);
  if (i != st.devices.end())
    return i->second;
  auto d = self->spawn<caf::linked>(device, id, st.cfg, st.store, st.gateway);
  st.devices.emplace(id, d);
  return d;
}

/// Calls `f` with the live actor of incident `id`, spawning it from the store.
template <class F, class G>
void with_incident(directory_stateful self, const std::string& id, F f, G on_error) {
  auto& st = self->state;
  if (auto i = st.incidents.find(id); i != st.incidents.end()) {
    f(i->second);
    return;
  }
  self->request(st.store, caf::infinite, atom::get_v, atom::incident_v, id)
    .then(
      [self, id, f](incident_record& rec) mutable {
        auto& st = self->state;
        // Another request may have spawned it while we waited for the store.
        if (auto i = st.incidents.find(id); i != st.incidents.end()) {
          f(i->second);
          return;
        }
        auto inc = self->spawn<caf::linked>(incident, std::move(rec), st.incident_idle);
        self->monitor(inc);
        st.incidents.emplace(id, inc);
        f(inc);
      },
      [on_error](caf::error& err) mutable { on_error(err); });
}

void register_action(directory_stateful self, action_record rec,
                     caf::typed_response_promise<action_record> rp) {
  auto& st = self->state;
  auto dev = device_for(self, rec.device_id);
  auto act = self->spawn<caf::linked>(response_action, std::move(rec), dev, st.store);
  rp.delegate(act, atom::start_v);
}

} // namespace

directory_actor::behavior_type directory(directory_stateful self, device_config cfg,
                                         caf::timespan incident_idle, store_actor store,
                                         gateway_actor gateway) {
  auto& st = self->state;
  st.cfg = cfg;
  st.incident_idle = incident_idle;
  st.store = std::move(store);
  st.gateway = std::move(gateway);
  self->set_down_handler([self](const caf::down_msg& msg) {
    auto& incidents = self->state.incidents;
    for (auto i = incidents.begin(); i != incidents.end(); ++i)
      if (i->second.address() == msg.source) {
        incidents.erase(i);
        return;
      }
  });
  return {
    [self](atom::hello, const std::string& id, bus::hello& h) {
      self->send(device_for(self, id), atom::hello_v, std::move(h));
    },
    [self](atom::heartbeat, const std::string& id, const bus::heartbeat& hb) {
      self->send(device_for(self, id), atom::heartbeat_v, hb);
    },
    [self](atom::incident, const std::string& id, bus::incident_report& r) {
      self->send(device_for(self, id), atom::incident_v, std::move(r));
    },
    [self](atom::ack, const std::string& id, std::string& action_id) {
      self->send(device_for(self, id), atom::ack_v, std::move(action_id));
    },
    [self](atom::result, const std::string& id, bus::action_result& r) {
      self->send(device_for(self, id), atom::result_v, std::move(r));
    },
    [self](atom::unreach, const std::string& id) {
      if (auto i = self->state.devices.find(id); i != self->state.devices.end())
        self->send(i->second, atom::unreach_v);
    },
    [self](atom::reg, action_request& req) -> caf::result<action_record> {
      auto rp = self->make_response_promise<action_record>();
      auto fail = [rp](caf::error& err) mutable { rp.deliver(err); };
      with_incident(
        self, req.incident_id,
        [self, req, rp, fail](incident_actor inc) mutable {
          self->request(inc, caf::infinite, atom::reg_v, req)
            .then(
              [self, rp, fail](action_record& rec) mutable {
                if (rec.type != "release_isolation") {
                  register_action(self, std::move(rec), rp);
                  return;
                }
                // Release applies only to an isolated device (DESIGN.md §2).
                auto dev = device_for(self, rec.device_id);
                self->request(dev, caf::infinite, atom::get_v)
                  .then(
                    [self, rec, rp](const device_record& d) mutable {
                      if (!d.isolated)
                        rp.deliver(make_error(ec::not_applicable,
                                              "device " + d.device_id
                                                + " is not isolated"));
                      else
                        register_action(self, std::move(rec), rp);
                    },
                    fail);
              },
              fail);
        },
        fail);
      return rp;
    },
    [self](atom::resume) -> caf::result<uint64_t> {
      auto rp = self->make_response_promise<uint64_t>();
      self->request(self->state.store, caf::infinite, atom::open_v)
        .then(
          [self, rp](std::vector<action_record>& open) mutable {
            // In registration order, so each device gets its commands in order.
            for (auto& rec : open) {
              auto dev = device_for(self, rec.device_id);
              auto cmd = to_command(rec);
              auto act = self->spawn<caf::linked>(response_action, std::move(rec), dev,
                                     self->state.store);
              self->send(dev, atom::submit_v, std::move(cmd), act);
            }
            spdlog::info("resumed {} open actions", open.size());
            rp.deliver(static_cast<uint64_t>(open.size()));
          },
          [rp](caf::error& err) mutable { rp.deliver(err); });
      return rp;
    },
    [self](atom::get, const std::string& id) { return device_for(self, id); },
  };
}

} // namespace parry
