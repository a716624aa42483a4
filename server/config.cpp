#include "server/config.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>
#include <type_traits>

#include <toml++/toml.h>

#include "common/domain.hpp"
#include "common/utf8.hpp"

namespace parry {

namespace {

using C = server_config;

// Bounds on every value from outside.

/// Longest text of one value: a TOML string, an environment variable, a flag, or one
/// entry of a list.
constexpr size_t max_text_bytes = 4096;
/// Longest text of a whole list or table given as an environment variable or flag.
constexpr size_t max_list_text_bytes = 64 * 1024;
/// Most entries in one list or table value.
constexpr size_t max_entries = 256;
/// Largest configuration file read.
constexpr uintmax_t max_file_bytes = 1 << 20;

/// A value as an error message shows it: ill-formed UTF-8 replaced, control
/// characters escaped, at most `max` bytes.
std::string display(std::string_view s, size_t max = 80) {
  std::string out;
  for (char c : utf8_sanitized(s)) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  if (out.size() > max) out = std::string{utf8_prefix(out, max)} + "...";
  return out;
}

/// "" when `s` is text a configuration value may hold, else why not.
std::string text_problem(std::string_view s) {
  if (s.size() > max_text_bytes)
    return "longer than " + std::to_string(max_text_bytes) + " bytes";
  if (!valid_utf8(s)) return "not valid UTF-8";
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return "contains a control character";
  return {};
}

std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + '"';
}

std::string toml_key(std::string_view s) {
  bool bare = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  return bare ? std::string{s} : toml_string(s);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ')
    s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ')
    s.remove_suffix(1);
  return s;
}

/// Splits "a,b,c" (spaces around entries ignored); "" is no entries.
std::string split_list(std::string_view s, std::vector<std::string_view>& out) {
  if (s.size() > max_list_text_bytes)
    return "longer than " + std::to_string(max_list_text_bytes) + " bytes";
  if (trim(s).empty()) return {};
  while (true) {
    auto comma = s.find(',');
    auto item = trim(s.substr(0, comma));
    if (item.empty()) return "an empty entry";
    if (out.size() == max_entries)
      return "more than " + std::to_string(max_entries) + " entries";
    out.push_back(item);
    if (comma == std::string_view::npos) return {};
    s.remove_prefix(comma + 1);
  }
}

// Codecs: how a value of each member type is read, checked for shape, printed.

template <class T, class = void> struct codec;

template <class T>
struct codec<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static_assert(sizeof(T) <= 4, "the value must fit an int64_t with room to spare");
  static constexpr const char* type = "integer";
  static std::string from_int(int64_t v, T& out) {
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        v > static_cast<int64_t>(std::numeric_limits<T>::max()))
      return "out of range";
    out = static_cast<T>(v);
    return {};
  }
  static std::string from_text(std::string_view s, T& out) {
    int64_t v = 0;
    auto [end, err] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || err == std::errc::invalid_argument || end != s.data() + s.size())
      return "not a decimal integer";
    if (err == std::errc::result_out_of_range) return "out of range";
    return from_int(v, out);
  }
  static std::string from_toml(const toml::node& n, T& out) {
    auto v = n.as_integer();
    if (v == nullptr) return "not an integer";
    return from_int(v->get(), out);
  }
  static std::string valid(const T&) { return {}; }
  static std::string toml(const T& v) { return std::to_string(v); }
  static std::string text(const T& v) { return std::to_string(v); }
};

template <> struct codec<bool> {
  static constexpr const char* type = "boolean";
  static std::string from_text(std::string_view s, bool& out) {
    if (s == "true")
      out = true;
    else if (s == "false")
      out = false;
    else
      return "not true or false";
    return {};
  }
  static std::string from_toml(const toml::node& n, bool& out) {
    auto v = n.as_boolean();
    if (v == nullptr) return "not a boolean";
    out = v->get();
    return {};
  }
  static std::string valid(const bool&) { return {}; }
  static std::string toml(const bool& v) { return v ? "true" : "false"; }
  static std::string text(const bool& v) { return v ? "true" : "false"; }
};

template <> struct codec<std::string> {
  static constexpr const char* type = "string";
  static std::string from_text(std::string_view s, std::string& out) {
    if (auto why = text_problem(s); !why.empty()) return why;
    out = s;
    return {};
  }
  static std::string from_toml(const toml::node& n, std::string& out) {
    auto v = n.as_string();
    if (v == nullptr) return "not a string";
    return from_text(v->get(), out);
  }
  static std::string valid(const std::string& v) { return text_problem(v); }
  static std::string toml(const std::string& v) { return toml_string(v); }
  static std::string text(const std::string& v) { return v; }
};

