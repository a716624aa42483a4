#pragma once

// Scenario files: the threat development chains a simulated endpoint reports. A
// scenario is a template; sim_endpoint instantiates it with pids, hashes, sizes and
// names drawn from its seeded generator. Loading is strict: a file that is not
// exactly right is refused with a message naming the file, the line and the key.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bus/messages.hpp"

namespace parry::sim {

/// A scenario file that cannot be used; `what()` names the file and the key.
class scenario_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Event types a scenario may use.
inline constexpr const char* event_types[] = {"process_started", "file_created",
                                              "file_modified", "module_loaded",
                                              "network_connection"};

/// True when `type` is one of `event_types`.
bool known_event_type(std::string_view type);

/// Marks a root event in `scenario_event::parent_index`.
inline constexpr std::size_t no_parent = static_cast<std::size_t>(-1);

/// One step of a chain as written in the file. String fields may hold the
/// placeholders {user}, {domain}, {host}, {rand} and {c2}, filled per incident.
struct scenario_event {
  std::string id;     ///< Local id, unique in the scenario; becomes the event id.
  std::string type;   ///< One of `event_types`.
  std::string parent; ///< Local id of the causing event, empty for a root.
  std::size_t parent_index = no_parent; ///< Index of `parent` in the event list.
  bool key = false;                     ///< Holds the threat detection object.
  std::string path;       ///< Image (process_started) or file the event is about.
  std::string cmdline;    ///< process_started only.
  std::string user;       ///< process_started; empty means the acting process's user.
  std::string actor;      ///< Root only: image of the already running process acting.
  std::string actor_user; ///< Root only: user of `actor`; empty means the desktop user.
  std::string sha256;     ///< Fixed hash; empty means derived by the endpoint.
  uint64_t size_min = 0;  ///< File size range; 0/0 means the endpoint's default.
  uint64_t size_max = 0;
  std::string remote;   ///< network_connection: "host:port".
  std::string protocol; ///< network_connection: tcp or udp.
  std::string detail;   ///< Free text for the event's detail field.
};

/// One threat development chain with its detection.
struct scenario {
  std::string name;   ///< Unique across the loaded set.
  std::string source; ///< File it came from, for messages.
  std::string os;     ///< "windows" or "linux": which endpoints may report it.
  std::string description;
  uint32_t weight = 1; ///< Relative frequency among the scenarios for an OS.
  bus::detection det;
  std::vector<scenario_event> events; ///< In chain order; parents come first.
  std::size_t key_index = 0;          ///< Index of the key event in `events`.
};

/// Parses and validates one scenario. `source` names the text in error messages.
/// Throws scenario_error.
scenario parse_scenario(std::string_view toml_text, const std::string& source);

/// Reads and parses one file. Throws scenario_error.
scenario load_scenario_file(const std::filesystem::path& file);

/// Loads every `*.toml` in `dir`, in file name order. Throws scenario_error when the
/// directory is missing, holds no scenario, a file is invalid or two share a name.
std::vector<scenario> load_scenarios(const std::filesystem::path& dir);

} // namespace parry::sim
