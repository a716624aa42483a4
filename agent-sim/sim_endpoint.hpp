#pragma once

// One simulated endpoint, without sockets: identity, process table, file system,
// quarantine, prevented hashes, isolation state, command journal and protocol timers. The
// runner feeds it frames, link events and the clock and sends what it returns, so every
// behaviour here can be tested by calling methods directly.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agent-sim/scenario.hpp"
#include "bus/codec.hpp"
#include "bus/messages.hpp"

namespace parry::sim {

/// Deterministic generator (splitmix64). Unlike the std distributions its output is
/// the same with every standard library, so a seed means the same run everywhere.
class sim_rng {
public:
  explicit sim_rng(uint64_t seed = 0) : state_(seed) {}

  /// An independent stream for one endpoint and purpose.
  static sim_rng derive(uint64_t seed, uint64_t index, uint64_t stream);

  /// Next 64 random bits.
  uint64_t next();

  /// Uniform in [lo, hi]; the modulo bias is negligible at simulation ranges.
  uint64_t between(uint64_t lo, uint64_t hi);

private:
  uint64_t state_;
};

/// Settings shared by every endpoint of a run.
struct endpoint_config {
  std::string id_prefix = "sim";               ///< Device ids are `<prefix>-0000`, ...
  uint64_t seed = 1;                           ///< Same seed, same endpoints and chains.
  std::string server = "tcp://127.0.0.1:7400"; ///< Named in the isolation rules.
  int64_t incident_interval_us = 30'000'000;   ///< Mean time between incidents.
  uint64_t max_incidents = 0;                  ///< Per endpoint; 0 means unlimited.
  uint32_t heartbeat_ms = 0;                   ///< 0 means what the welcome says.
  /// Part of every report id, so a restarted run with the same seed does not reuse
  /// ids the server has already seen. Empty in `--generate` dumps.
  std::string run_tag;
};

/// Device id of endpoint `index`: prefix, dash, at least four digits.
std::string device_id_for(const std::string& prefix, std::size_t index);

/// One message to send: its header and its encoded body frame.
struct outbound {
  bus::header head;
  std::string body;
};

/// What the endpoint did with one command.
struct command_outcome {
  bus::action_ack ack;
  bus::action_result result;
  bool executed = false; ///< False when the journal already held this action id.
};

/// Counters of one endpoint.
struct endpoint_stats {
  uint64_t frames_in = 0;          ///< Messages received from the server.
  uint64_t bad_frames = 0;         ///< Dropped: malformed, wrong device, bad body.
  uint64_t unknown_frames = 0;     ///< Dropped: well formed but of a type we ignore.
  uint64_t messages_out = 0;       ///< Messages handed to the runner to send.
  uint64_t incidents = 0;          ///< Incident reports produced.
  uint64_t commands_executed = 0;  ///< Commands run (journal misses).
  uint64_t duplicate_commands = 0; ///< Commands answered from the journal.
  uint64_t welcomes = 0;
  uint64_t blocked_starts = 0;       ///< Process starts refused: prevented hash.
  uint64_t suppressed_incidents = 0; ///< Incidents not reported: nothing of them ran.
  uint64_t held_commands = 0;        ///< Commands put on hold by the test hook.
  uint64_t cancelled_commands = 0;   ///< `cancel`s that came in time: never ran.
  uint64_t late_cancels = 0;         ///< `cancel`s for commands already executed.
};

/// How a process started by `start_process` was launched; the bus process_info has
/// no room for it.
struct launch_info {
  std::string working_directory;
  std::vector<std::string> argv; ///< argv[0] is the executable's path.
};

class sim_endpoint {
public:
  /// Time between hellos while no welcome has arrived.
  static constexpr int64_t hello_retry_us = 3'000'000;
  /// Time between re-sends of results the server has not acknowledged.
  static constexpr int64_t result_resend_us = 1'000'000;
  /// Processes and files kept from incidents; the oldest exit or are cleaned up, so
  /// a long run with thousands of endpoints stays within bounded memory.
  static constexpr std::size_t max_incident_processes = 64;
  static constexpr std::size_t max_files = 256;
  /// Journal entries kept; beyond this the oldest action is forgotten.
  static constexpr std::size_t max_journal = 4096;
  /// Quarantine entries kept; beyond this the oldest is purged, as by retention.
  static constexpr std::size_t max_quarantine = 256;
  /// Hashes a prevent list holds; prevent_run fails beyond it.
  static constexpr std::size_t max_prevented = 4096;
  /// Commands kept while on hold; later ones are dropped (the server re-sends).
  static constexpr std::size_t max_pending = 4096;
  /// Bound on each of stdout and stderr in a start_process result.
  static constexpr std::size_t max_output = 4096;

