#include "agent-sim/sim_endpoint.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "common/crypto.hpp"
#include "common/domain.hpp"

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

// Binaries every endpoint of a family has installed, so start_process finds them
// even though the file table only keeps what incidents touched.
constexpr const char* linux_system_binaries[] = {
    "/bin/sh",    "/usr/bin/sh",    "/bin/bash",     "/usr/bin/bash",
    "/bin/dash",  "/usr/bin/dash",  "/usr/bin/id",   "/usr/bin/whoami",
    "/bin/uname", "/usr/bin/uname", "/bin/hostname", "/usr/bin/hostname",
    "/bin/ls",    "/usr/bin/ls",    "/bin/echo",     "/usr/bin/echo",
    "/bin/pwd",   "/usr/bin/pwd",   "/bin/true",     "/usr/bin/true",
    "/bin/false", "/usr/bin/false"};
constexpr const char* windows_system_binaries[] = {
    R"(C:\Windows\System32\cmd.exe)", R"(C:\Windows\System32\whoami.exe)",
    R"(C:\Windows\System32\ipconfig.exe)", R"(C:\Windows\System32\HOSTNAME.EXE)",
    R"(C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe)"};
// Where the agent itself runs; processes it starts are its children.
constexpr const char* windows_agent_image = R"(C:\Program Files\Parry\parry-agent.exe)";
constexpr const char* linux_agent_image = "/opt/parry/bin/parry-agent";

// Bounds on what a command may carry, the server's own limits (rest-api.md).
constexpr std::size_t max_args = parry::max_arguments;
constexpr std::size_t max_args_bytes = parry::max_arguments_bytes;
// Longest piece of a parameter quoted back in an error or log line.
constexpr std::size_t max_quoted = 512;
// Nesting of `sh -c` / `cmd /c` that program_output follows.
constexpr int max_shell_depth = 4;

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

std::string lower(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
}

// Length of the valid UTF-8 sequence starting at `s[i]`, 0 when there is none.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b = byte(i);
  std::size_t n = b < 0x80           ? 1
                  : (b >> 5) == 0x6  ? 2
                  : (b >> 4) == 0xe  ? 3
                  : (b >> 3) == 0x1e ? 4
                                     : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  return n;
}