template <> struct codec<std::vector<std::string>> {
  using T = std::vector<std::string>;
  static constexpr const char* type = "list of strings";
  static std::string from_text(std::string_view s, T& out) {
    std::vector<std::string_view> items;
    if (auto why = split_list(s, items); !why.empty()) return why;
    out.clear();
    for (auto item : items) {
      if (auto why = text_problem(item); !why.empty()) return "an entry is " + why;
      out.emplace_back(item);
    }
    return {};
  }
  static std::string from_toml(const toml::node& n, T& out) {
    auto arr = n.as_array();
    if (arr == nullptr) return "not an array of strings";
    if (arr->size() > max_entries)
      return "more than " + std::to_string(max_entries) + " entries";
    out.clear();
    for (auto& e : *arr) {
      auto v = e.as_string();
      if (v == nullptr) return "not an array of strings";
      if (auto why = text_problem(v->get()); !why.empty()) return "an entry is " + why;
      out.push_back(v->get());
    }
    return {};
  }
  static std::string valid(const T& v) {
    if (v.size() > max_entries)
      return "more than " + std::to_string(max_entries) + " entries";
    for (auto& e : v)
      if (auto why = text_problem(e); !why.empty()) return "an entry is " + why;
    return {};
  }
  static std::string toml(const T& v) {
    std::string out = "[";
    for (auto& e : v)
      out += (out.size() > 1 ? ", " : "") + toml_string(e);
    return out + "]";
  }
  static std::string text(const T& v) {
    std::string out;
    for (auto& e : v)
      out += (out.empty() ? "" : ",") + e;
    return out;
  }
};

template <> struct codec<std::map<std::string, uint32_t>> {
  using T = std::map<std::string, uint32_t>;
  static constexpr const char* type = "table of integers";
  static std::string from_text(std::string_view s, T& out) {
    std::vector<std::string_view> items;
    if (auto why = split_list(s, items); !why.empty()) return why;
    T parsed;
    for (auto item : items) {
      auto eq = item.find('=');
      if (eq == std::string_view::npos) return "an entry without '='";
      auto name = trim(item.substr(0, eq));
      if (name.empty()) return "an entry without a name";
      if (auto why = text_problem(name); !why.empty()) return "a name is " + why;
      if (auto why = codec<uint32_t>::from_text(trim(item.substr(eq + 1)),
                                                parsed[std::string{name}]);
          !why.empty())
        return "the value of '" + display(name) + "' is " + why;
    }
    out = std::move(parsed);
    return {};
  }
  static std::string from_toml(const toml::node& n, T& out) {
    auto tab = n.as_table();
    if (tab == nullptr) return "not a table";
    if (tab->size() > max_entries)
      return "more than " + std::to_string(max_entries) + " entries";
    T parsed;
    for (auto& [k, v] : *tab) {
      if (auto why = text_problem(k.str()); !why.empty()) return "a name is " + why;
      if (auto why = codec<uint32_t>::from_toml(v, parsed[std::string{k.str()}]);
          !why.empty())
        return "the value of '" + display(k.str()) + "' is " + why;
    }
    out = std::move(parsed);
    return {};
  }
  static std::string valid(const T& v) {
    if (v.size() > max_entries)
      return "more than " + std::to_string(max_entries) + " entries";
    for (auto& [k, x] : v)
      if (auto why = text_problem(k); !why.empty()) return "a name is " + why;
    return {};
  }
  static std::string toml(const T& v) {
    std::string out = "{";
    for (auto& [k, x] : v)
      out += (out.size() > 1 ? ", " : " ") + toml_key(k) + " = " + std::to_string(x);
    return out + (v.empty() ? "}" : " }");
  }
  static std::string text(const T& v) {
    std::string out;
    for (auto& [k, x] : v)
      out += (out.empty() ? "" : ",") + k + "=" + std::to_string(x);
    return out;
  }
};

// Checks: what is legal, in words and as a test.

/// A check on a value of type T: the legal values in words, their unit, and a test
/// that says why a value is not legal ("" when it is).
template <class T> struct rule {
  std::string legal;
  std::string unit;
  std::function<std::string(const T&)> test;
};

/// Integers lo..hi (inclusive), in `unit`.
struct range {
  int64_t lo;
  int64_t hi;
  const char* unit = "";
};

template <class T> rule<T> make_rule(rule<T> r) {
  return r;
}

template <class T> rule<T> make_rule(range r) {
  static_assert(std::is_integral_v<T>, "range() checks integers");
  std::string legal = std::to_string(r.lo) + ".." + std::to_string(r.hi);
  if (*r.unit != '\0') legal += std::string{" "} + r.unit;
  return {legal, r.unit, [r](const T& v) -> std::string {
            if (int64_t{v} < r.lo || int64_t{v} > r.hi) return "out of range";
            return {};
          }};
}

/// Either value of a boolean.
rule<bool> either() {
  return {"true or false", "", [](const bool&) { return std::string{}; }};
}

rule<std::string> one_of(std::vector<std::string> names) {
  std::string legal = "one of";
  for (auto& n : names)
    legal += (&n == &names.front() ? " " : ", ") + n;
  return {legal, "", [names](const std::string& v) -> std::string {
            if (std::find(names.begin(), names.end(), v) == names.end())
              return "not a legal value";
            return {};
          }};
}

rule<std::string> directory() {
  return {"a non-empty path", "", [](const std::string& v) -> std::string {
            if (v.empty()) return "empty";
            return {};
          }};
}

/// Also used for optional files.
rule<std::string> optional_directory() {
  return {"a path, or empty for none", "",
          [](const std::string&) { return std::string{}; }};
}

/// A host name or address for a TLS peer (checked against its certificate).
rule<std::string> optional_host() {
  return {"empty (off), a DNS name or an IP address", "",
          [](const std::string& v) -> std::string {
            if (v.size() > 253) return "longer than 253 bytes";
            for (char c : v)
              if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' &&
                  c != ':')
                return "not a host name or address";
            return {};
          }};
}

