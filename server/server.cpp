#include "server/server.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/message.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <nlohmann/json.hpp>
#include <prometheus/metric_family.h>
#include <spdlog/spdlog.h>

#include "actors/api.hpp"
#include "actors/auth.hpp"
#include "actors/bus_keys.hpp"
#include "actors/checkpointer.hpp"
#include "actors/directory.hpp"
#include "actors/error.hpp"
#include "actors/gateway_bridge.hpp"
#include "actors/store.hpp"
#include "actors/supervisor.hpp"
#include "bus/curve_keys.hpp"
#include "bus/enroll.hpp"
#include "bus/gateway.hpp"
#include "bus/integrator.hpp"
#include "bus/link.hpp"
#include "bus/reuse_port.hpp"
#include "common/domain.hpp"
#include "common/keys.hpp"
#include "common/process.hpp"
#include "common/shared_setting.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"
#include "server/backup.hpp"
#include "server/backup_service.hpp"
#include "server/event_hub.hpp"
#include "server/gateway_procs.hpp"
#include "server/http_server.hpp"
#include "server/logging.hpp"
#include "server/memory_trim.hpp"
#include "server/metrics.hpp"
#include "server/openapi_spec.hpp"
#include "server/siem_export.hpp"
#include "server/tls.hpp"
#include "server/web_assets.hpp"

namespace parry {

void make_private_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all);
  for (auto it = fs::recursive_directory_iterator(dir);
       it != fs::recursive_directory_iterator(); ++it) {
    const auto& e = *it;
    if (e.is_symlink()) continue;
    // The key directory has stricter rules of its own (bus/curve_keys.hpp): a key
    // file someone made readable is refused there, never quietly closed here.
    if (it.depth() == 0 && e.path().filename() == bus::key_files::dir) {
      it.disable_recursion_pending();
      continue;
    }
    if (e.is_directory())
      fs::permissions(e.path(), fs::perms::owner_all);
    else if (e.is_regular_file())
      fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write);
  }
}

namespace {

/// Reports of at least this many wire bytes since the last trim make a burst whose
/// end is worth a malloc_trim (server/memory_trim.hpp): a few thousand reports.
constexpr uint64_t trim_after_burst_bytes = 8u << 20;

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

/// The login throttling and token rules of `cfg` (reloaded on SIGHUP).
auth_config auth_config_of(const server_config& cfg,
                           std::shared_ptr<server_metrics> metrics) {
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
  acfg.metrics = std::move(metrics);
  return acfg;
}

/// What agents may make the server do, from `cfg` (reloaded on SIGHUP).
ingest_limits ingest_limits_of(const server_config& cfg) {
  ingest_limits ingest;
  ingest.max_devices = cfg.max_devices;
  ingest.incidents_per_minute = cfg.max_incidents_per_minute;
  ingest.incidents_per_second = cfg.max_incidents_per_second;
  ingest.incident_bytes_in_flight = cfg.max_incident_bytes_in_flight;
  ingest.hellos_in_flight = cfg.max_hellos_in_flight;
  return ingest;
}

/// The SIEM export of `cfg`, none when siem_host is empty. Throws
/// std::runtime_error naming the key when the settings cannot work.
std::shared_ptr<siem_exporter> make_siem(const server_config& cfg) {
  if (cfg.siem_host.empty()) return nullptr;
  siem_options so;
  so.host = cfg.siem_host;
  so.port = cfg.siem_port;
  so.ca_file = cfg.siem_ca_file;
  so.cert_file = cfg.siem_cert_file;
  so.key_file = cfg.siem_key_file;
  so.db_path = cfg.data_dir + "/parry.db";
  so.cursor_file = cfg.data_dir + "/siem.cursor";
  if (auto why = so.validate(); !why.empty())
    throw std::runtime_error("configuration: " + why);
  return std::make_shared<siem_exporter>(so);
}

} // namespace

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
  // Work stealing locks other threads' queues with spin locks that yield: when the
  // machine's cores are busy (2 cores, simulated agents beside the server) a thread
  // preempted while holding one stalls every sender, the store's answers included.
  // Of 50,000 simulated endpoints, 48,500-50,000 came online within 41-69 s with
  // sharing; with stealing every run stalled below 25,000 (docs/benchmarks.md).
  out.set("scheduler.policy", caf::atom_from_string(cfg.scheduler));
  return out;
}

namespace {

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
  /// The agents' bus: held here (bus_gateways = 0), or by gateway processes behind
  /// the link.
  std::shared_ptr<bus::gateway> bus;
  std::shared_ptr<bus::link::hub> link;
  std::shared_ptr<gateway_procs> gateways;
  /// bus_gateways > 0 on port "*": the port chosen, held (bound, not listening).
  int port_hold = -1;
  /// CURVE only: the enrollment endpoint and who may connect.
  std::shared_ptr<bus::gateway> enroll;
  /// CURVE only: integrators' requests and events.
  std::shared_ptr<bus::gateway> integrators;
  std::string integrator_endpoint;
  std::string events_endpoint;
  std::shared_ptr<bus::key_registry> keys;
  std::string enroll_endpoint;
  std::optional<bus::server_keys> own_keys;  ///< Set by start(); signing moved out.
  std::shared_ptr<const signing_key> signer; ///< Shared with the device actors.
  std::string signing_public_hex;
  /// Counters of the HTTPS front end, shown in /stats.
  std::shared_ptr<http_stats> http_counters = std::make_shared<http_stats>();
  /// What the store commits, for the console's event streams.
  std::shared_ptr<event_hub> events = std::make_shared<event_hub>();
  /// Prometheus metrics, and their listener (none when metrics_address is empty).
  std::shared_ptr<server_metrics> metrics = std::make_shared<server_metrics>();
  std::unique_ptr<metrics_http> metrics_listener;
  /// Gives the heap back after an ingest burst (server/memory_trim.hpp).
  std::shared_ptr<memory_trimmer> trimmer;
  /// Ships the audit trail to the SIEM (none when siem_host is empty); a reload
  /// replaces it.
  shared_setting<std::shared_ptr<siem_exporter>> siem;
  /// What a reload (SIGHUP) replaces while the actors and the gateway run.
  shared_setting<action_policy> policy;
  shared_setting<auth_config> auth;
  shared_setting<ingest_limits> ingest;
  /// The api, asked by alive().
  api_actor api;
  uint16_t metrics_port = 0;
  /// The data directory's lock (data_dir/parryd.lock), held from start to stop.
  int lock_fd = -1;
  /// Restarts of the api and auth actors, shown in /stats.
  std::shared_ptr<supervision_stats> supervision = std::make_shared<supervision_stats>();
  /// Every top-level actor, told to exit on stop (their children are linked).
  std::vector<caf::strong_actor_ptr> actors;
  std::unique_ptr<http_server> http;
  std::string bus_endpoint;
  uint16_t http_port = 0;
  bool console = false;
  tls_files tls;
  std::string generated_password;
  bool stopped = false;

