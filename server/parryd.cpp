// parryd: the Parry server.

#include <csignal>
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "server/config.hpp"
#include "server/server.hpp"

int main(int argc, char** argv) {
  parry::server_config cfg;
  CLI::App app{"parryd - server for EDR response actions"};
  std::string config_file;
  std::string data_dir, bus, http_address, log_level;
  int http_port = -1;
  app.add_option("--config", config_file, "TOML configuration file");
  app.add_option("--data-dir", data_dir, "directory for the database and TLS files");
  app.add_option("--bus", bus, "agent bus endpoint, e.g. tcp://127.0.0.1:7400");
  app.add_option("--http-address", http_address, "HTTPS listen address");
  app.add_option("--http-port", http_port, "HTTPS port (0: any free port)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  CLI11_PARSE(app, argc, argv);

  // Defaults, then the file, then the environment, then the command line.
  std::string err;
  if (!config_file.empty()) err = parry::load_toml(config_file, cfg);
  if (err.empty()) err = parry::load_env(cfg);
  if (!data_dir.empty()) cfg.data_dir = data_dir;
  if (!bus.empty()) cfg.bus_endpoint = bus;
  if (!http_address.empty()) cfg.http_address = http_address;
  if (http_port >= 0) cfg.http_port = static_cast<uint16_t>(http_port);
  if (!log_level.empty()) cfg.log_level = log_level;
  if (err.empty()) err = cfg.validate();
  if (!err.empty()) {
    std::cerr << "parryd: " << err << '\n';
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));

  // Every thread started from here on inherits the blocked set; main waits for the
  // signals with sigwait instead of running code inside a handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  parry::server srv{cfg};
  try {
    srv.start();
  } catch (const std::exception& e) {
    std::cerr << "parryd: cannot start: " << e.what() << '\n';
    srv.stop();
    return 1;
  }
  std::printf("parryd ready\n  REST   https://%s:%u/api/v1\n  bus    %s\n  CA     %s\n",
              cfg.http_address.c_str(), srv.http_port(), srv.bus_endpoint().c_str(),
              srv.cert_file().c_str());
  if (!srv.generated_admin_password().empty())
    std::printf("  first administrator: admin / %s  (shown once; change it)\n",
                srv.generated_admin_password().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("parryd: signal {}, stopping", sig);
  srv.stop();
  return 0;
}
