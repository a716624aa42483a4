#include "agent-sim/sim_runner.hpp"

#include <ostream>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "agent-sim/bus_runner.hpp"

#include "common/time.hpp"

namespace parry::sim {

namespace {

constexpr int64_t summary_interval_us = 30'000'000;

void add(endpoint_stats& to, const endpoint_stats& s) {
  to.frames_in += s.frames_in;
  to.bad_frames += s.bad_frames;
  to.unknown_frames += s.unknown_frames;
  to.messages_out += s.messages_out;
  to.incidents += s.incidents;
  to.commands_executed += s.commands_executed;
  to.duplicate_commands += s.duplicate_commands;
  to.welcomes += s.welcomes;
  to.blocked_starts += s.blocked_starts;
  to.suppressed_incidents += s.suppressed_incidents;
  to.held_commands += s.held_commands;
}

} // namespace

struct sim_runner::impl {
  runner_config cfg;
  std::vector<scenario> scenarios; // endpoints point into it; never resized
  std::vector<sim_endpoint> endpoints;
  std::unique_ptr<bus_runner> bus; // made at start, once the endpoints stay put
};

sim_runner::sim_runner(runner_config cfg, std::vector<scenario> scenarios)
    : impl_(std::make_unique<impl>()) {
  impl_->cfg = std::move(cfg);
  impl_->scenarios = std::move(scenarios);
  int64_t started_at = now_us();
  impl_->endpoints.reserve(impl_->cfg.endpoints);
  for (std::size_t i = 0; i < impl_->cfg.endpoints; ++i)
    impl_->endpoints.emplace_back(impl_->cfg.first + i, impl_->cfg.endpoint,
                                  impl_->scenarios, started_at);
}

sim_runner::~sim_runner() = default;

void sim_runner::start() {
  impl& m = *impl_;
  if (m.bus) return;
  link_config link = m.cfg.link;
  link.server = m.cfg.endpoint.server;
  link.first = m.cfg.first;
  std::vector<agent_session*> sessions;
  for (auto& ep : m.endpoints)
    sessions.push_back(&ep.session());
  auto bus = std::make_unique<bus_runner>(std::move(link), std::move(sessions));
  bus->start();
  m.bus = std::move(bus);
}

void sim_runner::poll_once(long max_wait_ms) {
  if (!impl_->bus) throw std::logic_error("sim_runner::poll_once before start");
  impl_->bus->poll_once(max_wait_ms);
}

void sim_runner::run(const std::atomic<bool>& stop) {
  start();
  int64_t next_summary = now_us() + summary_interval_us;
  auto summary = [this] {
    runner_stats s = stats();
    spdlog::info("{} endpoints: {} connected, {} welcomed; {} incidents, {} commands "
                 "({} repeated), {} blocked starts, {} messages out, {} dropped in, "
                 "{} send failures",
                 size(), s.linked, s.welcomed, s.totals.incidents,
                 s.totals.commands_executed, s.totals.duplicate_commands,
                 s.totals.blocked_starts, s.totals.messages_out,
                 s.totals.bad_frames + s.totals.unknown_frames, s.send_failures);
  };
  while (!stop.load()) {
    poll_once(100);
    if (now_us() >= next_summary) {
      summary();
      next_summary += summary_interval_us;
    }
  }
  summary();
}

std::size_t sim_runner::size() const {
  return impl_->endpoints.size();
}

const sim_endpoint& sim_runner::endpoint(std::size_t i) const {
  return impl_->endpoints.at(i);
}

runner_stats sim_runner::stats() const {
  runner_stats s;
  for (const auto& ep : impl_->endpoints) {
    add(s.totals, ep.stats());
    s.welcomed += ep.welcomed();
    s.linked += ep.link_up();
  }
  s.send_failures = impl_->bus ? impl_->bus->send_failures() : 0;
  s.opened = impl_->bus ? impl_->bus->sockets_opened() : 0;
  return s;
}

void write_generated(const runner_config& cfg, const std::vector<scenario>& scenarios,
                     std::size_t per_endpoint, std::ostream& out) {
  int64_t now = now_us(); // only reaches times, which are not printed
  for (std::size_t i = cfg.first; i < cfg.first + cfg.endpoints; ++i) {
    sim_endpoint ep(i, cfg.endpoint, scenarios, now);
    out << describe_endpoint(ep) << '\n';
    for (std::size_t k = 0; k < per_endpoint; ++k)
      out << describe_incident(ep.device_id(), ep.next_incident(now)) << '\n';
  }
}

} // namespace parry::sim
