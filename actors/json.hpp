#pragma once

// JSON renderings of records, as the REST API shows them (docs/rest-api.md).

#include <nlohmann/json_fwd.hpp>

#include "actors/fwd.hpp"

namespace parry {

nlohmann::json to_json(const device_record& x);
nlohmann::json to_json(const action_record& x);
nlohmann::json to_json(const transition& x);
/// Summary only; `with_events` adds the chain.
nlohmann::json to_json(const incident_record& x, bool with_events);

/// `{"error": {"code": ..., "message": ...}}`.
nlohmann::json error_json(const char* code, const std::string& message);

} // namespace parry
