#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "actors/fwd.hpp"

namespace parry {

/// HTTPS front end (Boost.Beast) on a thread of its own. It parses requests, hands
/// each to the api actor and writes the answer back; it never blocks on actors.
class http_server {
public:
  http_server(caf::actor_system& sys, api_actor api, std::string address, uint16_t port,
              std::string cert_file, std::string key_file);
  ~http_server();

  /// Binds, starts the thread, returns the bound port. Throws on failure.
  uint16_t start();

  /// Stops accepting, closes connections, joins the thread. Idempotent.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace parry
