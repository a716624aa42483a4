#include "agent-real/real_config.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <set>

#include <arpa/inet.h>
#include <toml++/toml.h>
#include <unistd.h>

#include "bus/codec.hpp"
#include "common/domain.hpp"

namespace parry::real {

namespace {

// The keys a file may hold; anything else is a typo that would silently not apply.
const std::set<std::string> top_keys = {
    "device_id",    "server", "enroll_server",    "state_dir",    "file_roots",
    "guard_mounts", "iocs",   "start_timeout_ms", "heartbeat_ms", "isolation"};
const std::set<std::string> isolation_keys = {"lease_seconds", "dead_man",
                                              "dead_man_seconds", "exceptions"};
const std::set<std::string> exception_keys = {"address", "port", "direction"};

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  throw config_error("agent configuration: " + key + ": " + what);
}

std::string get_string(const toml::node_view<const toml::node>& n, const std::string& key,
                       std::string fallback) {
  if (!n) return fallback;
  auto v = n.value<std::string>();
  if (!v) bad(key, "must be a string");
  return *v;
}

template <class T>
T get_number(const toml::node_view<const toml::node>& n, const std::string& key,
             T fallback, int64_t lo, int64_t hi) {
  if (!n) return fallback;
  auto v = n.value<int64_t>();
  if (!v || !n.is_integer()) bad(key, "must be an integer");
  if (*v < lo || *v > hi)
    bad(key, "must be from " + std::to_string(lo) + " to " + std::to_string(hi));
  return static_cast<T>(*v);
}

bool get_bool(const toml::node_view<const toml::node>& n, const std::string& key,
              bool fallback) {
  if (!n) return fallback;
  if (!n.is_boolean()) bad(key, "must be true or false");
  return *n.value<bool>();
}

std::vector<std::string> get_strings(const toml::node_view<const toml::node>& n,
                                     const std::string& key) {
  std::vector<std::string> out;
  if (!n) return out;
  const toml::array* a = n.as_array();
  if (!a) bad(key, "must be an array of strings");
  if (a->size() > 4096) bad(key, "holds more than 4096 entries");
  for (const auto& e : *a) {
    auto s = e.value<std::string>();
    if (!s) bad(key, "must be an array of strings");
    out.push_back(*s);
  }
  return out;
}

std::string absolute_path(const std::string& p, const std::string& key) {
  if (p.empty() || p[0] != '/') bad(key, "'" + p + "' must be an absolute path");
  if (p.size() > 1024) bad(key, "path longer than 1024 bytes");
  for (unsigned char c : p)
    if (c < 0x20 || c == 0x7f) bad(key, "path holds a control character");
  if (("/" + p + "/").find("/../") != std::string::npos)
    bad(key, "'" + p + "' must not hold '..'");
  std::string q = p;
  while (q.size() > 1 && q.back() == '/')
    q.pop_back();
  return q;
}

} // namespace

std::pair<std::string, uint16_t> endpoint_address(const std::string& endpoint,
                                                  const char* key) {
  const std::string prefix = "tcp://";
  if (endpoint.rfind(prefix, 0) != 0)
    bad(key, "'" + endpoint + "' must be tcp://ADDRESS:PORT");
  std::string rest = endpoint.substr(prefix.size());
  auto colon = rest.rfind(':');
  if (colon == std::string::npos) bad(key, "'" + endpoint + "' has no port");
  std::string host = rest.substr(0, colon);
  std::string port = rest.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  unsigned char buf[16];
  if (inet_pton(AF_INET, host.c_str(), buf) != 1 &&
      inet_pton(AF_INET6, host.c_str(), buf) != 1)
    bad(key, "'" + host +
                 "' must be an IP address literal (isolation keeps exactly this address "
                 "reachable, so no name is resolved)");
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(),
                   [](unsigned char c) { return std::isdigit(c); }))
    bad(key, "port '" + port + "' must be a number from 1 to 65535");
  long n = std::stol(port);
  if (n < 1 || n > 65535) bad(key, "port " + port + " must be from 1 to 65535");
  return {host, static_cast<uint16_t>(n)};
}

