#include "agent-real/real_agent.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <iostream>
#include <memory>
#include <set>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "agent-real/detection.hpp"
#include "agent-real/real_config.hpp"
#include "agent-real/real_executor.hpp"
#include "agent-sim/agent_keys.hpp"
#include "agent-sim/agent_session.hpp"
#include "agent-sim/bus_runner.hpp"
#include "bus/codec.hpp"
#include "common/keys.hpp"
#include "common/time.hpp"

namespace parry::real {

namespace {

constexpr const char* agent_version = "parry-agent/0.1.0";
constexpr const char* journal_file = "/journal.json";
// The worst case: max_journal entries, each with 4 KiB of stdout and of stderr in
// which every byte is a control character escaped as \u00XX.
constexpr std::size_t max_journal_bytes =
    sim::agent_session::max_journal * (2 * 4096 * 6 + 4096) + (1u << 20);

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// The machine as the server shows it: host name, kernel, addresses.
bus::hello identity() {
  bus::hello h;
  h.hostname = host_name();
  utsname u{};
  h.os = ::uname(&u) == 0 ? std::string("Linux ") + u.release : "Linux";
  h.agent_version = agent_version;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    std::set<std::string> seen;
    for (ifaddrs* a = list; a; a = a->ifa_next) {
      if (!a->ifa_addr || (a->ifa_flags & IFF_LOOPBACK)) continue;
      char text[INET6_ADDRSTRLEN] = {};
      int family = a->ifa_addr->sa_family;
      if (family == AF_INET)
        ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                    sizeof text);
      else if (family == AF_INET6)
        ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr,
                    text, sizeof text);
      else
        continue;
      if (seen.insert(text).second && h.addresses.size() < 32)
        h.addresses.push_back(text);
    }
    ::freeifaddrs(list);
  }
  return h;
}

} // namespace

