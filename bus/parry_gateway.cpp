// parry-gateway: one of parryd's gateway processes (bus_gateways > 0). It holds agent
// connections on bus_endpoint's port, shared with its siblings through SO_REUSEPORT,
// and forwards what it accepts to parryd over the link (bus/link.hpp). parryd starts
// it, passes every setting on the command line and restarts it when it ends; it ends
// with parryd.

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "bus/curve_keys.hpp"
#include "bus/link.hpp"
#include "common/process.hpp"

namespace {

std::atomic<bool> stop_requested{false};

void on_signal(int) {
  stop_requested = true;
}

} // namespace

int main(int argc, char** argv) {
  using namespace parry::bus;
  link::gateway_side_options o;
  long parent = 0;
  std::string keys_dir;
  std::size_t max_frame = o.limits.max_frame;
  std::size_t max_connections = 0;
  std::size_t fd_reserve = 64;
  int heartbeat_ms = 5000, heartbeat_timeout_ms = 15000;
  CLI::App app{"parry-gateway: holds agent connections for parryd (started by parryd "
               "when bus_gateways > 0)"};
  app.add_option("--link", o.link, "parryd's link endpoint")->required();
  app.add_option("--index", o.index, "this gateway's number")
      ->required()
      ->check(CLI::Range(0, 63));
  app.add_option("--endpoint", o.endpoint, "tcp://host:port agents connect to")
      ->required();
  app.add_option("--parent-pid", parent, "end when this process (parryd) ends");
  app.add_option("--data-dir", keys_dir,
                 "parryd's data directory: CURVE with its server key (none: plain TCP)");
  app.add_option("--max-frame", max_frame, "bytes in one frame at most")
      ->check(CLI::Range(std::size_t{256}, std::size_t{64} << 20));
  app.add_option("--max-connections", max_connections,
                 "agent connections at most (0: the open-files limit minus the reserve)");
  app.add_option("--fd-reserve", fd_reserve, "descriptors kept for the link and logs")
      ->check(CLI::Range(16, 100000));
  app.add_option("--heartbeat-ms", heartbeat_ms)->check(CLI::Range(0, 3600000));
  app.add_option("--heartbeat-timeout-ms", heartbeat_timeout_ms)
      ->check(CLI::Range(0, 36000000));
  app.add_flag("--tcp-keepalive", o.gateway.kernel_keepalive,
               "find dead connections with TCP keepalive, not ZMTP heartbeats");
  app.add_option("--backlog", o.gateway.backlog)->check(CLI::Range(1, 65535));
  app.add_option("--io-threads", o.gateway.io_threads)->check(CLI::Range(1, 64));
  CLI11_PARSE(app, argc, argv);

  auto tag = "gateway " + std::to_string(o.index) + ": ";
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  // parryd's children end with it, even after a SIGKILL of parryd: the handler is in
  // place and the signals unblocked (a mask inherited through exec would hold the
  // SIGTERM back for good) before the parent is looked at.
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  sigset_t stops;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  ::pthread_sigmask(SIG_UNBLOCK, &stops, nullptr);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (parent > 0 && ::getppid() != parent) return 0;
  ::signal(SIGPIPE, SIG_IGN);

  o.limits.max_frame = max_frame;
  o.gateway.heartbeat_ivl = std::chrono::milliseconds{heartbeat_ms};
  o.gateway.heartbeat_timeout = std::chrono::milliseconds{heartbeat_timeout_ms};
  o.log = [tag](const std::string& line) { spdlog::warn("{}{}", tag, line); };
  auto fd_limit = parry::raise_open_files_limit();
  if (!keys_dir.empty()) {
    try {
      auto own = load_curve_key_pair(keys_dir + "/" + key_files::dir + "/" +
                                     key_files::curve_secret);
      curve_server_options c;
      c.public_z85 = own.public_z85;
      c.secret_z85 = own.secret_z85;
      c.domain = zap_domain::agents;
      o.gateway.curve = std::move(c);
    } catch (const std::exception& e) {
      spdlog::error("{}cannot load the server's CURVE key: {}", tag, e.what());
      return 1;
    }
  }
  o.gateway.max_connections =
      max_connections > 0
          ? max_connections
          : (fd_limit > 2 * fd_reserve ? fd_limit - fd_reserve : fd_limit / 2);
  o.gateway.handshake_margin =
      gateway::margin_within(o.gateway.max_connections, fd_limit);
  return link::run_gateway_side(o, stop_requested, [&](const std::string& bound) {
    spdlog::info("{}agents on {} ({}, at most {} connections, open-files limit {})", tag,
                 bound, o.gateway.curve ? "CURVE" : "plain TCP",
                 o.gateway.max_connections, fd_limit);
  });
}