rule<std::string> endpoint() {
  return {"tcp://HOST:PORT (PORT * picks a free one), ipc://PATH or inproc://NAME", "",
          [](const std::string& v) -> std::string {
            for (const char* scheme : {"tcp://", "ipc://", "inproc://"})
              if (v.rfind(scheme, 0) == 0 && v.size() > std::strlen(scheme)) return {};
            return "not a ZeroMQ endpoint";
          }};
}

rule<std::string> ip_address() {
  return {"an IPv4 or IPv6 address, e.g. 127.0.0.1, 0.0.0.0 or ::1", "",
          [](const std::string& v) -> std::string {
            unsigned char buf[16];
            if (inet_pton(AF_INET, v.c_str(), buf) == 1 ||
                inet_pton(AF_INET6, v.c_str(), buf) == 1)
              return {};
            return "not an IP address";
          }};
}

rule<std::string> optional_ip_address() {
  auto ip = ip_address();
  return {"empty (off) or " + ip.legal, "", [test = ip.test](const std::string& v) {
            return v.empty() ? std::string{} : test(v);
          }};
}

/// The same bounds the REST API sets on passwords.
rule<std::string> password() {
  return {"empty (a password is generated) or 12 to 1024 bytes", "",
          [](const std::string& v) -> std::string {
            if (!v.empty() && v.size() < 12) return "shorter than 12 bytes";
            if (v.size() > 1024) return "longer than 1024 bytes";
            return {};
          }};
}

// Action types by name: the vocabulary's (common/domain.hpp).
const std::vector<std::string>& action_type_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (auto t : all_action_types)
      out.emplace_back(to_string(t));
    return out;
  }();
  return names;
}

bool is_action_type(const std::string& s) {
  return action_type_from_string(s).has_value();
}

std::string action_types_in_words() {
  std::string out;
  for (auto& n : action_type_names())
    out += (out.empty() ? "" : ", ") + n;
  return out;
}

rule<std::vector<std::string>> action_types() {
  return {"action types: " + action_types_in_words(), "",
          [](const std::vector<std::string>& v) -> std::string {
            for (auto& t : v)
              if (!is_action_type(t)) return "unknown action type '" + display(t) + "'";
            return {};
          }};
}

rule<std::vector<std::string>> absolute_paths() {
  return {"absolute paths (/... or X:\\...); empty: any", "",
          [](const std::vector<std::string>& v) -> std::string {
            for (auto& p : v)
              if (auto why = path_problem(p); !why.empty())
                return "'" + display(p) + "': " + why;
            return {};
          }};
}

constexpr int64_t max_ttl_seconds = 365 * 86400;

rule<std::map<std::string, uint32_t>> ttl_table() {
  return {"action type = 1.." + std::to_string(max_ttl_seconds) +
              " seconds, for types among " + action_types_in_words(),
          "seconds", [](const std::map<std::string, uint32_t>& v) -> std::string {
            for (auto& [t, secs] : v) {
              if (!is_action_type(t)) return "unknown action type '" + display(t) + "'";
              if (secs < 1 || secs > max_ttl_seconds)
                return "the value of '" + t + "' is out of range";
            }
            return {};
          }};
}

/// One key, with its codec and check bound to its member.
struct entry {
  config_key_info info;
  /// Parse `text` (environment or flag), check it, and store it only when legal.
  std::function<std::string(C&, std::string_view)> from_text;
  /// The same for a TOML value.
  std::function<std::string(C&, const toml::node&)> from_toml;
  /// Checks the value the member holds now.
  std::function<std::string(const C&)> check;
  /// The value the member holds now, as TOML and as text.
  std::function<std::string(const C&)> toml;
  std::function<std::string(const C&)> text;
  /// Copies the member from one configuration to another.
  std::function<void(const C&, C&)> copy;
};

template <class T, class Check>
entry key(const char* name, T C::*member, const char* env, const char* flag,
          const char* doc, Check check) {
  using K = codec<T>;
  auto r = make_rule<T>(std::move(check));
  entry e;
  C defaults;
  e.info = {name,
            env,
            flag,
            K::type,
            r.unit,
            r.legal,
            doc,
            K::toml(defaults.*member),
            K::text(defaults.*member)};
  e.from_text = [member, test = r.test](C& c, std::string_view s) -> std::string {
    T v{};
    if (auto why = K::from_text(s, v); !why.empty()) return why;
    if (auto why = test(v); !why.empty()) return why;
    c.*member = std::move(v);
    return {};
  };
  e.from_toml = [member, test = r.test](C& c, const toml::node& n) -> std::string {
    T v{};
    if (auto why = K::from_toml(n, v); !why.empty()) return why;
    if (auto why = test(v); !why.empty()) return why;
    c.*member = std::move(v);
    return {};
  };
  e.check = [member, test = r.test](const C& c) -> std::string {
    if (auto why = K::valid(c.*member); !why.empty()) return why;
    return test(c.*member);
  };
  e.toml = [member](const C& c) { return K::toml(c.*member); };
  e.text = [member](const C& c) { return K::text(c.*member); };
  e.copy = [member](const C& from, C& to) { to.*member = from.*member; };
  return e;
}

