#pragma once

// The sockets of one or many agent sessions in one thread: one DEALER per session
// (routing id = device id), a monitor per DEALER to see reconnects and refused
// handshakes, and one epoll set over their ZMQ_FD descriptors (plus any descriptors
// the owner adds), with the earliest of the sessions' timers (a heap) as its timeout.
// A round touches only the sockets that have work and the timers that are due, so an
// idle session costs nothing per round. The simulator runs thousands of sessions on
// it, the real agent one. ZeroMQ stays inside the .cpp.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent-sim/agent_session.hpp"
#include "bus/curve_keys.hpp"

namespace parry::sim {

/// What one session holds: a TCP socket, two ZeroMQ sockets and their mailboxes
/// (descriptors); a DEALER and the two PAIRs of its monitor (ZeroMQ sockets).
constexpr std::size_t fds_per_session = 4;
constexpr std::size_t zmq_sockets_per_session = 3;

/// How the sessions connect.
struct link_config {
  std::string server = "tcp://127.0.0.1:7400"; ///< Dialled by every session.
  /// tcp:// only: local addresses the sessions connect from, in turn, each from a
  /// port of its own below the ephemeral range (empty: the kernel's choice). One
  /// address gives at most about 28,000 connections to one server port, and the
  /// kernel's search for a free port to bind grows with the ports in use; fixed
  /// ports cost nothing to find. Session i (index first + i overall) connects from
  /// sources[(first + i) % n] port source_port_base + (first + i) / n.
  std::vector<std::string> sources;
  std::size_t first = 0;
  static constexpr unsigned source_port_base = 10000;
  /// Sessions per source address at most: their ports stay below 32768.
  static constexpr std::size_t max_per_source = 22000;
  bool raise_fd_limit = true; ///< Raise RLIMIT_NOFILE to its hard limit at start.
  /// Sockets dialling at once, at least 1: a session's socket is opened only while
  /// fewer than this many opened sockets have neither finished their handshake nor
  /// been dialling for 2 s. ZeroMQ's I/O thread takes in every queued connect before
  /// it looks at any socket again, so opening thousands at once leaves every
  /// handshake waiting for the last connect; a window keeps sessions coming online
  /// from the first second.
  std::size_t connects_in_flight = 256;
  /// Test hook: while this file exists, every session holds the commands it receives
  /// (agent_session::set_hold). Empty means no hook.
  std::string hold_file;
  /// Test hook: while this file exists, every session executes commands but holds
  /// their results. Empty means no hook.
  std::string hold_results_file;
  /// CURVE: the server key every connection pins (Z85) and each session's key pair
  /// (by index). An empty server key means plain TCP.
  std::string server_key_z85;
  std::vector<bus::curve_key_pair> curve_keys;
};

class bus_runner {
public:
  /// `sessions` must outlive the runner and stay where they are.
  bus_runner(link_config cfg, std::vector<agent_session*> sessions);
  ~bus_runner();

  bus_runner(const bus_runner&) = delete;
  bus_runner& operator=(const bus_runner&) = delete;

  /// Also polls `fd` for input; `on_ready(now)` runs in the loop's thread when it is
  /// readable (it must consume what made it so). Before `start`.
  void watch(int fd, std::function<void(int64_t now)> on_ready);

  /// Runs every round after the sessions' timers; returns when it next wants to run
  /// (microseconds, max int64 for never), which bounds the poll's wait.
  void on_round(std::function<int64_t(int64_t now)> hook);

  /// Raises the descriptor limit and opens and connects the first
  /// `connects_in_flight` sockets; later rounds open more as handshakes finish, until
  /// every session has its socket. Throws std::runtime_error when a socket cannot be
  /// made.
  void start();

  /// Waits at most `max_wait_ms` for a message, a link event, a watched descriptor
  /// or a timer, then handles everything that is ready. Looks at the hold files when
  /// 100 ms have passed since it last did.
  void poll_once(long max_wait_ms);

  /// Sends `msgs` on session `i`'s socket now (for what a watched descriptor or the
  /// round hook produced).
  void send(std::size_t i, const std::vector<outbound>& msgs);

  /// Sessions whose socket has been opened and dialled so far.
  std::size_t sockets_opened() const;
  /// Messages dropped because a socket's queue was full.
  uint64_t send_failures() const;
  /// Handshakes the server refused (key unknown or revoked, device connected).
  uint64_t refused_handshakes() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace parry::sim