  /// Endpoint number `index` of a run. `scenarios` must outlive the endpoint and
  /// hold at least one scenario; `started_at` is the wall clock at start.
  sim_endpoint(std::size_t index, const endpoint_config& cfg,
               const std::vector<scenario>& scenarios, int64_t started_at);

  /// The device id, also the routing id of its connection.
  const std::string& device_id() const { return device_id_; }
  /// Hostname, OS, agent version and addresses as sent in `hello`.
  const bus::hello& identity() const { return identity_; }
  /// "windows" or "linux".
  const std::string& os_family() const { return os_family_; }
  /// The desktop user, as filled into `{user}`.
  const std::string& user() const { return user_; }
  /// Whether the endpoint currently enforces isolation.
  bool isolated() const { return isolated_; }
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
  /// Counters.
  const endpoint_stats& stats() const { return stats_; }

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
  command_outcome handle_command(const bus::command& cmd, int64_t now);

  /// Test hooks. While `commands` is set, commands received are kept in order, one
  /// per action id, neither acknowledged nor executed nor journaled; once it is
  /// cleared the next `tick` handles them as if they had just arrived. While
  /// `results` is set, commands are acknowledged and executed but no result is sent
  /// (first or re-sent); once cleared, the usual re-sending delivers them.
  void set_hold(bool commands, bool results);
  /// Whether commands are held (see `set_hold`).
  bool holding_commands() const { return hold_commands_; }
  /// Whether results are held (see `set_hold`).
  bool holding_results() const { return hold_results_; }
  /// Action ids of held commands, in arrival order.
  std::vector<std::string> pending_commands() const;

  /// Action ids whose result has not been acknowledged by the server.
  std::vector<std::string> unacked_results() const;

  /// Records that the server stored the result of `action_id`. False if unknown.
  bool acknowledge_result(const std::string& action_id);

  // -- protocol: the runner calls these and sends what they return ----------------

  /// The first hello. The socket queues it until the connection is up.
  std::vector<outbound> start(int64_t now);

  /// The connection is up. After a reconnect the server may have restarted, so the
  /// endpoint says hello again and waits for a new welcome.
  std::vector<outbound> on_link_up(int64_t now);

  /// The connection dropped: no heartbeats or incidents until the next welcome.
  void on_link_down();

  /// One message from the server. Bad or unknown frames are counted and dropped.
  std::vector<outbound> on_message(std::string_view header_frame,
                                   std::string_view body_frame, int64_t now);

  /// Counts a message the runner could not even split into two frames.
  void count_bad_frame() { ++stats_.bad_frames; }

  /// Whatever the timers ask for at `now`: hello retry, released held commands,
  /// heartbeat, incident, result re-sends.
  std::vector<outbound> tick(int64_t now);

  /// When `tick` next has something to do (0 when it has now); max int64 when
  /// nothing is scheduled.
  int64_t next_due() const;

  /// True while the connection to the server is up.
  bool link_up() const { return link_up_; }

  /// True between a welcome and the next link loss.
  bool welcomed() const { return welcomed_; }

  /// Heartbeat interval in use (from the welcome unless overridden).
  int64_t heartbeat_interval_us() const { return heartbeat_us_; }

private:
  struct journal_entry {
    bus::action_result result;
    bool result_acked = false;
    bool cancelled = false; ///< Withdrawn by the server before it ran: it never will.
  };

