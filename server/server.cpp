#include "server/server.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <stdexcept>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/message.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/api.hpp"
#include "actors/auth.hpp"
#include "actors/directory.hpp"
#include "actors/error.hpp"
#include "actors/gateway_bridge.hpp"
#include "actors/store.hpp"
#include "actors/supervisor.hpp"
#include "bus/gateway.hpp"
#include "server/http_server.hpp"
#include "server/tls.hpp"

namespace parry {

void make_private_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all);
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_symlink()) continue;
    if (e.is_directory())
      fs::permissions(e.path(), fs::perms::owner_all);
    else if (e.is_regular_file())
      fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write);
  }
}

namespace {

/// The configuration's [actions] table (action types spelled as words) as the policy
/// the actors use (keyed by action_type). validate() has checked every word.
action_policy policy_of(const server_config& cfg) {
  auto type = [](const std::string& key, const std::string& word) {
    auto t = action_type_from_string(word);
    if (!t)
      throw std::runtime_error("configuration: " + key + ": unknown action type '" +
                               word + "'");
    return *t;
  };
  action_policy policy;
  policy.password_required.clear();
  for (const auto& word : cfg.password_required)
    policy.password_required.push_back(type("actions.password_required", word));
  policy.start_process_allowlist = cfg.start_process_allowlist;
  policy.default_ttl_us = int64_t{cfg.default_ttl_seconds} * 1000000;
  for (const auto& [word, secs] : cfg.ttl_seconds)
    policy.ttl_us[type("actions.ttl_seconds", word)] = int64_t{secs} * 1000000;
  policy.default_exec_deadline_us = int64_t{cfg.default_exec_deadline_seconds} * 1000000;
  for (const auto& [word, secs] : cfg.exec_deadline_seconds)
    policy.exec_deadline_us[type("actions.exec_deadline_seconds", word)] =
        int64_t{secs} * 1000000;
  return policy;
}

caf::actor_system_config make_caf_config(const server_config& cfg) {
  caf::actor_system_config out;
  out.add_error_category(ec_category(),
                         [](uint8_t code, caf::atom_value, const caf::message& ctx) {
                           std::string out = to_string(static_cast<ec>(code));
                           if (ctx.size() == 1 && ctx.match_element<std::string>(0))
                             out += ": " + ctx.get_as<std::string>(0);
                           return out;
                         });
  // CAF's own default is at least four threads; on a small machine that is more
  // threads than cores, spinning for work. One per core unless told otherwise.
  auto workers =
      cfg.workers > 0 ? cfg.workers : std::max(1u, std::thread::hardware_concurrency());
  out.set("scheduler.max-threads", static_cast<size_t>(workers));
  return out;
}

/// Waits for one answer from `dest` (only at start-up, never inside an actor).
template <class T, class Handle, class... Ts>
T ask(caf::actor_system& sys, const Handle& dest, Ts&&... xs) {
  caf::scoped_actor self{sys};
  T out{};
  caf::error failure;
  self->request(dest, std::chrono::seconds{60}, std::forward<Ts>(xs)...)
      .receive([&](T& x) { out = std::move(x); }, [&](caf::error& e) { failure = e; });
  if (failure) throw std::runtime_error(message_of(failure));
  return out;
}

} // namespace

struct server::impl {
  server_config cfg;
  caf::actor_system_config caf_cfg;
  caf::actor_system sys;
  store_actor store;
  directory_actor directory;
  std::shared_ptr<bus::gateway> bus;
  /// Counters of the HTTPS front end, shown in /stats.
  std::shared_ptr<http_stats> http_counters = std::make_shared<http_stats>();
  /// Restarts of the api and auth actors, shown in /stats.
  std::shared_ptr<supervision_stats> supervision = std::make_shared<supervision_stats>();
  /// Every top-level actor, told to exit on stop (their children are linked).
  std::vector<caf::strong_actor_ptr> actors;
  std::unique_ptr<http_server> http;
  std::string bus_endpoint;
  uint16_t http_port = 0;
  tls_files tls;
  std::string generated_password;
  bool stopped = false;

  explicit impl(server_config c)
      : cfg(std::move(c)), caf_cfg(make_caf_config(cfg)), sys(caf_cfg) {}
};

server::server(server_config cfg) : impl_(std::make_unique<impl>(std::move(cfg))) {}

server::~server() {
  stop();
}

