#pragma once

// The server under test: parryd as a child process in a temporary directory, with a
// logged-in REST client.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench.hpp"
#include "common/process.hpp"
#include "ctl/client.hpp"

namespace parry::bench {

/// The flood guard parryd runs with during a bench (server/config.cpp keys
/// `max_incidents_per_minute` and `max_incidents_per_second`). Its defaults (600 per
/// device per minute, 10,000 per second in all) would cap the ingest figure; raised
/// like this, ingest measures throughput, not the guard.
struct ingest_caps {
  uint32_t per_device_per_minute = 0; ///< max_incidents_per_minute, incidents
  uint32_t per_second = 0;            ///< max_incidents_per_second, incidents
  /// max_devices: every bench and simulated device and a margin, never below
  /// parryd's default (10,000).
  std::size_t devices = 0;
};

/// Caps for a run of `opt`: twice what one bench device sends in the whole run per
/// minute, and twice all reports per second, never below parryd's defaults and
/// never above the largest values it accepts (1,000,000 and 10,000,000).
ingest_caps caps_for(const options& opt);

/// parryd in a temporary directory, with a logged-in REST client.
class server_under_test {
public:
  explicit server_under_test(const options& opt);

  /// Starts parryd with `caps()` and reads its REST URL and bus endpoint from its
  /// output (throws when they do not come within `ready_within`). With `curve`, the bus
  /// is CURVE (bus_curve = true) and commands signed; the enrollment endpoint and server
  /// key are read too.
  void start(bool curve = false,
             std::chrono::milliseconds ready_within = std::chrono::seconds{30});

  /// CURVE only: the enrollment endpoint and the server's CURVE public key (Z85).
  const std::string& enroll_endpoint() const { return enroll_; }
  const std::string& server_key() const { return server_key_; }

  /// The flood guard parryd was configured with.
  const ingest_caps& caps() const { return caps_; }

  ~server_under_test();

  /// Logs in as the first administrator and switches to a bearer token.
  void login();

  /// GET returning the body; throws on anything but 200.
  nlohmann::json get(const std::string& path);

  parry::client& api() { return *api_; }
  /// Another client with the same token, for a thread of its own (login() first).
  std::unique_ptr<parry::client> another_client() const;
  pid_t pid() const { return proc_ ? proc_->pid() : -1; }
  bool running() { return proc_ && proc_->running(); }
  const std::string& bus_endpoint() const { return bus_; }
  bool curve() const { return curve_; }
  const std::filesystem::path& dir() const { return dir_; }
  std::string log_file() const { return (dir_ / "parryd.log").string(); }

  /// SIGTERM and the exit status (as waitpid gives it), or -1 when already gone.
  int stop();

  /// Ends parryd with SIGKILL, as a crash would, waits (at most 10 s) until its gateway
  /// processes are gone too (they hold the bus port until then), then starts parryd
  /// again on the same data directory and bus port and logs in. Answers when the new
  /// parryd was started.
  std::chrono::steady_clock::time_point
  kill_and_restart(std::chrono::milliseconds ready_within = std::chrono::seconds{30});

private:
  bool curve_ = false;
  std::string enroll_;
  std::string server_key_;
  std::string bin_dir_;
  bool keep_;
  ingest_caps caps_;
  std::size_t passivate_after_ = 0; ///< seconds; 0 leaves parryd's default
  std::size_t gateways_ = 0;        ///< bus_gateways
  std::filesystem::path dir_;
  std::unique_ptr<parry::child_process> proc_;
  std::unique_ptr<parry::client> api_;
  std::string token_;
  std::string base_url_;
  std::string bus_;
  std::string bus_bind_ = "tcp://127.0.0.1:*"; ///< what --bus asks for
  int uncaught_ = std::uncaught_exceptions();
};

/// Warning and error lines in a spdlog log, with a few examples.
std::pair<std::size_t, std::vector<std::string>> log_problems(const std::string& path);

} // namespace parry::bench
