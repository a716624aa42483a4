// parry-agent: simulated EDR endpoints (--sim N), or the real agent acting on the
// machine it runs on (--real --config FILE, agent-real/).

#include <arpa/inet.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "agent-real/real_agent.hpp"
#include "agent-sim/agent_keys.hpp"
#include "agent-sim/scenario.hpp"
#include "agent-sim/sim_procs.hpp"
#include "agent-sim/sim_runner.hpp"
#include "bus/codec.hpp"
#include "common/keys.hpp"
#include "common/time.hpp"

namespace {

std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free,
              "flag is set from a signal handler");

extern "C" void on_signal(int) {
  stop_requested.store(true);
}

int fail(const std::string& msg) {
  std::cerr << "parry-agent: " << msg << '\n';
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"parry-agent: EDR endpoints for the Parry server, simulated (--sim N) or "
               "this machine (--real --config FILE)"};
  std::size_t sim = 0;
  bool real = false;
  std::string scenarios_dir = "./config/scenarios";
  std::string log_level = "info";
  uint32_t incident_interval_ms = 30000;
  std::size_t generate = 0;
  parry::sim::runner_config cfg;
  parry::sim::enrollment enroll;
  enroll.endpoint = "tcp://127.0.0.1:7401";
  std::string state_dir = "./parry-agent-state";
  bool plain = false;

  std::size_t procs = 0;
  app.add_option("--sim", sim, "Simulate N endpoints")->check(CLI::Range(1, 1'000'000));
  app.add_option("--procs", procs,
                 "Spread the endpoints over P processes (default: as few as the "
                 "open-files limit allows, about 4 descriptors per endpoint)")
      ->check(CLI::Range(1, 1024));
  app.add_flag("--real", real,
               "Act on this machine: nftables isolation, processes, files, fanotify "
               "(root; needs --config)");
  std::string config_path;
  app.add_option("--config", config_path, "The real agent's TOML configuration (--real)");
  app.add_option("--server", cfg.endpoint.server, "Server bus endpoint")
      ->capture_default_str();
  app.add_option("--enroll", enroll.token,
                 "Enrollment token for devices that have no key yet (a multi-use token "
                 "enrolls every simulated endpoint)")
      ->envname("PARRY_ENROLL_TOKEN");
  app.add_option("--enroll-server", enroll.endpoint, "Server enrollment endpoint")
      ->capture_default_str();
  app.add_option("--state-dir", state_dir,
                 "Where the device keys and the pinned server keys are kept")
      ->capture_default_str();
  app.add_flag("--plain", plain,
               "Connect without CURVE, to a server with bus_curve = false (closed labs)");
  app.add_option("--seed", cfg.endpoint.seed, "Seed: the same seed gives the same run")
      ->capture_default_str();
  app.add_option("--id-prefix", cfg.endpoint.id_prefix,
                 "Device ids are PREFIX-0000, PREFIX-0001, ...")
      ->capture_default_str();
  app.add_option("--scenarios", scenarios_dir, "Directory of scenario *.toml files")
      ->capture_default_str();
  app.add_option("--incident-interval-ms", incident_interval_ms,
                 "Mean time between incidents of one endpoint")
      ->capture_default_str()
      ->check(CLI::Range(10u, 86'400'000u));
  app.add_option("--incidents", cfg.endpoint.max_incidents,
                 "Incidents per endpoint, 0 for no limit")
      ->capture_default_str();
  bool no_incidents = false;
  app.add_flag("--no-incidents", no_incidents,
               "Report no incidents at all (a run of connections and actions only; "
               "otherwise each endpoint's first comes within 2 s of its welcome)");
  app.add_option("--heartbeat-ms", cfg.endpoint.heartbeat_ms,
                 "Heartbeat interval instead of the server's")
      ->check(CLI::Range(100u, 3'600'000u));
  app.add_option("--generate", generate,
                 "Print K incidents per endpoint as JSON lines and exit (no connection)")
      ->check(CLI::Range(1, 1'000'000));
  app.add_option(
         "--source", cfg.link.sources,
         "Local IP addresses to connect from, in turn, each endpoint from its own "
         "port from 10000 up (tcp:// only; at most 22,000 endpoints per address)")
      ->delimiter(',')
      ->check(CLI::Validator(
          [](std::string& s) {
            unsigned char buf[sizeof(in6_addr)];
            return ::inet_pton(AF_INET, s.c_str(), buf) == 1 ||
                           ::inet_pton(AF_INET6, s.c_str(), buf) == 1
                       ? std::string{}
                       : "not an IP address: " + s;
          },
          "IP"));
  app.add_option("--hold-file", cfg.link.hold_file,
                 "Test hook: while PATH exists, hold received commands unacknowledged "
                 "and unexecuted; run them in order once it is gone");
  app.add_option("--hold-results-file", cfg.link.hold_results_file,
                 "Test hook: while PATH exists, execute commands but send no results; "
                 "re-send them once it is gone");
  app.add_option("--log-level", log_level, "Log level")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  CLI11_PARSE(app, argc, argv);
  cfg.endpoint.report_incidents = !no_incidents;

  if (real) {
    if (sim != 0) return fail("--real and --sim exclude each other");
    if (config_path.empty()) return fail("--real needs --config FILE");
    if (plain) return fail("--real speaks only CURVE with an enrolled key: no --plain");
    // The real agent takes these from its configuration file: a flag that would be
    // silently ignored is refused instead.
    for (const char* o :
         {"--server", "--enroll-server", "--state-dir", "--seed", "--id-prefix",
          "--scenarios", "--incident-interval-ms", "--incidents", "--no-incidents",
          "--heartbeat-ms", "--generate"})
      if (app.count(o) > 0)
        return fail(std::string(o) + " does not apply to --real: set it in the "
                                     "configuration file (docs/agent-real.md)");
    spdlog::set_default_logger(spdlog::stderr_color_mt("parry-agent"));
    spdlog::set_level(spdlog::level::from_str(log_level));
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    parry::real::real_options opt;
    opt.config_path = config_path;
    opt.enroll_token = enroll.token;
    opt.hold_file = cfg.link.hold_file;
    opt.hold_results_file = cfg.link.hold_results_file;
    return parry::real::run_real_agent(opt, stop_requested);
  }
  if (sim == 0) return fail("--sim N is required (the number of endpoints to simulate)");
  if (!cfg.link.sources.empty() &&
      (sim + cfg.link.sources.size() - 1) / cfg.link.sources.size() >
          parry::sim::link_config::max_per_source)
    return fail(
        "--source: at most " + std::to_string(parry::sim::link_config::max_per_source) +
        " endpoints per source address (ports 10000..31999): give more addresses");
  const std::string& server = cfg.endpoint.server;
  if (server.rfind("tcp://", 0) != 0 && server.rfind("ipc://", 0) != 0)
    return fail("--server must be a tcp:// or ipc:// endpoint, got '" + server + "'");
  if (cfg.endpoint.id_prefix.size() > 100 ||
      !parry::bus::valid_id(parry::sim::device_id_for(cfg.endpoint.id_prefix, 0)))
    return fail("--id-prefix must be at most 100 characters of [A-Za-z0-9._:-]");
  cfg.endpoints = sim;
  if (procs > sim) return fail("--procs must not exceed --sim");
  const std::size_t per_process = parry::sim::endpoints_per_process_limit();
  if (procs == 0) procs = parry::sim::processes_needed(sim);
  if (procs > 1024)
    return fail(std::to_string(sim) + " endpoints need " + std::to_string(procs) +
                " processes at " + std::to_string(per_process) +
                " each (the open-files limit), more than the 1024 parry-agent starts");
  if ((sim + procs - 1) / procs > per_process)
    return fail(std::to_string(sim) + " endpoints in " + std::to_string(procs) +
                " process(es) is more than " + std::to_string(per_process) +
                " per process, which the open-files limit allows: use --procs " +
                std::to_string(parry::sim::processes_needed(sim)) + " or more");
  cfg.endpoint.incident_interval_us = int64_t{incident_interval_ms} * 1000;

  // Logs go to stderr so that --generate output on stdout stays clean.
  spdlog::set_default_logger(spdlog::stderr_color_mt("parry-agent"));
  spdlog::set_level(spdlog::level::from_str(log_level));

  std::error_code ec;
  if (!std::filesystem::is_directory(scenarios_dir, ec))
    return fail("scenario directory '" + scenarios_dir +
                "' does not exist; pass --scenarios DIR");
  std::vector<parry::sim::scenario> scenarios;
  try {
    scenarios = parry::sim::load_scenarios(scenarios_dir);
  } catch (const parry::sim::scenario_error& e) {
    return fail(e.what());
  }

  if (generate > 0) {
    parry::sim::write_generated(cfg, scenarios, generate, std::cout);
    return 0;
  }

  if (!plain) {
    if (enroll.endpoint.rfind("tcp://", 0) != 0 &&
        enroll.endpoint.rfind("ipc://", 0) != 0)
      return fail("--enroll-server must be a tcp:// or ipc:// endpoint");
    std::vector<std::string> ids;
    for (std::size_t i = 0; i < sim; ++i)
      ids.push_back(parry::sim::device_id_for(cfg.endpoint.id_prefix, i));
    try {
      auto keys = parry::sim::load_agent_keys(state_dir);
      parry::sim::enroll_missing(keys, ids, enroll, state_dir);
      cfg.link.server_key_z85 = keys.server_key_z85;
      cfg.endpoint.server_signing_key = parry::parse_public_key(keys.signing_key_hex);
      for (const auto& id : ids)
        cfg.link.curve_keys.push_back(keys.devices.at(id));
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  }

  // Report ids carry the start second, so a restarted run does not reuse them.
  char tag[17];
  std::snprintf(tag, sizeof tag, "%llx",
                static_cast<unsigned long long>(parry::now_us() / 1'000'000));
  cfg.endpoint.run_tag = tag;

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::cout << "parry-agent: " << sim << " simulated endpoint" << (sim == 1 ? "" : "s")
            << " (" << parry::sim::device_id_for(cfg.endpoint.id_prefix, 0)
            << (sim > 1
                    ? " .. " + parry::sim::device_id_for(cfg.endpoint.id_prefix, sim - 1)
                    : std::string())
            << ") connecting to " << server << ", seed " << cfg.endpoint.seed << ", "
            << scenarios.size() << " scenarios";
  if (procs > 1) std::cout << ", in " << procs << " processes";
  std::cout << std::endl;
  if (procs > 1) {
    try {
      return parry::sim::run_processes(std::move(cfg), scenarios, procs, stop_requested);
    } catch (const std::exception& e) {
      return fail(e.what());
    }
  }
  try {
    parry::sim::sim_runner runner(cfg, std::move(scenarios));
    runner.run(stop_requested);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