  /// Starts the link and the gateway processes (bus_gateways > 0) and waits until
  /// every one listens; returns the agents' endpoint.
  std::string start_gateways(const bus::decode_limits& limits,
                             const bus::gateway_options& g);

  explicit impl(server_config c)
      : cfg(std::move(c)), caf_cfg(make_caf_config(cfg)), sys(caf_cfg) {}
};

/// The link to the gateway processes: a socket in the private data directory.
std::string link_endpoint(const std::string& data_dir) {
  auto path = std::filesystem::absolute(data_dir) / "link.sock";
  // sockaddr_un holds 107 bytes of path.
  if (path.string().size() > 100)
    throw std::runtime_error("bus_gateways: the data directory's path is too long for "
                             "the gateway link socket (" +
                             path.string() + ")");
  return "ipc://" + path.string();
}

/// A program installed next to this one.
std::string next_to_self(const std::string& name) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find this program's directory");
  return (self.parent_path() / name).string();
}

/// `endpoint` (tcp://host:port) for gateway processes to share. Port "*" or 0: a
/// free port, held by `hold` (bound with SO_REUSEPORT, never listening, so the
/// kernel gives it no connection) until parryd stops.
std::string shared_port_endpoint(const std::string& endpoint, int& hold) {
  auto e = bus::parse_tcp_endpoint(endpoint);
  if (!e)
    throw std::runtime_error("bus_gateways needs a tcp://host:port bus_endpoint, not " +
                             endpoint);
  if (e->port != "*" && e->port != "0") return endpoint;
  uint16_t port = 0;
  hold = bus::reuse_port_socket(*e, 0, &port);
  return "tcp://" + e->host + ":" + std::to_string(port);
}

/// The enrollment endpoint and the bus_keys actor behind it (CURVE only). Requests
/// in flight between the endpoint and the store are bounded: more are refused busy.
/// `enroll` receives the endpoint's gateway (not started).
bus_keys_actor start_enrollment(caf::actor_system& sys, const server_config& cfg,
                                const bus::curve_key_pair& own,
                                const std::string& signing_public_hex,
                                const std::shared_ptr<bus::gateway>& integrators,
                                std::shared_ptr<bus::key_registry> keys,
                                const std::shared_ptr<bus::outbox>& agents,
                                store_actor store,
                                std::shared_ptr<bus::gateway>& enroll) {
  constexpr int max_in_flight = 64;
  auto in_flight = std::make_shared<std::atomic<int>>(0);
  auto keys_slot = std::make_shared<bus_keys_actor>();
  bus::decode_limits lim;
  lim.max_frame = 4096;
  bus::gateway_options eo;
  eo.heartbeat_ivl = std::chrono::seconds{5};
  eo.heartbeat_timeout = std::chrono::seconds{15};
  eo.curve = bus::curve_server_options{own.public_z85, own.secret_z85, keys,
                                       bus::zap_domain::enroll,
                                       cfg.bus_enroll_handshakes_per_second};
  eo.max_connections = cfg.bus_enroll_max_connections;
  enroll = std::make_shared<bus::gateway>(
      cfg.bus_enroll_endpoint, lim,
      [keys_slot, in_flight,
       lim](bus::header&& h, std::string_view body,
            std::string_view user_id) -> std::optional<bus::refusal> {
        using bus::refusal_kind;
        if (h.type != bus::type::enroll)
          return bus::refusal{refusal_kind::invalid,
                              "only enroll is accepted on this endpoint", "", 0, 0};
        std::string why;
        auto req = bus::decode<bus::enroll_request>(body, lim, why);
        if (!req) return bus::refusal{refusal_kind::invalid, "enroll: " + why, "", 0, 0};
        auto token = bus::parse_token(req->token);
        auto raw = bus::z85_to_raw(req->public_key);
        if (!token)
          return bus::refusal{refusal_kind::invalid, "enroll: not an enrollment token",
                              "", 0, 0};
        // The key enrolled is the key of this very connection (proof of possession).
        if (raw.empty() || "enroll:" + to_hex_text(raw) != user_id)
          return bus::refusal{refusal_kind::spoofed,
                              "enroll: public_key is not the key of this connection", "",
                              0, 0};
        if (in_flight->fetch_add(1) >= max_in_flight) {
          in_flight->fetch_sub(1);
          return bus::refusal{refusal_kind::busy, "too many enrollments in progress",
                              "enrollments_in_flight", max_in_flight, 1000};
        }
        caf::anon_send(*keys_slot, atom::enroll_v, h.device_id, req->public_key,
                       bus::token_hash(*token), h.msg_id);
        return std::nullopt;
      },
      nullptr, eo);
  enroll->on_warning([](const std::string& line) { spdlog::warn("{}", line); });
  bus_keys_config kc;
  kc.registry = keys;
  kc.server_key_z85 = own.public_z85;
  kc.signing_key_hex = signing_public_hex;
  std::weak_ptr<bus::gateway> enroll_gw = enroll;
  std::weak_ptr<bus::outbox> agents_gw = agents;
  kc.reply = [enroll_gw, in_flight](std::string id, std::string h, std::string b) {
    in_flight->fetch_sub(1);
    if (auto g = enroll_gw.lock()) g->send(std::move(id), std::move(h), std::move(b));
  };
  std::weak_ptr<bus::gateway> integrators_gw = integrators;
  kc.cut = [agents_gw, integrators_gw](bool integrator, const std::string& name) {
    if (integrator) {
      if (auto g = integrators_gw.lock()) g->cut(name);
    } else if (auto g = agents_gw.lock()) {
      g->cut(name);
    }
  };
  auto actor = sys.spawn(bus_keys, kc, store);
  *keys_slot = actor;
  return actor;
}

