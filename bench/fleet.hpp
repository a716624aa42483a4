#pragma once

// The bench's side of the bus: a fleet of DEALERs posing as devices, and a bare ROUTER
// on loopback that the baselines measure against.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "bench/bench.hpp"
#include "bus/codec.hpp"
#include "bus/curve_keys.hpp"
#include "common/time.hpp"

namespace parry::bench {

// -- frames ------------------------------------------------------------------------

/// One encoded bus message as a DEALER sends it.
struct frame_pair {
  std::string header;
  std::string body;
};

class fleet {
public:
  /// `n` DEALERs named bench-00000, ... With `server_key` (Z85) and one key pair per
  /// device, each is a CURVE client pinning that server key.
  explicit fleet(std::size_t n, const std::string& server_key = {},
                 const std::vector<bus::curve_key_pair>& keys = {});

  /// The device id of DEALER `i`.
  const std::string& id(std::size_t i) const { return ids_[i]; }

  std::size_t size() const { return dealers_.size(); }

  void connect(const std::string& ep);
  void disconnect(const std::string& ep);

  /// An encoded message from device `i`, with its next sequence number.
  template <class Body>
  frame_pair frame(std::size_t i, const char* type, const Body& body) {
    bus::header h;
    h.type = type;
    h.msg_id = ++msg_id_;
    h.device_id = ids_[i];
    h.seq = ++seq_[i];
    h.time = now_us();
    return {bus::encode(h), bus::encode(body)};
  }

  /// Sends frames[k] from device k % N, as fast as the sockets take them, interleaving
  /// the devices. Returns how many were sent before `deadline`.
  std::size_t blast(const std::vector<frame_pair>& frames, steady::time_point deadline);

  /// Non-blocking send of one message from device `i`; false when its queue is full.
  bool send(std::size_t i, const frame_pair& f);

  /// Sends `hello` from every device and waits for every `welcome`. Returns how many
  /// devices were welcomed before `timeout`.
  std::size_t greet(std::chrono::milliseconds timeout);

  /// Restarts the heartbeat schedule of `keep_alive` from now.
  void start_heartbeats();

  /// Sends the heartbeats that are due so that every device sends one per `period`,
  /// spread evenly, and the server keeps counting the bench devices as online.
  void keep_alive(std::chrono::milliseconds period);

private:
  zmq::context_t ctx_;
  std::vector<zmq::socket_t> dealers_;
  std::vector<std::string> ids_;
  std::vector<uint64_t> seq_;
  uint64_t msg_id_ = 0;
  steady::time_point hb_origin_ = steady::now();
  std::size_t hb_sent_ = 0;
};

/// A ROUTER on its own thread and context (as if in another process): either counts
/// messages without looking at them (the ingest floor) or echoes them (the round-trip
/// floor).
class loopback_peer {
public:
  enum class mode { count, echo };

  explicit loopback_peer(mode m);
  ~loopback_peer();

  const std::string& endpoint() const { return endpoint_; }
  uint64_t count() const { return count_.load(); }
  /// When the latest message arrived.
  steady::time_point last() const {
    return steady::time_point{steady::duration{last_.load()}};
  }

private:
  void run();

  mode mode_;
  zmq::context_t ctx_;
  zmq::socket_t sock_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> count_{0};
  std::atomic<steady::rep> last_{0};
  std::thread thread_;
};

} // namespace parry::bench
