#pragma once

// The agent's side of the bus protocol, without sockets and without effects: hello
// and its retries, welcome, heartbeats, decoding every message from the server,
// checking commands, the journal that makes each action id run at most once, held
// commands (a test hook), cancel, and answering with ack, result and cancel_result
// until the server acknowledges. What an action does is the executor's business
// (agent-sim/executor.hpp); what incidents to report is the incident source's. The
// simulated endpoint and a real agent share this code path for the wire.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent-sim/executor.hpp"
#include "bus/codec.hpp"
#include "bus/command_signature.hpp"
#include "bus/messages.hpp"
#include "common/domain.hpp"

namespace parry::sim {

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

/// One journal entry as an agent that survives restarts keeps it on disk.
struct journal_record {
  std::string action_id;
  bus::action_result result;
  bool result_acked = false; ///< The server stored the result.
  bool cancelled = false;    ///< Withdrawn before it ran: it never will.
  bool refused = false;      ///< Refused by the guard: never acknowledged, never run.
};

/// Where incident reports come from; the session decides when it may send them.
class incident_source {
public:
  virtual ~incident_source() = default;
  /// The first welcome arrived at `now`: reporting may begin.
  virtual void start_reporting(int64_t now) = 0;
  /// When the next report is due (microseconds); max int64 when none is.
  virtual int64_t next_report_due() const = 0;
  /// Called once a report is due: the report to send, or nothing when there is
  /// nothing to report this time. Schedules the next one.
  virtual std::optional<bus::incident_report> take_report(int64_t now) = 0;
};

/// Counters of the protocol side of one endpoint.
struct session_stats {
  uint64_t frames_in = 0;          ///< Messages received from the server.
  uint64_t bad_frames = 0;         ///< Dropped: malformed, wrong device, bad body.
  uint64_t unknown_frames = 0;     ///< Dropped: well formed but of a type we ignore.
  uint64_t messages_out = 0;       ///< Messages handed to the runner to send.
  uint64_t commands_executed = 0;  ///< Commands run (journal misses).
  uint64_t duplicate_commands = 0; ///< Commands answered from the journal.
  uint64_t welcomes = 0;
  uint64_t held_commands = 0;      ///< Commands put on hold by the test hook.
  uint64_t cancelled_commands = 0; ///< `cancel`s that came in time: never ran.
  uint64_t late_cancels = 0;       ///< `cancel`s for commands already executed.
  uint64_t rejected = 0;           ///< `rejected` answers from the server.
  uint64_t refused_commands = 0;   ///< Commands and cancels refused by the guard.
};

/// Settings of one session.
struct session_config {
  std::string device_id;           ///< Also the routing id of the connection.
  bus::hello identity;             ///< Sent in every hello; `isolated` is filled in then.
  os_family os = os_family::posix; ///< Path rules for command parameters.
  uint32_t heartbeat_ms = 0;       ///< 0 means what the welcome says.
  int64_t started_at = 0;          ///< Wall clock at start; message ids count up from it.
  /// The server's Ed25519 public key (32 raw bytes) pinned at enrollment: commands
  /// and cancels must carry its signature. Empty: unsigned ones are taken (a plain
  /// bus, `--plain`).
  std::string server_signing_key;
  /// Called with the action id right before a command's effect starts; an agent that
  /// survives restarts records it durably, so a crash mid-action is reported as
  /// such after the restart instead of running the action again. Returns "" when
  /// recorded, else why not: the action then fails without running. May be empty.
  std::function<std::string(const std::string& action_id)> before_execute;
};

class agent_session {
public:
  /// Time before the first hello is sent again while no welcome has arrived; each
  /// unanswered hello doubles it (up to max_hello_retry_us), each with a jitter of
  /// up to a quarter either way, so that thousands of agents refused together do
  /// not come back together.
  static constexpr int64_t hello_retry_us = 3'000'000;
  static constexpr int64_t max_hello_retry_us = 60'000'000;
  /// Time between re-sends of results the server has not acknowledged.
  static constexpr int64_t result_resend_us = 1'000'000;
  /// Journal entries kept; beyond this the oldest action is forgotten.
  static constexpr std::size_t max_journal = 4096;
  /// Commands kept while on hold; later ones are dropped (the server re-sends).
  static constexpr std::size_t max_pending = 4096;