real_config load_config(const std::string& path) {
  if (::access(path.c_str(), R_OK) != 0)
    throw config_error("agent configuration " + path + ": " + std::strerror(errno));
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw config_error("agent configuration " + path + ": " +
                       std::string(e.description()) + " (line " +
                       std::to_string(e.source().begin.line) + ")");
  }
  const toml::table& ct = t;
  for (const auto& [k, v] : ct)
    if (!top_keys.count(std::string(k.str()))) bad(std::string(k.str()), "unknown key");

  real_config c;
  c.device_id = get_string(ct["device_id"], "device_id", "");
  if (!c.device_id.empty() && (c.device_id.size() > 128 || !bus::valid_id(c.device_id)))
    bad("device_id", "at most 128 characters of [A-Za-z0-9._:-]");
  c.server = get_string(ct["server"], "server", c.server);
  endpoint_address(c.server, "server");
  c.enroll_server = get_string(ct["enroll_server"], "enroll_server", c.enroll_server);
  endpoint_address(c.enroll_server, "enroll_server");
  c.state_dir =
      absolute_path(get_string(ct["state_dir"], "state_dir", c.state_dir), "state_dir");
  for (const auto& r : get_strings(ct["file_roots"], "file_roots"))
    c.file_roots.push_back(absolute_path(r, "file_roots"));
  for (const auto& m : get_strings(ct["guard_mounts"], "guard_mounts"))
    c.guard_mounts.push_back(absolute_path(m, "guard_mounts"));
  for (auto h : get_strings(ct["iocs"], "iocs")) {
    std::transform(h.begin(), h.end(), h.begin(),
                   [](unsigned char ch) { return std::tolower(ch); });
    if (!is_sha256(h)) bad("iocs", "'" + h + "' is not a SHA-256 (64 hex digits)");
    c.iocs.insert(h);
  }
  c.start_timeout_ms = get_number<uint32_t>(ct["start_timeout_ms"], "start_timeout_ms",
                                            10'000, 100, 10'000);
  c.heartbeat_ms =
      get_number<uint32_t>(ct["heartbeat_ms"], "heartbeat_ms", 0, 0, 3'600'000);
  if (c.heartbeat_ms != 0 && c.heartbeat_ms < 100)
    bad("heartbeat_ms", "must be 0 (the server's) or from 100 to 3600000");

  if (auto iso = ct["isolation"]) {
    const toml::table* it = iso.as_table();
    if (!it) bad("isolation", "must be a table");
    for (const auto& [k, v] : *it)
      if (!isolation_keys.count(std::string(k.str())))
        bad("isolation." + std::string(k.str()), "unknown key");
    c.lease_seconds = get_number<uint32_t>(iso["lease_seconds"],
                                           "isolation.lease_seconds", 0, 0, 30 * 86400);
    c.dead_man = get_bool(iso["dead_man"], "isolation.dead_man", true);
    c.dead_man_seconds = get_number<uint32_t>(
        iso["dead_man_seconds"], "isolation.dead_man_seconds", 900, 5, 30 * 86400);
    if (auto ex = iso["exceptions"]) {
      const toml::array* a = ex.as_array();
      if (!a) bad("isolation.exceptions", "must be an array of tables");
      if (a->size() > 256) bad("isolation.exceptions", "holds more than 256 entries");
      for (const auto& e : *a) {
        const toml::table* et = e.as_table();
        std::string at =
            "isolation.exceptions[" + std::to_string(c.exceptions.size()) + "]";
        if (!et) bad(at, "must be a table");
        // A misspelt key would silently widen what isolation lets through.
        for (const auto& [k, v] : *et)
          if (!exception_keys.count(std::string(k.str())))
            bad(at + "." + std::string(k.str()), "unknown key");
        isolation_exception x;
        toml::node_view<const toml::node> ev{et};
        x.address = get_string(ev["address"], "isolation.exceptions.address", "");
        x.port =
            get_number<uint16_t>(ev["port"], "isolation.exceptions.port", 0, 0, 65535);
        x.direction =
            get_string(ev["direction"], "isolation.exceptions.direction", "both");
        if (std::string why = check_exception(x); !why.empty()) bad(at, why);
        c.exceptions.push_back(x);
      }
    }
  }
  return c;
}

} // namespace parry::real
