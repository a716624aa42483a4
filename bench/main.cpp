// parry-bench: measures a real parryd against the performance envelope of DESIGN.md §9
// (ingest rate, isolate round trip, memory per connected device), each next to a
// baseline taken in the same run on the same machine: a bare ZeroMQ sink for ingest
// and a DEALER/ROUTER ping-pong for the round trip. Only 127.0.0.1 is used.
//
// This file holds the command line and the order of a run; the parts live beside it:
// fleet (the bench's DEALERs and the loopback ROUTER), server_under_test (parryd as a
// child), measure (/proc readings, percentiles, floors), phases (the steps of a run)
// and report (results and the table).

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/bench.hpp"
#include "bench/fleet.hpp"
#include "bench/measure.hpp"
#include "bench/phases.hpp"
#include "bench/report.hpp"
#include "bench/server_under_test.hpp"
#include "bench/svg.hpp"
#include "bus/enroll.hpp"
#include "common/process.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

using namespace parry::bench;

extern "C" void on_signal(int) {
  interrupted.store(true);
}

std::string exe_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string{"."} : p.parent_path().string();
}

/// N simulated agents (ids sim-0000...) for the round trips, stopped with SIGTERM when
/// this ends. With an enrollment token they enroll and speak CURVE; without, they
/// speak to a plain bus.
struct sim_agents {
  parry::child_process proc;

  sim_agents(const options& opt, server_under_test& srv, const std::string& token)
      : proc{argv(opt, srv, token),
             token.empty()
                 ? std::map<std::string, std::string>{}
                 : std::map<std::string, std::string>{{"PARRY_ENROLL_TOKEN", token}},
             (srv.dir() / "agent.log").string()} {}
  ~sim_agents() { proc.stop(SIGTERM); }

  static std::vector<std::string> argv(const options& opt, server_under_test& srv,
                                       const std::string& token) {
    std::vector<std::string> a{opt.bin_dir + "/parry-agent",
                               "--sim",
                               std::to_string(opt.sim_endpoints),
                               "--seed",
                               "1",
                               "--id-prefix",
                               sim_prefix,
                               "--server",
                               srv.bus_endpoint(),
                               "--incident-interval-ms",
                               "1000",
                               "--incidents",
                               "2",
                               "--scenarios",
                               opt.scenarios,
                               "--log-level",
                               "warn"};
    // One source address per 20,000 endpoints, each endpoint from a fixed port
    // (parry-agent --source): a single address runs out of ephemeral ports (about
    // 28,000) towards the one server port. All loopback.
    std::string sources;
    for (std::size_t k = 0; k * 20000 < opt.sim_endpoints && k < 200; ++k)
      sources += (k == 0 ? "127.0.0." : ",127.0.0.") + std::to_string(k + 1);
    if (opt.sim_endpoints > 20000) {
      a.push_back("--source");
      a.push_back(sources);
    }
    if (token.empty()) {
      a.push_back("--plain");
    } else {
      for (auto x : {"--enroll-server", srv.enroll_endpoint().c_str()})
        a.push_back(x);
      a.push_back("--state-dir");
      a.push_back((srv.dir() / "agent-state").string());
    }
    return a;
  }
};

/// The same ingest and isolate round trips against a second parryd with CURVE on the
/// bus and signed commands: the bench devices and the simulated agents enroll first.
results curve_pass(const options& opt, const std::vector<frame_pair>& frames,
                   const results& plain) {
  const std::size_t n = opt.bench_sockets;
  results res;
  // The same frames: what they hold was counted when they were made.
  res.reports = plain.reports;
  res.events_total = plain.events_total;
  res.events_per_incident = plain.events_per_incident;
  server_under_test srv{opt};
  srv.start(true);
  srv.login();
  auto tok = srv.api().post(
      "/api/v1/enrollment-tokens",
      nlohmann::json{{"ttl_seconds", 3600}, {"uses", n + opt.sim_endpoints + 16}});
  if (tok.status != 201) throw std::runtime_error("cannot make an enrollment token");
  auto token_text = tok.body["token"].get<std::string>();
  auto token = parry::bus::parse_token(token_text);
  std::vector<parry::bus::enroll_item> items;
  {
    for (std::size_t i = 0; i < n; ++i) {
      char id[32];
      std::snprintf(id, sizeof id, "bench-%05zu", i);
      items.push_back({id, parry::bus::generate_curve_key_pair()});
    }
  }
  auto t0 = steady::now();
  auto outcomes =
      parry::bus::enroll_devices(srv.enroll_endpoint(), *token, items, 32, 30s);
  std::vector<parry::bus::curve_key_pair> keys;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (!outcomes[i].ok)
      throw std::runtime_error("bench device " + outcomes[i].device_id +
                               " did not enroll: " + outcomes[i].error);
    keys.push_back(items[i].keys);
  }
  std::printf("CURVE: %zu bench devices enrolled in %.2f s\n", n,
              ms_between(t0, steady::now()) / 1000.0);
  fleet devices{n, srv.server_key(), keys};
  connect_fleet(srv, devices, res);
  ingest(srv, devices, frames, res);
  auto online_before = stat_of(srv.get("/stats"), "devices_online");
  sim_agents sims{opt, srv, token_text};
  auto& agents = sims.proc;
  auto targets = await_sims(srv, devices, agents, online_before, opt.sim_endpoints, res);
  round_trips(srv, devices, agents, targets, opt.rounds, res);
  if (!srv.running()) throw std::runtime_error("parryd (CURVE) exited");
  return res;
}

