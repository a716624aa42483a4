#include <string>
#include <vector>

#include "actors/fwd.hpp"
#include "common/domain.hpp"

namespace parry {

bool action_policy::needs_password(const std::string& type) const {
  // start_process always, whatever the configuration says.
  if (auto t = action_type_from_string(type); t && password_always(*t)) return true;
  for (const auto& t : password_required)
    if (t == type) return true;
  return false;
}

int64_t action_policy::ttl_for(const std::string& type) const {
  auto i = ttl_us.find(type);
  return i == ttl_us.end() ? default_ttl_us : i->second;
}

} // namespace parry
