// One simulated endpoint (see sim_endpoint.hpp): its identity drawn from the seed,
// scenarios instantiated into incidents, and the wiring of machine, executor and
// session; plus the JSON dumps of --generate.

#include "agent-sim/sim_endpoint.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <optional>
#include <stdexcept>
#include <utility>

#include "common/crypto.hpp"
#include "common/utf8.hpp"

namespace parry::sim {

namespace {

constexpr const char* agent_version = "parry-agent-sim/0.1.0";

constexpr const char* first_names[] = {
    "anna", "boris", "chen",  "dana", "emil",  "fatima", "gita", "hugo",
    "ines", "jonas", "kemal", "lena", "marta", "nils",   "olga", "pavel"};
constexpr const char* last_names[] = {"novak",   "berg",   "garcia", "kowalski", "larsen",
                                      "mori",    "okafor", "petrov", "quinn",    "rossi",
                                      "schmidt", "tanaka", "weber",  "yilmaz"};
constexpr const char* windows_versions[] = {
    "Windows 10 Enterprise 22H2 (build 19045)",
    "Windows 11 Enterprise 23H2 (build 22631)",
    "Windows Server 2019 Datacenter (build 17763)",
    "Windows Server 2022 Standard (build 20348)"};
constexpr const char* linux_versions[] = {"Ubuntu 22.04.4 LTS",
                                          "Debian GNU/Linux 12 (bookworm)",
                                          "Rocky Linux 9.3 (Blue Onyx)"};
constexpr const char* linux_roles[] = {"web", "db", "app", "build", "mail", "files"};
// Documentation ranges (RFC 5737): they look real and route nowhere.
constexpr const char* c2_nets[] = {"192.0.2.", "198.51.100.", "203.0.113."};

template <std::size_t N> const char* pick(sim_rng& rng, const char* const (&set)[N]) {
  return set[rng.between(0, N - 1)];
}

void replace_all(std::string& s, std::string_view what, const std::string& with) {
  for (std::size_t pos = 0; (pos = s.find(what, pos)) != std::string::npos;) {
    s.replace(pos, what.size(), with);
    pos += with.size();
  }
}

std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

// The machine of endpoint `index`: its OS among those the scenarios cover, its user,
// host name, version, address, boot time and first pid, all drawn from the seed.
sim_machine draw_machine(std::size_t index, const endpoint_config& cfg,
                         const std::vector<scenario>& scenarios, int64_t started_at) {
  if (scenarios.empty())
    throw std::invalid_argument("sim_endpoint needs at least one scenario");
  sim_rng id_rng = sim_rng::derive(cfg.seed, index, 0);
  sim_machine m;
  m.index = index;
  m.server = cfg.server;

  // The OS is drawn among those the scenarios cover, mostly Windows when both are.
  std::set<std::string> families;
  for (const auto& sc : scenarios)
    families.insert(sc.os);
  bool windows =
      families.count("windows") && (families.size() == 1 || id_rng.between(0, 3) != 0);
  m.os_family = windows ? "windows" : "linux";

  std::string first = pick(id_rng, first_names), last = pick(id_rng, last_names);
  m.domain = "CORP";
  m.identity.agent_version = agent_version;
  if (windows) {
    m.user = first + "." + last;
    static constexpr char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    m.identity.hostname = "DESKTOP-";
    for (int i = 0; i < 7; ++i)
      m.identity.hostname += alnum[id_rng.between(0, sizeof alnum - 2)];
    m.identity.os = pick(id_rng, windows_versions);
    m.first_pid = static_cast<uint32_t>(id_rng.between(250, 2250) * 4);
  } else {
    m.user = first.substr(0, 1) + last;
    m.identity.hostname = pick(id_rng, linux_roles);
    m.identity.hostname += "-" + hex(id_rng.next(), 6);
    m.identity.os = pick(id_rng, linux_versions);
    m.first_pid = static_cast<uint32_t>(id_rng.between(900, 30000));
  }
  m.identity.addresses.push_back("10.20." + std::to_string(index / 254 % 256) + "." +
                                 std::to_string(index % 254 + 1));
  m.boot_time =
      started_at - static_cast<int64_t>(id_rng.between(3600, 30 * 86400)) * second_us;
  return m;
}

session_config session_for(const sim_executor& host, const endpoint_config& cfg,
                           int64_t started_at) {
  session_config s;
  s.device_id = device_id_for(cfg.id_prefix, host.machine().index);
  s.identity = host.machine().identity;
  s.os = host.windows() ? os_family::windows : os_family::posix;
  s.heartbeat_ms = cfg.heartbeat_ms;
  s.started_at = started_at;
  s.server_signing_key = cfg.server_signing_key;
  return s;
}

} // namespace

std::string device_id_for(const std::string& prefix, std::size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04zu", index);
  return prefix + "-" + buf;
}

// -- incidents ----------------------------------------------------------------------

/// Instantiates this endpoint's scenarios on its machine, on a timer of its own.
class sim_endpoint::incidents final : public incident_source {
public:
  incidents(std::string device_id, const endpoint_config& cfg,
            const std::vector<scenario>& scenarios, sim_executor& host)
      : device_id_(std::move(device_id)), cfg_(cfg), scenarios_(&scenarios),
        content_rng_(sim_rng::derive(cfg.seed, host.machine().index, 1)),
        timing_rng_(sim_rng::derive(cfg.seed, host.machine().index, 2)), host_(&host) {
    for (std::size_t i = 0; i < scenarios.size(); ++i)
      if (scenarios[i].os == host.machine().os_family) {
        candidates_.push_back(i);
        total_weight_ += scenarios[i].weight;
      }
  }

