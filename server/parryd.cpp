// parryd: the Parry server.

#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/service_notify.hpp"
#include "server/backup.hpp"
#include "server/config.hpp"
#include "server/logging.hpp"
#include "server/server.hpp"

namespace {

/// Prints a check of a database file; returns the exit code.
int report(const char* what, const std::string& file, const parry::backup_check& c) {
  if (!c.ok) {
    std::cerr << "parryd: " << file << ": " << c.problem << '\n';
    return 1;
  }
  std::printf("%s %s: %lld bytes, audit chain of %lld records intact, head %s\n", what,
              file.c_str(), static_cast<long long>(c.bytes),
              static_cast<long long>(c.audit_records), c.audit_head.c_str());
  return 0;
}

/// Backup, check and restore run without starting the server. Returns the exit
/// code, or -1 when none was asked for.
int database_commands(const std::string& backup, const std::string& check,
                      const std::string& restore, const parry::server_config& cfg) {
  try {
    if (!backup.empty())
      return report("backup", backup,
                    parry::backup_database(cfg.data_dir + "/parry.db", backup));
    if (!check.empty()) return report("checked", check, parry::check_database(check));
    if (!restore.empty())
      return report("restored", restore, parry::restore_database(restore, cfg.data_dir));
  } catch (const std::exception& e) {
    std::cerr << "parryd: " << e.what() << '\n';
    return 1;
  }
  return -1;
}

/// Under systemd with WatchdogSec: tells it every half period that the actors still
/// answer; a server that stops answering is restarted by systemd.
std::thread start_watchdog(parry::server& srv, std::atomic<bool>& stop) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return {};
  auto period = std::chrono::microseconds{usec / 2};
  return std::thread{[&srv, &stop, period] {
    while (!stop.load()) {
      auto next = std::chrono::steady_clock::now() + period;
      if (srv.alive(std::chrono::duration_cast<std::chrono::milliseconds>(period)))
        parry::notify_service("WATCHDOG=1");
      else
        spdlog::error("parryd: the actors did not answer the watchdog's health check");
      while (!stop.load() && std::chrono::steady_clock::now() < next)
        std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
  }};
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"parryd - server for EDR response actions\n\nSettings come from, each "
               "overriding the one before: defaults, the TOML file (--config), PARRY_* "
               "environment variables, the flags below."};
  parry::config_inputs inputs;
  bool print = false;
  bool markdown = false;
  bool toml = false;
  std::string backup, check, restore;
  app.add_option("--config", inputs.file, "TOML configuration file");
  auto* print_option =
      app.add_flag("--print-config", print,
                   "print each key's effective value and where it came from, then exit");
  app.add_flag("--markdown", markdown,
               "with --print-config: print the reference table of every key (defaults "
               "only) in Markdown instead")
      ->needs(print_option);
  app.add_flag("--toml", toml,
               "with --print-config: print a configuration file of every key with its "
               "meaning and default as comments (keys set here are written out)")
      ->needs(print_option);
  auto* backup_option = app.add_option(
      "--backup", backup,
      "copy the database of data_dir to FILE (a new file) while parryd may be running, "
      "check the copy, then exit");
  auto* check_option =
      app.add_option("--check-backup", check,
                     "check FILE (integrity, schema, the whole audit chain) and exit");
  app.add_option("--restore", restore,
                 "check FILE, then make it the database of data_dir (parryd must be "
                 "stopped; the old database is kept beside it), then exit")
      ->excludes(backup_option)
      ->excludes(check_option);
  backup_option->excludes(check_option);
  // One option per key of the table, each taken as text and checked by the table, so
  // a bad flag fails with the same message as a bad file or environment value.
  const auto& keys = parry::config_keys();
  std::vector<std::string> texts(keys.size());
  std::vector<CLI::Option*> options(keys.size(), nullptr);
  for (size_t i = 0; i < keys.size(); ++i) {
    const auto& k = keys[i];
    if (k.flag.empty()) continue;
    options[i] = app.add_option(k.flag, texts[i],
                                k.doc + " [" + k.legal + "; env " + k.env + "; default " +
                                    k.default_toml + "]")
                     ->type_name(k.type == "integer"   ? "INT"
                                 : k.type == "boolean" ? "BOOL"
                                                       : "TEXT");
  }
  std::string env_only;
  for (const auto& k : keys)
    if (k.flag.empty()) env_only += "\n  " + k.env + ": " + k.doc + " [" + k.legal + "]";
  if (!env_only.empty())
    app.footer("Set only in the file or the environment:" + env_only);
  CLI11_PARSE(app, argc, argv);
  if (markdown) {
    std::cout << parry::config_reference_markdown();
    return 0;
  }
  for (size_t i = 0; i < keys.size(); ++i)
    if (options[i] != nullptr && options[i]->count() > 0)
      inputs.flags.emplace_back(keys[i].key, texts[i]);