/// A key whose value is never printed, not even in an error.
entry secret(entry e) {
  e.info.secret = true;
  return e;
}

/// A key a running parryd applies again on SIGHUP (server::reload).
entry reloads(entry e) {
  e.info.reloads = true;
  return e;
}

/// A key whose default depends on the build (a path): the reference tables describe
/// it in words instead.
entry build_default(entry e, const char* words) {
  e.info.default_words = words;
  return e;
}

// The table: one entry per key, in the order --print-config and the docs list them.
//
// To add a key: give server_config a member (its initial value is the default), then
// add one entry here: TOML key (`section.key`), member, environment variable (PARRY_
// and the key in upper case, '.' -> '_'), flag (-- and the key, '_' and '.' -> '-'),
// a doc line, and the check: range{lo, hi, unit} for integers, or a rule<T> (see
// one_of, ip_address, action_types above). The file, the environment, the flags,
// --help and --print-config follow from the entry. Then pass the member on where it
// is used (server.cpp) and paste `parryd --print-config --markdown` into
// docs/operations.md; test_config checks the names follow the pattern and that the
// docs show the current table.
const std::vector<entry>& table() {
  static const std::vector<entry> t{
      key("data_dir", &C::data_dir, "PARRY_DATA_DIR", "--data-dir",
          "directory for the database and TLS files", directory()),
      key("bus_endpoint", &C::bus_endpoint, "PARRY_BUS_ENDPOINT", "--bus-endpoint,--bus",
          "ZeroMQ endpoint the agents connect to", endpoint()),
      key("bus_curve", &C::bus_curve, "PARRY_BUS_CURVE", "--bus-curve",
          "CURVE encryption and ZAP on every bus endpoint: only enrolled agent keys and "
          "registered integrator keys connect (false: plain TCP, for a closed lab only)",
          either()),
      key("bus_max_connections", &C::bus_max_connections, "PARRY_BUS_MAX_CONNECTIONS",
          "--bus-max-connections",
          "agent connections open at once on bus_endpoint; more are refused (with CURVE "
          "at the handshake; a connection that never starts one is closed as accepted) "
          "(0: the open-files limit minus bus_fd_reserve)",
          range{0, 10000000, "connections"}),
      key("bus_fd_reserve", &C::bus_fd_reserve, "PARRY_BUS_FD_RESERVE",
          "--bus-fd-reserve",
          "descriptors kept for HTTPS, the store, enrollment and integrators when "
          "bus_max_connections is 0",
          range{64, 1000000, "descriptors"}),
      key("bus_backlog", &C::bus_backlog, "PARRY_BUS_BACKLOG", "--bus-backlog",
          "connections the kernel queues on bus_endpoint before they are accepted "
          "(ZMQ_BACKLOG, capped by net.core.somaxconn)",
          range{1, 65535, "connections"}),
      key("bus_io_threads", &C::bus_io_threads, "PARRY_BUS_IO_THREADS",
          "--bus-io-threads",
          "ZeroMQ I/O threads of bus_endpoint: its connections are spread over them "
          "(one thread left about 1,000 of 10,000 agents waiting to be accepted)",
          range{1, 64, "threads"}),
      key("bus_gateways", &C::bus_gateways, "PARRY_BUS_GATEWAYS", "--bus-gateways",
          "gateway processes (parry-gateway, next to parryd) that share bus_endpoint's "
          "port and hold the agent connections, each up to bus_max_connections or its "
          "own open-files limit (0: parryd holds them itself)",
          range{0, 64, "processes"}),
      key("bus_enroll_endpoint", &C::bus_enroll_endpoint, "PARRY_BUS_ENROLL_ENDPOINT",
          "--bus-enroll-endpoint",
          "ZeroMQ endpoint where agents enroll with a token (CURVE only)", endpoint()),
      key("bus_enroll_handshakes_per_second", &C::bus_enroll_handshakes_per_second,
          "PARRY_BUS_ENROLL_HANDSHAKES_PER_SECOND", "--bus-enroll-handshakes-per-second",
          "CURVE handshakes the enrollment endpoint admits per second; more are refused",
          range{1, 100000, "handshakes/s"}),
      key("bus_enroll_max_connections", &C::bus_enroll_max_connections,
          "PARRY_BUS_ENROLL_MAX_CONNECTIONS", "--bus-enroll-max-connections",
          "connections open at once on the enrollment endpoint; more are refused",
          range{1, 100000, "connections"}),
      key("bus_integrator_endpoint", &C::bus_integrator_endpoint,
          "PARRY_BUS_INTEGRATOR_ENDPOINT", "--bus-integrator-endpoint",
          "ZeroMQ endpoint where integrators send requests (CURVE only)", endpoint()),
      key("bus_events_endpoint", &C::bus_events_endpoint, "PARRY_BUS_EVENTS_ENDPOINT",
          "--bus-events-endpoint",
          "ZeroMQ PUB endpoint of incident, action and device events for integrators "
          "(CURVE only)",
          endpoint()),
      key("http_address", &C::http_address, "PARRY_HTTP_ADDRESS", "--http-address",
          "HTTPS listen address", ip_address()),
      key("http_port", &C::http_port, "PARRY_HTTP_PORT", "--http-port",
          "HTTPS port (0 picks a free one)", range{0, 65535}),
      build_default(key("web_dir", &C::web_dir, "PARRY_WEB_DIR", "--web-dir",
                        "directory of the web console's files, served at "
                        "https://HOST:PORT/ (empty: no console, the REST API only)",
                        optional_directory()),
                    "web/ of the source tree it was built from"),
      // No flag: a command line is readable by every local user (/proc/PID/cmdline).
      secret(key("admin_password", &C::admin_password, "PARRY_ADMIN_PASSWORD", "",
                 "first administrator's password, used once (empty: one is generated "
                 "and printed)",
                 password())),
      key("heartbeat_interval_ms", &C::heartbeat_interval_ms,
          "PARRY_HEARTBEAT_INTERVAL_MS", "--heartbeat-interval-ms",
          "heartbeat interval told to agents", range{100, 600000, "ms"}),
      key("missed_heartbeats", &C::missed_heartbeats, "PARRY_MISSED_HEARTBEATS",
          "--missed-heartbeats", "missed intervals before a device is offline",
          range{1, 100}),
      key("device_passivate_after_s", &C::device_passivate_after_s,
          "PARRY_DEVICE_PASSIVATE_AFTER_S", "--device-passivate-after-s",
          "a device with nothing queued that sent only heartbeats this long is kept as "
          "a record, not an actor (0: never)",
          range{0, 86400, "s"}),
      key("max_frame_bytes", &C::max_frame_bytes, "PARRY_MAX_FRAME_BYTES",
          "--max-frame-bytes", "largest bus frame accepted",
          range{4096, 64 << 20, "bytes"}),
      reloads(key(
          "max_source_failures", &C::max_source_failures, "PARRY_MAX_SOURCE_FAILURES",
          "--max-source-failures",
          "failed logins from one source address, all accounts, that block the address",
          range{1, 100000})),
      reloads(key("max_account_failures", &C::max_account_failures,
                  "PARRY_MAX_ACCOUNT_FAILURES", "--max-account-failures",
                  "failed logins for one account from all sources that lock it",
                  range{1, 1000000})),
      reloads(key("max_password_checks", &C::max_password_checks,
                  "PARRY_MAX_PASSWORD_CHECKS", "--max-password-checks",
                  "password checks in progress at once; more are answered 429",
                  range{1, 4096})),
      reloads(key("token_default_ttl_days", &C::token_default_ttl_days,
                  "PARRY_TOKEN_DEFAULT_TTL_DAYS", "--token-default-ttl-days",
                  "bearer token lifetime when POST /tokens names none (at most "
                  "token_max_ttl_days)",
                  range{1, 3650, "days"})),
      reloads(key("token_max_ttl_days", &C::token_max_ttl_days,
                  "PARRY_TOKEN_MAX_TTL_DAYS", "--token-max-ttl-days",
                  "longest bearer token lifetime", range{1, 3650, "days"})),
      key("http_max_connections", &C::http_max_connections, "PARRY_HTTP_MAX_CONNECTIONS",
          "--http-max-connections",
          "HTTPS connections open at once; more are closed at accept",
          range{1, 100000, "connections"}),
      key("http_max_connections_per_source", &C::http_max_connections_per_source,
          "PARRY_HTTP_MAX_CONNECTIONS_PER_SOURCE", "--http-max-connections-per-source",
          "HTTPS connections open at once from one IP address",
          range{1, 100000, "connections"}),
      key("http_fd_reserve", &C::http_fd_reserve, "PARRY_HTTP_FD_RESERVE",
          "--http-fd-reserve",
          "descriptors kept free for the bus and the store; HTTPS refuses connections "
          "that would use them",
          range{0, 100000, "descriptors"}),
      key("http_handshake_timeout_seconds", &C::http_handshake_timeout_seconds,
          "PARRY_HTTP_HANDSHAKE_TIMEOUT_SECONDS", "--http-handshake-timeout-seconds",
          "time for a TLS handshake", range{1, 3600, "seconds"}),
      key("http_idle_timeout_seconds", &C::http_idle_timeout_seconds,
          "PARRY_HTTP_IDLE_TIMEOUT_SECONDS", "--http-idle-timeout-seconds",
          "time to receive a request, and to wait for the next one on a kept-alive "
          "connection",
          range{1, 3600, "seconds"}),
      reloads(key("max_devices", &C::max_devices, "PARRY_MAX_DEVICES", "--max-devices",
                  "device ids the bus tracks at once; a new id beyond it is refused",
                  range{1, 10000000, "devices"})),
      reloads(key("max_incidents_per_minute", &C::max_incidents_per_minute,
                  "PARRY_MAX_INCIDENTS_PER_MINUTE", "--max-incidents-per-minute",
                  "incidents accepted per device per minute",
                  range{1, 1000000, "incidents"})),
      reloads(key("max_incidents_per_second", &C::max_incidents_per_second,
                  "PARRY_MAX_INCIDENTS_PER_SECOND", "--max-incidents-per-second",
                  "incidents accepted per second from all devices together",
                  range{1, 10000000, "incidents"})),
      reloads(
          key("max_incident_bytes_in_flight", &C::max_incident_bytes_in_flight,
              "PARRY_MAX_INCIDENT_BYTES_IN_FLIGHT", "--max-incident-bytes-in-flight",
              "incident reports (wire bytes) accepted but not yet stored, all devices "
              "together; beyond it reports are refused as busy",
              range{1 << 20, 4294967295, "bytes"})),
      reloads(key("max_hellos_in_flight", &C::max_hellos_in_flight,
                  "PARRY_MAX_HELLOS_IN_FLIGHT", "--max-hellos-in-flight",
                  "hellos accepted but not yet through (the device handled it and its "
                  "record is stored), all devices together; beyond it a hello is "
                  "refused as busy with the time to come back",
                  range{1, 1000000, "hellos"})),
      key("pbkdf2_iterations", &C::pbkdf2_iterations, "PARRY_PBKDF2_ITERATIONS",
          "--pbkdf2-iterations", "PBKDF2-HMAC-SHA256 iterations for new passwords",
          range{1000, 10000000}),
      reloads(key("max_login_failures", &C::max_login_failures,
                  "PARRY_MAX_LOGIN_FAILURES", "--max-login-failures",
                  "failed logins in a row that lock an account", range{1, 1000})),
      reloads(key("lockout_minutes", &C::lockout_minutes, "PARRY_LOCKOUT_MINUTES",
                  "--lockout-minutes", "how long a locked account stays locked",
                  range{1, 10080, "minutes"})),
      key("session_idle_minutes", &C::session_idle_minutes, "PARRY_SESSION_IDLE_MINUTES",
          "--session-idle-minutes", "browser session idle timeout",
          range{1, 10080, "minutes"}),
      key("workers", &C::workers, "PARRY_WORKERS", "--workers",
          "actor scheduler threads (0: one per core)", range{0, 256, "threads"}),
      key("scheduler", &C::scheduler, "PARRY_SCHEDULER", "--scheduler",
          "how actor threads find work: sharing (one queue; idle threads sleep) or "
          "stealing (CAF's default; idle threads poll each other's queues under spin "
          "locks, which stalls a machine whose cores other processes keep busy)",
          one_of({"sharing", "stealing"})),
      reloads(key("log_level", &C::log_level, "PARRY_LOG_LEVEL", "--log-level",
                  "log verbosity", one_of({"trace", "debug", "info", "warn", "error"}))),
      reloads(
          key("log_format", &C::log_format, "PARRY_LOG_FORMAT", "--log-format",
              "log lines as text, or as one JSON object a line with the action, device, "
              "incident and user as fields of their own",
              one_of({"text", "json"}))),
      key("metrics_address", &C::metrics_address, "PARRY_METRICS_ADDRESS",
          "--metrics-address",
          "listen address of the Prometheus metrics (plain HTTP, GET /metrics, no "
          "session); keep it on loopback or a management network",
          optional_ip_address()),
      key("metrics_port", &C::metrics_port, "PARRY_METRICS_PORT", "--metrics-port",
          "port of the metrics listener (0 picks a free one)", range{0, 65535}),
      reloads(
          key("siem_host", &C::siem_host, "PARRY_SIEM_HOST", "--siem-host",
              "syslog receiver (RFC 5425, TLS) that gets every audit record as CEF; its "
              "certificate must name this host",
              optional_host())),
      reloads(key("siem_port", &C::siem_port, "PARRY_SIEM_PORT", "--siem-port",
                  "port of the syslog receiver", range{1, 65535})),
      reloads(
          key("siem_ca_file", &C::siem_ca_file, "PARRY_SIEM_CA_FILE", "--siem-ca-file",
              "PEM file of the CA(s) that signed the receiver's certificate (empty: the "
              "system's trusted CAs)",
              optional_directory())),
      reloads(key("siem_cert_file", &C::siem_cert_file, "PARRY_SIEM_CERT_FILE",
                  "--siem-cert-file",
                  "PEM client certificate for receivers that require one (empty: none)",
                  optional_directory())),
      reloads(key("siem_key_file", &C::siem_key_file, "PARRY_SIEM_KEY_FILE",
                  "--siem-key-file", "PEM private key of siem_cert_file",
                  optional_directory())),
      reloads(
          key("actions.password_required", &C::password_required,
              "PARRY_ACTIONS_PASSWORD_REQUIRED", "--actions-password-required",
              "action types that need the caller's password again (start_process always "
              "does)",
              action_types())),
      reloads(key("actions.start_process_allowlist", &C::start_process_allowlist,
                  "PARRY_ACTIONS_START_PROCESS_ALLOWLIST",
                  "--actions-start-process-allowlist",
                  "executables start_process may run (empty: any absolute path)",
                  absolute_paths())),
      reloads(key("actions.default_ttl_seconds", &C::default_ttl_seconds,
                  "PARRY_ACTIONS_DEFAULT_TTL_SECONDS", "--actions-default-ttl-seconds",
                  "how long a command may wait for the agent to accept it",
                  range{1, max_ttl_seconds, "seconds"})),
      reloads(key("actions.ttl_seconds", &C::ttl_seconds, "PARRY_ACTIONS_TTL_SECONDS",
                  "--actions-ttl-seconds",
                  "per action type, instead of default_ttl_seconds", ttl_table())),
      reloads(
          key("actions.default_exec_deadline_seconds", &C::default_exec_deadline_seconds,
              "PARRY_ACTIONS_DEFAULT_EXEC_DEADLINE_SECONDS",
              "--actions-default-exec-deadline-seconds",
              "how long an acknowledged command may wait for its result (then failed: "
              "no result from the agent)",
              range{1, max_ttl_seconds, "seconds"})),
      reloads(
          key("actions.exec_deadline_seconds", &C::exec_deadline_seconds,
              "PARRY_ACTIONS_EXEC_DEADLINE_SECONDS", "--actions-exec-deadline-seconds",
              "per action type, instead of default_exec_deadline_seconds", ttl_table())),
  };
  return t;
}