/// Plain and CURVE figures side by side, with the cost of CURVE and signatures.
void print_curve_cost(const results& plain, const results& curve) {
  auto rate = [](const results& r) {
    return r.ingest_secs > 0 ? static_cast<double>(r.stored) / r.ingest_secs : 0.0;
  };
  auto row = [](const char* what, double off, double on, bool higher_is_better) {
    double slower = higher_is_better ? (off > 0 ? (off - on) / off : 0)
                                     : (off > 0 ? (on - off) / off : 0);
    std::printf("  %-38s %12.2f %12.2f %+9.1f %%\n", what, off, on, 100.0 * slower);
  };
  std::printf("\nCURVE and signed commands against the plain bus (same run; goal: under "
              "20 %% slower)\n  %-38s %12s %12s %10s\n",
              "figure", "plain", "CURVE", "slower");
  row("ingest, reports stored per second", rate(plain), rate(curve), true);
  row("isolate p50, registered->completed ms", percentile(plain.isolate.server, 50),
      percentile(curve.isolate.server, 50), false);
  row("isolate p99, registered->completed ms", percentile(plain.isolate.server, 99),
      percentile(curve.isolate.server, 99), false);
  row("isolate p99, client POST->final ms", percentile(plain.isolate.client, 99),
      percentile(curve.isolate.client, 99), false);
}

