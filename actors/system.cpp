#include <string>
#include <vector>

#include "actors/fwd.hpp"

namespace parry {

bool is_final(const std::string& st) {
  return st == state::completed || st == state::failed || st == state::expired ||
         st == state::cancelled || st == state::reverted;
}

bool action_policy::needs_password(const std::string& type) const {
  if (type == "start_process") return true; // always, whatever the configuration says
  for (const auto& t : password_required)
    if (t == type) return true;
  return false;
}

int64_t action_policy::ttl_for(const std::string& type) const {
  auto i = ttl_us.find(type);
  return i == ttl_us.end() ? default_ttl_us : i->second;
}

} // namespace parry
