#include "bench/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ios>
#include <sstream>

#include "bench/measure.hpp"

namespace parry::bench {

std::string fixed(double x, int digits) {
  if (std::isnan(x)) return "n/a";
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(digits);
  os << x;
  return os.str();
}

void print_table(const std::vector<figure>& rows) {
  std::vector<std::string> head{"figure", "value", "unit", "baseline",
                                "DESIGN §9 target"};
  std::size_t w[4] = {head[0].size(), head[1].size(), head[2].size(), head[3].size()};
  for (auto& r : rows) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], r.value.size());
    w[2] = std::max(w[2], r.unit.size());
    w[3] = std::max(w[3], r.baseline.size());
  }
  auto line = [&](const std::string& a, const std::string& b, const std::string& c,
                  const std::string& d, const std::string& e) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "  %-*s  %*s  %-*s  %-*s  %s", static_cast<int>(w[0]),
                  a.c_str(), static_cast<int>(w[1]), b.c_str(), static_cast<int>(w[2]),
                  c.c_str(), static_cast<int>(w[3]), d.c_str(), e.c_str());
    std::string out{buf};
    out.erase(out.find_last_not_of(' ') + 1);
    std::printf("%s\n", out.c_str());
  };
  line(head[0], head[1], head[2], head[3], head[4]);
  line(std::string(w[0], '-'), std::string(w[1], '-'), std::string(w[2], '-'),
       std::string(w[3], '-'), std::string(16, '-'));
  for (auto& r : rows)
    line(r.name, r.value, r.unit, r.baseline, r.target);
}

std::string stages_summary(const action_samples& s) {
  std::string out;
  for (auto& [name, v] : s.stages)
    out += "    " + name + ": p50 " + fixed(percentile(v, 50), 2) + " ms, p99 " +
           fixed(percentile(v, 99), 2) + " ms, max " + fixed(percentile(v, 100), 2) +
           " ms\n";
  return out;
}

