#include "agent-sim/sim_endpoint.hpp"

#include <algorithm>
#include <cstdio>
#include <set>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "common/crypto.hpp"

namespace parry::sim {

namespace {

constexpr const char* agent_version = "parry-agent-sim/0.1.0";
constexpr int64_t second_us = 1'000'000;

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

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Maps one random draw into [lo, hi].
uint64_t span(uint64_t draw, uint64_t lo, uint64_t hi) {
  return lo + draw % (hi - lo + 1);
}

template <std::size_t N> const char* pick(sim_rng& rng, const char* const (&set)[N]) {
  return set[rng.between(0, N - 1)];
}

std::string hex(uint64_t v, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return std::string(buf + 16 - digits);
}

std::string base_name(const std::string& path) {
  std::size_t slash = path.find_last_of("/\\");
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void replace_all(std::string& s, std::string_view what, const std::string& with) {
  for (std::size_t pos = 0; (pos = s.find(what, pos)) != std::string::npos;) {
    s.replace(pos, what.size(), with);
    pos += with.size();
  }
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      } else {
        out += c;
      }
    }
  }
  return out + "\"";
}

} // namespace

// -- sim_rng ------------------------------------------------------------------------

sim_rng sim_rng::derive(uint64_t seed, uint64_t index, uint64_t stream) {
  return sim_rng(mix(mix(mix(seed) + index) + stream));
}

