#include <string>

#include "actors/fwd.hpp"

namespace parry {

bool is_final(const std::string& st) {
  return st == state::completed || st == state::failed;
}

} // namespace parry
