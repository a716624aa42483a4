#pragma once

// The steps of a run against parryd: encode the reports, take the ingest floor,
// connect and greet the fleet, ingest, wait for the simulated agents, and time the
// isolate/release rounds. Each step records what it measured in `results`.

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/fleet.hpp"
#include "bench/report.hpp"
#include "bench/server_under_test.hpp"
#include "common/process.hpp"

namespace parry::bench {

/// A counter from GET /stats, 0 when absent.
std::size_t stat_of(const nlohmann::json& stats, const char* key);

/// Pre-encodes `m` incident reports spread over the fleet's devices. The chains come
/// from the same scenario files and instantiation as parry-agent's, one simulated
/// endpoint per bench device, so the bench measures what agents send.
std::vector<frame_pair> make_frames(fleet& devices, std::size_t m,
                                    const std::string& scenario_dir, results& res);

/// The ingest floor: the same frames through the same DEALERs into a ROUTER that only
/// counts. Leaves the DEALERs disconnected.
void ingest_floor(fleet& devices, const std::vector<frame_pair>& frames, results& res);

/// Connects the fleet to parryd (memory before and after the hellos) and waits until
/// every device is welcomed and counted online.
void connect_fleet(server_under_test& srv, fleet& devices, results& res);

/// Blasts the reports at parryd and times them until /stats shows every one stored.
void ingest(server_under_test& srv, fleet& devices, const std::vector<frame_pair>& frames,
            results& res);

/// Waits until `n` more devices are online and each simulated one has reported an
/// incident; returns (device id, incident id) pairs.
std::vector<std::pair<std::string, std::string>>
await_sims(server_under_test& srv, fleet& devices, parry::child_process& agents,
           std::size_t online_before, std::size_t n, results& res);

/// parryd's heap in use (/stats memory.heap_bytes), KiB.
long heap_kib(server_under_test& srv);

/// Waits until `n` devices are passivated (/stats device_actors.passive), at most
/// `within`; returns whether they were.
bool await_passive(server_under_test& srv, fleet& devices, std::size_t n,
                   std::chrono::seconds within);

/// Isolates and releases the simulated devices round-robin.
void round_trips(server_under_test& srv, fleet& devices, parry::child_process& agents,
                 const std::vector<std::pair<std::string, std::string>>& targets,
                 std::size_t rounds, results& res);

/// Isolates every one of `targets` at once (POST /actions/bulk, 1,000 per request)
/// and times first request -> every one of them final; counts how many completed,
/// and the CPU time parryd (with its gateways) and the simulator spent meanwhile.
void fan_out(server_under_test& srv, fleet& devices, parry::child_process& agents,
             const std::vector<std::pair<std::string, std::string>>& targets,
             results& res);

/// Restart to ready: a parryd whose store holds `actions` actions, one in ten open
/// (sent, waiting for devices that are offline), written straight into its database
/// between a first start (which makes the schema) and the measured one. Sets
/// `res.restart_secs` (exec -> the "REST" line of its ready block) and
/// `res.restart_actions`.
void restart_to_ready(const options& opt, std::size_t actions, results& res);

/// A crash and a restart under load: kill -9 of parryd (and its gateways), a new
/// parryd on the same data and bus port, and the time until every device that was
/// online before is online again (the agents reconnect by themselves).
void kill_restart(server_under_test& srv, fleet& devices, results& res);

} // namespace parry::bench