uint64_t sim_rng::next() {
  state_ += 0x9e3779b97f4a7c15ULL;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t sim_rng::between(uint64_t lo, uint64_t hi) {
  return span(next(), lo, hi);
}

std::string device_id_for(const std::string& prefix, std::size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04zu", index);
  return prefix + "-" + buf;
}

// -- construction -------------------------------------------------------------------

sim_endpoint::sim_endpoint(std::size_t index, const endpoint_config& cfg,
                           const std::vector<scenario>& scenarios, int64_t started_at)
    : device_id_(device_id_for(cfg.id_prefix, index)), index_(index), cfg_(cfg),
      scenarios_(&scenarios), content_rng_(sim_rng::derive(cfg.seed, index, 1)),
      timing_rng_(sim_rng::derive(cfg.seed, index, 2)),
      msg_base_(static_cast<uint64_t>(started_at)) {
  if (scenarios.empty())
    throw std::invalid_argument("sim_endpoint needs at least one scenario");
  sim_rng id_rng = sim_rng::derive(cfg.seed, index, 0);

  // The OS is drawn among those the scenarios cover, mostly Windows when both are.
  std::set<std::string> families;
  for (const auto& sc : scenarios)
    families.insert(sc.os);
  bool windows =
      families.count("windows") && (families.size() == 1 || id_rng.between(0, 3) != 0);
  os_family_ = windows ? "windows" : "linux";
  for (std::size_t i = 0; i < scenarios.size(); ++i)
    if (scenarios[i].os == os_family_) {
      candidates_.push_back(i);
      total_weight_ += scenarios[i].weight;
    }

  std::string first = pick(id_rng, first_names), last = pick(id_rng, last_names);
  domain_ = "CORP";
  identity_.agent_version = agent_version;
  if (windows) {
    user_ = first + "." + last;
    static constexpr char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    identity_.hostname = "DESKTOP-";
    for (int i = 0; i < 7; ++i)
      identity_.hostname += alnum[id_rng.between(0, sizeof alnum - 2)];
    identity_.os = pick(id_rng, windows_versions);
    next_pid_ = static_cast<uint32_t>(id_rng.between(250, 2250) * 4);
  } else {
    user_ = first.substr(0, 1) + last;
    identity_.hostname = pick(id_rng, linux_roles);
    identity_.hostname += "-" + hex(id_rng.next(), 6);
    identity_.os = pick(id_rng, linux_versions);
    next_pid_ = static_cast<uint32_t>(id_rng.between(900, 30000));
  }
  identity_.addresses.push_back("10.20." + std::to_string(index / 254 % 256) + "." +
                                std::to_string(index % 254 + 1));
  boot_time_ =
      started_at - static_cast<int64_t>(id_rng.between(3600, 30 * 86400)) * second_us;
}

// -- tables -------------------------------------------------------------------------

// `draw` decides the step, so the generator is consumed the same way whatever the
// table holds; taken pids are skipped deterministically.
uint32_t sim_endpoint::allocate_pid(uint64_t draw) {
  bool windows = os_family_ == "windows";
  uint32_t step = windows ? 4 * static_cast<uint32_t>(span(draw, 1, 64))
                          : static_cast<uint32_t>(span(draw, 1, 40));
  uint32_t lowest = windows ? 1000 : 300, highest = windows ? 65000 : 4'000'000;
  next_pid_ += step;
  for (;;) {
    if (next_pid_ > highest) next_pid_ = lowest;
    if (!processes_.count(next_pid_)) return next_pid_;
    next_pid_ += windows ? 4 : 1;
  }
}

void sim_endpoint::put_file(const bus::file_info& f) {
  auto [it, inserted] = files_.insert_or_assign(f.path, f);
  if (inserted) file_order_.push_back(f.path);
  while (files_.size() > max_files) {
    files_.erase(file_order_.front());
    file_order_.pop_front();
  }
}

// System binaries and anything else an incident runs without having written it:
// the same path has the same hash and size on every endpoint, like a real install.
bus::file_info sim_endpoint::image_file(const std::string& path,
                                        const std::string& sha256) {
  auto it = files_.find(path);
  if (it != files_.end() && (sha256.empty() || it->second.sha256 == sha256))
    return it->second;
  bus::file_info f;
  f.path = path;
  f.sha256 = sha256.empty() ? sha256_hex("parry-sim image " + path) : sha256;
  f.size = 32 * 1024 + std::stoull(f.sha256.substr(0, 8), nullptr, 16) % (4 << 20);
  put_file(f);
  return f;
}

void sim_endpoint::add_process(const bus::process_info& p) {
  processes_[p.pid] = p;
  incident_pids_.emplace_back(p.pid, p.start_time);
  while (incident_pids_.size() > max_incident_processes) {
    auto [pid, start] = incident_pids_.front();
    auto it = processes_.find(pid);
    if (it != processes_.end() && it->second.start_time == start)
      processes_.erase(it); // the oldest incident process exits
    incident_pids_.pop_front();
  }
}

// A process that was already running when the chain began (explorer, w3wp, ...).
const bus::process_info& sim_endpoint::running(const std::string& image,
                                               const std::string& user) {
  auto found = base_processes_.find(image);
  if (found != base_processes_.end()) {
    auto it = processes_.find(found->second);
    if (it != processes_.end()) return it->second;
  }
  bus::file_info file = image_file(image, {});
  // Derived from the image, not drawn, so the generator stays untouched.
  uint64_t draw = mix(std::stoull(file.sha256.substr(0, 15), nullptr, 16) + index_);
  bus::process_info p;
  p.pid = allocate_pid(draw);
  p.start_time = boot_time_ + static_cast<int64_t>(span(draw, 5, 600)) * second_us;
  p.image = image;
  p.sha256 = file.sha256;
  p.cmdline = os_family_ == "windows" ? "\"" + image + "\"" : image;
  p.user = user;
  p.parent_pid = os_family_ == "windows" ? 4 : 1;
  base_processes_[image] = p.pid;
  return processes_[p.pid] = p;
}

std::string sim_endpoint::expand(const std::string& templ, const std::string& rand,
                                 const std::string& c2) const {
  std::string s = templ;
  if (s.find('{') == std::string::npos) return s;
  replace_all(s, "{user}", user_);
  replace_all(s, "{domain}", domain_);
  replace_all(s, "{host}", identity_.hostname);
  replace_all(s, "{rand}", rand);
  replace_all(s, "{c2}", c2);
  return s;
}

// -- incidents ----------------------------------------------------------------------

bus::incident_report sim_endpoint::next_incident(int64_t now) {
  const std::vector<scenario>& all = *scenarios_;
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
  bool windows = os_family_ == "windows";
  std::string desktop_user = windows ? domain_ + "\\" + user_ : user_;

  bus::incident_report rep;
  rep.report_id = device_id_ + "-" + (cfg_.run_tag.empty() ? "" : cfg_.run_tag + "-") +
                  std::to_string(++stats_.incidents);
  rep.det = sc.det;
  rep.key_event_id = sc.events[sc.key_index].id;

  // Events are spaced 20 ms .. 3 s apart and the last one happens at `now`.
  std::vector<int64_t> at(sc.events.size(), 0);
  for (std::size_t i = 1; i < at.size(); ++i)
    at[i] = at[i - 1] + static_cast<int64_t>(content_rng_.between(20'000, 3'000'000));
  int64_t t0 = now - at.back();

  // The process behind each event; a child event is performed by it.
  std::vector<bus::process_info> acting(sc.events.size());
  for (std::size_t i = 0; i < sc.events.size(); ++i) {
    const scenario_event& se = sc.events[i];
    // A fixed number of draws per event keeps later incidents independent of what
    // the tables happened to hold.
    uint64_t d_pid = content_rng_.next(), d_hash = content_rng_.next(),
             d_size = content_rng_.next();
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
      actor = running(image, se.actor_user.empty() ? desktop_user
                                                   : expand(se.actor_user, rand, c2));
    } else {
      actor = acting[se.parent_index];
    }
    acting[i] = actor;

    if (se.type == "process_started") {
      ev.file = image_file(expand(se.path, rand, c2), se.sha256);
      bus::process_info p;
      p.pid = allocate_pid(d_pid);
      p.start_time = ev.time;
      p.image = ev.file.path;
      p.sha256 = ev.file.sha256;
      p.cmdline = expand(se.cmdline, rand, c2);
      p.user = se.user.empty() ? actor.user : expand(se.user, rand, c2);
      p.parent_pid = actor.pid;
      add_process(p);
      ev.process = p;
      acting[i] = p;
    } else if (se.type == "file_created" || se.type == "file_modified") {
      bus::file_info f;
      f.path = expand(se.path, rand, c2);
      f.sha256 = se.sha256.empty()
                     ? sha256_hex(sc.name + "/" + se.id + "/" + hex(d_hash, 16))
                     : se.sha256;
      auto old = files_.find(f.path);
      if (se.size_min)
        f.size = span(d_size, se.size_min, se.size_max);
      else if (se.type == "file_modified" && old != files_.end())
        f.size = old->second.size + span(d_size, 16, 4096);
      else
        f.size = span(d_size, 4096, 2 << 20);
      put_file(f);
      ev.file = f;
      ev.process = actor;
    } else if (se.type == "module_loaded") {
      ev.file = image_file(expand(se.path, rand, c2), se.sha256);
      ev.process = actor;
      ev.detail = base_name(ev.file.path);
    } else { // network_connection
      ev.process = actor;
      ev.detail = se.protocol + " " + identity_.addresses.front() + ":" +
                  std::to_string(span(d_size, 49152, 65535)) + " -> " +
                  expand(se.remote, rand, c2);
    }
    if (!se.detail.empty()) ev.detail = expand(se.detail, rand, c2);
    rep.events.push_back(std::move(ev));
  }

  // An isolated host makes no connections: drop them and hand their children to the
  // dropped event's own parent.
  if (isolated_) {
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

// -- commands -----------------------------------------------------------------------

bus::action_result sim_endpoint::execute(const bus::command& cmd, int64_t now) {
  bus::action_result r;
  r.action_id = cmd.action_id;
  if (cmd.expires_at != 0 && cmd.expires_at < now) {
    r.error = "expired";
    return r;
  }
  if (cmd.type == "isolate") {
    r.ok = true;
    if (isolated_) {
      r.effect["note"] = "already isolated";
    } else {
      isolated_ = true;
      r.effect["rules"] =
          "all traffic dropped except the management channel to " + cfg_.server;
      r.effect["previous"] = "not isolated";
    }
  } else if (cmd.type == "release_isolation") {
    r.ok = true;
    if (isolated_) {
      isolated_ = false;
      r.effect["rules"] = "removed";
    } else {
      r.effect["note"] = "not isolated";
    }
  } else {
    r.error = "unsupported action type: " + cmd.type;
  }
  return r;
}

command_outcome sim_endpoint::handle_command(const bus::command& cmd, int64_t now) {
  command_outcome out;
  out.ack.action_id = cmd.action_id;
  auto it = journal_.find(cmd.action_id);
  if (it != journal_.end()) {
    // Delivery is at least once: answer again, never act again. The server asked
    // again, so it may have lost the result: keep re-sending until it acknowledges.
    ++stats_.duplicate_commands;
    if (it->second.result_acked) {
      it->second.result_acked = false;
      ++unacked_;
    }
    out.result = it->second.result;
    return out;
  }
  out.result = execute(cmd, now);
  out.executed = true;
  ++stats_.commands_executed;
  spdlog::info("{}: {} {} -> {}", device_id_, cmd.type, cmd.action_id,
               out.result.ok ? "ok" : out.result.error);
  journal_.emplace(cmd.action_id, journal_entry{out.result, false});
  journal_order_.push_back(cmd.action_id);
  ++unacked_;
  while (journal_order_.size() > max_journal) {
    auto old = journal_.find(journal_order_.front());
    if (!old->second.result_acked) --unacked_;
    journal_.erase(old);
    journal_order_.pop_front();
  }
  return out;
}

std::vector<std::string> sim_endpoint::unacked_results() const {
  std::vector<std::string> out;
  for (const auto& id : journal_order_)
    if (!journal_.at(id).result_acked) out.push_back(id);
  return out;
}

bool sim_endpoint::acknowledge_result(const std::string& action_id) {
  auto it = journal_.find(action_id);
  if (it == journal_.end()) return false;
  if (!it->second.result_acked) {
    it->second.result_acked = true;
    --unacked_;
  }
  return true;
}

// -- protocol -----------------------------------------------------------------------

template <class T>
outbound sim_endpoint::make(const char* type, const T& body, int64_t now) {
  outbound o;
  o.head.type = type;
  o.head.seq = ++seq_;
  // Started from the start time so ids stay unique across agent restarts.
  o.head.msg_id = msg_base_ + seq_;
  o.head.device_id = device_id_;
  o.head.time = now;
  o.body = bus::encode(body);
  ++stats_.messages_out;
  return o;
}

outbound sim_endpoint::make_hello(int64_t now) {
  bus::hello h = identity_;
  h.isolated = isolated_;
  hello_sent_at_ = now;
  return make(bus::type::hello, h, now);
}

std::vector<outbound> sim_endpoint::start(int64_t now) {
  return {make_hello(now)};
}

std::vector<outbound> sim_endpoint::on_link_up(int64_t now) {
  link_up_ = true;
  std::vector<outbound> out;
  if (ever_linked_) {
    welcomed_ = false;
    out.push_back(make_hello(now));
  } else {
    hello_sent_at_ = now; // the queued first hello leaves now
  }
  ever_linked_ = true;
  return out;
}

void sim_endpoint::on_link_down() {
  link_up_ = false;
  welcomed_ = false;
}

void sim_endpoint::schedule_next_incident(int64_t now, bool first) {
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

bool sim_endpoint::incidents_left() const {
  return ever_welcomed_ &&
         (cfg_.max_incidents == 0 || stats_.incidents < cfg_.max_incidents);
}

std::vector<outbound> sim_endpoint::on_message(std::string_view header_frame,
                                               std::string_view body_frame, int64_t now) {
  ++stats_.frames_in;
  std::vector<outbound> out;
  std::string why;
  auto drop = [&](const std::string& reason) {
    ++stats_.bad_frames;
    spdlog::debug("{}: dropped a message from the server: {}", device_id_, reason);
    return std::vector<outbound>{};
  };
  auto h = bus::decode_header(header_frame, limits_, why);
  if (!h) return drop("header: " + why);
  if (h->device_id != device_id_) return drop("addressed to " + h->device_id);

  if (h->type == bus::type::welcome) {
    auto w = bus::decode<bus::welcome>(body_frame, limits_, why);
    if (!w) return drop("welcome: " + why);
    ++stats_.welcomes;
    welcomed_ = true;
    uint32_t ms = cfg_.heartbeat_ms ? cfg_.heartbeat_ms : w->heartbeat_interval_ms;
    if (ms == 0) ms = 5000;
    heartbeat_us_ = std::clamp<int64_t>(ms, 100, 3'600'000) * 1000;
    next_heartbeat_ = now + heartbeat_us_;
    if (stats_.welcomes == 1) {
      ever_welcomed_ = true;
      schedule_next_incident(now, true);
    }
    // A new welcome may mean a new server: hand it every result it has not stored.
    for (const auto& id : unacked_results())
      out.push_back(make(bus::type::action_result, journal_.at(id).result, now));
    next_resend_ = now + result_resend_us;
    return out;
  }
  if (h->type == bus::type::command) {
    auto c = bus::decode<bus::command>(body_frame, limits_, why);
    if (!c) return drop("command: " + why);
    if (!bus::valid_id(c->action_id)) return drop("command with an invalid action id");
    bool was_idle = unacked_ == 0;
    command_outcome oc = handle_command(*c, now);
    out.push_back(make(bus::type::action_ack, oc.ack, now));
    out.push_back(make(bus::type::action_result, oc.result, now));
    if (was_idle) next_resend_ = now + result_resend_us;
    return out;
  }
  if (h->type == bus::type::result_ack) {
    auto a = bus::decode<bus::result_ack>(body_frame, limits_, why);
    if (!a) return drop("result_ack: " + why);
    if (!acknowledge_result(a->action_id))
      spdlog::debug("{}: result_ack for unknown action {}", device_id_, a->action_id);
    return out;
  }
  ++stats_.unknown_frames;
  spdlog::debug("{}: ignored a message of type '{}'", device_id_, h->type);
  return out;
}

std::vector<outbound> sim_endpoint::tick(int64_t now) {
  std::vector<outbound> out;
  if (!welcomed_) {
    if (link_up_ && now - hello_sent_at_ >= hello_retry_us)
      out.push_back(make_hello(now));
    return out;
  }
  if (now >= next_heartbeat_) {
    out.push_back(make(bus::type::heartbeat, bus::heartbeat{isolated_}, now));
    next_heartbeat_ = now + heartbeat_us_; // no catching up after a stall
  }
  if (incidents_left() && now >= next_incident_) {
    out.push_back(make(bus::type::incident, next_incident(now), now));
    schedule_next_incident(now, false);
  }
  if (unacked_ > 0 && now >= next_resend_) {
    for (const auto& id : unacked_results())
      out.push_back(make(bus::type::action_result, journal_.at(id).result, now));
    next_resend_ = now + result_resend_us;
  }
  return out;
}

int64_t sim_endpoint::next_due() const {
  if (!welcomed_)
    return link_up_ ? hello_sent_at_ + hello_retry_us
                    : std::numeric_limits<int64_t>::max();
  int64_t due = next_heartbeat_;
  if (incidents_left()) due = std::min(due, next_incident_);
  if (unacked_ > 0) due = std::min(due, next_resend_);
  return due;
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