// A parameter as it may appear in an error or log line: one line, bounded, valid
// UTF-8 so the server can store and show it as text; anything else becomes '?'.
std::string printable(std::string_view s, std::size_t max = max_quoted) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_length(s, i);
    if (out.size() + std::max<std::size_t>(n, 1) > max) return out + "...";
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (n == 0 || c < 0x20 || c == 0x7f) {
      out += '?';
      i += 1;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

// Why `p` cannot name a file or directory here, in the endpoint's own terms (the
// rules of common/domain.hpp); empty when it can.
std::string path_problem(const std::string& p, bool windows, const std::string& what) {
  std::string why = parry::path_problem(p, windows ? parry::os_family::windows
                                                   : parry::os_family::posix);
  if (why.empty()) return {};
  constexpr std::string_view prefix = "the path";
  if (why.rfind(prefix, 0) == 0) why = what + why.substr(prefix.size());
  if (why.find("not absolute") != std::string::npos ||
      why.find("'..' component") != std::string::npos)
    why += ": " + printable(p);
  return why;
}

// Windows paths compare without case, as NTFS does by default.
bool same_path(const std::string& a, const std::string& b, bool windows) {
  return windows ? lower(a) == lower(b) : a == b;
}

// Strict decimal: digits only, no sign, no spaces, no overflow.
bool parse_decimal(const std::string& s, uint64_t max, uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (d > max || v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

bool parse_time(const std::string& s, int64_t& out) {
  bool negative = !s.empty() && s[0] == '-';
  uint64_t v = 0;
  if (!parse_decimal(negative ? s.substr(1) : s,
                     static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), v))
    return false;
  out = negative ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
  return true;
}

// 64 hex digits in either case, returned lower-case as incidents report them.
bool parse_sha256(const std::string& s, std::string& out) {
  if (!parry::is_sha256(s)) return false;
  out = parry::normalized_sha256(s);
  return true;
}

const std::string* param(const bus::command& c, const std::string& key) {
  auto it = c.params.find(key);
  return it == c.params.end() ? nullptr : &it->second;
}

// The canonical spelling of a known system binary, or null.
const char* system_binary(const std::string& path, bool windows) {
  if (windows) {
    std::string want = lower(path);
    for (const char* b : windows_system_binaries)
      if (lower(b) == want) return b;
  } else {
    for (const char* b : linux_system_binaries)
      if (path == b) return b;
  }
  return nullptr;
}

// argv as one command line that splits back into the same argv by the endpoint's
// rules (parry::split_arguments): CommandLineToArgvW quoting on Windows, double
// quotes with `\"` and `\\` escaped elsewhere. Plain words stay unquoted.
std::string join_argv(const std::vector<std::string>& argv, bool windows) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() &&
                 a.find_first_of(windows ? " \t\"" : " \t\"'\\") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '"';
    if (windows) {
      // Backslashes double only where a quote follows them (ours, or one in `a`).
      std::size_t backslashes = 0;
      for (char c : a) {
        if (c == '\\') {
          ++backslashes;
          continue;
        }
        if (c == '"') backslashes = backslashes * 2 + 1;
        out.append(backslashes, '\\');
        backslashes = 0;
        out += c;
      }
      out.append(backslashes * 2, '\\');
    } else {
      for (char c : a) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
      }
    }
    out += '"';
  }
  return out;
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while ((pos = s.find_first_not_of(" \t", pos)) != std::string::npos) {
    std::size_t end = s.find_first_of(" \t", pos);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

std::string cut(std::string s, std::size_t max) {
  if (s.size() > max) s.resize(max);
  return s;
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
      action_rng_(sim_rng::derive(cfg.seed, index, 3)),
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
  removed_system_.erase(f.path);
  while (files_.size() > max_files) {
    files_.erase(file_order_.front());
    file_order_.pop_front();
  }
}

void sim_endpoint::remove_file(const std::string& path) {
  if (files_.erase(path) == 0) return;
  file_order_.erase(std::find(file_order_.begin(), file_order_.end(), path));
  // A removed system binary stays gone until something puts it back.
  const char* sys = system_binary(path, os_family_ == "windows");
  if (sys && path == sys) removed_system_.insert(path);
}

// The file at `path`; a known system binary not in the table yet is materialised,
// unless it was removed.
const bus::file_info* sim_endpoint::find_file(const std::string& path) {
  auto it = files_.find(path);
  if (it != files_.end()) return &it->second;
  const char* sys = system_binary(path, os_family_ == "windows");
  if (!sys || removed_system_.count(sys)) return nullptr;
  image_file(sys, {});
  return &files_.find(sys)->second;
}

bool sim_endpoint::has_file(const std::string& path) const {
  if (files_.count(path)) return true;
  const char* sys = system_binary(path, os_family_ == "windows");
  return sys && !removed_system_.count(sys);
}

bool sim_endpoint::has_process(uint32_t pid, int64_t start_time) const {
  auto it = processes_.find(pid);
  return it != processes_.end() && it->second.start_time == start_time;
}

const launch_info* sim_endpoint::launched(uint32_t pid) const {
  auto it = launched_.find(pid);
  return it == launched_.end() ? nullptr : &it->second;
}

void sim_endpoint::remove_process(uint32_t pid) {
  processes_.erase(pid);
  launched_.erase(pid);
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
    if (has_process(pid, start)) remove_process(pid); // the oldest process exits
    incident_pids_.pop_front();
  }
}

