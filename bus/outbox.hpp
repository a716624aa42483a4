#pragma once

// Where the actors' frames to agents go: the embedded gateway's socket, or the link
// to gateway processes (bus/link_hub.hpp). Both are thread-safe and never block.

#include <cstddef>
#include <string>

namespace parry::bus {

class outbox {
public:
  /// Messages for agents waiting for the socket (or link) thread at most. One past
  /// it is not queued: it is counted (`dropped_full`) and reported unreachable, so
  /// its device goes offline and gets what it has not acknowledged again when it is
  /// heard from (a stalled socket thread must not take the server's memory).
  static constexpr std::size_t max_queued_sends = 250000;

  virtual ~outbox() = default;
  /// Queues one message for `device_id`; one that cannot be delivered (or queued:
  /// see max_queued_sends) is reported to the owner's unreachable handler.
  virtual void send(std::string device_id, std::string header_frame,
                    std::string body_frame) = 0;
  /// Closes the live connection of `device_id` (its key was revoked).
  virtual void cut(std::string device_id) = 0;
};

} // namespace parry::bus