const entry* find(std::string_view name) {
  for (auto& e : table())
    if (e.info.key == name) return &e;
  return nullptr;
}

/// One problem with one value: the key, where the value came from, why it is
/// wrong, the value (never a secret's) and what would be legal.
std::string problem(const config_key_info& k, const std::string& source,
                    std::string_view value, const std::string& why) {
  return k.key + " (" + source + "): " + why + ": '" +
         (k.secret ? std::string{"<secret>"} : display(value)) +
         "'; legal values: " + k.legal;
}

std::string node_text(const toml::node& n) {
  if (auto s = n.as_string()) return s->get();
  std::ostringstream os;
  n.visit([&os](const auto& x) { os << x; });
  return os.str();
}

std::string known_keys_under(const std::string& prefix) {
  std::string out;
  for (auto& e : table())
    if (prefix.empty() || e.info.key.rfind(prefix + ".", 0) == 0)
      out += (out.empty() ? "" : ", ") + e.info.key;
  return out;
}

/// Every key in the file must be one of ours: a typo is an error, not a default.
void check_unknown(const toml::table& tab, const std::string& prefix,
                   const std::string& source, std::vector<std::string>& errors) {
  for (auto& [k, v] : tab) {
    auto full = (prefix.empty() ? "" : prefix + ".") + std::string{k.str()};
    if (find(full) != nullptr) continue;
    if (!known_keys_under(full).empty()) {
      if (auto sub = v.as_table())
        check_unknown(*sub, full, source, errors);
      else
        errors.push_back(display(full) + " (" + source +
                         "): must be a table of keys: " + known_keys_under(full));
      continue;
    }
    errors.push_back(display(full) + " (" + source +
                     "): unknown key; known keys: " + known_keys_under(prefix));
  }
}