/// A gateway's counters as /stats shows them (docs/rest-api.md).
nlohmann::json gateway_json(const bus::gateway_stats& s) {
  nlohmann::json refused = nlohmann::json::object();
  for (std::size_t k = 0; k < bus::refusal_kinds; ++k)
    refused[bus::to_string(static_cast<bus::refusal_kind>(k))] = s.refused[k].load();
  return nlohmann::json{{"frames_in", s.frames_in.load()},
                        {"frames_out", s.frames_out.load()},
                        {"bad_frames", s.bad_frames.load()},
                        {"unreachable", s.unreachable.load()},
                        {"dropped_full", s.dropped_full.load()},
                        {"refused", std::move(refused)},
                        {"rejected_sent", s.rejected_sent.load()},
                        {"zap_admitted", s.zap_admitted.load()},
                        {"zap_refused_unknown", s.zap_refused_unknown.load()},
                        {"zap_refused_domain", s.zap_refused_domain.load()},
                        {"zap_refused_live", s.zap_refused_live.load()},
                        {"zap_refused_malformed", s.zap_refused_malformed.load()},
                        {"zap_refused_busy", s.zap_refused_busy.load()},
                        {"accept_refused_busy", s.accept_refused_busy.load()},
                        {"connections_open", s.connections_open.load()},
                        {"revoked_cut", s.revoked_cut.load()},
                        {"events_published", s.events_published.load()},
                        {"events_dropped", s.events_dropped.load()},
                        {"log_suppressed", s.log_suppressed.load()}};
}

/// The counters /stats shows, as Prometheus families (docs/operations.md lists
/// them): read at every scrape, nothing kept.
void collect_stats(const nlohmann::json& stats, const device_counters& devices,
                   const http_stats& http, std::vector<prometheus::MetricFamily>& out) {
  auto number = [](const nlohmann::json& v) {
    return v.is_number() ? v.get<double>() : 0.0;
  };
  out.push_back(gauge_family("parry_devices_online", "Devices whose agent is connected",
                             {{{}, double(devices.online.load())}}));
  out.push_back(gauge_family("parry_devices_passive",
                             "Devices kept as a record in the directory, not an actor",
                             {{{}, double(devices.passive.load())}}));
  out.push_back(gauge_family("parry_actions_dormant",
                             "Open actions kept as a record until their device is heard",
                             {{{}, double(devices.dormant_actions.load())}}));
  // Each bus endpoint's counters, labelled by endpoint.
  std::map<std::string, std::vector<metric_sample>> bus;
  std::vector<metric_sample> refused;
  std::vector<metric_sample> open_now;
  for (const char* endpoint : {"bus", "enrollment", "integrators"}) {
    if (!stats.contains(endpoint)) continue;
    for (const auto& [key, v] : stats[endpoint].items()) {
      if (key == "refused") {
        for (const auto& [reason, n] : v.items())
          refused.push_back({{{"endpoint", endpoint}, {"reason", reason}}, number(n)});
        continue;
      }
      if (key == "connections_open") {
        open_now.push_back({{{"endpoint", endpoint}}, number(v)});
        continue;
      }
      bus[key].push_back({{{"endpoint", endpoint}}, number(v)});
    }
  }
  out.push_back(gauge_family(
      "parry_bus_connections_open",
      "Bus connections open now, by endpoint (0 on an uncapped plain-TCP endpoint)",
      std::move(open_now)));
  for (auto& [key, samples] : bus)
    out.push_back(counter_family("parry_bus_" + key + "_total",
                                 "Bus counter " + key + " by endpoint (see /stats)",
                                 std::move(samples)));
  out.push_back(counter_family("parry_bus_refused_total",
                               "Bus messages refused, by endpoint and reason",
                               std::move(refused)));
  std::vector<metric_sample> conns;
  for (const auto& [reason, n] :
       {std::pair<const char*, uint64_t>{"total_limit", http.refused_total_limit.load()},
        {"source_limit", http.refused_source_limit.load()},
        {"fd_reserve", http.refused_fd_reserve.load()}})
    conns.push_back({{{"reason", reason}}, double(n)});
  out.push_back(counter_family("parry_http_connections_refused_total",
                               "HTTPS connections refused at accept, by reason",
                               std::move(conns)));
  out.push_back(gauge_family("parry_http_connections_open", "HTTPS connections open",
                             {{{}, double(http.open.load())}}));
  out.push_back(counter_family("parry_http_connections_accepted_total",
                               "HTTPS connections accepted",
                               {{{}, double(http.accepted.load())}}));
  out.push_back(counter_family("parry_http_bad_requests_total",
                               "HTTP requests refused before the API (not UTF-8)",
                               {{{}, double(http.bad_requests.load())}}));
  if (stats.contains("ingest")) {
    out.push_back(gauge_family("parry_ingest_reports_in_flight",
                               "Incident reports accepted from the bus, not yet stored",
                               {{{}, number(stats["ingest"]["reports_in_flight"])}}));
    out.push_back(gauge_family("parry_ingest_bytes_in_flight", "Bytes of those reports",
                               {{{}, number(stats["ingest"]["bytes_in_flight"])}}));
    out.push_back(gauge_family("parry_ingest_hellos_in_flight",
                               "Hellos accepted from the bus, not yet through",
                               {{{}, number(stats["ingest"]["hellos_in_flight"])}}));
    out.push_back(counter_family("parry_ingest_hellos_refused_total",
                                 "Hellos refused as busy (max_hellos_in_flight)",
                                 {{{}, number(stats["ingest"]["hellos_refused"])}}));
  }
  if (stats.contains("memory")) {
    out.push_back(counter_family("parry_memory_trims_total",
                                 "Heap trims after ingest bursts (malloc_trim)",
                                 {{{}, number(stats["memory"]["trims"])}}));
    out.push_back(counter_family("parry_memory_trimmed_bytes_total",
                                 "Resident bytes those trims gave back",
                                 {{{}, number(stats["memory"]["trimmed_bytes"])}}));
  }
  if (stats.contains("siem")) {
    const auto& x = stats["siem"];
    out.push_back(gauge_family("parry_siem_connected",
                               "1 while the SIEM export is connected to its receiver",
                               {{{}, x["connected"].get<bool>() ? 1.0 : 0.0}}));
    out.push_back(gauge_family("parry_siem_backlog_records",
                               "Audit records not yet acknowledged by the SIEM receiver",
                               {{{}, number(x["backlog"])}}));
    out.push_back(counter_family("parry_siem_records_acknowledged_total",
                                 "Audit records the SIEM receiver acknowledged",
                                 {{{}, number(x["acknowledged"])}}));
    out.push_back(counter_family("parry_siem_records_resent_total",
                                 "Audit records sent again after a reconnect",
                                 {{{}, number(x["resent"])}}));
    out.push_back(counter_family("parry_siem_failures_total",
                                 "SIEM connection failures, by stage",
                                 {{{{"stage", "connect"}}, number(x["connect_failures"])},
                                  {{{"stage", "tls"}}, number(x["tls_failures"])}}));
  }
  if (stats.contains("event_streams")) {
    const auto& e = stats["event_streams"];
    out.push_back(gauge_family("parry_event_streams", "Open console event streams",
                               {{{}, number(e["streams"])}}));
    out.push_back(counter_family("parry_event_streams_dropped_slow_total",
                                 "Event streams closed because the client fell behind",
                                 {{{}, number(e["dropped_slow"])}}));
  }
}

