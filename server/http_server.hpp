#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "actors/fwd.hpp"
#include "server/event_hub.hpp"

namespace parry {

class web_assets;

/// Names the route of an API request for metrics ("GET /actions/{id}").
using route_labeler =
    std::function<std::string(const std::string& method, const std::string& target)>;
/// Told of every answer: its route, HTTP status and seconds since the request was read.
using request_observer =
    std::function<void(const std::string& route, int status, double seconds)>;

/// Bounds on what HTTPS clients may hold open (docs/operations.md).
struct http_limits {
  /// Connections open at once, over all clients.
  std::size_t max_connections = 1000;
  /// Connections open at once from one IP address.
  std::size_t max_connections_per_source = 64;
  /// Descriptors kept free for the rest of the server (bus, store, logs): a connection
  /// whose descriptor number would reach into them is refused.
  std::size_t fd_reserve = 256;
  /// Time for a client to complete the TLS handshake.
  std::chrono::seconds handshake_timeout{10};
  /// Time to receive a whole request, and to wait for the next one on a keep-alive
  /// connection.
  std::chrono::seconds idle_timeout{30};
  /// GET /api/v1/events once upgraded.
  event_stream_options events;
};

/// Counters of the HTTPS front end, for /stats. Readable from any thread.
struct http_stats {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> open{0};
  /// Refused at accept: over max_connections.
  std::atomic<uint64_t> refused_total_limit{0};
  /// Refused at accept: over max_connections_per_source.
  std::atomic<uint64_t> refused_source_limit{0};
  /// Refused at accept: the descriptor reserve was reached.
  std::atomic<uint64_t> refused_fd_reserve{0};
  /// accept() failed for lack of descriptors (EMFILE/ENFILE) and the loop backed off.
  std::atomic<uint64_t> accept_backoffs{0};
  /// Requests refused before the api saw them (invalid UTF-8 in target or headers).
  std::atomic<uint64_t> bad_requests{0};
};

/// HTTPS front end (Boost.Beast) on a thread of its own. It parses requests, hands
/// each to the api actor and writes the answer back; it never blocks on actors.
class http_server {
public:
  http_server(caf::actor_system& sys, api_actor api, std::string address, uint16_t port,
              std::string cert_file, std::string key_file, http_limits limits = {},
              std::shared_ptr<http_stats> stats = std::make_shared<http_stats>());
  ~http_server();

  /// GET /api/v1/events as a WebSocket of `hub`'s events. Before start() only.
  void serve_events(std::shared_ptr<event_hub> hub);
  /// The web console's files at every path outside /api/. Before start() only.
  void serve_console(web_assets files);
  /// Tells `observe` of every answer, its API route named by `label` (the
  /// console's files are "console"). Before start() only.
  void observe_requests(route_labeler label, request_observer observe);
  /// `spec` at GET /api/v1/openapi.yaml (no session needed). Before start() only.
  void serve_openapi(std::string spec);

  /// New connections use this certificate and key from now on; open ones keep
  /// theirs. Throws std::runtime_error (and changes nothing) when they cannot be
  /// loaded or do not match.
  void reload_certificate(const std::string& cert_file, const std::string& key_file);

  /// Binds, starts the thread, returns the bound port. Throws on failure.
  uint16_t start();

  /// Stops accepting, closes connections, joins the thread. Idempotent.
  void stop();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace parry
