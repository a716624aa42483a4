// libFuzzer harness: agent-sim's scenario loader (agent-sim/scenario.cpp). Any text
// must either load into a scenario that keeps the loader's promises or be refused
// with a scenario_error; any other exception, a crash or a sanitizer report is a bug.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "agent-sim/scenario.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto s = parry::sim::parse_scenario(text, "fuzz.toml");
    // Promises of scenario.hpp: parents come first, the key event exists.
    if (s.events.empty() || s.key_index >= s.events.size()) std::abort();
    for (std::size_t i = 0; i < s.events.size(); ++i) {
      auto p = s.events[i].parent_index;
      if (p != parry::sim::no_parent && p >= i) std::abort();
      if (!parry::sim::known_event_type(s.events[i].type)) std::abort();
    }
  } catch (const parry::sim::scenario_error&) {
  }
  return 0;
}
