#pragma once

// What a run measured and how it is shown: the samples and figures of one run, the
// results table and its printing.

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace parry::bench {

/// `x` with `digits` decimals; "n/a" for NaN.
std::string fixed(double x, int digits);

struct figure {
  std::string name;
  std::string value;
  std::string unit;
  std::string baseline;
  std::string target;
};

void print_table(const std::vector<figure>& rows);

/// Latency samples of one action type, in milliseconds.
struct action_samples {
  std::vector<double> server; ///< registered -> completed, from the server's clock
  std::vector<double> client; ///< POST sent -> final state seen by polling
  /// The agent's share of `server`: command arrival -> result made, on the agent's
  /// clock (the result's agent_us).
  std::vector<double> agent;
  /// `server` minus `agent`: what parryd and the loopback network took.
  std::vector<double> server_share;
  /// Per step between consecutive transitions ("registered->sent", ...), in the
  /// order first seen.
  std::vector<std::pair<std::string, std::vector<double>>> stages;
  std::size_t failures = 0;

  std::vector<double>& stage(const std::string& name) {
    for (auto& [k, v] : stages)
      if (k == name) return v;
    return stages.emplace_back(name, std::vector<double>{}).second;
  }
};

/// Everything one run measures.
struct results {
  std::size_t reports = 0;
  std::size_t events_total = 0;
  double events_per_incident = 0;
  double sink_secs = 0;   ///< first send -> last report counted by the bare ROUTER
  double send_secs = 0;   ///< first send -> last report queued by the bench
  double ingest_secs = 0; ///< first send -> /stats shows every report stored
  std::size_t stored = 0;
  /// Incidents stored per second in the slowest whole second of ingest (from
  /// /stats sampled every 100 ms); -1 when ingest took less than two seconds.
  double slowest_window_rate = -1;
  double ingest_cpu = 0;       ///< parryd CPU seconds from first send to all stored
  double rounds_secs = 0;      ///< wall time of the isolate/release rounds
  double rounds_cpu = 0;       ///< parryd CPU seconds during the rounds
  double rounds_agent_cpu = 0; ///< parry-agent CPU seconds during the rounds
  std::vector<double> pong;    ///< DEALER/ROUTER round trips, ms
  std::vector<double> fsync;   ///< 4 KiB overwrite + fdatasync in the data dir, ms
  action_samples isolate, release;
  long rss_trimmed = -1; ///< after ingest, once parryd trimmed its heap, KiB
  long rss_start = -1, rss_conn = -1, rss_bench = -1, rss_ingested = -1, rss_sim = -1,
       rss_end = -1;
  /// parryd's heap in use (/stats memory.heap_bytes), KiB: at start, with the bench
  /// connections open, before the simulated devices come (every bench device
  /// passivated when --passivate-after is given), with them online (live actors),
  /// and once every device passivated; -1 when not measured.
  long heap_start = -1, heap_conn = -1, heap_before_sims = -1, heap_sims = -1,
       heap_idle = -1;
  long rss_idle = -1;           ///< parryd VmRSS once every device passivated, KiB
  double idle_secs = -1;        ///< sims online -> every device passivated, seconds
  double sims_online_secs = -1; ///< parry-agent started -> every sim device online, s
  double kill_ready_secs = -1;  ///< kill -9 of parryd -> the new one ready, s
  double kill_online_secs = -1; ///< the new parryd started -> every device online, s
  nlohmann::json final_stats;
  double restart_secs = -1;          ///< exec -> ready with restart_actions stored
  std::size_t restart_actions = 0;   ///< of which one in ten open
  long rss_restarted = -1;           ///< parryd VmRSS once ready after that restart, KiB
  std::size_t fanout_targets = 0;    ///< isolates asked for by the fan-out
  std::size_t fanout_completed = 0;  ///< of them, ended completed
  double fanout_register_secs = -1;  ///< first bulk request -> last bulk answer
  double fanout_secs = -1;           ///< first bulk request -> every one final
  double fanout_cpu = 0;             ///< parryd CPU seconds (gateways included) meanwhile
  double fanout_agent_cpu = 0;       ///< parry-agent CPU seconds meanwhile
  std::vector<std::string> problems; ///< what did not run as it should
};

/// One line per step of `s`: p50, p99 and max in ms.
std::string stages_summary(const action_samples& s);

/// The figures of a run with `n` endpoints, with their baselines and targets.
std::vector<figure> table(const results& res, std::size_t n, std::size_t sims);

} // namespace parry::bench
