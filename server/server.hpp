#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "server/config.hpp"

namespace caf {
class actor_system_config;
} // namespace caf

namespace parry {

/// The actor system's settings for `cfg`: scheduler threads and policy, and our
/// error category.
caf::actor_system_config make_caf_config(const server_config& cfg);

/// Creates `dir` if needed and makes it and everything in it private to the
/// owner: directories 0700, regular files 0600 (symbolic links are left alone).
/// Throws std::filesystem::filesystem_error.
void make_private_dir(const std::string& dir);

/// A whole parryd: actor system, store, bus gateway and HTTPS front end, wired
/// together. Used by the parryd program and by in-process tests and benchmarks.
class server {
public:
  explicit server(server_config cfg);
  ~server();

  /// Opens the store, bootstraps the first administrator, resumes open actions,
  /// then starts the bus and HTTPS. Throws std::runtime_error with a clear message.
  void start();

  /// True when the actors answer a health request within `timeout` (the systemd
  /// watchdog's test). Any thread but an actor's.
  bool alive(std::chrono::milliseconds timeout);

  /// SIGHUP: loads the TLS certificate and key again and applies every key of
  /// `next` marked "reloads" (docs/operations.md): log settings, the action policy,
  /// login throttling, ingest limits and the SIEM export. Agents, sessions and open
  /// actions stay as they are; other changed keys are named in the log as waiting
  /// for a restart. Throws std::runtime_error, changing nothing, when `next` is
  /// invalid or the certificate or SIEM settings cannot be used.
  void reload(const server_config& next);

  /// Stops accepting work and shuts everything down. Idempotent.
  void stop();

  /// The bus endpoint agents connect to (real port when the config said `*`).
  const std::string& bus_endpoint() const;
  /// CURVE only: the enrollment endpoint (real port when the config said `*`), and
  /// the server's CURVE public key (Z85) that agents pin (kept also without CURVE).
  const std::string& enroll_endpoint() const;
  const std::string& bus_public_key() const;
  /// CURVE only: the integrators' request endpoint and events (PUB) endpoint.
  const std::string& integrator_endpoint() const;
  const std::string& events_endpoint() const;
  /// The HTTPS port (real port when the config said 0).
  uint16_t http_port() const;
  /// The metrics listener's port (real port when the config said 0), 0 when off.
  uint16_t metrics_port() const;
  /// True when the web console is served (web_dir set and found).
  bool serves_console() const;
  /// The certificate clients should trust.
  const std::string& cert_file() const;
  /// The first administrator's password when this start generated it, else empty.
  const std::string& generated_admin_password() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace parry
