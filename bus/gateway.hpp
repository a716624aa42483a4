#pragma once

// The bus gateway: one thread owns the agents' ROUTER socket. Inbound frames are
// checked and decoded on that thread and handed to a callback; outbound frames are
// queued by any thread and written by the socket thread, woken through an eventfd
// that it polls together with the socket.
//
// A routing id belongs to the first live connection that claims it: ROUTER_HANDOVER
// is off, so a second connection with the same id gets no route (libzmq discards it
// and never delivers its frames or sends to it). ZMTP heartbeats end a dead
// connection, which frees its id for the agent's next connection.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bus/codec.hpp"
#include "bus/outbox.hpp"
#include "bus/validate.hpp"
#include "bus/zap.hpp"
#include "common/log_limiter.hpp"

namespace zmq {
class context_t;
}

namespace parry::bus {

/// Counters, readable from any thread.
struct gateway_stats {
  std::atomic<uint64_t> frames_in{0};
  std::atomic<uint64_t> frames_out{0};
  /// Dropped: malformed, oversized, spoofed or invalid (a subset of `refused`).
  std::atomic<uint64_t> bad_frames{0};
  std::atomic<uint64_t> unreachable{0}; ///< Outbound to a peer that is not connected.
  /// Inbound messages refused, per refusal_kind.
  std::array<std::atomic<uint64_t>, refusal_kinds> refused{};
  std::atomic<uint64_t> rejected_sent{0}; ///< `rejected` answers written.
  /// Connections open now (accepted, not yet ended; 0 when nothing is counted:
  /// plain TCP with no `max_connections`).
  std::atomic<uint64_t> connections_open{0};
  /// Connections closed as soon as they were accepted: over `max_connections` (plain
  /// TCP), or over it plus `handshake_margin` (CURVE: connections that never start
  /// a handshake, which ZAP never sees).
  std::atomic<uint64_t> accept_refused_busy{0};
  std::atomic<uint64_t> log_suppressed{0};  ///< Warnings held back by the rate limit.
  std::atomic<uint64_t> dropped_stopped{0}; ///< Outbound queued after stop().
  /// Outbound not queued: outbox::max_queued_sends were waiting (also unreachable).
  std::atomic<uint64_t> dropped_full{0};
  /// CURVE only: handshakes admitted, and refused by reason (bus/zap.hpp).
  std::atomic<uint64_t> zap_admitted{0};
  std::atomic<uint64_t> zap_refused_unknown{0};
  std::atomic<uint64_t> zap_refused_domain{0};
  std::atomic<uint64_t> zap_refused_live{0};
  std::atomic<uint64_t> zap_refused_malformed{0};
  /// Enrollment endpoint: handshakes refused over its connection or rate cap.
  std::atomic<uint64_t> zap_refused_busy{0};
  /// Connections cut because their key was revoked.
  std::atomic<uint64_t> revoked_cut{0};
  /// Integrators only: events handed to the PUB socket (a subscriber over its
  /// high-water mark loses them there; it sees the gap in `seq`).
  std::atomic<uint64_t> events_published{0};
  /// Events dropped before the socket because max_queued_events were waiting.
  std::atomic<uint64_t> events_dropped{0};
};

/// CURVE on the bus: every connection completes a CURVE handshake with the server's
/// key pair and must be admitted by the ZAP handler against `keys`.
struct curve_server_options {
  std::string public_z85; ///< The server's CURVE key pair (bus/curve_keys.hpp).
  std::string secret_z85;
  std::shared_ptr<key_registry> keys;
  /// Which kind of key this socket admits (zap_domain::agents or ::integrators).
  std::string domain = zap_domain::agents;
  /// Handshakes admitted per second at most (0: no cap); beyond it refused (busy).
  uint32_t handshakes_per_second = 0;
};

/// Socket settings beyond the decode limits.
struct gateway_options {
  /// ZeroMQ's MAXMSGSIZE: a frame above it ends the connection inside libzmq, before
  /// the gateway sees it. 0: 4 × max_frame. Frames between max_frame and this are
  /// received, counted as oversized and answered with `rejected`.
  std::size_t hard_frame = 0;
  /// Inbound messages buffered per connection before libzmq stops reading it.
  int rcvhwm = 1000;
  /// Connections the kernel queues on the endpoint before libzmq accepts them
  /// (ZMQ_BACKLOG); 0 keeps libzmq's default (100).
  int backlog = 0;
  /// ZeroMQ I/O threads of this gateway's context (ZMQ_IO_THREADS): connections are
  /// spread over them. One thread left about 1,000 of 10,000 agents waiting to be
  /// accepted (docs/benchmarks.md).
  int io_threads = 1;
  /// ZMTP heartbeat: ping each connection this often, drop it after `timeout`
  /// without traffic. 0 turns it off.
  std::chrono::milliseconds heartbeat_ivl{5000};
  std::chrono::milliseconds heartbeat_timeout{15000};
  /// Find dead connections with the kernel's TCP keepalive and TCP_USER_TIMEOUT
  /// (bus/keepalive.hpp) on the same interval and timeout, instead of ZMTP heartbeats.
  bool kernel_keepalive = false;
  /// Open connections at most (0: no cap). With CURVE a handshake past it is refused
  /// busy at ZAP (the agent is told why); a connection accepted past it (plain TCP),
  /// or past it plus `handshake_margin` (CURVE), is closed at once, so a flood of
  /// connections that never speak cannot take the process's descriptors.
  std::size_t max_connections = 0;
  /// With CURVE: connections over max_connections still let in to their handshake.
  /// They are descriptors too: keep it inside what the process has beyond
  /// max_connections (gateway::margin_within).
  std::size_t handshake_margin = 16;
  /// Unset: plain TCP (tests, a closed lab). Set: CURVE and ZAP, see above.
  std::optional<curve_server_options> curve;
  /// TCP only: the gateway makes the listening socket itself with SO_REUSEPORT, so
  /// several gateway processes can listen on one port and the kernel spreads the
  /// connections over them (parry-gateway).
  bool reuse_port = false;
  /// Integrators only: a PUB endpoint for events, on the same CURVE key and ZAP
  /// domain ("" : none), and the messages queued per subscriber before it loses them.
  std::string pub_endpoint;
  int pub_hwm = 10000;
};

class gateway final : public outbox {
public:
  /// Events waiting for the socket thread at most (publish drops beyond it).
  static constexpr std::size_t max_queued_events = 100000;
  /// A handshake margin for `max_connections` in a process that may open `fd_limit`
  /// files: a sixteenth of the cap and 16 more, but never more than a quarter of
  /// the descriptors left beyond the cap (REST, the store and the rest keep theirs).
  static std::size_t margin_within(std::size_t max_connections, std::size_t fd_limit) {
    std::size_t left = fd_limit > max_connections ? fd_limit - max_connections : 0;
    return std::min(max_connections / 16 + 16, left / 4);
  }

