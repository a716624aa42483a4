#pragma once

// Where the actors' frames to agents go: the embedded gateway's socket, or the link
// to gateway processes (bus/link_hub.hpp). Both are thread-safe and never block.

#include <string>

namespace parry::bus {

class outbox {
public:
  virtual ~outbox() = default;
  /// Queues one message for `device_id`; one that cannot be delivered is reported
  /// to the owner's unreachable handler.
  virtual void send(std::string device_id, std::string header_frame,
                    std::string body_frame) = 0;
  /// Closes the live connection of `device_id` (its key was revoked).
  virtual void cut(std::string device_id) = 0;
};

} // namespace parry::bus