std::vector<figure> table(const results& res, std::size_t n, std::size_t sims) {
  std::vector<figure> rows;
  auto ms = [](double x) { return fixed(x, 2); };
  auto dist = [&](const std::vector<double>& v) {
    return "p50 " + ms(percentile(v, 50)) + ", p99 " + ms(percentile(v, 99));
  };
  double rate = static_cast<double>(res.stored) / res.ingest_secs;
  double floor_rate = static_cast<double>(res.reports) / res.sink_secs;
  rows.push_back({"ingest (first send -> all stored)", fixed(rate, 0), "incidents/s",
                  fixed(floor_rate, 0) + " (bare ROUTER)", ""});
  rows.push_back({"ingest (first send -> all stored)",
                  fixed(rate * res.events_per_incident, 0), "events/s",
                  fixed(floor_rate * res.events_per_incident, 0) + " (bare ROUTER)",
                  ">= 20000 events/s"});
  rows.push_back(
      {"ingest, parryd / bare ROUTER", fixed(rate / floor_rate, 3), "ratio", "", ""});
  rows.push_back(
      {"ingest, slowest 1 s window",
       res.slowest_window_rate < 0 ? std::string{"-"} : fixed(res.slowest_window_rate, 0),
       "incidents/s", fixed(rate, 0) + " (mean of the run)", ">= 0.4 x bare ROUTER"});
  rows.push_back(
      {"ingest, time to queue all reports", fixed(res.send_secs, 3), "s", "", ""});
  rows.push_back({"ingest, parryd CPU (cores busy)",
                  fixed(res.ingest_cpu / res.ingest_secs, 2), "cores", "", ""});
  auto add_action = [&](const char* name, const action_samples& s, bool with_target) {
    std::string n1 = std::string{name} + " registered->completed ";
    rows.push_back({n1 + "p50", ms(percentile(s.server, 50)), "ms",
                    with_target ? dist(res.pong) + " (bus ping-pong)" : "", ""});
    rows.push_back({n1 + "p99", ms(percentile(s.server, 99)), "ms",
                    with_target ? dist(res.fsync) + " (fdatasync)" : "",
                    with_target ? "< 50 ms (loopback)" : ""});
    rows.push_back({n1 + "max", ms(percentile(s.server, 100)), "ms", "", ""});
    rows.push_back({n1 + "p99, parryd + network share",
                    ms(percentile(s.server_share, 99)), "ms", "",
                    with_target ? "< 5 ms @ 10k endpoints" : ""});
    rows.push_back({n1 + "p99, agent share", ms(percentile(s.agent, 99)), "ms",
                    "result.agent_us", ""});
    std::string n2 = std::string{name} + " POST->seen final (client) ";
    rows.push_back({n2 + "p50", ms(percentile(s.client, 50)), "ms", "", ""});
    rows.push_back({n2 + "p99", ms(percentile(s.client, 99)), "ms", "", ""});
  };
  add_action("isolate", res.isolate, true);
  add_action("release", res.release, false);
  if (res.fanout_secs >= 0) {
    std::string what = "fan-out: isolate all " + std::to_string(res.fanout_targets) +
                       " sim devices, first request -> all final";
    rows.push_back({what, fixed(res.fanout_secs, 3), "s",
                    std::to_string(res.fanout_completed) + " completed",
                    "< 2 s @ 10k endpoints"});
    rows.push_back({"fan-out: first request -> all registered",
                    fixed(res.fanout_register_secs, 3), "s", "", ""});
    // Which process did the fan-out's work. On a shared machine the CPU time of one
    // build moves between runs as the seconds above do (docs/benchmarks.md).
    auto per_isolate = [&](double cpu) {
      return fixed(cpu * 1e6 / double(std::max<std::size_t>(res.fanout_targets, 1)), 0);
    };
    rows.push_back({"fan-out: parryd CPU per isolate", per_isolate(res.fanout_cpu), "us",
                    fixed(res.fanout_cpu / res.fanout_secs, 2) + " cores busy", ""});
    rows.push_back(
        {"fan-out: parry-agent CPU per isolate", per_isolate(res.fanout_agent_cpu), "us",
         fixed(res.fanout_agent_cpu / res.fanout_secs, 2) + " cores busy", ""});
  }
  rows.push_back({"rounds, parryd CPU (cores busy)",
                  fixed(res.rounds_cpu / res.rounds_secs, 2), "cores", "", ""});
  rows.push_back({"rounds, parry-agent CPU (cores busy)",
                  fixed(res.rounds_agent_cpu / res.rounds_secs, 2), "cores", "", ""});
  auto kib = [](long v) { return std::to_string(v); };
  rows.push_back({"parryd VmRSS after start", kib(res.rss_start), "KiB", "", ""});
  rows.push_back(
      {"parryd VmRSS, bench connections open", kib(res.rss_conn), "KiB", "", ""});
  rows.push_back(
      {"parryd VmRSS, bench devices welcomed", kib(res.rss_bench), "KiB", "", ""});
  rows.push_back({"parryd VmRSS after ingest", kib(res.rss_ingested), "KiB", "", ""});
  rows.push_back({"parryd VmRSS after ingest, heap trimmed",
                  res.rss_trimmed < 0 ? std::string{"no trim"} : kib(res.rss_trimmed),
                  "KiB", "", "returned after a burst"});
  rows.push_back({"parryd VmRSS, sim devices online", kib(res.rss_sim), "KiB", "", ""});
  rows.push_back({"parryd VmRSS at the end", kib(res.rss_end), "KiB", "", ""});
  auto per = [&](long a, long b, std::size_t count) {
    return fixed(static_cast<double>(b - a) / static_cast<double>(count), 2);
  };
  rows.push_back({"per bench device: connection only",
                  per(res.rss_start, res.rss_conn, n), "KiB/device", "", ""});
  rows.push_back({"per bench device: hello (actor + record)",
                  per(res.rss_conn, res.rss_bench, n), "KiB/device", "",
                  "< 2 KiB (idle actor)"});
  rows.push_back({"per bench device: total", per(res.rss_start, res.rss_bench, n),
                  "KiB/device", "", ""});
  rows.push_back(
      {"per sim device (connect+hello, after the trim)",
       per(res.rss_trimmed < 0 ? res.rss_ingested : res.rss_trimmed, res.rss_sim, sims),
       "KiB/device", "", ""});
  // The heap (allocated, not freed) falls when actors end; VmRSS seldom does.
  auto heap_per = [&](long a, long b, std::size_t count) {
    return a < 0 || b < 0 ? std::string{"-"} : per(a, b, count);
  };
  rows.push_back({"per bench device heap: connection only",
                  heap_per(res.heap_start, res.heap_conn, n), "KiB/device",
                  "/stats memory.heap_bytes", "ZeroMQ's floor"});
  rows.push_back({"per sim device heap: connection + live device actor",
                  heap_per(res.heap_before_sims, res.heap_sims, sims), "KiB/device", "",
                  ""});
  rows.push_back({"sim devices: parry-agent started -> all online",
                  fixed(res.sims_online_secs, 1), "s", "", "< 30 s @ 50k endpoints"});
  if (res.kill_online_secs >= 0) {
    rows.push_back({"kill -9 restart: new parryd started -> all online",
                    fixed(res.kill_online_secs, 1), "s", "", "< 30 s @ 50k endpoints"});
    rows.push_back({"kill -9 restart: kill -> new parryd ready",
                    fixed(res.kill_ready_secs, 3), "s", "", ""});
  }
  if (res.heap_idle >= 0) {
    rows.push_back(
        {"sims online -> every device passivated", fixed(res.idle_secs, 1), "s", "", ""});
    rows.push_back({"per sim device heap: connection + passivated record",
                    heap_per(res.heap_before_sims, res.heap_idle, sims), "KiB/device", "",
                    "<= 30 KiB"});
    double record =
        static_cast<double>(res.heap_idle - res.heap_before_sims) /
            static_cast<double>(sims) -
        static_cast<double>(res.heap_conn - res.heap_start) / static_cast<double>(n);
    rows.push_back({"per sim device heap: passivated, less a connection",
                    fixed(record, 2), "KiB/device", "the device's own share", "< 2 KiB"});
    rows.push_back(
        {"parryd VmRSS once every device passivated", kib(res.rss_idle), "KiB", "", ""});
  }
  if (res.restart_secs < 0) {
    rows.push_back({"restart to ready", "skipped", "", "", "< 2 s @ 1M actions"});
  } else {
    rows.push_back({"restart to ready, " + std::to_string(res.restart_actions) +
                        " actions stored (1 in 10 open)",
                    fixed(res.restart_secs, 3), "s", "exec -> ready line (20 ms polls)",
                    "< 2 s @ 1M actions"});
    rows.push_back({"parryd VmRSS once ready after that restart", kib(res.rss_restarted),
                    "KiB", "", ""});
  }
  return rows;
}

} // namespace parry::bench
