#pragma once

// One simulated endpoint, without sockets: the simulated machine and its executor
// (agent-sim/sim_executor.hpp), the protocol session that drives them
// (agent-sim/agent_session.hpp), and what this file owns itself: drawing the
// endpoint's identity from the seed and instantiating scenarios into incidents. The
// runner feeds it frames, link events and the clock and sends what it returns, so
// every behaviour here can be tested by calling methods directly.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "agent-sim/agent_session.hpp"
#include "agent-sim/scenario.hpp"
#include "agent-sim/sim_executor.hpp"
#include "agent-sim/sim_rng.hpp"
#include "bus/messages.hpp"

namespace parry::sim {

/// Settings shared by every endpoint of a run.
struct endpoint_config {
  std::string id_prefix = "sim";               ///< Device ids are `<prefix>-0000`, ...
  uint64_t seed = 1;                           ///< Same seed, same endpoints and chains.
  std::string server = "tcp://127.0.0.1:7400"; ///< Named in the isolation rules.
  int64_t incident_interval_us = 30'000'000;   ///< Mean time between incidents.
  uint64_t max_incidents = 0;                  ///< Per endpoint; 0 means unlimited.
  bool report_incidents = true; ///< False: none at all (connection and action runs).
  uint32_t heartbeat_ms = 0;    ///< 0 means what the welcome says.
  /// Part of every report id, so a restarted run with the same seed does not reuse
  /// ids the server has already seen. Empty in `--generate` dumps.
  std::string run_tag;
  /// The server's Ed25519 public key (32 raw bytes) every command must be signed
  /// with; empty on a plain bus (session_config::server_signing_key).
  std::string server_signing_key;
};

/// Device id of endpoint `index`: prefix, dash, at least four digits.
std::string device_id_for(const std::string& prefix, std::size_t index);

/// Counters of one endpoint: the session's and the simulation's.
struct endpoint_stats : session_stats {
  uint64_t incidents = 0;            ///< Incident reports produced.
  uint64_t blocked_starts = 0;       ///< Process starts refused: prevented hash.
  uint64_t suppressed_incidents = 0; ///< Incidents not reported: nothing of them ran.
};

class sim_endpoint {
public:
  /// Time between hellos while no welcome has arrived.
  static constexpr int64_t hello_retry_us = agent_session::hello_retry_us;
  /// Time between re-sends of results the server has not acknowledged.
  static constexpr int64_t result_resend_us = agent_session::result_resend_us;
  /// Processes and files kept from incidents; the oldest exit or are cleaned up, so
  /// a long run with thousands of endpoints stays within bounded memory.
  static constexpr std::size_t max_incident_processes =
      sim_executor::max_incident_processes;
  static constexpr std::size_t max_files = sim_executor::max_files;
  /// Journal entries kept; beyond this the oldest action is forgotten.
  static constexpr std::size_t max_journal = agent_session::max_journal;
  /// Quarantine entries kept; beyond this the oldest is purged, as by retention.
  static constexpr std::size_t max_quarantine = sim_executor::max_quarantine;
  /// Hashes a prevent list holds; prevent_run fails beyond it.
  static constexpr std::size_t max_prevented = sim_executor::max_prevented;
  /// Commands kept while on hold; later ones are dropped (the server re-sends).
  static constexpr std::size_t max_pending = agent_session::max_pending;
  /// Bound on each of stdout and stderr in a start_process result.
  static constexpr std::size_t max_output = sim_executor::max_output;

  /// Endpoint number `index` of a run. `scenarios` must outlive the endpoint and
  /// hold at least one scenario; `started_at` is the wall clock at start.
  sim_endpoint(std::size_t index, const endpoint_config& cfg,
               const std::vector<scenario>& scenarios, int64_t started_at);
  ~sim_endpoint();
  sim_endpoint(sim_endpoint&&) noexcept;
  sim_endpoint& operator=(sim_endpoint&&) noexcept;

  /// The device id, also the routing id of its connection.
  const std::string& device_id() const { return session_.device_id(); }
  /// Hostname, OS, agent version and addresses as sent in `hello`.
  const bus::hello& identity() const { return host_->machine().identity; }
  /// "windows" or "linux".
  const std::string& os_family() const { return host_->machine().os_family; }
  /// The desktop user, as filled into `{user}`.
  const std::string& user() const { return host_->machine().user; }
  /// Whether the endpoint currently enforces isolation.
  bool isolated() const { return host_->isolated(); }
  /// Running processes by pid.
  const std::map<uint32_t, bus::process_info>& processes() const {
    return host_->processes();
  }
  /// Files by path. Known system binaries are not listed until something uses them.
  const std::map<std::string, bus::file_info>& files() const { return host_->files(); }
  /// True when a file is at `path`, a known system binary included unless removed.
  bool has_file(const std::string& path) const { return host_->has_file(path); }
  /// True when the process `pid` started at `start_time` is running.
  bool has_process(uint32_t pid, int64_t start_time) const {
    return host_->has_process(pid, start_time);
  }
  /// Hashes that may not start here (desired state set by prevent_run).
  const std::set<std::string>& prevented() const { return host_->prevented(); }
  /// Quarantined files by quarantine id (`q-<hex>`).
  const std::map<std::string, bus::file_info>& quarantine() const {
    return host_->quarantine();
  }
  /// How process `pid` was launched by start_process; null for any other process.
  const launch_info* launched(uint32_t pid) const { return host_->launched(pid); }
  /// Counters, the session's and the simulation's together.
  endpoint_stats stats() const;
  /// The protocol session, for the runner that carries its messages.
  agent_session& session() { return session_; }