/// Sequence numbers of the event families, and the order events go out in.
struct event_sequence {
  std::mutex m;
  std::map<std::string, uint64_t> seq{
      {bus::topic::incident, 0}, {bus::topic::action, 0}, {bus::topic::device, 0}};
};

/// Integrators (CURVE only): requests on a ROUTER answered by the api as that
/// integrator (name and role from its registered key), and events on a PUB. Returns
/// the store's publish hook.
std::function<void(const char*, std::string, std::string)>
make_event_publisher(const std::shared_ptr<bus::gateway>& gw,
                     const std::shared_ptr<event_sequence>& seqs) {
  std::weak_ptr<bus::gateway> weak = gw;
  return [weak, seqs](const char* family, std::string kind, std::string body) {
    auto g = weak.lock();
    if (!g) return;
    std::lock_guard<std::mutex> lock{seqs->m};
    auto n = ++seqs->seq[family];
    bus::header h;
    h.type = bus::type::event;
    h.msg_id = n;
    h.seq = n;
    h.time = now_us();
    g->publish(std::string{family} + "." + kind, bus::encode(h), std::move(body));
  };
}

/// Sends an integrator the `reply` to its message `id` over connection `routing`.
void send_api_reply(bus::gateway& g, const std::string& routing, uint64_t id, int status,
                    std::string json) {
  bus::header out;
  out.type = bus::type::reply;
  out.msg_id = id;
  out.time = now_us();
  g.send(routing, bus::encode(out),
         bus::encode(bus::api_reply{id, status, std::move(json)}));
}

/// Answers an integrator's request through the api, as the integrator.
caf::behavior
integrator_bridge(caf::event_based_actor* self, api_actor api,
                  std::function<void(const std::string& routing, uint64_t id, int status,
                                     std::string json)>
                      reply) {
  return {
      [=](const std::string& routing, uint64_t id, http_request& req, principal& who) {
        self->request(api, actor_timeout, std::move(req), std::move(who))
            .then(
                [=](http_response& r) {
                  reply(routing, id, r.status, std::move(r.body));
                },
                [=](caf::error& err) {
                  reply(routing, id, 503,
                        nlohmann::json{{"error",
                                        {{"code", "unavailable"},
                                         {"message", "no answer: " + message_of(err)}}}}
                            .dump());
                });
      },
  };
}

