#pragma once

// The link between parryd (the core) and its gateway processes (parry-gateway): one
// ZeroMQ ROUTER in the core on `ipc://DATA_DIR/link.sock`, two DEALERs per gateway.
// A gateway owns the agents' connections (CURVE, ZAP, frame and header checks, as
// the embedded gateway does) and forwards each accepted message; the core decodes
// the body, applies the ingest limits, hands it to the actors and sends commands
// back through the gateway that holds the device. docs/scale-out.md, step 1.
//
// Every link message is [kind][...] (the ROUTER adds the peer's routing id):
//
//   gateway -> core, on "up-<i>" (the gateway's socket thread):
//     m [header][body]      an accepted message; the header names its device
//     g [device_id]         the device's connection ended (CURVE only)
//     u [device_id]         a command could not be delivered
//     s [peer][what]        something to audit (a refused handshake, a spoof)
//   gateway -> core, on "gw-<i>" (the gateway's main thread):
//     h                     started: send me the keys
//     l                     listening: agents may connect now
//     t [counters]          its gateway_stats, every second
//   core -> gateway, to "gw-<i>":
//     o [device_id][header][body]   deliver to the agent
//     r [header][refusal]           refuse this message as the gateway would
//     c [device_id]                 cut the device's connection (revoked)
//     k [keys]                      admit or revoke agent keys (a snapshot first)
//
// The link is local and private (the socket lives in the 0700 data directory), but
// each side still checks what it decodes: a bad link message is counted, never
// fatal.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bus/codec.hpp"
#include "bus/gateway.hpp"
#include "bus/outbox.hpp"
#include "bus/validate.hpp"
#include "bus/zap.hpp"

namespace zmq {
class context_t;
}

namespace parry::bus::link {

namespace kind {
inline constexpr std::string_view message = "m";
inline constexpr std::string_view gone = "g";
inline constexpr std::string_view unreachable = "u";
inline constexpr std::string_view suspicious = "s";
inline constexpr std::string_view hello = "h";
inline constexpr std::string_view listening = "l";
inline constexpr std::string_view stats = "t";
inline constexpr std::string_view deliver = "o";
inline constexpr std::string_view reject = "r";
inline constexpr std::string_view cut = "c";
inline constexpr std::string_view keys = "k";
} // namespace kind

/// Routing ids of gateway `index`'s two sockets.
std::string up_id(int index);
std::string down_id(int index);
/// The gateway index of a routing id made by up_id or down_id, if it is one.
std::optional<int> index_of(std::string_view routing, bool* up = nullptr);

std::string encode_refusal(const refusal& r);
std::optional<refusal> decode_refusal(std::string_view frame);

/// A key change: the raw key and its owner (none: revoked).
using key_change = std::pair<std::string, std::optional<key_identity>>;
/// Key changes in frames of at most `per_frame` each.
std::vector<std::string> encode_keys(const std::vector<key_change>& changes,
                                     std::size_t per_frame = 1000);
std::optional<std::vector<key_change>> decode_keys(std::string_view frame);

std::string encode_stats(const gateway_stats& s);
/// Overwrites `out` with the counters in `frame`; false when it is not a counter
/// list.
bool decode_stats(std::string_view frame, gateway_stats& out);
/// Adds every counter of `part` to `sum`.
void add_stats(gateway_stats& sum, const gateway_stats& part);

/// Counters of the core's side of the link.
struct hub_stats {
  std::atomic<uint64_t> messages{0};  ///< Agent messages forwarded by gateways.
  std::atomic<uint64_t> delivered{0}; ///< Commands handed to a gateway.
  std::atomic<uint64_t> no_route{0};  ///< Commands for a device on no gateway.
  /// Commands not queued: outbox::max_queued_sends were waiting (also unreachable).
  std::atomic<uint64_t> dropped_full{0};
  std::atomic<uint64_t> refused_elsewhere{0}; ///< A device on a second gateway.
  std::atomic<uint64_t> bad_link_messages{0}; ///< Malformed or from an unknown peer.
  std::atomic<uint64_t> gateways_up{0};       ///< Gateways listening for agents now.
};

/// The core's side: binds the link, forwards agent messages to `on_message` (on the
/// link thread, like the embedded gateway's handler) and routes commands to the
/// gateway that last delivered a message of their device.
class hub final : public outbox {
public:
  /// `exclusive` (CURVE): a device whose connection is live on one gateway is
  /// refused on another until the first says it is gone, as one gateway's ZAP
  /// refuses a second live connection. Without it (plain TCP, where gateways cannot
  /// tell when a device's connection ends) the last gateway a device spoke through
  /// gets its commands.
  hub(std::string endpoint, int gateways, decode_limits limits,
      gateway::message_handler on_message, gateway::unreachable_handler on_unreachable,
      bool exclusive);
  ~hub() override;
  hub(const hub&) = delete;
  hub& operator=(const hub&) = delete;