void server::start() {
  auto& m = *impl_;
  auto& cfg = m.cfg;
  if (auto err = cfg.validate(); !err.empty())
    throw std::runtime_error("configuration: " + err);
  // Nothing parryd writes is for other local users (the database holds password
  // hashes, the TLS directory the private key).
  ::umask(077);
  make_private_dir(cfg.data_dir);
  m.tls = ensure_certificate(cfg.data_dir + "/tls", {cfg.http_address});

  // Remembers a top-level actor so stop() (also after a failed start) ends it.
  auto keep = [&m](const auto& handle) {
    m.actors.push_back(caf::actor_cast<caf::strong_actor_ptr>(handle));
  };
  // The store runs on a thread of its own: SQLite blocks only there.
  // Incidents between the bus and the store (actors/ingest.hpp).
  auto gauge = std::make_shared<ingest_gauge>();
  store_options sopts;
  sopts.ingest = gauge;
  m.store = m.sys.spawn<caf::detached>(store_with, cfg.data_dir + "/parry.db", sopts);
  keep(m.store);
  ask<std::string>(m.sys, m.store, atom::query_v, atom::stats_v);
  // Files made before this start (or under another umask) are closed too.
  make_private_dir(cfg.data_dir);

  bus::decode_limits limits;
  limits.max_frame = cfg.max_frame_bytes;
  ingest_limits ingest;
  ingest.max_devices = cfg.max_devices;
  ingest.incidents_per_minute = cfg.max_incidents_per_minute;
  ingest.incidents_per_second = cfg.max_incidents_per_second;
  ingest.incident_bytes_in_flight = cfg.max_incident_bytes_in_flight;
  bus::gateway_options gopts;
  // Dead connections end after the same silence that makes a device offline, which
  // frees their routing id for the agent's next connection.
  gopts.heartbeat_ivl = std::chrono::milliseconds{cfg.heartbeat_interval_ms};
  gopts.heartbeat_timeout =
      std::chrono::milliseconds{cfg.heartbeat_interval_ms} * cfg.missed_heartbeats;
  // The gateway calls back on its own thread; the directory handle is set below,
  // before the socket starts, and never changes afterwards. The filter is only
  // used on that thread.
  auto dir_slot = std::make_shared<directory_actor>();
  auto filter = std::make_shared<inbound_filter>(limits, ingest, gauge);
  m.bus = std::make_shared<bus::gateway>(
      cfg.bus_endpoint, limits,
      [dir_slot, filter](bus::header&& h, std::string_view body) {
        return (*filter)(*dir_slot, std::move(h), body, inbound_filter::clock::now());
      },
      [dir_slot](const std::string& device_id) {
        caf::anon_send(*dir_slot, atom::unreach_v, device_id);
      },
      gopts);
  m.bus->on_warning([](const std::string& line) { spdlog::warn("{}", line); });
  auto store_handle = m.store;
  m.bus->on_suspicious([store_handle](const std::string& peer, const std::string& what) {
    caf::anon_send(store_handle, atom::audit_v,
                   audit_entry{"device:" + peer, "bus_refused", peer, what});
  });
  auto gateway = m.sys.spawn(gateway_bridge, m.bus);
  keep(gateway);

  device_config dcfg;
  dcfg.heartbeat_interval = std::chrono::milliseconds{cfg.heartbeat_interval_ms};
  dcfg.missed_heartbeats = cfg.missed_heartbeats;
  dcfg.ingest = gauge;
  auto policy = policy_of(cfg);
  m.directory = m.sys.spawn(directory, dcfg, policy,
                            caf::timespan{std::chrono::minutes{5}}, m.store, gateway);
  keep(m.directory);
  *dir_slot = m.directory;

  auto hash = m.sys.spawn<caf::detached>(hasher, cfg.pbkdf2_iterations);
  keep(hash);
  auth_config acfg;
  acfg.max_failures = cfg.max_login_failures;
  acfg.max_source_failures = cfg.max_source_failures;
  acfg.max_account_failures = cfg.max_account_failures;
  acfg.max_hashing = cfg.max_password_checks;
  acfg.token_default_ttl = std::chrono::hours{24 * cfg.token_default_ttl_days};
  acfg.token_max_ttl = std::chrono::hours{24 * cfg.token_max_ttl_days};
  acfg.lockout = std::chrono::minutes{cfg.lockout_minutes};
  acfg.session_idle = std::chrono::minutes{cfg.session_idle_minutes};
  acfg.pbkdf2_iterations = cfg.pbkdf2_iterations;
  auto au = spawn_supervised_auth(m.sys, m.supervision, acfg, m.store, hash);
  keep(au);
  m.generated_password =
      ask<std::string>(m.sys, au, atom::bootstrap_v, cfg.admin_password);

  // Open actions go back to their devices before any agent can reconnect.
  ask<uint64_t>(m.sys, m.directory, atom::resume_v);
  m.bus_endpoint = m.bus->start();

  std::weak_ptr<bus::gateway> weak_bus = m.bus;
  std::weak_ptr<http_stats> weak_http = m.http_counters;
  auto bus_stats = [weak_bus, weak_http, devices = dcfg.counters, gauge] {
    auto out = nlohmann::json::object();
    out["device_actors"] =
        nlohmann::json{{"foreign_results", devices->foreign_results.load()},
                       {"stranger_incidents", devices->stranger_incidents.load()},
                       {"strangers_forgotten", devices->strangers_forgotten.load()},
                       {"dropped_dead", devices->dropped_dead.load()}};
    out["ingest"] = nlohmann::json{{"reports_in_flight", gauge->reports.load()},
                                   {"bytes_in_flight", gauge->bytes.load()}};
    if (auto b = weak_bus.lock()) {
      const auto& s = b->stats();
      nlohmann::json refused = nlohmann::json::object();
      for (std::size_t k = 0; k < bus::refusal_kinds; ++k)
        refused[bus::to_string(static_cast<bus::refusal_kind>(k))] = s.refused[k].load();
      out["bus"] =
          nlohmann::json{{"frames_in", s.frames_in.load()},
                         {"frames_out", s.frames_out.load()},
                         {"bad_frames", s.bad_frames.load()},
                         {"unreachable", s.unreachable.load()},
                         {"refused", std::move(refused)},
                         {"rejected_sent", s.rejected_sent.load()},
                         {"zap_admitted", s.zap_admitted.load()},
                         {"zap_refused_unknown", s.zap_refused_unknown.load()},
                         {"zap_refused_domain", s.zap_refused_domain.load()},
                         {"zap_refused_live", s.zap_refused_live.load()},
                         {"zap_refused_malformed", s.zap_refused_malformed.load()},
                         {"revoked_cut", s.revoked_cut.load()},
                         {"log_suppressed", s.log_suppressed.load()}};
    }
    if (auto h = weak_http.lock())
      out["http"] =
          nlohmann::json{{"accepted", h->accepted.load()},
                         {"open", h->open.load()},
                         {"refused_total_limit", h->refused_total_limit.load()},
                         {"refused_source_limit", h->refused_source_limit.load()},
                         {"refused_fd_reserve", h->refused_fd_reserve.load()},
                         {"accept_backoffs", h->accept_backoffs.load()},
                         {"bad_requests", h->bad_requests.load()}};
    return out;
  };
  // Opened after the writer has created or migrated the schema.
  auto reader = m.sys.spawn<caf::detached>(store_reader, cfg.data_dir + "/parry.db");
  keep(reader);
  auto a = spawn_supervised_api(m.sys, m.supervision, au, hash, m.directory, m.store,
                                reader, policy, bus_stats);
  keep(a);
  http_limits hl;
  hl.max_connections = cfg.http_max_connections;
  hl.max_connections_per_source = cfg.http_max_connections_per_source;
  hl.fd_reserve = cfg.http_fd_reserve;
  hl.handshake_timeout = std::chrono::seconds{cfg.http_handshake_timeout_seconds};
  hl.idle_timeout = std::chrono::seconds{cfg.http_idle_timeout_seconds};
  m.http = std::make_unique<http_server>(m.sys, a, cfg.http_address, cfg.http_port,
                                         m.tls.cert, m.tls.key, hl, m.http_counters);
  m.http_port = m.http->start();
}

void server::stop() {
  auto& m = *impl_;
  if (m.stopped) return;
  m.stopped = true;
  if (m.http) m.http->stop();
  if (m.bus) m.bus->stop();
  // Writes not yet committed were never confirmed to anyone, so nothing that was
  // reported is lost when the store exits before committing them.
  for (auto& h : m.actors)
    caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
  m.actors.clear();
}

const std::string& server::bus_endpoint() const {
  return impl_->bus_endpoint;
}
uint16_t server::http_port() const {
  return impl_->http_port;
}
const std::string& server::cert_file() const {
  return impl_->tls.cert;
}
const std::string& server::generated_admin_password() const {
  return impl_->generated_password;
}

} // namespace parry