  /// `exec` and `incidents` (may be null: no reports) must outlive the session, and
  /// stay where they are: the session keeps their addresses.
  agent_session(session_config cfg, executor& exec, incident_source* incidents);

  /// The device id, also the routing id of its connection.
  const std::string& device_id() const { return cfg_.device_id; }
  /// Counters.
  const session_stats& stats() const { return stats_; }

  /// Executes `cmd` at most once per action id: a repeated id gets the stored
  /// result back without a second effect. Logs `executed <id> <type> on <device>:
  /// ok|<error>` once per execution. Never throws on bad parameters: they fail.
  /// `received_us` is when the command arrived (steady clock, µs; 0: now): the
  /// result's `agent_us` counts from then.
  command_outcome handle_command(const bus::command& cmd, int64_t now,
                                 int64_t received_us = 0);

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

  /// The journal, oldest first, for an agent that keeps it across restarts.
  std::vector<journal_record> journal_records() const;
  /// Before `start`: takes back what an earlier run journaled and the highest
  /// command seq it accepted, so nothing it ran runs again and no command it saw is
  /// taken as new. Unacknowledged results are sent again once welcomed.
  void restore_journal(const std::vector<journal_record>& records, uint64_t last_seq);
  /// Changes whenever the journal does: the agent saves it when this moves.
  uint64_t journal_version() const { return journal_version_; }
  /// Highest command seq accepted (0 on a plain bus).
  uint64_t last_seq() const;

  // -- the runner calls these and sends what they return ------------------------

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
    bool refused = false;   ///< Refused by the guard: never acknowledged, never run.
  };

  template <class T> outbound make(const char* type, const T& body, int64_t now);
  outbound make_hello(int64_t now);
  /// A number in [0, n), from this session's own sequence (seeded by its id).
  int64_t uniform(int64_t n);
  /// `delay_us` give or take a quarter.
  int64_t jittered(int64_t delay_us);
  void answer(const bus::command& cmd, int64_t received_us, int64_t now,
              std::vector<outbound>& out);
  bus::cancel_result cancel(const std::string& action_id);
  void journal(const std::string& action_id, journal_entry e);
  bus::action_result execute(const bus::command& cmd, int64_t now);
  bool is_held(const std::string& action_id) const;
  void refuse(const bus::command& cmd, const bus::guard_verdict& v, int64_t received_us,
              int64_t now, std::vector<outbound>& out);

  session_config cfg_;
  executor* exec_;
  incident_source* incidents_;
  /// Signature, device, expiry and replay checks; none on a plain bus.
  std::optional<bus::command_guard> guard_;

  std::unordered_map<std::string, journal_entry> journal_;
  std::deque<std::string> journal_order_;
  std::size_t unacked_ = 0; ///< Journal entries whose result_ack has not come.
  uint64_t journal_version_ = 0;
  bool hold_commands_ = false;
  bool hold_results_ = false;
  struct held_command {
    bus::command cmd;
    int64_t received_us = 0; ///< When it arrived (steady clock, µs).
  };
  std::deque<held_command> pending_; ///< Held commands, oldest first.

  bus::decode_limits limits_;
  uint64_t msg_base_;
  uint64_t seq_ = 0;
  bool link_up_ = false;
  bool ever_linked_ = false;
  bool welcomed_ = false;
  int64_t next_hello_ = 0;               ///< When an unanswered hello is sent again.
  int64_t hello_retry_ = hello_retry_us; ///< The wait after the next hello.
  uint64_t jitter_state_;                ///< splitmix64 state, from the device id.
  int64_t heartbeat_us_ = 5'000'000;
  int64_t next_heartbeat_ = 0;
  int64_t next_resend_ = 0;
  session_stats stats_;
};

} // namespace parry::sim