const toml::node* lookup(const toml::table& root, const std::string& key) {
  const toml::node* n = &root;
  for (std::string_view rest = key; n != nullptr;) {
    auto dot = rest.find('.');
    auto tab = n->as_table();
    if (tab == nullptr) return nullptr;
    n = tab->get(rest.substr(0, dot));
    if (dot == std::string_view::npos) return n;
    rest.remove_prefix(dot + 1);
  }
  return nullptr;
}

void load_file(const std::string& path, loaded_config& out,
               std::vector<std::string>& errors) {
  config_origin origin{config_source::file, path};
  auto source = display(to_string(origin), max_text_bytes);
  std::error_code err;
  auto size = std::filesystem::file_size(path, err);
  if (err) {
    errors.push_back(source + ": cannot read: " + err.message());
    return;
  }
  if (size > max_file_bytes) {
    errors.push_back(source + ": larger than " + std::to_string(max_file_bytes) +
                     " bytes");
    return;
  }
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    errors.push_back(source + ": line " + std::to_string(e.source().begin.line) +
                     ", column " + std::to_string(e.source().begin.column) + ": " +
                     display(e.description()));
    return;
  }
  check_unknown(root, "", source, errors);
  for (auto& e : table()) {
    auto n = lookup(root, e.info.key);
    if (n == nullptr) continue;
    if (auto why = e.from_toml(out.cfg, *n); !why.empty())
      errors.push_back(problem(e.info, source, node_text(*n), why));
    else
      out.origin[e.info.key] = origin;
  }
}