  /// Called on the socket thread for each well-formed message whose header names the
  /// connection's own routing id, with the connection's authenticated ZAP User-Id
  /// ("" on plain TCP; "enroll:<key hex>" on the enrollment endpoint). Returns a
  /// refusal when the message is not accepted; it is then counted, logged
  /// (rate-limited) and answered with `rejected`.
  using message_handler = std::function<std::optional<refusal>(
      header&&, std::string_view body, std::string_view user_id)>;
  /// Called on the socket thread when a message to `device_id` cannot be delivered,
  /// or on the sender's when it finds the queue full.
  using unreachable_handler = std::function<void(const std::string& device_id)>;
  /// Called on the socket thread (rate-limited per peer) for what should be audited:
  /// a header naming another device. Arguments: the connection's id, what happened.
  using suspicious_handler =
      std::function<void(const std::string& peer, const std::string& what)>;
  /// Receives warning lines (already rate-limited).
  using warning_sink = std::function<void(const std::string& line)>;
  /// Called on the socket thread when the connection of `device_id` ended (CURVE
  /// only: the device is known from its authenticated key).
  using gone_handler = std::function<void(const std::string& device_id)>;

  gateway(std::string endpoint, decode_limits limits, message_handler on_message,
          unreachable_handler on_unreachable, gateway_options opts = {});
  ~gateway();

  gateway(const gateway&) = delete;
  gateway& operator=(const gateway&) = delete;

  /// Set before start().
  void on_suspicious(suspicious_handler h) { on_suspicious_ = std::move(h); }
  void on_warning(warning_sink s) { warn_ = std::move(s); }
  void on_gone(gone_handler h) { on_gone_ = std::move(h); }

  /// Binds the socket and starts the thread. Returns the bound endpoint (with the
  /// real port when `endpoint` asked for `*`), or throws on a bind failure.
  std::string start();