/// The integrators' ROUTER (requests) and PUB (events), not started. `bridge` is
/// set before the gateway starts.
std::shared_ptr<bus::gateway> make_integrator_gateway(
    const server_config& cfg, const bus::curve_key_pair& own,
    std::shared_ptr<bus::key_registry> keys, std::shared_ptr<event_sequence> seqs,
    std::shared_ptr<std::atomic<int>> in_flight, std::shared_ptr<caf::actor> bridge) {
  constexpr int max_in_flight = 256;
  bus::decode_limits lim;
  lim.max_frame = 256 * 1024;
  bus::gateway_options o;
  o.curve = bus::curve_server_options{own.public_z85, own.secret_z85, keys,
                                      bus::zap_domain::integrators};
  o.pub_endpoint = cfg.bus_events_endpoint;
  auto answer_here = std::make_shared<std::weak_ptr<bus::gateway>>();
  auto gw = std::make_shared<bus::gateway>(
      cfg.bus_integrator_endpoint, lim,
      [keys, seqs, in_flight, bridge, answer_here,
       lim](bus::header&& h, std::string_view body,
            std::string_view user_id) -> std::optional<bus::refusal> {
        using bus::refusal_kind;
        auto name = user_id.substr(std::string_view{"integrator:"}.size());
        // Checked on every request: a revoked key does nothing more, even on a
        // connection that is still open.
        auto who = keys->find_name(bus::key_identity::kind_t::integrator, name);
        if (!who)
          return bus::refusal{refusal_kind::spoofed, "the integrator's key was revoked",
                              "", 0, 0};
        if (h.type == bus::type::snapshot) {
          nlohmann::json seq = nlohmann::json::object();
          {
            std::lock_guard<std::mutex> lock{seqs->m};
            for (const auto& [family, n] : seqs->seq)
              seq[family] = n;
          }
          if (auto g = answer_here->lock())
            send_api_reply(*g, h.device_id, h.msg_id, 200,
                           nlohmann::json{{"seq", seq}}.dump());
          return std::nullopt;
        }
        if (h.type != bus::type::request)
          return bus::refusal{refusal_kind::invalid,
                              "integrators send request or snapshot", "", 0, 0};
        std::string why;
        auto req = bus::decode<bus::api_request>(body, lim, why);
        if (!req) return bus::refusal{refusal_kind::invalid, "request: " + why, "", 0, 0};
        if (!valid_utf8(req->method) || !valid_utf8(req->path) ||
            !valid_utf8(req->body) || !valid_utf8(req->idempotency_key))
          return bus::refusal{refusal_kind::invalid, "request: text is not valid UTF-8",
                              "", 0, 0};
        if (in_flight->fetch_add(1) >= max_in_flight) {
          in_flight->fetch_sub(1);
          return bus::refusal{refusal_kind::busy, "too many requests in progress",
                              "integrator_requests_in_flight", max_in_flight, 200};
        }
        http_request r;
        r.method = std::move(req->method);
        r.target = std::move(req->path);
        r.body = std::move(req->body);
        r.idempotency_key = std::move(req->idempotency_key);
        r.source = "bus";
        principal p;
        p.username = "integrator:" + who->name;
        p.role = user_role_from_string(who->role).value_or(user_role::operator_);
        p.integrator = true;
        caf::anon_send(*bridge, h.device_id, h.msg_id, std::move(r), std::move(p));
        return std::nullopt;
      },
      nullptr, o);
  *answer_here = gw;
  gw->on_warning([](const std::string& line) { spdlog::warn("{}", line); });
  return gw;
}

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
  m.lock_fd = lock_data_dir(cfg.data_dir);
  if (m.lock_fd < 0)
    throw std::runtime_error("another parryd is running on " + cfg.data_dir);
  m.tls = ensure_certificate(cfg.data_dir + "/tls", {cfg.http_address});
  m.own_keys.emplace(bus::load_or_create(cfg.data_dir));
  m.signing_public_hex = to_hex_text(m.own_keys->signing.public_key());
  m.signer = std::make_shared<const signing_key>(std::move(m.own_keys->signing));
  if (m.own_keys->created)
    spdlog::info("generated the server's CURVE and signing keys in {}/{}", cfg.data_dir,
                 bus::key_files::dir);

  // Remembers a top-level actor so stop() (also after a failed start) ends it.
  auto keep = [&m](const auto& handle) {
    m.actors.push_back(caf::actor_cast<caf::strong_actor_ptr>(handle));
  };
  // The store runs on a thread of its own: SQLite blocks only there.
  // Incidents between the bus and the store (actors/ingest.hpp).
  auto gauge = std::make_shared<ingest_gauge>();
  store_options sopts;
  sopts.ingest = gauge;
  m.trimmer = std::make_shared<memory_trimmer>(gauge, trim_after_burst_bytes);
  m.trimmer->start(std::chrono::seconds{1});
  // Integrators (CURVE only): their gateway exists before the store, which
  // publishes what it commits there; the bridge to the api is set once it runs.
  auto seqs = std::make_shared<event_sequence>();
  auto integrator_requests = std::make_shared<std::atomic<int>>(0);
  auto bridge_slot = std::make_shared<caf::actor>();
  if (cfg.bus_curve) {
    m.keys = std::make_shared<bus::key_registry>();
    m.integrators = make_integrator_gateway(cfg, m.own_keys->curve, m.keys, seqs,
                                            integrator_requests, bridge_slot);
  }
  // The SIEM export reads the audit trail on a connection of its own; it starts
  // once the store has made or migrated the schema.
  m.siem.set(make_siem(cfg));
  // Every commit goes to the console's streams, and to integrators when there are;
  // the SIEM export looks for new audit records at once.
  auto integrator_publish = m.integrators ? make_event_publisher(m.integrators, seqs)
                                          : decltype(sopts.publish){};
  sopts.publish = [hub = m.events, integrator_publish, siem = m.siem](
                      const char* family, std::string kind, std::string body) {
    hub->publish(family, kind, body);
    if (auto s = *siem.get()) s->notify();
    if (integrator_publish) integrator_publish(family, std::move(kind), std::move(body));
  };
  sopts.metrics = m.metrics;
  m.store = m.sys.spawn<caf::detached>(store_with, cfg.data_dir + "/parry.db", sopts);
  keep(m.store);
  ask<std::string>(m.sys, m.store, atom::query_v, atom::stats_v);
  // Copies the log into the file off the store's commits (actors/checkpointer.hpp).
  checkpointer_options copts;
  copts.metrics = m.metrics;
  auto ckpt = m.sys.spawn<caf::detached>(checkpointer, cfg.data_dir + "/parry.db", copts);
  keep(ckpt);
  // It answers once it could open the file: without it the store would copy the
  // whole log on its own thread at each bound (store_options::wal_restart_pages),
  // so parryd does not start.
  {
    caf::scoped_actor probe{m.sys};
    caf::error failure;
    probe->request(ckpt, std::chrono::seconds{60}, atom::flush_v)
        .receive([](int64_t, int64_t) {}, [&](caf::error& e) { failure = e; });
    if (failure) throw std::runtime_error("store checkpointer: " + message_of(failure));
  }
  caf::anon_send(m.store, atom::link_v, ckpt); // woken as the log grows
  // Files made before this start (or under another umask) are closed too.
  make_private_dir(cfg.data_dir);
  if (auto s = *m.siem.get()) s->start();

  bus::decode_limits limits;
  limits.max_frame = cfg.max_frame_bytes;
  m.ingest.set(ingest_limits_of(cfg));
  bus::gateway_options gopts;
  // Dead connections end after the same silence that makes a device offline, which
  // frees their routing id for the agent's next connection; the kernel finds them
  // (TCP keepalive), not a timer per connection in libzmq.
  gopts.heartbeat_ivl = std::chrono::milliseconds{cfg.heartbeat_interval_ms};
  gopts.heartbeat_timeout =
      std::chrono::milliseconds{cfg.heartbeat_interval_ms} * cfg.missed_heartbeats;
  gopts.kernel_keepalive = true;
  // The gateway calls back on its own thread; the directory handle is set below,
  // before the socket starts, and never changes afterwards. The filter is only
  // used on that thread.
  if (cfg.bus_curve) {
    for (const auto& k :
         ask<std::vector<bus_key_record>>(m.sys, m.store, atom::list_v, atom::key_v)) {
      auto raw = bus::z85_to_raw(k.public_z85);
      if (raw.empty()) {
        spdlog::error("bus: stored key of {} is not a Z85 key; it is not admitted",
                      k.name);
        continue;
      }
      m.keys->admit(raw, {k.integrator ? bus::key_identity::kind_t::integrator
                                       : bus::key_identity::kind_t::agent,
                          k.name, k.role});
    }
    gopts.curve = bus::curve_server_options{m.own_keys->curve.public_z85,
                                            m.own_keys->curve.secret_z85, m.keys,
                                            bus::zap_domain::agents};
  }
  // Agent connections stop short of the open-files limit: REST, the store and the
  // other endpoints keep descriptors whatever the agents do.
  auto fd_limit = raise_open_files_limit();
  auto cap = bus_connection_cap(cfg, fd_limit);
  gopts.backlog = static_cast<int>(cfg.bus_backlog);
  gopts.io_threads = static_cast<int>(cfg.bus_io_threads);
  if (cfg.bus_gateways > 0) {
    // Each gateway process caps its own connections (parry-gateway).
  } else {
    gopts.max_connections = cap;
    gopts.handshake_margin = bus::gateway::margin_within(cap, fd_limit);
    spdlog::info("bus: at most {} agent connections (open-files limit {})", cap,
                 fd_limit);
    if (cap + 64 > fd_limit)
      spdlog::warn("bus: bus_max_connections = {} leaves almost no descriptors of the "
                   "{} this process may open for REST and the store",
                   cap, fd_limit);
    if (!gopts.curve)
      spdlog::warn("bus: plain TCP: any program that reaches the port speaks as any "
                   "device; use CURVE outside a closed lab");
  }
  auto dir_slot = std::make_shared<directory_actor>();
  auto filter = std::make_shared<inbound_filter>(limits, m.ingest, gauge);
  auto on_message = [dir_slot, filter](bus::header&& h, std::string_view body,
                                       std::string_view) {
    return (*filter)(*dir_slot, std::move(h), body, inbound_filter::clock::now());
  };
  auto on_unreachable = [dir_slot](const std::string& device_id) {
    caf::anon_send(*dir_slot, atom::unreach_v, device_id);
  };
  auto store_handle = m.store;
  // `peer` is a routing id (a device id) or, for a refused handshake, whose key it
  // was ("agent:<id>", "integrator:<name>") or "unknown key".
  auto on_suspicious = [store_handle](const std::string& peer, const std::string& what) {
    std::string_view agent = "agent:";
    std::string who = peer.rfind(agent, 0) == 0 ? "device:" + peer.substr(agent.size())
                      : peer.rfind("integrator:", 0) == 0 || peer == "unknown key"
                          ? peer
                          : "device:" + peer;
    caf::anon_send(store_handle, atom::audit_v,
                   audit_entry{who, "bus_refused", peer, what});
  };
  std::shared_ptr<bus::outbox> agents_out;
  if (cfg.bus_gateways > 0) {
    // The filter runs on the link's thread, as it would on the gateway's.
    m.link = std::make_shared<bus::link::hub>(link_endpoint(cfg.data_dir),
                                              static_cast<int>(cfg.bus_gateways), limits,
                                              on_message, on_unreachable, cfg.bus_curve);
    m.link->on_suspicious(on_suspicious);
    if (m.keys) m.link->serve_keys(m.keys);
    agents_out = m.link;
  } else {
    m.bus = std::make_shared<bus::gateway>(cfg.bus_endpoint, limits, on_message,
                                           on_unreachable, gopts);
    m.bus->on_warning([](const std::string& line) { spdlog::warn("{}", line); });
    m.bus->on_suspicious(on_suspicious);
    agents_out = m.bus;
  }
  auto gateway = m.sys.spawn(gateway_bridge, agents_out);
  keep(gateway);
  bus_keys_actor keys_actor;
  if (cfg.bus_curve) {
    keys_actor = start_enrollment(m.sys, cfg, m.own_keys->curve, m.signing_public_hex,
                                  m.integrators, m.keys, agents_out, m.store, m.enroll);
    keep(keys_actor);
  }

  device_config dcfg;
  dcfg.heartbeat_interval = std::chrono::milliseconds{cfg.heartbeat_interval_ms};
  dcfg.missed_heartbeats = cfg.missed_heartbeats;
  dcfg.passivate_after = std::chrono::seconds{cfg.device_passivate_after_s};
  dcfg.ingest = gauge;
  // Agents enrolled over CURVE pinned this key: every command they get is signed.
  if (cfg.bus_curve) dcfg.signer = m.signer;
  m.policy.set(policy_of(cfg));
  // Opened after the writer has created or migrated the schema.
  auto reader = m.sys.spawn<caf::detached>(store_reader, cfg.data_dir + "/parry.db");
  keep(reader);
  m.directory =
      m.sys.spawn(directory, dcfg, m.policy, caf::timespan{std::chrono::minutes{5}},
                  m.store, reader, gateway);
  keep(m.directory);
  *dir_slot = m.directory;

  auto hash = m.sys.spawn<caf::detached>(hasher, cfg.pbkdf2_iterations);
  keep(hash);
  m.auth.set(auth_config_of(cfg, m.metrics));
  auto au = spawn_supervised_auth(m.sys, m.supervision, m.auth, m.store, hash);
  keep(au);
  m.generated_password =
      ask<std::string>(m.sys, au, atom::bootstrap_v, cfg.admin_password);

  // Open actions go back to their devices before any agent can reconnect.
  ask<uint64_t>(m.sys, m.directory, atom::resume_v);
  if (m.link)
    m.bus_endpoint = m.start_gateways(limits, gopts);
  else
    m.bus_endpoint = m.bus->start();
  if (m.enroll) m.enroll_endpoint = m.enroll->start();

  std::weak_ptr<bus::gateway> weak_bus = m.bus;
  std::weak_ptr<http_stats> weak_http = m.http_counters;
  std::weak_ptr<event_hub> weak_events = m.events;
  std::weak_ptr<bus::gateway> weak_enroll = m.enroll, weak_integrators = m.integrators;
  std::weak_ptr<bus::link::hub> weak_link = m.link;
  std::weak_ptr<gateway_procs> weak_procs = m.gateways;
  auto bus_stats = [weak_bus, weak_link, weak_procs, weak_enroll, weak_integrators,
                    weak_http, weak_events, siem = m.siem, devices = dcfg.counters, gauge,
                    weak_trimmer = std::weak_ptr<memory_trimmer>{m.trimmer}] {
    auto out = nlohmann::json::object();
    out["device_actors"] =
        nlohmann::json{{"foreign_results", devices->foreign_results.load()},
                       {"stranger_incidents", devices->stranger_incidents.load()},
                       {"strangers_forgotten", devices->strangers_forgotten.load()},
                       {"dropped_dead", devices->dropped_dead.load()},
                       {"passive", devices->passive.load()},
                       {"passivated", devices->passivated.load()},
                       {"woken", devices->woken.load()},
                       {"dormant_actions", devices->dormant_actions.load()}};
    out["ingest"] = nlohmann::json{{"reports_in_flight", gauge->reports.load()},
                                   {"bytes_in_flight", gauge->bytes.load()},
                                   {"hellos_in_flight", gauge->hellos.load()},
                                   {"hellos_refused", gauge->hellos_refused.load()}};
    memory_trim_stats trim;
    if (auto t = weak_trimmer.lock()) trim = t->stats();
    out["memory"] = nlohmann::json{{"resident_bytes", resident_bytes()},
                                   {"heap_bytes", heap_bytes()},
                                   {"trims", trim.trims},
                                   {"trimmed_bytes", trim.returned_bytes}};
    if (auto b = weak_bus.lock()) out["bus"] = gateway_json(b->stats());
    if (auto l = weak_link.lock()) {
      // Behind gateway processes: their counters added up, and the link's own.
      bus::gateway_stats sum;
      l->gateway_totals(sum);
      out["bus"] = gateway_json(sum);
      const auto& ls = l->stats();
      auto procs = weak_procs.lock();
      out["bus"]["gateways"] =
          nlohmann::json{{"processes", procs ? procs->pids().size() : 0},
                         {"listening", ls.gateways_up.load()},
                         {"connections", l->connections()},
                         {"restarts", procs ? procs->restarts() : 0},
                         {"routed_devices", l->routed()},
                         {"messages", ls.messages.load()},
                         {"delivered", ls.delivered.load()},
                         {"no_route", ls.no_route.load()},
                         {"dropped_full", ls.dropped_full.load()},
                         {"refused_elsewhere", ls.refused_elsewhere.load()},
                         {"bad_link_messages", ls.bad_link_messages.load()}};
    }
    if (auto e = weak_enroll.lock()) out["enrollment"] = gateway_json(e->stats());
    if (auto i = weak_integrators.lock()) out["integrators"] = gateway_json(i->stats());
    if (auto e = weak_events.lock())
      out["event_streams"] =
          nlohmann::json{{"seq", e->last_seq()},
                         {"published", e->stats()->published.load()},
                         {"streams", e->stats()->subscribers.load()},
                         {"replayed", e->stats()->replayed.load()},
                         {"resyncs", e->stats()->resyncs.load()},
                         {"refused_streams", e->stats()->refused_subscribers.load()},
                         {"dropped_slow", e->stats()->dropped_slow.load()},
                         {"closed_session", e->stats()->closed_session.load()}};
    if (auto x = *siem.get()) {
      const auto& st = x->stats();
      out["siem"] = nlohmann::json{{"connected", st.connected.load()},
                                   {"sent", st.sent.load()},
                                   {"acknowledged", st.acknowledged.load()},
                                   {"resent", st.resent.load()},
                                   {"connect_failures", st.connect_failures.load()},
                                   {"tls_failures", st.tls_failures.load()},
                                   {"cursor", st.cursor.load()},
                                   {"backlog", st.backlog.load()},
                                   {"last_error", st.last_error()}};
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
  api_state deps;
  deps.auth = au;
  deps.hasher = hash;
  deps.directory = m.directory;
  deps.store = m.store;
  deps.reader = reader;
  deps.policy = m.policy;
  deps.bus_stats = bus_stats;
  deps.supervision = m.supervision;
  deps.bus_keys = keys_actor;
  deps.session_idle = std::chrono::minutes{cfg.session_idle_minutes};
  // Copies a crash left behind were never sent to anyone.
  std::filesystem::remove_all(outgoing_dir(cfg.data_dir));
  deps.backup = m.sys.spawn<caf::detached>(backup_service, cfg.data_dir + "/parry.db",
                                           outgoing_dir(cfg.data_dir));
  keep(deps.backup);
  auto a = spawn_supervised_api(m.sys, std::move(deps));
  keep(a);
  m.api = a;
  if (m.integrators) {
    std::weak_ptr<bus::gateway> weak = m.integrators;
    auto bridge =
        m.sys.spawn(integrator_bridge, a,
                    [weak, integrator_requests](const std::string& routing, uint64_t id,
                                                int status, std::string json) {
                      integrator_requests->fetch_sub(1);
                      if (auto g = weak.lock())
                        send_api_reply(*g, routing, id, status, std::move(json));
                    });
    keep(bridge);
    *bridge_slot = bridge;
    m.integrator_endpoint = m.integrators->start();
    m.events_endpoint = m.integrators->pub_endpoint();
  }
  http_limits hl;
  hl.max_connections = cfg.http_max_connections;
  hl.max_connections_per_source = cfg.http_max_connections_per_source;
  hl.fd_reserve = cfg.http_fd_reserve;
  hl.handshake_timeout = std::chrono::seconds{cfg.http_handshake_timeout_seconds};
  hl.idle_timeout = std::chrono::seconds{cfg.http_idle_timeout_seconds};
  m.http = std::make_unique<http_server>(m.sys, a, cfg.http_address, cfg.http_port,
                                         m.tls.cert, m.tls.key, hl, m.http_counters);
  m.http->serve_events(m.events);
  m.http->observe_requests(route_label, [metrics = m.metrics](const std::string& route,
                                                              int status, double secs) {
    metrics->http_request(route, status, secs);
  });
  m.http->serve_openapi(std::string{openapi_spec()});
  // The build's own web/ may be absent (a binary copied elsewhere): no console then.
  // A web_dir someone set must be right.
  if (cfg.web_dir == PARRY_WEB_DIR &&
      !std::filesystem::exists(cfg.web_dir + "/index.html")) {
    spdlog::warn("no web console: {} has no index.html (set web_dir)", cfg.web_dir);
  } else if (!cfg.web_dir.empty()) {
    m.http->serve_console(web_assets::load(cfg.web_dir));
    m.console = true;
  }
  m.http_port = m.http->start();
  if (!cfg.metrics_address.empty()) {
    m.metrics->add_collector(
        [bus_stats, devices = dcfg.counters, http = m.http_counters](auto& out) {
          collect_stats(bus_stats(), *devices, *http, out);
        });
    m.metrics_listener =
        std::make_unique<metrics_http>(m.metrics, cfg.metrics_address, cfg.metrics_port);
    m.metrics_port = m.metrics_listener->start();
  }
}

bool server::alive(std::chrono::milliseconds timeout) {
  auto& m = *impl_;
  if (m.stopped || !m.api) return false;
  caf::scoped_actor self{m.sys};
  bool ok = false;
  http_request r;
  r.method = "GET";
  r.target = "/api/v1/health";
  r.source = "watchdog";
  self->request(m.api, timeout, std::move(r))
      .receive([&](const http_response& resp) { ok = resp.status == 200; },
               [&](const caf::error&) { ok = false; });
  return ok;
}

void server::reload(const server_config& next) {
  auto& m = *impl_;
  if (auto err = next.validate(); !err.empty())
    throw std::runtime_error("configuration: " + err);
  // Keys only a restart applies keep their running values (session_idle_minutes
  // must not reach auth while the api still tells the old one).
  std::vector<std::string> restart;
  auto applied = reloaded_config(m.cfg, next, restart);
  // Everything that can fail is checked or made before anything changes: a reload
  // applies whole or not at all.
  auto policy = policy_of(applied);
  auto siem = make_siem(applied);
  // The certificate files may have been replaced (the same paths): new connections
  // get them, open ones keep theirs.
  m.http->reload_certificate(m.tls.cert, m.tls.key);
  configure_logging(applied.log_level, applied.log_format);
  m.policy.set(std::move(policy));
  m.auth.set(auth_config_of(applied, m.metrics));
  m.ingest.set(ingest_limits_of(applied));
  // The exporter starts again (its files may have been replaced too) from the
  // durable cursor: records in between go out after the reconnect, none is lost.
  if (auto old = *m.siem.get()) old->stop();
  if (siem) siem->start();
  m.siem.set(std::move(siem));
  m.cfg = std::move(applied);
  std::string needs_restart;
  for (const auto& key : restart)
    needs_restart += (needs_restart.empty() ? "" : ", ") + key;
  spdlog::info("parryd: reloaded the TLS certificate, log settings, action policy, "
               "login and ingest limits and the SIEM export{}{}",
               needs_restart.empty() ? ""
                                     : "; these changes take effect at the next "
                                       "restart: ",
               needs_restart);
}

std::string server::impl::start_gateways(const bus::decode_limits& limits,
                                         const bus::gateway_options& g) {
  auto endpoint = shared_port_endpoint(cfg.bus_endpoint, port_hold);
  auto count = static_cast<int>(cfg.bus_gateways);
  link->start();
  auto program = next_to_self("parry-gateway");
  std::vector<std::vector<std::string>> argv;
  for (int i = 0; i < count; ++i) {
    std::vector<std::string> a{program,
                               "--link",
                               link_endpoint(cfg.data_dir),
                               "--index",
                               std::to_string(i),
                               "--endpoint",
                               endpoint,
                               "--parent-pid",
                               std::to_string(::getpid()),
                               "--max-frame",
                               std::to_string(limits.max_frame),
                               "--heartbeat-ms",
                               std::to_string(g.heartbeat_ivl.count()),
                               "--heartbeat-timeout-ms",
                               std::to_string(g.heartbeat_timeout.count()),
                               "--backlog",
                               std::to_string(g.backlog),
                               "--io-threads",
                               std::to_string(g.io_threads)};
    if (g.kernel_keepalive) a.push_back("--tcp-keepalive");
    if (cfg.bus_curve) a.insert(a.end(), {"--data-dir", cfg.data_dir});
    if (cfg.bus_max_connections > 0)
      a.insert(a.end(), {"--max-connections", std::to_string(cfg.bus_max_connections)});
    argv.push_back(std::move(a));
  }
  std::weak_ptr<bus::link::hub> weak = link;
  gateways = std::make_shared<gateway_procs>(std::move(argv), [weak](int i) {
    if (auto l = weak.lock()) l->gateway_down(i);
  });
  gateways->start();
  auto up = [this, count] {
    return link->stats().gateways_up.load() == static_cast<uint64_t>(count);
  };
  if (!poll_until(up, std::chrono::seconds{30}))
    throw std::runtime_error("bus: the gateway processes did not all listen within 30 s "
                             "(their log lines say why)");
  spdlog::info("bus: {} gateway processes hold the agent connections on {}", count,
               endpoint);
  return endpoint;
}

void server::stop() {
  auto& m = *impl_;
  if (m.stopped) return;
  m.stopped = true;
  if (m.metrics_listener) m.metrics_listener->stop();
  if (auto s = *m.siem.get()) s->stop();
  if (m.http) m.http->stop();
  if (m.bus) m.bus->stop();
  if (m.gateways) m.gateways->stop();
  if (m.link) m.link->stop();
  if (m.port_hold >= 0) ::close(m.port_hold);
  m.port_hold = -1;
  if (m.enroll) m.enroll->stop();
  if (m.integrators) m.integrators->stop();
  m.trimmer.reset(); // joins its thread
  // Writes not yet committed were never confirmed to anyone, so nothing that was
  // reported is lost when the store exits before committing them.
  for (auto& h : m.actors)
    caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
  m.actors.clear();
  if (m.lock_fd >= 0) ::close(m.lock_fd);
  m.lock_fd = -1;
}

const std::string& server::bus_endpoint() const {
  return impl_->bus_endpoint;
}
const std::string& server::enroll_endpoint() const {
  return impl_->enroll_endpoint;
}
const std::string& server::integrator_endpoint() const {
  return impl_->integrator_endpoint;
}
const std::string& server::events_endpoint() const {
  return impl_->events_endpoint;
}
const std::string& server::bus_public_key() const {
  static const std::string none;
  return impl_->own_keys ? impl_->own_keys->curve.public_z85 : none;
}
bool server::serves_console() const {
  return impl_->console;
}

uint16_t server::metrics_port() const {
  return impl_->metrics_port;
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