void load_text(const entry& e, std::string_view text, config_origin origin,
               loaded_config& out, std::vector<std::string>& errors) {
  if (auto why = e.from_text(out.cfg, text); !why.empty())
    errors.push_back(problem(e.info, to_string(origin), text, why));
  else
    out.origin[e.info.key] = std::move(origin);
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (auto& l : lines)
    out += (out.empty() ? "" : "\n") + l;
  return out;
}

/// `s` in a Markdown table cell; inside a code span only '|' needs escaping.
std::string markdown_cell(std::string_view s, bool code = false) {
  std::string out;
  for (char c : s) {
    if (c == '|' || (!code && c == '\\')) out += '\\';
    out += c;
  }
  return code ? "`" + out + "`" : out;
}

} // namespace

std::string server_config::validate() const {
  std::vector<std::string> errors;
  for (auto& e : table())
    if (auto why = e.check(*this); !why.empty())
      errors.push_back(problem(e.info, "configuration", e.text(*this), why));
  if (token_default_ttl_days > token_max_ttl_days)
    errors.push_back("token_default_ttl_days: " + std::to_string(token_default_ttl_days) +
                     " is above token_max_ttl_days (" +
                     std::to_string(token_max_ttl_days) + ")");
  return join_lines(errors);
}

std::string to_string(const config_origin& o) {
  switch (o.source) {
  case config_source::defaults:
    return "default";
  case config_source::file:
    return "file " + o.where;
  case config_source::env:
    return "env " + o.where;
  case config_source::flag:
    return "flag " + o.where;
  }
  return "?";
}

