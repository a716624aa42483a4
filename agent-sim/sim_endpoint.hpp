#pragma once

// One simulated endpoint, without sockets: identity, process table, file system,
// isolation state, command journal and protocol timers. The runner feeds it frames,
// link events and the clock and sends what it returns, so every behaviour here can be
// tested by calling methods directly.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
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
  /// Files by path.
  const std::map<std::string, bus::file_info>& files() const { return files_; }
  /// Counters.
  const endpoint_stats& stats() const { return stats_; }

  /// Instantiates the next scenario: picks it, fills in pids, hashes, sizes and
  /// names from the seeded generator, records processes and files, and stamps
  /// times ending at `now`. While isolated the chain has no network_connection
  /// events. Consumes the generator identically either way, so a seed gives the same
  /// sequence of incidents whatever happens to the endpoint.
  bus::incident_report next_incident(int64_t now);

  /// Executes `cmd` at most once per action id: a repeated id gets the stored
  /// result back without a second effect.
  command_outcome handle_command(const bus::command& cmd, int64_t now);

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

  /// Whatever the timers ask for at `now`: hello retry, heartbeat, incident, result
  /// re-sends.
  std::vector<outbound> tick(int64_t now);

  /// When `tick` next has something to do; max int64 when nothing is scheduled.
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
  };

  template <class T> outbound make(const char* type, const T& body, int64_t now);
  outbound make_hello(int64_t now);
  void schedule_next_incident(int64_t now, bool first);
  bool incidents_left() const;
  bus::action_result execute(const bus::command& cmd, int64_t now);

  // Incident instantiation helpers (see sim_endpoint.cpp).
  std::string expand(const std::string& templ, const std::string& rand,
                     const std::string& c2) const;
  uint32_t allocate_pid(uint64_t draw);
  bus::file_info image_file(const std::string& path, const std::string& sha256);
  void put_file(const bus::file_info& f);
  const bus::process_info& running(const std::string& image, const std::string& user);
  void add_process(const bus::process_info& p);

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
  std::deque<std::string> file_order_; ///< Oldest first.
  uint32_t next_pid_ = 0;

  bool isolated_ = false;
  std::unordered_map<std::string, journal_entry> journal_;
  std::deque<std::string> journal_order_;
  std::size_t unacked_ = 0; ///< Journal entries whose result_ack has not come.

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
