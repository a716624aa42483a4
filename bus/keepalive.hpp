#pragma once

// Dead-peer detection by the kernel instead of ZMTP heartbeats. libzmq 4.3.4 keeps
// its timers in one ordered map per I/O thread and looks a connection's heartbeat
// timer up by walking that map on every message it receives, so ZMTP heartbeats cost
// time in proportion to the connections per I/O thread (about half of a process's
// CPU at 4,000 connections: docs/benchmarks.md, "Gateway processes"). TCP keepalive
// and TCP_USER_TIMEOUT give the same bound with no timer in libzmq.

#include <algorithm>
#include <chrono>
#include <cstdint>

#include <zmq.hpp>

namespace parry::bus {

/// Set before connect or bind: a connection that hears nothing for `interval`
/// (rounded up to whole seconds) is probed once per interval, and ends when about
/// `timeout` has passed without an answer, or when data stays unacknowledged for
/// `timeout`.
inline void set_kernel_keepalive(zmq::socket_t& s, std::chrono::milliseconds interval,
                                 std::chrono::milliseconds timeout) {
  auto ivl_ms = std::max<int64_t>(interval.count(), 1);
  auto timeout_ms = std::max<int64_t>(timeout.count(), ivl_ms);
  auto secs = static_cast<int>(std::max<int64_t>((ivl_ms + 999) / 1000, 1));
  // Idle for one interval, then a probe per interval until the timeout is over.
  auto probes = static_cast<int>(std::max<int64_t>(timeout_ms / (secs * 1000) - 1, 1));
  s.set(zmq::sockopt::tcp_keepalive, 1);
  s.set(zmq::sockopt::tcp_keepalive_idle, secs);
  s.set(zmq::sockopt::tcp_keepalive_intvl, secs);
  s.set(zmq::sockopt::tcp_keepalive_cnt, probes);
  s.set(zmq::sockopt::tcp_maxrt, static_cast<int>(timeout_ms));
}

} // namespace parry::bus