  /// Stops the thread and closes the socket. Idempotent. Later send() calls are
  /// dropped and counted; the wake-up descriptor stays open until destruction, so
  /// a thread still calling send() never writes to a closed (or reused) descriptor.
  void stop();

  /// Queues one message for `device_id`. Thread-safe, never blocks on the network.
  void send(std::string device_id, std::string header_frame,
            std::string body_frame) override;

  /// Refuses a message that was accepted here and refused later (by the core behind
  /// a gateway process): counted, logged and answered with `rejected` exactly as a
  /// refusal of the message handler. Thread-safe.
  void reject(header h, refusal r);

  /// CURVE only: closes the live connection of `device_id` (its key was revoked:
  /// remove it from the registry first, so the reconnect is refused); on the
  /// integrators' socket, the last connection of integrator `device_id`.
  /// Thread-safe.
  void cut(std::string device_id) override;

  /// Integrators only: queues one event, [topic][header][body], for the PUB socket.
  /// Thread-safe, never blocks.
  void publish(std::string topic, std::string header_frame, std::string body_frame);

  /// The bound PUB endpoint ("" : none), after start().
  const std::string& pub_endpoint() const { return pub_bound_; }

  const gateway_stats& stats() const { return stats_; }
  /// ZeroMQ I/O threads of this gateway's context.
  int io_threads() const;

private:
  struct outbound {
    std::string device_id;
    std::string header;
    std::string body;
  };

  void run(void* socket);
  // The listening descriptor for reuse_port (bound and listening), or throws.
  int listen_reuse_port() const;
  // CURVE only, socket thread: one ZAP request, the monitor's events, queued cuts.
  void serve_zap();
  void on_monitor_event();
  // Closes a just-accepted connection that took the count over the cap, if `fd` is
  // still a connection of this endpoint; true if so.
  bool refuse_accepted(int fd);
  // Whether `fd` is a connection of this gateway's endpoint (its local port or path).
  bool ours(int fd) const;
  void note_connection(const std::string& id, int fd);
  void wake();
  // Counts, logs and answers one refused inbound message (socket thread only).
  void refuse(void* socket, std::string_view peer, const header* h, const refusal& r);
  void warn(std::string_view peer, refusal_kind k, const std::string& line);

  std::string endpoint_;
  decode_limits limits_;
  gateway_options opts_;
  message_handler on_message_;
  unreachable_handler on_unreachable_;
  suspicious_handler on_suspicious_;
  warning_sink warn_;
  gone_handler on_gone_;
  std::unique_ptr<zmq::context_t> ctx_;
  void* socket_ = nullptr; // zmq::socket_t*, owned by the thread once started
  int wake_fd_ = -1;       // open from construction to destruction
  std::atomic<bool> stopping_{false};
  std::mutex mtx_;
  std::vector<outbound> queue_;
  std::vector<std::string> cuts_;                   // guarded by mtx_
  std::vector<std::pair<header, refusal>> rejects_; // guarded by mtx_
  std::vector<outbound> events_; // guarded by mtx_; device_id holds the topic
  void* pub_ = nullptr;          // zmq::socket_t*, integrators only
  std::string pub_bound_;
  std::thread thread_;
  gateway_stats stats_;
  // Socket thread only.
  log_limiter log_limit_{5, std::chrono::seconds{10}};
  /// Lines of one refusal kind from all peers together: a storm of many devices at
  /// once (every agent refused as busy during a cold start) is counted, not logged.
  log_limiter kind_log_limit_{20, std::chrono::seconds{10}};
  log_limiter reply_limit_{20, std::chrono::seconds{1}};
  log_limiter audit_limit_{1, std::chrono::seconds{60}};
  uint64_t out_msg_id_ = 0;
  // CURVE only, socket thread: the ZAP and monitor sockets (zmq::socket_t*), the live
  // connection of each device (its descriptor, from ZMQ_SRCFD) and the reverse map.
  void* zap_ = nullptr;
  void* monitor_ = nullptr;
  std::unordered_map<std::string, int> live_fd_;
  std::unordered_map<int, std::string> fd_device_;
  /// Accepted minus ended (while monitored: CURVE or a connection cap).
  std::size_t open_connections_ = 0;
  /// The bound endpoint's TCP port, or its ipc:// path.
  uint16_t bound_port_ = 0;
  std::string bound_path_;
  log_limiter handshake_rate_{1, std::chrono::seconds{1}};
};

} // namespace parry::bus