// A process that was already running when the chain began (explorer, w3wp, ...).
// One that was terminated is started again by its service manager shortly before
// `at`, unless its hash is prevented: then there is none (null).
const bus::process_info* sim_endpoint::running(const std::string& image,
                                               const std::string& user, int64_t at) {
  auto found = base_processes_.find(image);
  bool restart = found != base_processes_.end();
  if (restart) {
    auto it = processes_.find(found->second);
    // The pid may have been reused after a terminate: check it is the same image.
    if (it != processes_.end() && it->second.image == image) return &it->second;
  }
  bus::file_info file = image_file(image, {});
  if (prevented_.count(file.sha256)) {
    ++stats_.blocked_starts;
    return nullptr;
  }
  // Derived from the image, not drawn, so the generator stays untouched.
  uint64_t draw = mix(std::stoull(file.sha256.substr(0, 15), nullptr, 16) + index_);
  bus::process_info p;
  p.pid = allocate_pid(draw);
  p.start_time = restart
                     ? at - static_cast<int64_t>(span(draw, 1, 30)) * second_us
                     : boot_time_ + static_cast<int64_t>(span(draw, 5, 600)) * second_us;
  p.image = image;
  p.sha256 = file.sha256;
  p.cmdline = os_family_ == "windows" ? "\"" + image + "\"" : image;
  p.user = user;
  p.parent_pid = os_family_ == "windows" ? 4 : 1;
  base_processes_[image] = p.pid;
  return &(processes_[p.pid] = p);
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
      const bus::process_info* root = running(
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
      ev.file = image_file(expand(se.path, rand, c2), se.sha256);
      if (prevented_.count(ev.file.sha256)) {
        ++stats_.blocked_starts;
        dropped[i] = true;
        continue;
      }
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

  // The detection was about something that never ran: it is now about the file
  // that was written and stopped from starting, or there is nothing to report.
  if (dropped[sc.key_index]) {
    std::string key_path = expand(sc.events[sc.key_index].path, rand, c2);
    rep.key_event_id.clear();
    for (const auto& ev : rep.events)
      if (ev.type == "file_created" && ev.file.path == key_path) rep.key_event_id = ev.id;
    if (rep.key_event_id.empty()) {
      rep.events.clear();
      ++stats_.suppressed_incidents;
      return rep;
    }
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

namespace {

void fail(bus::action_result& r, std::string why) {
  r.ok = false;
  r.error = std::move(why);
}

// The `sha256` param, checked; false with `r` failed if missing or malformed.
bool sha256_param(const bus::command& cmd, bus::action_result& r, std::string& sha256) {
  const std::string* h = param(cmd, "sha256");
  if (!h || h->empty()) {
    fail(r, "missing param sha256");
    return false;
  }
  if (!parse_sha256(*h, sha256)) {
    fail(r, "sha256 must be 64 hex digits, got '" + printable(*h, 80) + "'");
    return false;
  }
  return true;
}

// The `path` and `sha256` of a file action, checked; false with `r` failed if not.
bool file_params(const bus::command& cmd, bool windows, bus::action_result& r,
                 std::string& path, std::string& sha256) {
  const std::string* p = param(cmd, "path");
  if (!p || p->empty()) {
    fail(r, "missing param path");
    return false;
  }
  if (std::string why = path_problem(*p, windows, "path"); !why.empty()) {
    fail(r, why);
    return false;
  }
  if (!sha256_param(cmd, r, sha256)) return false;
  path = *p;
  return true;
}

// The hash of prevent_run / allow_run; `path` is informational but checked if given.
bool hash_params(const bus::command& cmd, bool windows, bus::action_result& r,
                 std::string& sha256) {
  const std::string* p = param(cmd, "path");
  if (p && !p->empty()) {
    if (std::string why = path_problem(*p, windows, "path"); !why.empty()) {
      fail(r, why);
      return false;
    }
  }
  return sha256_param(cmd, r, sha256);
}

} // namespace

void sim_endpoint::prevent_run(const bus::command& cmd, bus::action_result& r) {
  std::string hash;
  if (!hash_params(cmd, os_family_ == "windows", r, hash)) return;
  r.ok = true;
  r.effect["sha256"] = hash;
  if (prevented_.count(hash)) {
    r.effect["note"] = "already prevented";
    return;
  }
  if (prevented_.size() >= max_prevented) {
    r.effect.clear();
    return fail(r,
                "prevention list is full (" + std::to_string(max_prevented) + " hashes)");
  }
  // Running instances keep running, as with an EDR's execution prevention: only new
  // starts are refused.
  prevented_.insert(hash);
}

void sim_endpoint::allow_run(const bus::command& cmd, bus::action_result& r) {
  std::string hash;
  if (!hash_params(cmd, os_family_ == "windows", r, hash)) return;
  r.ok = true;
  r.effect["sha256"] = hash;
  if (prevented_.erase(hash) == 0) r.effect["note"] = "not prevented";
}

void sim_endpoint::quarantine_file(const bus::command& cmd, bus::action_result& r) {
  std::string path, hash;
  if (!file_params(cmd, os_family_ == "windows", r, path, hash)) return;
  const bus::file_info* f = find_file(path);
  if (!f) return fail(r, "no file at " + printable(path));
  if (f->sha256 != hash) return fail(r, "file changed since detection");
  bus::file_info kept = *f;
  std::string id;
  do
    id = "q-" + hex(action_rng_.next(), 16);
  while (quarantine_.count(id));
  remove_file(kept.path);
  quarantine_.emplace(id, kept);
  quarantine_order_.push_back(id);
  while (quarantine_.size() > max_quarantine) {
    quarantine_.erase(quarantine_order_.front());
    quarantine_order_.pop_front();
  }
  r.ok = true;
  r.effect["quarantine_id"] = id;
  r.effect["path"] = kept.path;
}

void sim_endpoint::restore_file(const bus::command& cmd, bus::action_result& r) {
  bool windows = os_family_ == "windows";
  const std::string* qid = param(cmd, "quarantine_id");
  if (!qid || qid->empty()) return fail(r, "missing param quarantine_id");
  auto entry = quarantine_.find(*qid);
  if (entry == quarantine_.end())
    return fail(r, "no quarantine entry " + printable(*qid, 80));
  const bus::file_info f = entry->second;
  // The server repeats the quarantined file's path and hash: they must agree.
  const std::string* p = param(cmd, "path");
  if (p && !p->empty() && !same_path(*p, f.path, windows))
    return fail(r, "quarantine entry " + *qid + " is for " + printable(f.path) +
                       ", not " + printable(*p));
  const std::string* h = param(cmd, "sha256");
  std::string hash;
  if (h && !h->empty()) {
    if (!parse_sha256(*h, hash))
      return fail(r, "sha256 must be 64 hex digits, got '" + printable(*h, 80) + "'");
    if (hash != f.sha256)
      return fail(r, "quarantine entry " + *qid + " holds a file with another sha256");
  }
  const bus::file_info* there = find_file(f.path);
  if (there && there->sha256 != f.sha256)
    return fail(r, "a different file now sits at " + printable(f.path));
  put_file(f);
  quarantine_.erase(entry);
  quarantine_order_.erase(
      std::find(quarantine_order_.begin(), quarantine_order_.end(), *qid));
  r.ok = true;
  r.effect["path"] = f.path;
}

void sim_endpoint::delete_file(const bus::command& cmd, bus::action_result& r) {
  std::string path, hash;
  if (!file_params(cmd, os_family_ == "windows", r, path, hash)) return;
  const bus::file_info* f = find_file(path);
  if (!f) return fail(r, "no file at " + printable(path));
  if (f->sha256 != hash) return fail(r, "file changed since detection");
  std::string gone = f->path;
  remove_file(gone);
  r.ok = true;
  r.effect["path"] = gone;
}

void sim_endpoint::terminate_process(const bus::command& cmd, bus::action_result& r) {
  const std::string* pid_text = param(cmd, "pid");
  const std::string* start_text = param(cmd, "start_time");
  if (!pid_text || pid_text->empty()) return fail(r, "missing param pid");
  uint64_t pid = 0;
  if (!parse_decimal(*pid_text, std::numeric_limits<uint32_t>::max(), pid) || pid == 0)
    return fail(r, "pid must be a decimal number from 1 to 4294967295, got '" +
                       printable(*pid_text, 40) + "'");
  if (!start_text || start_text->empty()) return fail(r, "missing param start_time");
  int64_t start = 0;
  if (!parse_time(*start_text, start))
    return fail(r, "start_time must be a decimal number of microseconds, got '" +
                       printable(*start_text, 40) + "'");
  auto it = processes_.find(static_cast<uint32_t>(pid));
  std::string who = "process " + std::to_string(pid);
  if (it == processes_.end()) return fail(r, "no " + who);
  if (it->second.start_time != start)
    return fail(r, who + " is not the detected one (start time differs)");
  const std::string* image = param(cmd, "image");
  if (image && !image->empty() &&
      !same_path(*image, it->second.image, os_family_ == "windows"))
    return fail(r, who + " is not the detected one (image differs)");
  // Like SIGKILL: only this process; its children live on as orphans.
  remove_process(static_cast<uint32_t>(pid));
  r.ok = true;
  r.effect["pid"] = std::to_string(pid);
}

void sim_endpoint::start_process(const bus::command& cmd, int64_t now,
                                 bus::action_result& r) {
  // The server validated these already; an agent checks again before it executes.
  bool windows = os_family_ == "windows";
  const std::string* path = param(cmd, "path");
  if (!path || path->empty()) return fail(r, "missing param path");
  if (std::string why = path_problem(*path, windows, "path"); !why.empty())
    return fail(r, why);
  std::string cwd = windows ? R"(C:\Windows\System32)" : "/";
  const std::string* wd = param(cmd, "working_directory");
  if (wd && !wd->empty()) {
    if (std::string why = path_problem(*wd, windows, "working_directory"); !why.empty())
      return fail(r, why);
    cwd = *wd;
  }

  uint64_t argc = 0;
  const std::string* argc_text = param(cmd, "argc");
  if (argc_text && !parse_decimal(*argc_text, max_args, argc))
    return fail(r, "argc must be a number from 0 to " + std::to_string(max_args) +
                       ", got '" + printable(*argc_text, 40) + "'");
  for (const auto& [key, value] : cmd.params) {
    if (key.rfind("arg.", 0) != 0) continue;
    uint64_t i = 0;
    if (!parse_decimal(key.substr(4), max_args, i) || key != "arg." + std::to_string(i) ||
        i >= argc)
      return fail(r, "unexpected param " + printable(key, 40) + ": argc is " +
                         std::to_string(argc));
  }
  std::vector<std::string> args;
  std::size_t arg_bytes = 0;
  for (uint64_t i = 0; i < argc; ++i) {
    std::string key = "arg." + std::to_string(i);
    const std::string* a = param(cmd, key);
    if (!a) return fail(r, "missing param " + key + ": argc is " + std::to_string(argc));
    if (a->find('\0') != std::string::npos) return fail(r, key + " contains a NUL byte");
    arg_bytes += a->size();
    if (arg_bytes > max_args_bytes) return fail(r, "arguments are longer than 32 KiB");
    args.push_back(*a);
  }

  const bus::file_info* exe = find_file(*path);
  if (!exe) return fail(r, "no executable at " + printable(*path));
  if (prevented_.count(exe->sha256)) {
    ++stats_.blocked_starts;
    return fail(r, "execution prevented by policy");
  }
  bus::file_info image = *exe;

  bus::process_info p;
  std::string user = windows ? R"(NT AUTHORITY\SYSTEM)" : "root";
  const bus::process_info* agent =
      running(windows ? windows_agent_image : linux_agent_image, user, now);
  p.pid = allocate_pid(action_rng_.next());
  p.start_time = now;
  p.image = image.path;
  p.sha256 = image.sha256;
  p.user = user;
  p.parent_pid = agent ? agent->pid : (windows ? 4 : 1);
  launch_info li;
  li.working_directory = cwd;
  li.argv.push_back(image.path);
  li.argv.insert(li.argv.end(), args.begin(), args.end());
  p.cmdline = join_argv(li.argv, windows);
  run_output run = program_output(image.path, args, cwd, 0);
  add_process(p);
  launched_[p.pid] = std::move(li);

  r.ok = true;
  r.effect["pid"] = std::to_string(p.pid);
  r.effect["exit_code"] = std::to_string(run.exit_code);
  r.effect["stdout"] = cut(std::move(run.out), max_output);
  r.effect["stderr"] = cut(std::move(run.err), max_output);
}

// What a few well-known programs print on this endpoint; others print nothing.
// Started processes run as the agent's user, SYSTEM or root.
sim_endpoint::run_output
sim_endpoint::program_output(const std::string& image,
                             const std::vector<std::string>& args, const std::string& cwd,
                             int depth) const {
  bool windows = os_family_ == "windows";
  std::string name = base_name(image);
  if (windows) {
    name = lower(name);
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".exe") == 0)
      name.resize(name.size() - 4);
  }
  const char* nl = windows ? "\r\n" : "\n";
  run_output run;

  // A shell given a command runs its first word with the rest as arguments.
  bool unix_shell = !windows && (name == "sh" || name == "bash" || name == "dash") &&
                    args.size() >= 2 && args[0] == "-c";
  bool cmd_shell = windows && name == "cmd" && args.size() >= 2 && lower(args[0]) == "/c";
  if (unix_shell || cmd_shell) {
    if (depth >= max_shell_depth) return run;
    std::string line = args[1];
    for (std::size_t i = 2; cmd_shell && i < args.size(); ++i)
      line += " " + args[i];
    std::vector<std::string> words = split_words(line);
    if (words.empty()) return run;
    std::vector<std::string> rest(words.begin() + 1, words.end());
    return program_output(words[0], rest, cwd, depth + 1);
  }

  std::string kernel = identity_.os.rfind("Ubuntu", 0) == 0 ? "5.15.0-105-generic"
                       : identity_.os.rfind("Debian", 0) == 0
                           ? "6.1.0-21-amd64"
                           : "5.14.0-362.8.1.el9_3.x86_64";
  if (name == "whoami") {
    run.out = windows ? std::string("nt authority\\system") + nl : "root\n";
  } else if (name == "hostname") {
    run.out = identity_.hostname + nl;
  } else if (windows && name == "ipconfig") {
    const std::string& addr = identity_.addresses.front();
    run.out =
        "\r\nWindows IP Configuration\r\n\r\n\r\nEthernet adapter Ethernet0:\r\n\r\n"
        "   Connection-specific DNS Suffix  . : corp.local\r\n"
        "   IPv4 Address. . . . . . . . . . . : " +
        addr +
        "\r\n   Subnet Mask . . . . . . . . . . . : 255.255.0.0\r\n"
        "   Default Gateway . . . . . . . . . : 10.20.0.254\r\n";
  } else if (name == "echo") {
    for (std::size_t i = 0; i < args.size(); ++i)
      run.out += (i ? " " : "") + args[i];
    run.out += nl;
  } else if (windows) {
    // Everything else on Windows prints nothing here.
  } else if (name == "id") {
    run.out = "uid=0(root) gid=0(root) groups=0(root)\n";
  } else if (name == "uname") {
    std::string opt = args.empty() ? "-s" : args[0];
    if (opt == "-a")
      run.out = "Linux " + identity_.hostname + " " + kernel +
                " #1 SMP PREEMPT_DYNAMIC x86_64 GNU/Linux\n";
    else if (opt == "-n")
      run.out = identity_.hostname + "\n";
    else if (opt == "-r")
      run.out = kernel + "\n";
    else if (opt == "-m")
      run.out = "x86_64\n";
    else if (opt == "-s")
      run.out = "Linux\n";
    else {
      run.exit_code = 1;
      run.err = "uname: invalid option -- '" + opt + "'\n";
    }
  } else if (name == "pwd") {
    run.out = cwd + "\n";
  } else if (name == "false") {
    run.exit_code = 1;
  } else if (name == "ls") {
    // The entries one level below the directory, from the file table.
    std::string dir = cwd;
    for (const auto& a : args)
      if (!a.empty() && a[0] != '-') dir = a;
    std::string prefix = dir == "/" ? dir : dir + "/";
    std::set<std::string> names;
    auto add = [&](const std::string& path) {
      if (path.size() <= prefix.size() || path.compare(0, prefix.size(), prefix) != 0)
        return;
      names.insert(
          path.substr(prefix.size(), path.find('/', prefix.size()) - prefix.size()));
    };
    for (const auto& [path, f] : files_)
      add(path);
    for (const char* b : linux_system_binaries)
      if (!removed_system_.count(b)) add(b);
    for (const auto& n : names)
      run.out += n + "\n";
    if (names.empty() && dir != "/") {
      run.exit_code = 2;
      run.err = "ls: cannot access '" + dir + "': No such file or directory\n";
    }
  }
  return run;
}

bus::action_result sim_endpoint::execute(const bus::command& cmd, int64_t now) {
  bus::action_result r;
  r.action_id = cmd.action_id;
  if (cmd.expires_at != 0 && cmd.expires_at < now) {
    r.error = "expired";
    return r;
  }
  auto type = parry::action_type_from_string(cmd.type);
  if (!type) {
    r.error = "unsupported action type: " + printable(cmd.type, 64);
    return r;
  }
  switch (*type) {
  case parry::action_type::isolate:
    r.ok = true;
    if (isolated_) {
      r.effect["note"] = "already isolated";
    } else {
      isolated_ = true;
      r.effect["rules"] =
          "all traffic dropped except the management channel to " + cfg_.server;
      r.effect["previous"] = "not isolated";
    }
    break;
  case parry::action_type::release_isolation:
    r.ok = true;
    if (isolated_) {
      isolated_ = false;
      r.effect["rules"] = "removed";
    } else {
      r.effect["note"] = "not isolated";
    }
    break;
  case parry::action_type::prevent_run:
    prevent_run(cmd, r);
    break;
  case parry::action_type::allow_run:
    allow_run(cmd, r);
    break;
  case parry::action_type::quarantine:
    quarantine_file(cmd, r);
    break;
  case parry::action_type::restore_from_quarantine:
    restore_file(cmd, r);
    break;
  case parry::action_type::delete_file:
    delete_file(cmd, r);
    break;
  case parry::action_type::terminate_process:
    terminate_process(cmd, r);
    break;
  case parry::action_type::start_process:
    start_process(cmd, now, r);
    break;
  }
  if (!r.ok) r.effect.clear();
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
    if (it->second.cancelled) { // withdrawn before it ran: it never runs
      out.result =
          bus::action_result{cmd.action_id, false, "cancelled before it ran", {}};
      return out;
    }
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
  // One line per execution, in this exact form: tests count them to prove that an
  // action ran at most once.
  spdlog::info("executed {} {} on {}: {}", printable(cmd.action_id, 128),
               printable(cmd.type, 64), device_id_,
               out.result.ok ? "ok" : out.result.error);
  journal(cmd.action_id, journal_entry{out.result, false});
  return out;
}

void sim_endpoint::journal(const std::string& action_id, journal_entry e) {
  if (!e.result_acked) ++unacked_;
  journal_.emplace(action_id, std::move(e));
  journal_order_.push_back(action_id);
  while (journal_order_.size() > max_journal) {
    auto old = journal_.find(journal_order_.front());
    if (!old->second.result_acked) --unacked_;
    journal_.erase(old);
    journal_order_.pop_front();
  }
}

bus::cancel_result sim_endpoint::cancel(const std::string& action_id) {
  bus::cancel_result r{action_id, true, ""};
  if (auto it = journal_.find(action_id); it != journal_.end()) {
    r.cancelled = it->second.cancelled;
    r.detail = r.cancelled ? "already cancelled" : "already executed";
    if (!r.cancelled) ++stats_.late_cancels;
    return r;
  }
  // Not started: held, or never received. Journaled, so it never runs later.
  auto held = std::find_if(pending_.begin(), pending_.end(), [&](const bus::command& c) {
    return c.action_id == action_id;
  });
  r.detail = held != pending_.end() ? "withdrawn before it started" : "never received";
  if (held != pending_.end()) pending_.erase(held);
  journal_entry e;
  e.result.action_id = action_id;
  e.result_acked = true; // no result will ever be sent
  e.cancelled = true;
  journal(action_id, std::move(e));
  ++stats_.cancelled_commands;
  spdlog::info("cancelled {} on {}: {}", printable(action_id, 128), device_id_, r.detail);
  return r;
}

void sim_endpoint::set_hold(bool commands, bool results) {
  hold_commands_ = commands;
  hold_results_ = results;
}

std::vector<std::string> sim_endpoint::pending_commands() const {
  std::vector<std::string> ids;
  for (const auto& c : pending_)
    ids.push_back(c.action_id);
  return ids;
}

void sim_endpoint::answer(const bus::command& cmd, int64_t now,
                          std::vector<outbound>& out) {
  if (auto it = journal_.find(cmd.action_id);
      it != journal_.end() && it->second.cancelled) {
    // Cancelled before it ran: it never runs; say so again.
    out.push_back(make(bus::type::cancel_result,
                       bus::cancel_result{cmd.action_id, true, "already cancelled"},
                       now));
    return;
  }
  bool was_idle = unacked_ == 0;
  command_outcome oc = handle_command(cmd, now);
  out.push_back(make(bus::type::action_ack, oc.ack, now));
  if (!hold_results_) out.push_back(make(bus::type::action_result, oc.result, now));
  if (was_idle) next_resend_ = now + result_resend_us;
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
    if (!hold_results_)
      for (const auto& id : unacked_results())
        out.push_back(make(bus::type::action_result, journal_.at(id).result, now));
    next_resend_ = now + result_resend_us;
    return out;
  }
  if (h->type == bus::type::command) {
    auto c = bus::decode<bus::command>(body_frame, limits_, why);
    if (!c) return drop("command: " + why);
    if (!bus::valid_id(c->action_id)) return drop("command with an invalid action id");
    if (!hold_commands_) {
      answer(*c, now, out);
      return out;
    }
    // Held: the server sees the command as sent, not acknowledged. A re-delivery
    // joins nothing, so releasing runs each action once.
    bool known =
        std::any_of(pending_.begin(), pending_.end(),
                    [&](const bus::command& p) { return p.action_id == c->action_id; });
    if (known) {
      spdlog::debug("{}: command {} is already held", device_id_, c->action_id);
    } else if (pending_.size() >= max_pending) {
      spdlog::warn("{}: {} commands held, dropped {}", device_id_, pending_.size(),
                   c->action_id);
    } else {
      pending_.push_back(std::move(*c));
      ++stats_.held_commands;
    }
    return out;
  }
  if (h->type == bus::type::cancel) {
    auto c = bus::decode<bus::cancel>(body_frame, limits_, why);
    if (!c) return drop("cancel: " + why);
    if (!bus::valid_id(c->action_id)) return drop("cancel with an invalid action id");
    out.push_back(make(bus::type::cancel_result, cancel(c->action_id), now));
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
  // Held commands, in the order they came, once the hold is lifted.
  while (!hold_commands_ && !pending_.empty()) {
    answer(pending_.front(), now, out);
    pending_.pop_front();
  }
  if (now >= next_heartbeat_) {
    out.push_back(make(bus::type::heartbeat, bus::heartbeat{isolated_}, now));
    next_heartbeat_ = now + heartbeat_us_; // no catching up after a stall
  }
  if (incidents_left() && now >= next_incident_) {
    bus::incident_report rep = next_incident(now);
    if (!rep.events.empty()) out.push_back(make(bus::type::incident, rep, now));
    schedule_next_incident(now, false);
  }
  if (unacked_ > 0 && !hold_results_ && now >= next_resend_) {
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
  if (!hold_commands_ && !pending_.empty()) return 0;
  int64_t due = next_heartbeat_;
  if (incidents_left()) due = std::min(due, next_incident_);
  if (unacked_ > 0 && !hold_results_) due = std::min(due, next_resend_);
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
