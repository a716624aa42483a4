#pragma once

// The console's live events (docs/rest-api.md, "Live events"): what the store commits
// (incidents, action states, device changes) numbered in one sequence, kept in a
// bounded backlog so a client that reconnects gets what it missed, and handed to the
// open event streams. Thread-safe: the store publishes from its thread, the streams
// subscribe from the HTTPS thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace parry {

struct event_hub_limits {
  /// Events kept for replay, newest last; older ones are forgotten.
  std::size_t backlog_events = 10000;
  /// Bytes of JSON kept for replay.
  std::size_t backlog_bytes = 16u << 20;
  /// Streams open at once; more are refused (close code 1013).
  std::size_t max_subscribers = 1000;
};

/// Counters for /stats ("events"). Readable from any thread.
struct event_hub_stats {
  std::atomic<uint64_t> published{0};
  std::atomic<uint64_t> subscribers{0};
  /// Events sent again to reconnecting streams.
  std::atomic<uint64_t> replayed{0};
  /// Reconnects told to reload (their events were no longer kept, or another epoch).
  std::atomic<uint64_t> resyncs{0};
  /// Streams refused: max_subscribers reached.
  std::atomic<uint64_t> refused_subscribers{0};
  /// Streams closed because their client did not keep up (close code 1013).
  std::atomic<uint64_t> dropped_slow{0};
  /// Streams closed because their session ended (close code 1008).
  std::atomic<uint64_t> closed_session{0};
};

/// How each stream that carries the hub's events to a client behaves
/// (server/event_stream.hpp).
struct event_stream_options {
  /// How often the stream asks whether its session still stands (idle timeout,
  /// logout, a disabled user); the check does not count as use of the session.
  std::chrono::seconds recheck{15};
  /// Bytes queued for a client that reads too slowly before it is cut (1013).
  std::size_t max_queue_bytes = 4u << 20;
  /// Largest message a client may send (clients have nothing to say; pings aside).
  std::size_t max_message_in = 4096;
  /// A client silent this long (no pong to our pings either) is cut.
  std::chrono::seconds idle_timeout{60};
};

using event_message = std::shared_ptr<const std::string>;

class event_hub {
public:
  /// Called with each new event's JSON, under the hub's lock: it must only queue
  /// (post to its connection), never block or call back into the hub.
  using sink = std::function<void(event_message)>;

  /// What a new subscriber sends first, in order: `hello`, then the missed events or
  /// one `resync`.
  struct subscription {
    uint64_t id = 0;
    std::vector<event_message> first;
  };

  explicit event_hub(event_hub_limits limits = {});

  /// The store's publish hook: `body` is the event's msgpack map (the bus encoding of
  /// docs/bus-protocol.md, "Events"); it goes out as JSON with the next number. A body
  /// that is not a msgpack map is dropped and logged.
  void publish(const char* family, const std::string& kind, const std::string& body);

  /// Registers `out` for every event published from now on. `since`: the last number
  /// the client saw in `epoch` (none for a first connection). What was missed is
  /// replayed when it is all kept and its JSON fits `max_replay_bytes`; otherwise the
  /// client is told to resync. nullopt when max_subscribers streams are open.
  std::optional<subscription>
  subscribe(std::optional<uint64_t> since, const std::string& epoch, sink out,
            std::size_t max_replay_bytes = std::numeric_limits<std::size_t>::max());
  void unsubscribe(uint64_t id);

  /// Names this run of the server: numbers of another epoch mean nothing here.
  const std::string& epoch() const { return epoch_; }
  /// The last number given out (0 before the first event).
  uint64_t last_seq() const;
  const std::shared_ptr<event_hub_stats>& stats() const { return stats_; }

private:
  struct kept {
    uint64_t seq;
    event_message json;
  };

  event_hub_limits limits_;
  std::string epoch_;
  std::shared_ptr<event_hub_stats> stats_ = std::make_shared<event_hub_stats>();
  mutable std::mutex m_;
  uint64_t seq_ = 0;
  std::deque<kept> backlog_;
  std::size_t backlog_bytes_ = 0;
  uint64_t next_id_ = 1;
  std::map<uint64_t, sink> sinks_;
};

} // namespace parry