const std::vector<config_key_info>& config_keys() {
  static const std::vector<config_key_info> keys = [] {
    std::vector<config_key_info> out;
    for (auto& e : table())
      out.push_back(e.info);
    return out;
  }();
  return keys;
}

std::string primary_flag(const config_key_info& k) {
  return k.flag.substr(0, k.flag.find(','));
}

std::string load_config(const config_inputs& in, loaded_config& out) {
  out = loaded_config{};
  for (auto& e : table())
    out.origin[e.info.key] = {};
  std::vector<std::string> errors;
  if (!in.file.empty()) load_file(in.file, out, errors);
  for (auto& e : table()) {
    if (e.info.env.empty()) continue;
    const char* v =
        in.getenv ? in.getenv(e.info.env.c_str()) : std::getenv(e.info.env.c_str());
    // A variable that is set counts, even when empty: it is checked like any value.
    if (v != nullptr) load_text(e, v, {config_source::env, e.info.env}, out, errors);
  }
  for (auto& [name, text] : in.flags) {
    auto e = find(name);
    if (e == nullptr || e->info.flag.empty())
      errors.push_back(display(name) + ": no such key with a flag");
    else
      load_text(*e, text, {config_source::flag, primary_flag(e->info)}, out, errors);
  }
  return join_lines(errors);
}

std::string print_config(const loaded_config& c) {
  std::string out =
      "# parryd configuration: the effective value of each key and where it "
      "came from\n";
  for (auto& e : table()) {
    auto value =
        e.info.secret ? (e.text(c.cfg).empty() ? "<unset>" : "<set>") : e.toml(c.cfg);
    auto line = e.info.key + " = " + value;
    if (line.size() < 48) line.resize(48, ' ');
    auto i = c.origin.find(e.info.key);
    out +=
        line + "  # " + (i == c.origin.end() ? "default" : to_string(i->second)) + "\n";
  }
  return out;
}

std::vector<std::string> keys_needing_restart(const server_config& now,
                                              const server_config& next) {
  std::vector<std::string> out;
  for (auto& e : table())
    if (!e.info.reloads && !e.info.secret && e.toml(now) != e.toml(next))
      out.push_back(e.info.key);
  return out;
}

std::size_t bus_connection_cap(const server_config& cfg, std::size_t fd_limit) {
  if (cfg.bus_max_connections > 0) return cfg.bus_max_connections;
  if (fd_limit >= 2 * std::size_t{cfg.bus_fd_reserve})
    return fd_limit - cfg.bus_fd_reserve;
  return std::max<std::size_t>(fd_limit / 2, 1);
}

server_config reloaded_config(const server_config& running, const server_config& next,
                              std::vector<std::string>& restart) {
  restart = keys_needing_restart(running, next);
  auto out = next;
  for (const auto& key : restart)
    find(key)->copy(running, out);
  return out;
}

std::string config_reference_markdown() {
  std::string out =
      "| key (TOML) | environment | flag | type | unit | default | legal "
      "values | SIGHUP | meaning |\n|---|---|---|---|---|---|---|---|---|\n";
  auto code = [](std::string_view s) { return markdown_cell(s, true); };
  for (auto& e : table()) {
    const auto& k = e.info;
    std::string flags;
    for (std::string_view rest = k.flag; !rest.empty();) {
      auto comma = rest.find(',');
      flags += (flags.empty() ? "" : ", ") + code(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? "" : rest.substr(comma + 1);
    }
    out += "| " + code(k.key) + " | " + code(k.env) + " | " +
           (flags.empty() ? "(none)" : flags) + " | " + k.type + " | " + k.unit + " | " +
           (k.secret                   ? "unset"
            : !k.default_words.empty() ? markdown_cell(k.default_words)
                                       : code(k.default_toml)) +
           " | " + markdown_cell(k.legal) + " | " + (k.reloads ? "reloads" : "restart") +
           " | " + markdown_cell(k.doc) + " |\n";
  }
  return out;
}

std::string config_template_toml(const loaded_config& c) {
  std::string out =
      "# parryd configuration. Every key is listed with its meaning, legal values and\n"
      "# default; remove the '#' before a key to set it. PARRY_* environment variables\n"
      "# and flags override this file (parryd --help, docs/operations.md).\n";
  std::string section;
  for (auto& e : table()) {
    const auto& k = e.info;
    auto dot = k.key.find('.');
    auto sect = dot == std::string::npos ? std::string{} : k.key.substr(0, dot);
    if (sect != section) {
      section = sect;
      out += "\n[" + section + "]\n";
    }
    auto i = c.origin.find(k.key);
    bool set =
        !k.secret && i != c.origin.end() && i->second.source != config_source::defaults;
    out += "\n# " + k.doc + "\n# legal: " + k.legal + "; env " + k.env +
           (k.flag.empty() ? "" : "; flag " + primary_flag(k)) +
           (k.reloads ? "; reloads on SIGHUP" : "") + "\n";
    if (!k.default_words.empty()) out += "# default: " + k.default_words + "\n";
    auto name = sect.empty() ? k.key : k.key.substr(dot + 1);
    out += set ? name + " = " + e.toml(c.cfg) + "\n"
               : "#" + name + " = " + (k.secret ? "\"\"" : k.default_toml) + "\n";
  }
  return out;
}

} // namespace parry