  /// Instantiates the next scenario: picks it, fills in pids, hashes, sizes and
  /// names from the seeded generator, records processes and files, and stamps
  /// times ending at `now`. While isolated the chain has no network_connection
  /// events. A process whose image hash is prevented does not start: it and every
  /// event below it are left out (each counts as a blocked start); if that removes
  /// the key event, the key moves to the event that wrote its file, and without one
  /// the report has no events and must not be sent. Consumes the generator
  /// identically either way, so a seed gives the same sequence of scenarios whatever
  /// happens to the endpoint.
  bus::incident_report next_incident(int64_t now);

  /// Executes `cmd` at most once per action id: a repeated id gets the stored
  /// result back without a second effect. Logs `executed <id> <type> on <device>:
  /// ok|<error>` once per execution. Never throws on bad parameters: they fail.
  command_outcome handle_command(const bus::command& cmd, int64_t now) {
    return session_.handle_command(cmd, now);
  }

  /// Test hooks. While `commands` is set, commands received are kept in order, one
  /// per action id, neither acknowledged nor executed nor journaled; once it is
  /// cleared the next `tick` handles them as if they had just arrived. While
  /// `results` is set, commands are acknowledged and executed but no result is sent
  /// (first or re-sent); once cleared, the usual re-sending delivers them.
  void set_hold(bool commands, bool results) { session_.set_hold(commands, results); }
  /// Whether commands are held (see `set_hold`).
  bool holding_commands() const { return session_.holding_commands(); }
  /// Whether results are held (see `set_hold`).
  bool holding_results() const { return session_.holding_results(); }
  /// Action ids of held commands, in arrival order.
  std::vector<std::string> pending_commands() const {
    return session_.pending_commands();
  }

  /// Action ids whose result has not been acknowledged by the server.
  std::vector<std::string> unacked_results() const { return session_.unacked_results(); }

  /// Records that the server stored the result of `action_id`. False if unknown.
  bool acknowledge_result(const std::string& action_id) {
    return session_.acknowledge_result(action_id);
  }

  // -- protocol (agent_session): the runner calls these and sends what they return --

  /// The first hello. The socket queues it until the connection is up.
  std::vector<outbound> start(int64_t now) { return session_.start(now); }

  /// The connection is up. After a reconnect the server may have restarted, so the
  /// endpoint says hello again and waits for a new welcome.
  std::vector<outbound> on_link_up(int64_t now) { return session_.on_link_up(now); }

  /// The connection dropped: no heartbeats or incidents until the next welcome.
  void on_link_down() { session_.on_link_down(); }

  /// One message from the server. Bad or unknown frames are counted and dropped.
  std::vector<outbound> on_message(std::string_view header_frame,
                                   std::string_view body_frame, int64_t now) {
    return session_.on_message(header_frame, body_frame, now);
  }

  /// Counts a message the runner could not even split into two frames.
  void count_bad_frame() { session_.count_bad_frame(); }

  /// Whatever the timers ask for at `now`: hello retry, released held commands,
  /// heartbeat, incident, result re-sends.
  std::vector<outbound> tick(int64_t now) { return session_.tick(now); }

  /// When `tick` next has something to do (0 when it has now); max int64 when
  /// nothing is scheduled.
  int64_t next_due() const { return session_.next_due(); }

  /// True while the connection to the server is up.
  bool link_up() const { return session_.link_up(); }

  /// True between a welcome and the next link loss.
  bool welcomed() const { return session_.welcomed(); }

  /// Heartbeat interval in use (from the welcome unless overridden).
  int64_t heartbeat_interval_us() const { return session_.heartbeat_interval_us(); }

private:
  class incidents; // scenario instantiation, in sim_endpoint.cpp

  // On the heap so that the session's pointers to them survive a move.
  std::unique_ptr<sim_executor> host_;
  std::unique_ptr<incidents> incidents_;
  agent_session session_;
};

/// One line of JSON describing an endpoint's identity (no times).
std::string describe_endpoint(const sim_endpoint& ep);

/// One line of JSON describing an incident without any time, so that two runs with
/// the same seed print the same bytes.
std::string describe_incident(const std::string& device_id,
                              const bus::incident_report& report);

} // namespace parry::sim
