#include "server/config.hpp"

#include <cstdlib>
#include <set>

#include <toml++/toml.h>

namespace parry {

std::string server_config::validate() const {
  if (data_dir.empty()) return "data_dir: must not be empty";
  if (bus_endpoint.rfind("tcp://", 0) != 0 && bus_endpoint.rfind("ipc://", 0) != 0 &&
      bus_endpoint.rfind("inproc://", 0) != 0)
    return "bus_endpoint: must start with tcp://, ipc:// or inproc://";
  if (http_address.empty())
    return "http_address: must be an IP address, e.g. 127.0.0.1 or 0.0.0.0";
  if (heartbeat_interval_ms < 100 || heartbeat_interval_ms > 600000)
    return "heartbeat_interval_ms: must be between 100 and 600000";
  if (missed_heartbeats < 1 || missed_heartbeats > 100)
    return "missed_heartbeats: must be between 1 and 100";
  if (max_frame_bytes < 4096 || max_frame_bytes > (64u << 20))
    return "max_frame_bytes: must be between 4096 and 67108864";
  if (pbkdf2_iterations < 1000)
    return "pbkdf2_iterations: must be at least 1000 (600000 recommended)";
  if (max_login_failures < 1) return "max_login_failures: must be at least 1";
  if (session_idle_minutes < 1) return "session_idle_minutes: must be at least 1";
  if (max_source_failures < 1) return "max_source_failures: must be at least 1";
  if (max_account_failures < 1) return "max_account_failures: must be at least 1";
  if (max_password_checks < 1) return "max_password_checks: must be at least 1";
  if (token_default_ttl_days < 1 || token_default_ttl_days > token_max_ttl_days)
    return "token_default_ttl_days: must be between 1 and token_max_ttl_days";
  if (token_max_ttl_days > 3650) return "token_max_ttl_days: must be at most 3650";
  if (http_max_connections < 1) return "http_max_connections: must be at least 1";
  if (http_max_connections_per_source < 1)
    return "http_max_connections_per_source: must be at least 1";
  if (http_handshake_timeout_seconds < 1 || http_idle_timeout_seconds < 1)
    return "http_handshake_timeout_seconds, http_idle_timeout_seconds: must be at least "
           "1";
  static const std::set<std::string> types{
      "isolate",          "release_isolation", "start_process",           "prevent_run",
      "allow_run",        "quarantine",        "restore_from_quarantine", "delete_file",
      "terminate_process"};
  for (const auto& t : password_required)
    if (types.count(t) == 0)
      return "actions.password_required: unknown action type '" + t + "'";
  for (const auto& p : start_process_allowlist)
    if (p.empty() || (p[0] != '/' && p.find(":\\") != 1))
      return "actions.start_process_allowlist: '" + p + "' is not an absolute path";
  if (default_ttl_seconds < 1) return "actions.default_ttl_seconds: must be at least 1";
  for (const auto& [t, v] : ttl_seconds) {
    if (types.count(t) == 0)
      return "actions.ttl_seconds: unknown action type '" + t + "'";
    if (v < 1) return "actions.ttl_seconds." + t + ": must be at least 1";
  }
  static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error"};
  if (levels.count(log_level) == 0)
    return "log_level: must be one of trace, debug, info, warn, error";
  return {};
}

namespace {

template <class T> std::string read(const toml::table& t, const char* key, T& out) {
  auto node = t.get(key);
  if (node == nullptr) return {};
  if constexpr (std::is_same_v<T, std::string>) {
    if (auto v = node->value<std::string>()) {
      out = *v;
      return {};
    }
    return std::string{key} + ": must be a string";
  } else {
    auto v = node->value<int64_t>();
    if (!v || *v < 0 || static_cast<uint64_t>(*v) > std::numeric_limits<T>::max())
      return std::string{key} + ": must be a non-negative integer in range";
    out = static_cast<T>(*v);
    return {};
  }
}

} // namespace

std::string load_toml(const std::string& path, server_config& cfg) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return path + ": " + std::string{e.description()};
  }
  static const std::set<std::string> known{"data_dir",
                                           "bus_endpoint",
                                           "http_address",
                                           "http_port",
                                           "admin_password",
                                           "heartbeat_interval_ms",
                                           "missed_heartbeats",
                                           "max_frame_bytes",
                                           "pbkdf2_iterations",
                                           "max_login_failures",
                                           "lockout_minutes",
                                           "session_idle_minutes",
                                           "max_source_failures",
                                           "max_account_failures",
                                           "max_password_checks",
                                           "token_default_ttl_days",
                                           "token_max_ttl_days",
                                           "http_max_connections",
                                           "http_max_connections_per_source",
                                           "http_fd_reserve",
                                           "http_handshake_timeout_seconds",
                                           "http_idle_timeout_seconds",
                                           "workers",
                                           "log_level",
                                           "actions"};
  for (auto& [k, v] : t)
    if (known.count(std::string{k.str()}) == 0)
      return path + ": unknown key '" + std::string{k.str()} + "'";
  for (auto err :
       {read(t, "data_dir", cfg.data_dir),
        read(t, "bus_endpoint", cfg.bus_endpoint),
        read(t, "http_address", cfg.http_address),
        read(t, "http_port", cfg.http_port),
        read(t, "admin_password", cfg.admin_password),
        read(t, "heartbeat_interval_ms", cfg.heartbeat_interval_ms),
        read(t, "missed_heartbeats", cfg.missed_heartbeats),
        read(t, "max_frame_bytes", cfg.max_frame_bytes),
        read(t, "pbkdf2_iterations", cfg.pbkdf2_iterations),
        read(t, "max_login_failures", cfg.max_login_failures),
        read(t, "lockout_minutes", cfg.lockout_minutes),
        read(t, "session_idle_minutes", cfg.session_idle_minutes),
        read(t, "max_source_failures", cfg.max_source_failures),
        read(t, "max_account_failures", cfg.max_account_failures),
        read(t, "max_password_checks", cfg.max_password_checks),
        read(t, "token_default_ttl_days", cfg.token_default_ttl_days),
        read(t, "token_max_ttl_days", cfg.token_max_ttl_days),
        read(t, "http_max_connections", cfg.http_max_connections),
        read(t, "http_max_connections_per_source", cfg.http_max_connections_per_source),
        read(t, "http_fd_reserve", cfg.http_fd_reserve),
        read(t, "http_handshake_timeout_seconds", cfg.http_handshake_timeout_seconds),
        read(t, "http_idle_timeout_seconds", cfg.http_idle_timeout_seconds),
        read(t, "workers", cfg.workers),
        read(t, "log_level", cfg.log_level)})
    if (!err.empty()) return path + ": " + err;
  if (auto actions = t.get("actions")) {
    auto tab = actions->as_table();
    if (tab == nullptr) return path + ": actions: must be a table";
    for (auto& [k, v] : *tab) {
      auto key = std::string{k.str()};
      if (key != "password_required" && key != "start_process_allowlist" &&
          key != "default_ttl_seconds" && key != "ttl_seconds")
        return path + ": unknown key 'actions." + key + "'";
    }
    auto strings = [&](const char* key, std::vector<std::string>& out) -> std::string {
      auto node = tab->get(key);
      if (node == nullptr) return {};
      auto arr = node->as_array();
      if (arr == nullptr)
        return std::string{"actions."} + key + ": must be an array of strings";
      out.clear();
      for (auto& e : *arr) {
        auto v = e.value<std::string>();
        if (!v) return std::string{"actions."} + key + ": must be an array of strings";
        out.push_back(*v);
      }
      return {};
    };
    for (auto err : {strings("password_required", cfg.password_required),
                     strings("start_process_allowlist", cfg.start_process_allowlist),
                     read(*tab, "default_ttl_seconds", cfg.default_ttl_seconds)})
      if (!err.empty())
        return path + ": " + (err.rfind("actions.", 0) == 0 ? err : "actions." + err);
    if (auto ttl = tab->get("ttl_seconds")) {
      auto ttab = ttl->as_table();
      if (ttab == nullptr)
        return path + ": actions.ttl_seconds: must be a table of type = seconds";
      for (auto& [k, v] : *ttab) {
        uint32_t secs = 0;
        auto key = std::string{k.str()};
        if (auto err = read(*ttab, key.c_str(), secs); !err.empty())
          return path + ": actions.ttl_seconds." + err;
        cfg.ttl_seconds[key] = secs;
      }
    }
  }
  return {};
}

std::string load_env(server_config& cfg) {
  auto env = [](const char* name, std::string& out) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') out = v;
  };
  env("PARRY_DATA_DIR", cfg.data_dir);
  env("PARRY_BUS_ENDPOINT", cfg.bus_endpoint);
  env("PARRY_HTTP_ADDRESS", cfg.http_address);
  env("PARRY_ADMIN_PASSWORD", cfg.admin_password);
  env("PARRY_LOG_LEVEL", cfg.log_level);
  std::string port;
  env("PARRY_HTTP_PORT", port);
  if (!port.empty()) {
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (*end != '\0' || p < 0 || p > 65535)
      return "PARRY_HTTP_PORT: must be a port number 0-65535";
    cfg.http_port = static_cast<uint16_t>(p);
  }
  return {};
}

} // namespace parry
