#pragma once

// The bus gateway: one thread owns the agents' ROUTER socket. Inbound frames are
// checked and decoded on that thread and handed to a callback; outbound frames are
// queued by any thread and written by the socket thread, woken through an eventfd
// that it polls together with the socket.

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bus/codec.hpp"

namespace zmq {
class context_t;
}

namespace parry::bus {

/// Counters, readable from any thread.
struct gateway_stats {
  std::atomic<uint64_t> frames_in{0};
  std::atomic<uint64_t> frames_out{0};
  std::atomic<uint64_t> bad_frames{0};  ///< Dropped: malformed, oversized, spoofed.
  std::atomic<uint64_t> unreachable{0}; ///< Outbound to a peer that is not connected.
};

class gateway {
public:
  /// Called on the socket thread for each well-formed message whose header names the
  /// connection's own routing id. Returns false when the body is unacceptable; the
  /// frame is then counted as bad and dropped.
  using message_handler = std::function<bool(header&&, std::string_view body)>;
  /// Called on the socket thread when a message to `device_id` cannot be delivered.
  using unreachable_handler = std::function<void(const std::string& device_id)>;

  gateway(std::string endpoint, decode_limits limits, message_handler on_message,
          unreachable_handler on_unreachable);
  ~gateway();

  gateway(const gateway&) = delete;
  gateway& operator=(const gateway&) = delete;

  /// Binds the socket and starts the thread. Returns the bound endpoint (with the
  /// real port when `endpoint` asked for `*`), or throws on a bind failure.
  std::string start();

  /// Stops the thread and closes the socket. Idempotent.
  void stop();

  /// Queues one message for `device_id`. Thread-safe, never blocks on the network.
  void send(std::string device_id, std::string header_frame, std::string body_frame);

  const gateway_stats& stats() const { return stats_; }

private:
  struct outbound {
    std::string device_id;
    std::string header;
    std::string body;
  };

  void run(void* socket);
  void wake();

  std::string endpoint_;
  decode_limits limits_;
  message_handler on_message_;
  unreachable_handler on_unreachable_;
  std::unique_ptr<zmq::context_t> ctx_;
  void* socket_ = nullptr; // zmq::socket_t*, owned by the thread once started
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::mutex mtx_;
  std::vector<outbound> queue_;
  std::thread thread_;
  gateway_stats stats_;
};

} // namespace parry::bus