int run(const options& opt) {
  const std::size_t n = opt.bench_sockets;
  results res;
  // One process holds many sockets: two descriptors per DEALER, and ZeroMQ's own.
  parry::raise_open_files_limit();
  // Each DEALER holds a TCP connection and a mailbox descriptor.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * n + 256)
    throw std::runtime_error("open file limit " + std::to_string(rl.rlim_cur) +
                             " is too low for " + std::to_string(n) +
                             " endpoints (needs about " + std::to_string(2 * n + 256) +
                             ")");
  std::printf("parry-bench: %zu endpoints (bench sockets), %zu simulated, %zu incidents, "
              "%zu rounds, %d gateway processes; binaries in %s\n",
              n, opt.sim_endpoints, opt.incidents, opt.rounds, opt.gateways,
              opt.bin_dir.c_str());
  // Other work on the machine skews every figure: say how busy it was at the start.
  std::string load;
  std::getline(std::ifstream{"/proc/loadavg"}, load);
  std::printf(
      "machine: %u cores, load average %s\n", std::thread::hardware_concurrency(),
      load.substr(0, load.find(' ', load.find(' ', load.find(' ') + 1) + 1)).c_str());

  // Restart to ready first, on a machine nothing else of the bench loads yet.
  if (opt.restart_actions > 0) restart_to_ready(opt, opt.restart_actions, res);
  std::fflush(stdout);

  // Frames first, so that neither clock includes encoding.
  fleet devices{n};
  auto frames = make_frames(devices, opt.incidents, opt.scenarios, res);
  std::size_t bytes = 0;
  for (auto& f : frames)
    bytes += f.header.size() + f.body.size();
  std::printf(
      "frames: %zu incident reports, %.1f events and %.0f bytes each on average\n",
      frames.size(), res.events_per_incident,
      static_cast<double>(bytes) / static_cast<double>(frames.size()));
  std::fflush(stdout);

  // Started after construction, so that a failed start still cleans up and shows the log.
  server_under_test srv{opt};
  srv.start();
  std::printf("parryd: pid %d, bus %s, files in %s\n", srv.pid(),
              srv.bus_endpoint().c_str(), srv.dir().c_str());
  const auto caps_line =
      "max_incidents_per_minute = " + std::to_string(srv.caps().per_device_per_minute) +
      " per device, max_incidents_per_second = " + std::to_string(srv.caps().per_second);
  std::printf("parryd: flood guard raised for the measurement: %s\n", caps_line.c_str());
  srv.login();
  std::this_thread::sleep_for(500ms); // start-up allocations settle before the first look
  res.rss_start = rss_with_children_kib(srv.pid());
  res.heap_start = heap_kib(srv);

  ingest_floor(devices, frames, res);
  connect_fleet(srv, devices, res);
  ingest(srv, devices, frames, res);
  std::vector<frame_pair> frames_for_curve;
  if (opt.curve) frames_for_curve = frames;
  std::vector<frame_pair>().swap(frames);
  std::fflush(stdout);

  // Simulated agents for the round trip, with their own id prefix.
  const auto idle_bound = std::chrono::seconds{opt.passivate_after + 60};
  if (opt.passivate_after > 0 && !await_passive(srv, devices, n, idle_bound))
    res.problems.push_back("the bench devices did not all passivate");
  res.heap_before_sims = heap_kib(srv);
  auto online_before = stat_of(srv.get("/stats"), "devices_online");
  sim_agents sims{opt, srv, ""};
  auto& agents = sims.proc;
  auto targets = await_sims(srv, devices, agents, online_before, opt.sim_endpoints, res);
  if (opt.passivate_after > 0) {
    // Idle devices: every one a record in the directory, none an actor.
    auto t0 = steady::now();
    if (await_passive(srv, devices, n + opt.sim_endpoints, idle_bound)) {
      res.idle_secs = ms_between(t0, steady::now()) / 1000.0;
      std::this_thread::sleep_for(300ms);
      res.heap_idle = heap_kib(srv);
      res.rss_idle = rss_with_children_kib(srv.pid());
    } else {
      res.problems.push_back("the simulated devices did not all passivate within " +
                             std::to_string(idle_bound.count()) + " s");
    }
  }

  // The floors, taken beside the running server and agents.
  res.pong = ping_pong(opt.rounds);
  res.fsync = storage_floor(srv.dir(), opt.rounds);

  round_trips(srv, devices, agents, targets, opt.rounds, res);
  fan_out(srv, devices, agents, targets, res);

  res.final_stats = srv.get("/stats");
  res.rss_end = rss_with_children_kib(srv.pid());
  if (!srv.running()) throw std::runtime_error("parryd exited");
  if (opt.kill_restart) {
    // A restart that fails is a problem of the run, not the end of its figures.
    try {
      kill_restart(srv, devices, res);
    } catch (const std::exception& e) {
      res.problems.push_back(std::string{"kill -9 restart: "} + e.what());
    }
  }

  std::printf("\nresults (%zu endpoints, %zu incidents, %zu rounds)\n", n, opt.incidents,
              opt.rounds);
  print_table(table(res, n, opt.sim_endpoints));
  std::printf("parryd ingest caps: %s\n", caps_line.c_str());
  std::printf("\nfinal /stats: %s\n", res.final_stats.dump().c_str());

  int agent_status = agents.stop(SIGTERM);
  if (!(WIFEXITED(agent_status) && WEXITSTATUS(agent_status) == 0))
    res.problems.push_back("parry-agent did not exit cleanly on SIGTERM (wait status " +
                           std::to_string(agent_status) + ")");
  int status = srv.stop();
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    res.problems.push_back("parryd did not exit cleanly on SIGTERM (wait status " +
                           std::to_string(status) + ")");
  if (opt.curve && res.problems.empty()) {
    std::printf("\nsecond pass: a parryd with CURVE and signed commands\n");
    std::fflush(stdout);
    auto curve = curve_pass(opt, frames_for_curve, res);
    print_curve_cost(res, curve);
    for (auto& p : curve.problems)
      res.problems.push_back("CURVE pass: " + p);
  }
  // A restart keeps the first parryd's log beside its own (server_under_test::start).
  for (const auto& log : {srv.log_file() + ".1", srv.log_file()}) {
    if (!fs::exists(log)) continue;
    auto [warnings, examples] = log_problems(log);
    if (warnings == 0) continue;
    std::printf("parryd logged %zu warnings/errors (%s), e.g.:\n", warnings,
                fs::path{log}.filename().c_str());
    for (auto& e : examples)
      std::printf("  %s\n", e.c_str());
  }
  if (!opt.svg.empty()) {
    std::ofstream out{opt.svg, std::ios::trunc};
    out << latency_svg("parry-bench: " + std::to_string(opt.sim_endpoints) +
                           " simulated endpoints, isolate and release (plain bus)",
                       {{"isolate registered->completed (server)", res.isolate.server},
                        {"isolate POST->final seen (client)", res.isolate.client},
                        {"release registered->completed (server)", res.release.server},
                        {"release POST->final seen (client)", res.release.client}});
    if (!out.flush())
      res.problems.push_back("cannot write " + opt.svg);
    else
      std::printf("latency histograms: %s\n", opt.svg.c_str());
  }
  if (opt.keep)
    std::printf("kept %s (parryd.log, agent.log, data/)\n", srv.dir().c_str());
  std::fflush(stdout);
  for (auto& p : res.problems)
    std::fprintf(stderr, "parry-bench: %s\n", p.c_str());
  return res.problems.empty() ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  CLI::App app{"parry-bench: measures parryd against DESIGN.md §9 on loopback"};
  app.add_option("--endpoints", opt.endpoints,
                 "Devices: N simulated, and N bench sockets (at most 10,000); parryd "
                 "gets the gateway processes and parry-agent the processes they need")
      ->capture_default_str()
      ->check(CLI::Range(1, 100'000));
  app.add_option("--bench-sockets", opt.bench_sockets,
                 "The bench's own devices, which ingest runs over (default: as many as "
                 "--endpoints, at most 10,000)")
      ->check(CLI::Range(std::size_t{1}, max_bench_sockets));
  app.add_option("--sim-endpoints", opt.sim_endpoints,
                 "Simulated devices for the round trips and the fan-out (default: as "
                 "many as --endpoints)")
      ->check(CLI::Range(1, 100'000));
  app.add_option(
         "--restart-actions", opt.restart_actions,
         "Actions stored (1 in 10 open) for the restart-to-ready figure; 0 skips it")
      ->capture_default_str()
      ->check(CLI::Range(0, 10'000'000));
  app.add_option("--incidents", opt.incidents, "Incident reports to ingest")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  app.add_option("--rounds", opt.rounds, "Isolate + release rounds")
      ->capture_default_str()
      ->check(CLI::Range(1, 100'000));
  app.add_option("--bin-dir", opt.bin_dir,
                 "Directory of parryd and parry-agent (default: this program's)");
  app.add_option("--scenarios", opt.scenarios, "Scenario directory for parry-agent")
      ->capture_default_str();
  app.add_option("--gateways", opt.gateways,
                 "parryd's bus_gateways: gateway processes hold the agent connections "
                 "(memory and CPU of parryd then include them; default: none while "
                 "parryd's own cap holds every connection, else enough for them)")
      ->check(CLI::Range(0, 64));
  app.add_option("--passivate-after", opt.passivate_after,
                 "parryd's device_passivate_after_s; also measures idle devices' heap "
                 "once all passivated (0: parryd's default, not measured)")
      ->check(CLI::Range(0, 3600));
  app.add_flag("--kill-restart", opt.kill_restart,
               "At the end, kill -9 parryd, start it again on the same data and port, "
               "and time until every device is online again");
  app.add_flag("--keep", opt.keep, "Keep the temporary directory (logs, database)");
  app.add_option("--svg", opt.svg, "Write the latency histograms to this SVG file");
  app.add_flag("!--no-curve", opt.curve,
               "Skip the second pass (CURVE and signed commands against the plain bus)");
  CLI11_PARSE(app, argc, argv);
  if (opt.bin_dir.empty()) opt.bin_dir = exe_dir();
  if (opt.sim_endpoints == 0) opt.sim_endpoints = opt.endpoints;
  if (opt.bench_sockets == 0)
    opt.bench_sockets = std::min(opt.endpoints, max_bench_sockets);
  if (opt.gateways < 0)
    opt.gateways = static_cast<int>(gateways_needed(opt.bench_sockets + opt.sim_endpoints,
                                                    parry::raise_open_files_limit()));
  opt.scenarios = fs::absolute(opt.scenarios).string();
  if (!fs::is_directory(opt.scenarios)) {
    std::cerr << "parry-bench: no scenario directory " << opt.scenarios
              << " (see --scenarios)\n";
    return 2;
  }

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  try {
    return run(opt);
  } catch (const std::exception& e) {
    std::cerr << "parry-bench: failed: " << e.what() << '\n';
    return 1;
  }
}