  void start_reporting(int64_t now) override {
    started_ = true;
    schedule(now, true);
  }

  int64_t next_report_due() const override {
    bool left = started_ && (cfg_.max_incidents == 0 || reported_ < cfg_.max_incidents);
    return left ? next_incident_ : std::numeric_limits<int64_t>::max();
  }

  std::optional<bus::incident_report> take_report(int64_t now) override {
    bus::incident_report rep = instantiate(now);
    schedule(now, false);
    if (rep.events.empty()) return std::nullopt;
    return rep;
  }

  /// See sim_endpoint::next_incident.
  bus::incident_report instantiate(int64_t now);

  uint64_t reported() const { return reported_; }
  uint64_t suppressed() const { return suppressed_; }

private:
  void schedule(int64_t now, bool first);
  std::string expand(const std::string& templ, const std::string& rand,
                     const std::string& c2) const;

  std::string device_id_;
  endpoint_config cfg_;
  const std::vector<scenario>* scenarios_;
  std::vector<std::size_t> candidates_; ///< Scenarios for this endpoint's OS.
  uint64_t total_weight_ = 0;
  sim_rng content_rng_; ///< Everything in an incident.
  sim_rng timing_rng_;  ///< When incidents happen, kept apart so content is stable.
  sim_executor* host_;
  bool started_ = false;
  int64_t next_incident_ = 0;
  uint64_t reported_ = 0;   ///< Reports instantiated (numbers the report ids).
  uint64_t suppressed_ = 0; ///< Not reported: nothing of them ran.
};

void sim_endpoint::incidents::schedule(int64_t now, bool first) {
  int64_t mean = std::max<int64_t>(cfg_.incident_interval_us, 1000);
  if (first) {
    int64_t window = std::min<int64_t>(mean, 2 * second_us);
    next_incident_ =
        now + static_cast<int64_t>(timing_rng_.between(static_cast<uint64_t>(window / 10),
                                                       static_cast<uint64_t>(window)));
  } else {
    next_incident_ =
        now +
        static_cast<int64_t>(timing_rng_.between(static_cast<uint64_t>(mean / 2),
                                                 static_cast<uint64_t>(mean + mean / 2)));
  }
}

std::string sim_endpoint::incidents::expand(const std::string& templ,
                                            const std::string& rand,
                                            const std::string& c2) const {
  const sim_machine& m = host_->machine();
  std::string s = templ;
  if (s.find('{') == std::string::npos) return s;
  replace_all(s, "{user}", m.user);
  replace_all(s, "{domain}", m.domain);
  replace_all(s, "{host}", m.identity.hostname);
  replace_all(s, "{rand}", rand);
  replace_all(s, "{c2}", c2);
  return s;
}

bus::incident_report sim_endpoint::incidents::instantiate(int64_t now) {
  const std::vector<scenario>& all = *scenarios_;
  const sim_machine& m = host_->machine();
  uint64_t ticket = content_rng_.between(1, total_weight_);
  std::size_t chosen = candidates_.back();
  for (std::size_t i : candidates_) {
    if (ticket <= all[i].weight) {
      chosen = i;
      break;
    }
    ticket -= all[i].weight;
  }
  const scenario& sc = all[chosen];
  std::string rand = hex(content_rng_.next(), 8);
  std::string c2 = pick(content_rng_, c2_nets);
  c2 += std::to_string(content_rng_.between(1, 254));
  bool windows = host_->windows();
  std::string desktop_user = windows ? m.domain + "\\" + m.user : m.user;

  bus::incident_report rep;
  rep.report_id = device_id_ + "-" + (cfg_.run_tag.empty() ? "" : cfg_.run_tag + "-") +
                  std::to_string(++reported_);
  rep.det = sc.det;
  rep.key_event_id = sc.events[sc.key_index].id;

  // Events are spaced 20 ms .. 3 s apart and the last one happens at `now`.
  std::vector<int64_t> at(sc.events.size(), 0);
  for (std::size_t i = 1; i < at.size(); ++i)
    at[i] = at[i - 1] + static_cast<int64_t>(content_rng_.between(20'000, 3'000'000));
  int64_t t0 = now - at.back();

  // The process behind each event; a child event is performed by it.
  std::vector<bus::process_info> acting(sc.events.size());
  // Events that did not happen: a start refused by prevention and all below it.
  std::vector<bool> dropped(sc.events.size(), false);
  for (std::size_t i = 0; i < sc.events.size(); ++i) {
    const scenario_event& se = sc.events[i];
    // A fixed number of draws per event keeps later incidents independent of what
    // the tables happened to hold.
    uint64_t d_pid = content_rng_.next(), d_hash = content_rng_.next(),
             d_size = content_rng_.next();
    if (se.parent_index != no_parent && dropped[se.parent_index]) {
      dropped[i] = true;
      continue;
    }
    bus::activity_event ev;
    ev.id = se.id;
    ev.type = se.type;
    ev.time = t0 + at[i];
    ev.parent_id = se.parent;
    bus::process_info actor;
    if (se.parent_index == no_parent) {
      std::string image = se.actor.empty()
                              ? (windows ? "C:\\Windows\\explorer.exe" : "/usr/bin/bash")
                              : expand(se.actor, rand, c2);
      const bus::process_info* root = host_->running(
          image, se.actor_user.empty() ? desktop_user : expand(se.actor_user, rand, c2),
          ev.time);
      if (!root) {
        dropped[i] = true;
        continue;
      }
      actor = *root;
    } else {
      actor = acting[se.parent_index];
    }
    acting[i] = actor;

    if (se.type == "process_started") {
      ev.file = host_->image_file(expand(se.path, rand, c2), se.sha256);
      if (host_->prevented().count(ev.file.sha256)) {
        host_->count_blocked_start();
        dropped[i] = true;
        continue;
      }
      bus::process_info p;
      p.pid = host_->allocate_pid(d_pid);
      p.start_time = ev.time;
      p.image = ev.file.path;
      p.sha256 = ev.file.sha256;
      p.cmdline = expand(se.cmdline, rand, c2);
      p.user = se.user.empty() ? actor.user : expand(se.user, rand, c2);
      p.parent_pid = actor.pid;
      host_->add_process(p);
      ev.process = p;
      acting[i] = p;
    } else if (se.type == "file_created" || se.type == "file_modified") {
      bus::file_info f;
      f.path = expand(se.path, rand, c2);
      f.sha256 = se.sha256.empty()
                     ? sha256_hex(sc.name + "/" + se.id + "/" + hex(d_hash, 16))
                     : se.sha256;
      auto old = host_->files().find(f.path);
      if (se.size_min)
        f.size = span(d_size, se.size_min, se.size_max);
      else if (se.type == "file_modified" && old != host_->files().end())
        f.size = old->second.size + span(d_size, 16, 4096);
      else
        f.size = span(d_size, 4096, 2 << 20);
      host_->put_file(f);
      ev.file = f;
      ev.process = actor;
    } else if (se.type == "module_loaded") {
      ev.file = host_->image_file(expand(se.path, rand, c2), se.sha256);
      ev.process = actor;
      ev.detail = base_name(ev.file.path);
    } else { // network_connection
      ev.process = actor;
      ev.detail = se.protocol + " " + m.identity.addresses.front() + ":" +
                  std::to_string(span(d_size, 49152, 65535)) + " -> " +
                  expand(se.remote, rand, c2);
    }
    if (!se.detail.empty()) ev.detail = expand(se.detail, rand, c2);
    rep.events.push_back(std::move(ev));
  }

  // The detection was about something that never ran: it is now about the file
  // that was written and stopped from starting, or there is nothing to report.
  if (dropped[sc.key_index]) {
    std::string key_path = expand(sc.events[sc.key_index].path, rand, c2);
    rep.key_event_id.clear();
    for (const auto& ev : rep.events)
      if (ev.type == "file_created" && ev.file.path == key_path) rep.key_event_id = ev.id;
    if (rep.key_event_id.empty()) {
      rep.events.clear();
      ++suppressed_;
      return rep;
    }
  }

  // An isolated host makes no connections: drop them and hand their children to the
  // dropped event's own parent.
  if (host_->isolated()) {
    std::map<std::string, std::string> moved;
    std::vector<bus::activity_event> kept;
    for (auto& ev : rep.events) {
      auto it = moved.find(ev.parent_id);
      if (it != moved.end()) ev.parent_id = it->second;
      if (ev.type == "network_connection")
        moved[ev.id] = ev.parent_id;
      else
        kept.push_back(std::move(ev));
    }
    rep.events = std::move(kept);
  }
  return rep;
}

// -- construction -------------------------------------------------------------------

sim_endpoint::sim_endpoint(std::size_t index, const endpoint_config& cfg,
                           const std::vector<scenario>& scenarios, int64_t started_at)
    : host_(
          std::make_unique<sim_executor>(draw_machine(index, cfg, scenarios, started_at),
                                         sim_rng::derive(cfg.seed, index, 3))),
      incidents_(std::make_unique<incidents>(device_id_for(cfg.id_prefix, index), cfg,
                                             scenarios, *host_)),
      session_(session_for(*host_, cfg, started_at), *host_,
               cfg.report_incidents ? incidents_.get() : nullptr) {}

sim_endpoint::~sim_endpoint() = default;
sim_endpoint::sim_endpoint(sim_endpoint&&) noexcept = default;
sim_endpoint& sim_endpoint::operator=(sim_endpoint&&) noexcept = default;

bus::incident_report sim_endpoint::next_incident(int64_t now) {
  return incidents_->instantiate(now);
}

endpoint_stats sim_endpoint::stats() const {
  endpoint_stats s;
  static_cast<session_stats&>(s) = session_.stats();
  s.incidents = incidents_->reported();
  s.blocked_starts = host_->blocked_starts();
  s.suppressed_incidents = incidents_->suppressed();
  return s;
}

// -- dumps --------------------------------------------------------------------------

std::string describe_endpoint(const sim_endpoint& ep) {
  const bus::hello& id = ep.identity();
  std::string addrs;
  for (const auto& a : id.addresses)
    addrs += (addrs.empty() ? "" : ",") + json_string(a);
  return "{\"device_id\":" + json_string(ep.device_id()) +
         ",\"hostname\":" + json_string(id.hostname) + ",\"os\":" + json_string(id.os) +
         ",\"os_family\":" + json_string(ep.os_family()) +
         ",\"user\":" + json_string(ep.user()) + ",\"addresses\":[" + addrs + "]}";
}

std::string describe_incident(const std::string& device_id,
                              const bus::incident_report& r) {
  std::string s = "{\"device_id\":" + json_string(device_id) +
                  ",\"report_id\":" + json_string(r.report_id) +
                  ",\"detection\":{\"name\":" + json_string(r.det.name) +
                  ",\"severity\":" + json_string(r.det.severity) +
                  ",\"engine\":" + json_string(r.det.engine) +
                  "},\"key_event_id\":" + json_string(r.key_event_id) + ",\"events\":[";
  for (std::size_t i = 0; i < r.events.size(); ++i) {
    const bus::activity_event& e = r.events[i];
    s += (i ? ",{" : "{");
    s += "\"id\":" + json_string(e.id) + ",\"type\":" + json_string(e.type) +
         ",\"parent_id\":" + json_string(e.parent_id);
    if (!e.file.path.empty())
      s += ",\"file\":{\"path\":" + json_string(e.file.path) +
           ",\"sha256\":" + json_string(e.file.sha256) +
           ",\"size\":" + std::to_string(e.file.size) + "}";
    if (e.process.pid != 0)
      s += ",\"process\":{\"pid\":" + std::to_string(e.process.pid) +
           ",\"image\":" + json_string(e.process.image) +
           ",\"sha256\":" + json_string(e.process.sha256) +
           ",\"cmdline\":" + json_string(e.process.cmdline) +
           ",\"user\":" + json_string(e.process.user) +
           ",\"parent_pid\":" + std::to_string(e.process.parent_pid) + "}";
    if (!e.detail.empty()) s += ",\"detail\":" + json_string(e.detail);
    s += "}";
  }
  return s + "]}";
}

} // namespace parry::sim
