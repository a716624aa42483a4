#pragma once

// The simulated machine and the executor that acts on it: process table, file system
// (with the system binaries every install has), quarantine, prevented hashes,
// isolation, and what a few well-known programs print. Each action changes these
// tables as the real one would change the host; nothing leaves the process. The
// incident generator (sim_endpoint.cpp) reads and extends the same tables.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent-sim/executor.hpp"
#include "agent-sim/sim_rng.hpp"
#include "bus/messages.hpp"

namespace parry::sim {

/// Facts about one simulated machine, drawn once when its endpoint is made.
struct sim_machine {
  std::size_t index = 0;  ///< Endpoint number; salts pids derived from images.
  bus::hello identity;    ///< Hostname, OS, agent version and addresses.
  std::string os_family;  ///< "windows" or "linux".
  std::string user;       ///< The desktop user.
  std::string domain;     ///< The user's Windows domain.
  int64_t boot_time = 0;  ///< Microseconds since the epoch.
  uint32_t first_pid = 0; ///< Pid allocation starts after it.
  std::string server;     ///< Named in the isolation rules.
};

/// How a process started by `start_process` was launched; the bus process_info has
/// no room for it.
struct launch_info {
  std::string working_directory;
  std::vector<std::string> argv; ///< argv[0] is the executable's path.
};

/// File name of a path, after the last '/' or '\'.
std::string base_name(const std::string& path);

class sim_executor final : public executor {
public:
  /// Processes and files kept from incidents; the oldest exit or are cleaned up, so
  /// a long run with thousands of endpoints stays within bounded memory.
  static constexpr std::size_t max_incident_processes = 64;
  static constexpr std::size_t max_files = 256;
  /// Quarantine entries kept; beyond this the oldest is purged, as by retention.
  static constexpr std::size_t max_quarantine = 256;
  /// Hashes a prevent list holds; prevent_run fails beyond it.
  static constexpr std::size_t max_prevented = 4096;
  /// Bound on each of stdout and stderr in a start_process result.
  static constexpr std::size_t max_output = 4096;

  /// `action_rng` draws the pids and quarantine ids that actions make.
  sim_executor(sim_machine machine, sim_rng action_rng);

  // -- executor ---------------------------------------------------------------------

  execution isolate() override;
  execution release_isolation() override;
  execution terminate_process(const terminate_args& p) override;
  execution start_process(const start_args& p, int64_t now) override;
  execution quarantine(const file_args& p) override;
  execution restore_from_quarantine(const restore_args& p) override;
  execution delete_file(const file_args& p) override;
  execution prevent_run(const hash_args& p) override;
  execution allow_run(const hash_args& p) override;
  /// Nothing was prepared ahead, so nothing to drop.
  void cancelled_before_start(const std::string&) override {}
  bool isolated() const override { return isolated_; }

  // -- state ------------------------------------------------------------------------

  /// The machine's fixed facts.
  const sim_machine& machine() const { return machine_; }
  /// True on a Windows machine.
  bool windows() const { return windows_; }
  /// Running processes by pid.
  const std::map<uint32_t, bus::process_info>& processes() const { return processes_; }
  /// Files by path. Known system binaries are not listed until something uses them.
  const std::map<std::string, bus::file_info>& files() const { return files_; }
  /// True when a file is at `path`, a known system binary included unless removed.
  bool has_file(const std::string& path) const;
  /// True when the process `pid` started at `start_time` is running.
  bool has_process(uint32_t pid, int64_t start_time) const;
  /// Hashes that may not start here (desired state set by prevent_run).
  const std::set<std::string>& prevented() const { return prevented_; }
  /// Quarantined files by quarantine id (`q-<hex>`).
  const std::map<std::string, bus::file_info>& quarantine() const { return quarantine_; }
  /// How process `pid` was launched by start_process; null for any other process.
  const launch_info* launched(uint32_t pid) const;
  /// Process starts refused because their image hash is prevented.
  uint64_t blocked_starts() const { return blocked_starts_; }

  // -- table operations, also used to instantiate incidents --------------------------

  /// A free pid; `draw` decides the step so the generator is consumed the same way
  /// whatever the table holds.
  uint32_t allocate_pid(uint64_t draw);
  /// The file of an executable or module at `path`, recorded if new: the same path
  /// has the same hash and size on every endpoint unless `sha256` is given.
  bus::file_info image_file(const std::string& path, const std::string& sha256);
  /// Records (or replaces) a file; the oldest is forgotten beyond `max_files`.
  void put_file(const bus::file_info& f);
  /// A process already running when a chain began (explorer, w3wp, ...), started
  /// again if it was terminated; null when its image is prevented.
  const bus::process_info* running(const std::string& image, const std::string& user,
                                   int64_t at);
  /// Records a process; the oldest incident process exits beyond the bound.
  void add_process(const bus::process_info& p);
  /// Counts a start refused by prevention while instantiating an incident.
  void count_blocked_start() { ++blocked_starts_; }

private:
  struct run_output {
    int exit_code = 0;
    std::string out, err;
  };
  run_output program_output(const std::string& image,
                            const std::vector<std::string>& args, const std::string& cwd,
                            int depth) const;
  void remove_file(const std::string& path);
  const bus::file_info* find_file(const std::string& path);
  void remove_process(uint32_t pid);

  sim_machine machine_;
  bool windows_;
  sim_rng action_rng_; ///< Pids and ids made by actions, apart from incidents.
  uint32_t next_pid_;

  std::map<uint32_t, bus::process_info> processes_;
  std::map<std::string, uint32_t> base_processes_; ///< Image -> pid, never evicted.
  std::deque<std::pair<uint32_t, int64_t>>
      incident_pids_; ///< (pid, start), oldest first.
  std::map<std::string, bus::file_info> files_;
  std::deque<std::string> file_order_;   ///< Oldest first.
  std::set<std::string> removed_system_; ///< System binaries deleted or quarantined.
  std::map<uint32_t, launch_info> launched_;

  bool isolated_ = false;
  std::set<std::string> prevented_;
  std::map<std::string, bus::file_info> quarantine_;
  std::deque<std::string> quarantine_order_; ///< Oldest first.
  uint64_t blocked_starts_ = 0;
};

} // namespace parry::sim