  /// Set before start().
  void on_suspicious(gateway::suspicious_handler h) { on_suspicious_ = std::move(h); }
  /// The keys the gateways admit: a snapshot to each gateway that says hello, then
  /// every change. Set before start().
  void serve_keys(std::shared_ptr<key_registry> keys);

  /// Binds and starts the link thread; throws on a bind failure.
  void start();
  void stop();

  void send(std::string device_id, std::string header_frame,
            std::string body_frame) override;
  void cut(std::string device_id) override;
  /// Gateway `index` ended: its devices have no route until they connect again.
  void gateway_down(int index);

  const hub_stats& stats() const { return stats_; }
  /// The sum of the gateways' last reported counters.
  void gateway_totals(gateway_stats& out) const;
  /// Each gateway's open connections, as it last reported them.
  std::vector<uint64_t> connections() const;
  /// Devices that have a route now.
  std::size_t routed() const { return routed_.load(); }

private:
  struct out_msg {
    std::string kind;
    std::string device_id;
    std::string a, b;
    uint64_t change = 0; // key changes: their registry number
  };
  void run();
  void wake();
  /// Queues `m` unless it is a delivery and max_queued_sends wait: false, `m` kept.
  bool queue(out_msg&& m);
  void on_inbound(void* sock, int index, bool up, std::vector<std::string>& frames);
  bool send_to(void* sock, int index, std::vector<std::string_view> frames);

  std::string endpoint_;
  int gateways_;
  decode_limits limits_;
  gateway::message_handler on_message_;
  gateway::unreachable_handler on_unreachable_;
  gateway::suspicious_handler on_suspicious_;
  bool exclusive_;
  std::shared_ptr<key_registry> keys_;
  std::unique_ptr<zmq::context_t> ctx_;
  void* socket_ = nullptr;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::mutex mtx_;
  std::vector<out_msg> queue_;   // guarded by mtx_
  std::size_t queued_sends_ = 0; // deliveries in queue_, guarded by mtx_
  std::vector<int> down_;        // guarded by mtx_: gateways that ended
  mutable std::mutex stats_mtx_;
  std::vector<std::unique_ptr<gateway_stats>> per_gateway_; // guarded by stats_mtx_
  hub_stats stats_;
  std::atomic<std::size_t> routed_{0};
  // Link thread only.
  std::unordered_map<std::string, int> owner_; // device -> gateway
  std::vector<uint64_t> keys_from_;            // per gateway: changes it has
  std::vector<bool> said_hello_;
  std::vector<bool> listening_;
  void count_up();
};

/// The gateway process's side: connects to the core, waits for the keys, runs a
/// gateway on `endpoint` and forwards until `stop` is set or the core goes away.
struct gateway_side_options {
  std::string link;     ///< The core's link endpoint.
  int index = 0;        ///< This gateway's number (0..K-1).
  std::string endpoint; ///< Where agents connect (tcp://host:port, shared port).
  decode_limits limits;
  gateway_options gateway;
  /// The core's keys must arrive within this long after start, or run() fails.
  std::chrono::milliseconds keys_timeout{30000};
  /// How often the counters go to the core.
  std::chrono::milliseconds stats_every{1000};
  std::function<void(const std::string&)> log; ///< Info and warning lines.
};

/// Runs until `stop` becomes true. Returns 0, or 1 after a failure it logged.
/// `started(bound endpoint)` is called once agents may connect.
int run_gateway_side(const gateway_side_options& opts, const std::atomic<bool>& stop,
                     const std::function<void(const std::string&)>& started = {});

} // namespace parry::bus::link