void save_journal(const std::string& path, const sim::agent_session& s,
                  const std::string& in_flight) {
  nlohmann::json entries = nlohmann::json::array();
  for (const auto& r : s.journal_records())
    entries.push_back({{"action_id", r.action_id},
                       {"ok", r.result.ok},
                       {"error", r.result.error},
                       {"effect", r.result.effect},
                       {"agent_us", r.result.agent_us},
                       {"acked", r.result_acked},
                       {"cancelled", r.cancelled},
                       {"refused", r.refused}});
  nlohmann::json j{{"last_seq", s.last_seq()},
                   {"in_flight", in_flight},
                   {"entries", std::move(entries)}};
  write_private_file(path,
                     j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void load_journal(const std::string& path, sim::agent_session& s) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  auto j = nlohmann::json::parse(read_private_file(path, max_journal_bytes));
  std::vector<sim::journal_record> records;
  for (const auto& e : j.at("entries")) {
    sim::journal_record r;
    r.action_id = e.at("action_id").get<std::string>();
    r.result.action_id = r.action_id;
    r.result.ok = e.at("ok").get<bool>();
    r.result.error = e.at("error").get<std::string>();
    r.result.effect = e.at("effect").get<std::map<std::string, std::string>>();
    r.result.agent_us = e.value("agent_us", uint64_t{0}); // absent before it was kept
    r.result_acked = e.at("acked").get<bool>();
    r.cancelled = e.at("cancelled").get<bool>();
    r.refused = e.at("refused").get<bool>();
    records.push_back(std::move(r));
  }
  // An action whose effect had started when the agent stopped: it may or may not
  // have happened, and it must not run again. Reported failed, for a person to look.
  std::string in_flight = j.value("in_flight", "");
  if (!in_flight.empty() &&
      std::none_of(records.begin(), records.end(), [&](const sim::journal_record& r) {
        return r.action_id == in_flight;
      })) {
    sim::journal_record r;
    r.action_id = in_flight;
    r.result.action_id = in_flight;
    r.result.error = "the agent stopped while executing this action; its effect is "
                     "unknown and it is not run again: check the endpoint";
    records.push_back(std::move(r));
    spdlog::warn("journal: action {} was interrupted by a stop", in_flight);
  }
  s.restore_journal(records, j.at("last_seq").get<uint64_t>());
  spdlog::info("journal: {} actions restored", records.size());
}

int run_real_agent(const real_options& opt, const std::atomic<bool>& stop) {
  real_config cfg;
  try {
    cfg = load_config(opt.config_path);
  } catch (const std::exception& e) {
    std::cerr << "parry-agent: " << e.what() << '\n';
    return 2;
  }
  if (cfg.device_id.empty()) cfg.device_id = host_name();
  if (!bus::valid_id(cfg.device_id)) {
    std::cerr << "parry-agent: the host name '" << cfg.device_id
              << "' is not a valid device id: set device_id\n";
    return 2;
  }
  int64_t now = now_us();
  // Declared first, destroyed last: the guard's thread (owned by the executor)
  // pushes hits into it until the executor is gone.
  std::unique_ptr<detection> detect;
  std::unique_ptr<real_executor> exec;
  sim::session_config sc;
  sim::link_config link;
  try {
    if (::mkdir(cfg.state_dir.c_str(), 0700) != 0 && errno != EEXIST)
      throw std::runtime_error("cannot make state_dir " + cfg.state_dir);
    ::chmod(cfg.state_dir.c_str(), 0700);

    // The key first: a real agent speaks only CURVE, as an enrolled device, and runs
    // only commands signed by the server it pinned.
    auto keys = sim::load_agent_keys(cfg.state_dir);
    sim::enrollment how;
    how.token = opt.enroll_token;
    how.endpoint = cfg.enroll_server;
    sim::enroll_missing(keys, {cfg.device_id}, how, cfg.state_dir);
    link.server = cfg.server;
    link.raise_fd_limit = false;
    link.hold_file = opt.hold_file;
    link.hold_results_file = opt.hold_results_file;
    link.server_key_z85 = keys.server_key_z85;
    link.curve_keys.push_back(keys.devices.at(cfg.device_id));
    sc.server_signing_key = parse_public_key(keys.signing_key_hex);

    char tag[17];
    std::snprintf(tag, sizeof tag, "%llx",
                  static_cast<unsigned long long>(now / 1000000));
    detect = std::make_unique<detection>(tag);
    std::unique_ptr<exec_guard> guard;
    if (!cfg.guard_mounts.empty()) {
      detection* d = detect.get();
      guard = std::make_unique<exec_guard>(cfg.guard_mounts, cfg.iocs,
                                           [d](const ioc_hit& h) { d->push(h); });
    }
    exec = std::make_unique<real_executor>(cfg, std::move(guard), now);
  } catch (const std::exception& e) {
    std::cerr << "parry-agent: " << e.what() << '\n';
    return 2;
  }

  sc.device_id = cfg.device_id;
  sc.identity = identity();
  sc.os = os_family::posix;
  sc.heartbeat_ms = cfg.heartbeat_ms;
  sc.started_at = now;
  std::string journal_path = cfg.state_dir + journal_file;
  // Set once the session exists; the hook runs only from its handlers.
  sim::agent_session* self = nullptr;
  sc.before_execute = [&](const std::string& action_id) -> std::string {
    // Durable before the effect starts: without it a crash mid-action could run
    // the action a second time when the server sends it again.
    try {
      save_journal(journal_path, *self, action_id);
      return "";
    } catch (const std::exception& e) {
      spdlog::error("cannot save the journal before {}: {}", action_id, e.what());
      return e.what();
    }
  };
  sim::agent_session session(sc, *exec, detect.get());
  self = &session;
  try {
    load_journal(journal_path, session);
  } catch (const std::exception& e) {
    std::cerr << "parry-agent: the journal " << journal_path
              << " is unreadable: " << e.what() << '\n';
    return 2;
  }

  sim::bus_runner bus(link, {&session});
  bus.watch(detect->wake_fd(), [&](int64_t) { detect->drain_wake(); });
  uint64_t saved_version = session.journal_version();
  bool was_welcomed = false;
  // The guard's and detection's counters, logged when they moved (at most every 5
  // minutes): what was denied, what could not be checked, what was dropped.
  constexpr int64_t summary_us = 300'000'000;
  int64_t next_summary = now + summary_us;
  std::string last_summary;
  bus.on_round([&](int64_t t) {
    if (session.journal_version() != saved_version) {
      try {
        save_journal(journal_path, session);
        saved_version = session.journal_version();
      } catch (const std::exception& e) {
        spdlog::error("cannot save the journal: {}", e.what());
      }
    }
    if (session.welcomed() != was_welcomed) {
      was_welcomed = session.welcomed();
      spdlog::info("{} {}", was_welcomed ? "connected to" : "lost the connection to",
                   cfg.server);
    }
    if (t >= next_summary) {
      next_summary = t + summary_us;
      guard_stats g = exec->guard_counters();
      std::string line =
          fmt::format("guard: {} execs checked, {} denied ({} changing while hashed), "
                      "{} too large to check, {} errors; IOC: {} hits, {} unchecked, "
                      "{} notifications lost, {} hits dropped",
                      g.exec_checked, g.exec_denied, g.unstable, g.too_large, g.errors,
                      g.ioc_hits, g.ioc_skipped, g.ioc_lost, detect->dropped());
      if (line != last_summary) spdlog::info("{}", line);
      last_summary = std::move(line);
    }
    return std::min(exec->tick(t, session.welcomed()), next_summary);
  });
  try {
    bus.start();
    std::cout << "parry-agent: device " << cfg.device_id << " (" << sc.identity.hostname
              << ") on this machine, connecting to " << cfg.server << std::endl;
    while (!stop.load())
      bus.poll_once(100);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  if (session.journal_version() != saved_version) save_journal(journal_path, session);
  return 0;
}

} // namespace parry::real
