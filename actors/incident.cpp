#include "actors/incident.hpp"

#include <caf/after.hpp>
#include <caf/expected.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/error.hpp"
#include "common/crypto.hpp"

namespace parry {

std::string object_of(const std::string& type) {
  if (type == "isolate" || type == "release_isolation" || type == "start_process")
    return "device";
  if (type == "prevent_run" || type == "quarantine" || type == "delete_file"
      || type == "allow_run" || type == "restore_from_quarantine")
    return "file";
  if (type == "terminate_process")
    return "process";
  return {};
}

bool executable(const std::string& type) {
  return type == "isolate" || type == "release_isolation";
}

caf::expected<action_record> make_action(const incident_record& rec,
                                         const action_request& req) {
  auto object = object_of(req.type);
  if (object.empty())
    return make_error(ec::bad_request, "unknown action type '" + req.type + "'");
  if (!executable(req.type))
    return make_error(ec::not_applicable,
                      "action type '" + req.type + "' is not available on this server yet");
  const auto& chain = rec.report;
  std::string event_id;
  if (req.target_kind == "detection") {
    event_id = chain.key_event_id;
  } else if (req.target_kind == "event") {
    event_id = req.event_id;
  } else {
    return make_error(ec::bad_request, "target.kind must be 'detection' or 'event'");
  }
  const bus::activity_event* event = nullptr;
  for (const auto& e : chain.events)
    if (e.id == event_id)
      event = &e;
  if (event == nullptr)
    return make_error(ec::not_found, "incident " + rec.incident_id + " has no event '"
                                       + event_id + "'");
  // File and process actions need an event about that kind of object.
  if (object == "file" && event->type != "file_created" && event->type != "process_started")
    return make_error(ec::not_applicable, req.type + " does not apply to an event of type "
                                            + event->type);
  if (object == "process" && event->type != "process_started")
    return make_error(ec::not_applicable, req.type + " does not apply to an event of type "
                                            + event->type);
  action_record a;
  a.action_id = "act-" + random_hex(12);
  a.type = req.type;
  a.device_id = rec.device_id;
  a.incident_id = rec.incident_id;
  a.target_kind = req.target_kind;
  a.target_event_id = event_id;
  a.params = req.params;
  a.requested_by = req.username;
  a.comment = req.comment;
  a.idempotency_key = req.idempotency_key;
  return a;
}

incident_actor::behavior_type incident(incident_stateful self, incident_record rec,
                                       caf::timespan idle) {
  self->state.rec = std::move(rec);
  return {
    [self](atom::reg, const action_request& req) -> caf::result<action_record> {
      auto a = make_action(self->state.rec, req);
      if (!a)
        return a.error();
      return std::move(*a);
    },
    caf::after(idle) >> [self] { self->quit(); },
  };
}

} // namespace parry