  // Defaults, then the file, then the environment, then the command line.
  parry::loaded_config loaded;
  if (auto err = parry::load_config(inputs, loaded); !err.empty()) {
    std::istringstream lines{err};
    for (std::string line; std::getline(lines, line);)
      std::cerr << "parryd: " << line << '\n';
    return 2;
  }
  if (print) {
    std::cout << (toml ? parry::config_template_toml(loaded)
                       : parry::print_config(loaded));
    return 0;
  }
  const auto& cfg = loaded.cfg;
  parry::configure_logging(cfg.log_level, cfg.log_format);
  if (auto rc = database_commands(backup, check, restore, cfg); rc >= 0) return rc;
  spdlog::debug("parryd: configuration\n{}", parry::print_config(loaded));

  // Every thread started from here on inherits the blocked set; main waits for the
  // signals with sigwait instead of running code inside a handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  parry::server srv{cfg};
  try {
    srv.start();
  } catch (const std::exception& e) {
    std::cerr << "parryd: cannot start: " << e.what() << '\n';
    parry::notify_service(std::string{"STATUS=cannot start: "} + e.what());
    srv.stop();
    return 1;
  }
  // An IPv6 address goes in brackets in a URL.
  auto host = cfg.http_address.find(':') == std::string::npos
                  ? cfg.http_address
                  : "[" + cfg.http_address + "]";
  std::printf("parryd ready\n  REST   https://%s:%u/api/v1\n  bus    %s\n  CA     %s\n",
              host.c_str(), srv.http_port(), srv.bus_endpoint().c_str(),
              srv.cert_file().c_str());
  if (srv.serves_console())
    std::printf("  console https://%s:%u/\n", host.c_str(), srv.http_port());
  if (srv.metrics_port() != 0) {
    auto maddr = cfg.metrics_address.find(':') == std::string::npos
                     ? cfg.metrics_address
                     : "[" + cfg.metrics_address + "]";
    std::printf("  metrics http://%s:%u/metrics\n", maddr.c_str(), srv.metrics_port());
  }
  if (cfg.bus_curve)
    std::printf("  enroll %s\n  integrators %s\n  events %s\n  server key %s\n",
                srv.enroll_endpoint().c_str(), srv.integrator_endpoint().c_str(),
                srv.events_endpoint().c_str(), srv.bus_public_key().c_str());
  else
    std::printf("  WARNING: bus_curve = false: the bus is plain TCP; anyone who reaches "
                "it can speak as any device\n");
  if (!srv.generated_admin_password().empty())
    std::printf("  first administrator: admin / %s  (shown once; change it)\n",
                srv.generated_admin_password().c_str());
  std::fflush(stdout);
  parry::notify_service("READY=1\nSTATUS=serving https on port " +
                        std::to_string(srv.http_port()) +
                        "\nMAINPID=" + std::to_string(::getpid()));
  std::atomic<bool> stop_watchdog{false};
  auto watchdog = start_watchdog(srv, stop_watchdog);
  int sig = 0;
  for (;;) {
    sigwait(&signals, &sig);
    if (sig != SIGHUP) break;
    // Reload: the same sources again (file, environment, flags); a bad file keeps
    // everything as it was.
    parry::notify_service("RELOADING=1");
    parry::loaded_config next;
    if (auto err = parry::load_config(inputs, next); !err.empty()) {
      spdlog::error("parryd: reload refused, the configuration has errors:\n{}", err);
    } else {
      try {
        srv.reload(next.cfg);
      } catch (const std::exception& e) {
        spdlog::error("parryd: reload refused, nothing changed: {}", e.what());
      }
    }
    parry::notify_service("READY=1");
  }
  spdlog::info("parryd: signal {}, stopping", sig);
  parry::notify_service("STOPPING=1");
  stop_watchdog = true;
  if (watchdog.joinable()) watchdog.join();
  srv.stop();
  return 0;
}
