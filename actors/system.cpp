#include <string>
#include <vector>

#include "actors/fwd.hpp"
#include "common/domain.hpp"

namespace parry {

bool action_policy::needs_password(action_type type) const {
  // start_process always, whatever the configuration says.
  if (password_always(type)) return true;
  for (auto t : password_required)
    if (t == type) return true;
  return false;
}

int64_t action_policy::ttl_for(action_type type) const {
  auto i = ttl_us.find(type);
  return i == ttl_us.end() ? default_ttl_us : i->second;
}

int64_t action_policy::exec_deadline_for(action_type type) const {
  auto i = exec_deadline_us.find(type);
  return i == exec_deadline_us.end() ? default_exec_deadline_us : i->second;
}

} // namespace parry