  template <class T> outbound make(const char* type, const T& body, int64_t now);
  outbound make_hello(int64_t now);
  void schedule_next_incident(int64_t now, bool first);
  bool incidents_left() const;
  void answer(const bus::command& cmd, int64_t now, std::vector<outbound>& out);
  bus::cancel_result cancel(const std::string& action_id);
  void journal(const std::string& action_id, journal_entry e);
  bus::action_result execute(const bus::command& cmd, int64_t now);

  // One function per action type; each fills `r` (see sim_endpoint.cpp).
  void prevent_run(const bus::command& cmd, bus::action_result& r);
  void allow_run(const bus::command& cmd, bus::action_result& r);
  void quarantine_file(const bus::command& cmd, bus::action_result& r);
  void restore_file(const bus::command& cmd, bus::action_result& r);
  void delete_file(const bus::command& cmd, bus::action_result& r);
  void terminate_process(const bus::command& cmd, bus::action_result& r);
  void start_process(const bus::command& cmd, int64_t now, bus::action_result& r);
  struct run_output {
    int exit_code = 0;
    std::string out, err;
  };
  run_output program_output(const std::string& image,
                            const std::vector<std::string>& args, const std::string& cwd,
                            int depth) const;

  // Incident instantiation and table helpers (see sim_endpoint.cpp).
  std::string expand(const std::string& templ, const std::string& rand,
                     const std::string& c2) const;
  uint32_t allocate_pid(uint64_t draw);
  bus::file_info image_file(const std::string& path, const std::string& sha256);
  void put_file(const bus::file_info& f);
  void remove_file(const std::string& path);
  const bus::file_info* find_file(const std::string& path);
  const bus::process_info* running(const std::string& image, const std::string& user,
                                   int64_t at);
  void add_process(const bus::process_info& p);
  void remove_process(uint32_t pid);

  std::string device_id_;
  std::size_t index_;
  endpoint_config cfg_;
  const std::vector<scenario>* scenarios_;
  std::vector<std::size_t> candidates_; ///< Scenarios for this endpoint's OS.
  uint64_t total_weight_ = 0;
  sim_rng content_rng_; ///< Everything in an incident.
  sim_rng timing_rng_;  ///< When incidents happen, kept apart so content is stable.

  bus::hello identity_;
  std::string os_family_;
  std::string user_;
  std::string domain_;
  int64_t boot_time_;

  std::map<uint32_t, bus::process_info> processes_;
  std::map<std::string, uint32_t> base_processes_; ///< Image -> pid, never evicted.
  std::deque<std::pair<uint32_t, int64_t>>
      incident_pids_; ///< (pid, start), oldest first.
  std::map<std::string, bus::file_info> files_;
  std::deque<std::string> file_order_;   ///< Oldest first.
  std::set<std::string> removed_system_; ///< System binaries deleted or quarantined.
  std::map<uint32_t, launch_info> launched_;
  uint32_t next_pid_ = 0;
  sim_rng action_rng_; ///< Pids and ids made by actions, apart from incidents.

  bool isolated_ = false;
  std::set<std::string> prevented_;
  std::map<std::string, bus::file_info> quarantine_;
  std::deque<std::string> quarantine_order_; ///< Oldest first.
  std::unordered_map<std::string, journal_entry> journal_;
  std::deque<std::string> journal_order_;
  std::size_t unacked_ = 0; ///< Journal entries whose result_ack has not come.
  bool hold_commands_ = false;
  bool hold_results_ = false;
  std::deque<bus::command> pending_; ///< Held commands, oldest first.

  bus::decode_limits limits_;
  uint64_t msg_base_;
  uint64_t seq_ = 0;
  bool link_up_ = false;
  bool ever_linked_ = false;
  bool welcomed_ = false;
  bool ever_welcomed_ = false;
  int64_t hello_sent_at_ = 0;
  int64_t heartbeat_us_ = 5'000'000;
  int64_t next_heartbeat_ = 0;
  int64_t next_incident_ = 0;
  int64_t next_resend_ = 0;
  endpoint_stats stats_;
};

/// One line of JSON describing an endpoint's identity (no times).
std::string describe_endpoint(const sim_endpoint& ep);

/// One line of JSON describing an incident without any time, so that two runs with
/// the same seed print the same bytes.
std::string describe_incident(const std::string& device_id,
                              const bus::incident_report& report);

} // namespace parry::sim
