#define BOOST_TEST_MODULE integration
#include <boost/test/unit_test.hpp>

// Real binaries on loopback: parryd with its store in a temporary directory, and
// parry-agent --sim connected to it. Everything is driven through the REST API.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <sqlite3.h>
#include <zmq.hpp>

#include "bus/codec.hpp"
#include "bus/enroll.hpp"
#include "bus/integrator.hpp"
#include "common/process.hpp"
#include "common/time.hpp"
#include "ctl/client.hpp"
#include "tests/net_support.hpp"

using namespace parry;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string env_or_fail(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0')
    throw std::runtime_error(std::string{name} + " is not set (run through CTest)");
  return v;
}

/// Polls `pred` until it holds or `timeout` passes.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 20s) {
  return poll_until(pred, timeout);
}

/// The last `lines` lines of a log file, for a failure message.
std::string log_tail(const std::string& file, std::size_t lines) {
  std::ifstream in{file};
  std::deque<std::string> tail;
  for (std::string line; std::getline(in, line);) {
    tail.push_back(std::move(line));
    if (tail.size() > lines) tail.pop_front();
  }
  std::string out;
  for (auto& l : tail)
    out += l + '\n';
  return out;
}

constexpr const char* admin_password = "integration-test-password";

/// A datagram socket standing in for systemd's notification socket: parryd gets
/// its path in NOTIFY_SOCKET and tells it READY=1, WATCHDOG=1, ...
struct notify_socket {
  int fd = -1;
  std::string path;
  explicit notify_socket(const std::filesystem::path& p) : path(p.string()) {
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    ::unlink(path.c_str());
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("notify socket: " + std::string{std::strerror(errno)});
  }
  ~notify_socket() {
    ::close(fd);
    ::unlink(path.c_str());
  }
  /// Waits (bounded) for a message holding `what`.
  bool heard(const std::string& what, std::chrono::milliseconds timeout = 20s) {
    auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char buf[4096];
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0 &&
          std::string{buf, static_cast<std::size_t>(n)}.find(what) != std::string::npos)
        return true;
    }
  }
};

/// GET `path` over plain HTTP from 127.0.0.1:`port` (the metrics listener); answers
/// the status line and the body.
std::pair<std::string, std::string> plain_get(uint16_t port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    auto req =
        "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == ssize_t(req.size())) {
      char buf[65536];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
        got.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  auto head_end = got.find("\r\n\r\n");
  if (head_end == std::string::npos) return {};
  return {got.substr(0, got.find("\r\n")), got.substr(head_end + 4)};
}

/// The value of the sample `name{labels}` in a Prometheus text page, or -1.
double sample(const std::string& page, const std::string& name_and_labels) {
  std::istringstream lines{page};
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(name_and_labels + " ", 0) == 0)
      return std::stod(line.substr(name_and_labels.size() + 1));
  return -1;
}

/// parryd and 5 simulated endpoints, plus a logged-in client.
struct system_fixture {
  std::filesystem::path dir;
  std::unique_ptr<child_process> server;
  std::unique_ptr<child_process> agents;
  std::string bus_endpoint;
  std::string enroll_endpoint;
  std::string integrator_endpoint;
  std::string events_endpoint;
  std::string server_key;   ///< parryd's CURVE public key, Z85.
  std::string enroll_token; ///< A many-use enrollment token for the test's agents.
  std::string base_url;
  std::string token;
  std::unique_ptr<client> api;
  int starts = 0;
  uint16_t metrics_port = 0;
  std::unique_ptr<notify_socket> notify;
  /// Put before parryd's command line (e.g. prlimit and its options).
  std::vector<std::string> launcher;
  /// A syslog-over-TLS receiver standing in for the SIEM
  /// (tests/python/syslog_tls_receiver.py writes what it receives to siem.log).
  std::unique_ptr<child_process> siem;

  system_fixture() {
    dir = std::filesystem::temp_directory_path() /
          ("parry-it-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    {
      // Quick heartbeats and a cheap password hash keep the test short; devices
      // passivate a second after their last incident, so every test also acts on
      // devices that must be woken first.
      std::ofstream cfg{dir / "parryd.toml"};
      cfg << "heartbeat_interval_ms = 300\n"
          << "device_passivate_after_s = 1\n"
          << "pbkdf2_iterations = 20000\n"
          << "max_login_failures = 3\n"
          << start_siem_receiver();
    }
    notify = std::make_unique<notify_socket>(dir / "notify.sock");
    start_server("tcp://127.0.0.1:*");
    auto r = api->post("/api/v1/login",
                       json{{"username", "admin"}, {"password", admin_password}});
    BOOST_REQUIRE_EQUAL(r.status, 200);
    auto tok = api->request("POST", "/api/v1/tokens", nullptr,
                            {{"X-CSRF-Token", r.body["csrf_token"].get<std::string>()}});
    BOOST_REQUIRE_EQUAL(tok.status, 201);
    api->clear_cookies();
    token = tok.body["token"].get<std::string>();
    api->set_bearer(token);
    auto et = api->post("/api/v1/enrollment-tokens",
                        json{{"ttl_seconds", 3600}, {"uses", 1000}});
    BOOST_REQUIRE_MESSAGE(et.status == 201, et.raw);
    enroll_token = et.body["token"].get<std::string>();
    agents = start_agents("sim", 5, {}, "agent.log");
  }

  /// Starts the SIEM stand-in on a free loopback port with a certificate of its
  /// own; returns the configuration lines that point parryd at it.
  std::string start_siem_receiver() {
    auto d = dir / "siem";
    std::filesystem::create_directories(d);
    auto cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
               "-keyout " +
               (d / "key.pem").string() + " -out " + (d / "cert.pem").string() +
               " -days 2 -subj /CN=siem -addext subjectAltName=IP:127.0.0.1 "
               ">/dev/null 2>&1";
    BOOST_REQUIRE(std::system(cmd.c_str()) == 0);
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    BOOST_REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    ::close(fd);
    auto port = std::to_string(ntohs(a.sin_port));
    siem = std::make_unique<child_process>(
        std::vector<std::string>{
            "/usr/bin/python3",
            env_or_fail("PARRY_SOURCE_DIR") + "/tests/python/syslog_tls_receiver.py",
            port, (d / "cert.pem").string(), (d / "key.pem").string()},
        std::map<std::string, std::string>{}, (dir / "siem.log").string());
    BOOST_REQUIRE(siem->wait_for_line("listening", 10s));
    return "siem_host = \"127.0.0.1\"\nsiem_port = " + port + "\nsiem_ca_file = \"" +
           (d / "cert.pem").string() + "\"\n";
  }

  /// Starts parryd on `bus` (its data directory survives restarts) and points `api`
  /// at it, keeping the bearer token if there is one.
  void start_server(const std::string& bus, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{env_or_fail("PARRY_BIN_DIR") + "/parryd",
                                  "--config",
                                  (dir / "parryd.toml").string(),
                                  "--data-dir",
                                  (dir / "data").string(),
                                  "--http-port",
                                  "0",
                                  "--bus",
                                  bus,
                                  "--bus-enroll-endpoint",
                                  "tcp://127.0.0.1:*",
                                  "--bus-integrator-endpoint",
                                  "tcp://127.0.0.1:*",
                                  "--bus-events-endpoint",
                                  "tcp://127.0.0.1:*",
                                  "--metrics-port",
                                  "0",
                                  "--log-format",
                                  "json"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.begin(), launcher.begin(), launcher.end());
    server = std::make_unique<child_process>(
        std::move(argv),
        // As systemd would run it: readiness and a watchdog on a notify socket.
        std::map<std::string, std::string>{{"PARRY_ADMIN_PASSWORD", admin_password},
                                           {"NOTIFY_SOCKET", notify->path},
                                           {"WATCHDOG_USEC", "2000000"}},
        (dir / ("parryd-" + std::to_string(++starts) + ".log")).string());
    auto rest = server->wait_for_line("REST ", 30s);
    auto bus_line = server->wait_for_line("bus ", 5s);
    auto enroll_line = server->wait_for_line("enroll ", 5s);
    auto integrators_line = server->wait_for_line("  integrators tcp", 5s);
    auto events_line = server->wait_for_line("  events tcp", 5s);
    auto key_line = server->wait_for_line("server key ", 5s);
    auto metrics_line = server->wait_for_line("  metrics http://127.0.0.1:", 5s);
    BOOST_REQUIRE(metrics_line);
    metrics_port = static_cast<uint16_t>(
        std::stoi(metrics_line->substr(metrics_line->find("127.0.0.1:") + 10)));
    BOOST_REQUIRE_MESSAGE(rest && bus_line && enroll_line && integrators_line &&
                              events_line && key_line,
                          "parryd did not start; see " << server->log_file());
    enroll_endpoint = enroll_line->substr(enroll_line->find("tcp://"));
    integrator_endpoint = integrators_line->substr(integrators_line->find("tcp://"));
    events_endpoint = events_line->substr(events_line->find("tcp://"));
    server_key = key_line->substr(key_line->find("key ") + 4, 40);
    base_url = rest->substr(rest->find("https://"));
    base_url = base_url.substr(0, base_url.find("/api/v1"));
    bus_endpoint = bus_line->substr(bus_line->find("tcp://"));
    api = std::make_unique<client>(
        base_url, tls_options{(dir / "data/tls/cert.pem").string(), false});
    if (!token.empty()) api->set_bearer(token);
  }

  /// `count` simulated endpoints named `prefix-0000`, ... with extra options.
  std::unique_ptr<child_process> start_agents(const std::string& prefix, int count,
                                              std::vector<std::string> extra,
                                              const std::string& log) {
    std::vector<std::string> argv{env_or_fail("PARRY_BIN_DIR") + "/parry-agent",
                                  "--sim",
                                  std::to_string(count),
                                  "--seed",
                                  "7",
                                  "--id-prefix",
                                  prefix,
                                  "--server",
                                  bus_endpoint,
                                  "--incident-interval-ms",
                                  "300",
                                  "--incidents",
                                  "3",
                                  "--scenarios",
                                  env_or_fail("PARRY_SCENARIOS_DIR"),
                                  "--enroll-server",
                                  enroll_endpoint,
                                  "--state-dir",
                                  (dir / ("agent-state-" + prefix)).string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    // The token goes in the environment: a command line is readable by every user.
    return std::make_unique<child_process>(
        argv, std::map<std::string, std::string>{{"PARRY_ENROLL_TOKEN", enroll_token}},
        (dir / log).string());
  }

  ~system_fixture() {
    if (siem) siem->stop(SIGTERM);
    if (agents) agents->stop(SIGTERM);
    if (server) {
      int status = server->stop(SIGTERM);
      bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      BOOST_CHECK_MESSAGE(clean, "parryd did not stop cleanly (wait status "
                                     << status << "); its log ends:\n"
                                     << log_tail(server->log_file(), 60));
    }
    std::filesystem::remove_all(dir);
  }

  /// Runs parryctl as the fixture's administrator (token in the environment, no saved
  /// credentials); answers its exit code and everything it printed.
  std::pair<int, std::string> parryctl(std::vector<std::string> args,
                                       const std::string& log) {
    args.insert(args.begin(), env_or_fail("PARRY_BIN_DIR") + "/parryctl");
    child_process ctl{args,
                      {{"PARRY_SERVER", base_url},
                       {"PARRY_CACERT", (dir / "data/tls/cert.pem").string()},
                       {"PARRY_TOKEN", token},
                       {"PARRY_CONFIG", (dir / "no-credentials.json").string()}},
                      (dir / log).string()};
    int rc = ctl.wait(120s);
    std::ifstream in{dir / log};
    return {rc, std::string{std::istreambuf_iterator<char>{in}, {}}};
  }

  json get(const std::string& path) {
    auto r = api->get("/api/v1" + path);
    BOOST_REQUIRE_MESSAGE(r.status == 200, path << " -> " << r.status << " " << r.raw);
    return r.body;
  }

  /// An incident of `device`, waiting for the agent to report one.
  json incident_of(const std::string& device) {
    json found;
    BOOST_REQUIRE(eventually([&] {
      auto list = get("/incidents?device_id=" + device)["incidents"];
      if (list.empty()) return false;
      found = list[0];
      return true;
    }));
    return found;
  }

  /// Registers `type` on the detection of `incident_id` (or on `event_id`).
  std::string trigger(const std::string& type, const std::string& incident_id,
                      const std::string& event_id = "", json params = json::object()) {
    json target{{"kind", "detection"}};
    if (!event_id.empty()) target = json{{"kind", "event"}, {"event_id", event_id}};
    auto r = api->post("/api/v1/actions", json{{"type", type},
                                               {"incident_id", incident_id},
                                               {"target", target},
                                               {"params", params},
                                               {"password", admin_password},
                                               {"comment", "integration test"}});
    BOOST_REQUIRE_MESSAGE(r.status == 202, r.raw);
    BOOST_TEST(r.body["action"]["state"] == "registered");
    return r.body["action"]["action_id"].get<std::string>();
  }

  /// Waits until action `id` is in a final state and returns it.
  json until_final(const std::string& id) {
    json action;
    BOOST_REQUIRE_MESSAGE(eventually([&] {
                            action = get("/actions/" + id)["action"];
                            return action["final"].get<bool>();
                          }),
                          "action " << id << " did not end: " << action.dump());
    return action;
  }

  /// Triggers and follows to the end.
  json act(const std::string& type, const std::string& incident_id,
           const std::string& event_id = "", json params = json::object()) {
    return until_final(trigger(type, incident_id, event_id, std::move(params)));
  }

  /// Reverses action `id` and follows the reverse to its end.
  json reverse(const std::string& id) {
    auto r = api->post("/api/v1/actions/" + id + "/reverse",
                       json{{"password", admin_password}, {"comment", "undo"}});
    BOOST_REQUIRE_MESSAGE(r.status == 202, r.raw);
    return until_final(r.body["action"]["action_id"].get<std::string>());
  }

  /// Waits until action `id` reaches `state`.
  bool reaches(const std::string& id, const std::string& state) {
    return eventually([&] { return get("/actions/" + id)["action"]["state"] == state; });
  }

  /// A client logged in (bearer token) as a new user with `role`.
  std::unique_ptr<client> as(const std::string& name, const std::string& role) {
    auto r = api->post(
        "/api/v1/users",
        json{{"username", name}, {"password", name + "-password-123"}, {"role", role}});
    BOOST_REQUIRE_MESSAGE(r.status == 201, r.raw);
    auto c = std::make_unique<client>(
        base_url, tls_options{(dir / "data/tls/cert.pem").string(), false});
    auto login = c->post("/api/v1/login",
                         json{{"username", name}, {"password", name + "-password-123"}});
    BOOST_REQUIRE_EQUAL(login.status, 200);
    auto tok =
        c->request("POST", "/api/v1/tokens", nullptr,
                   {{"X-CSRF-Token", login.body["csrf_token"].get<std::string>()}});
    BOOST_REQUIRE_EQUAL(tok.status, 201);
    c->clear_cookies();
    c->set_bearer(tok.body["token"].get<std::string>());
    return c;
  }

  std::vector<std::string> states(const json& action) {
    std::vector<std::string> out;
    for (auto& t : action["transitions"])
      out.push_back(t["state"].get<std::string>());
    return out;
  }
};

using strings = std::vector<std::string>;

} // namespace

/// Established TCP connections the server accepted on `endpoint`'s port from IPv4
/// address `from` (/proc/net/tcp, the server's side: local address and port, remote
/// address and port, both as little-endian hex; state 01 = established).
int connections_from(const std::string& from, const std::string& endpoint) {
  in_addr a{};
  BOOST_REQUIRE(::inet_pton(AF_INET, from.c_str(), &a) == 1);
  char remote[16];
  std::snprintf(remote, sizeof remote, "%08X:", a.s_addr);
  char port[8];
  std::snprintf(port, sizeof port, ":%04X",
                std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
  std::ifstream in{"/proc/net/tcp"};
  std::string line;
  int n = 0;
  std::getline(in, line); // the column names
  while (std::getline(in, line)) {
    std::istringstream f{line};
    std::string slot, local, peer, state;
    f >> slot >> local >> peer >> state;
    n += peer.rfind(remote, 0) == 0 && local.size() > 5 &&
         local.substr(local.size() - 5) == port && state == "01";
  }
  return n;
}

/// A fresh key pair enrolled for `device` with the fixture's token.
bus::curve_key_pair enrolled_key(const system_fixture& f, const std::string& device) {
  auto token = bus::parse_token(f.enroll_token);
  BOOST_REQUIRE(token);
  auto keys = bus::generate_curve_key_pair();
  auto out = bus::enroll_devices(f.enroll_endpoint, *token, {{device, keys}}, 1, 10s);
  BOOST_REQUIRE_MESSAGE(out.at(0).ok, out[0].reason << ": " << out[0].error);
  return keys;
}

BOOST_FIXTURE_TEST_SUITE(end_to_end, system_fixture)

// parry-agent --sim N --procs P: every endpoint connects from one of P processes; a
// SIGTERM to the parent ends them all cleanly; a child killed -9 stops the others and
// the parent exits 1.
BOOST_AUTO_TEST_CASE(simulated_endpoints_spread_over_processes) {
  auto online_multi = [&] {
    auto devices = get("/devices?limit=100")["devices"];
    return std::count_if(devices.begin(), devices.end(), [](const json& d) {
      return d["device_id"].get<std::string>().rfind("multi-", 0) == 0 &&
             d["online"].get<bool>();
    });
  };
  for (int round = 0; round < 2; ++round) {
    auto multi = start_agents("multi", 7, {"--procs", "3"}, "multi.log");
    BOOST_REQUIRE_MESSAGE(eventually([&] { return online_multi() == 7; }),
                          log_tail(multi->log_file(), 20));
    auto kids = children_of(multi->pid());
    BOOST_REQUIRE_EQUAL(kids.size(), 3u);
    if (round == 0) {
      int status = multi->stop(SIGTERM);
      BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0),
                 "wait status " << status << "\n"
                                << log_tail(multi->log_file(), 20));
    } else {
      ::kill(kids[1], SIGKILL);
      BOOST_TEST(multi->wait(20s) == 1, log_tail(multi->log_file(), 20));
    }
    for (pid_t k : kids)
      BOOST_TEST(::kill(k, 0) != 0, "process " << k << " outlived its parent");
    BOOST_REQUIRE(eventually([&] { return online_multi() == 0; }));
  }
}

BOOST_AUTO_TEST_CASE(isolate_and_release_through_rest) {
  BOOST_REQUIRE(eventually([&] {
    auto devices = get("/devices")["devices"];
    return devices.size() == 5u &&
           std::all_of(devices.begin(), devices.end(),
                       [](const json& d) { return d["online"].get<bool>(); });
  }));
  auto inc = incident_of("sim-0002");
  auto id = inc["incident_id"].get<std::string>();
  auto full = get("/incidents/" + id)["incident"];
  BOOST_TEST(full["events"].size() >= 2u);
  int keys = 0;
  for (auto& e : full["events"])
    keys += e["key"].get<bool>() ? 1 : 0;
  BOOST_TEST(keys == 1);

  auto iso = act("isolate", id);
  BOOST_TEST(iso["state"] == "completed");
  BOOST_TEST(states(iso) == (strings{"registered", "sent", "acknowledged", "completed"}));
  BOOST_TEST(iso["result"]["ok"] == true);
  // The agent's share of the round trip, on its clock: within the whole.
  auto agent_us = iso["result"]["agent_us"].get<int64_t>();
  BOOST_TEST(agent_us >= 0);
  BOOST_TEST(agent_us <=
             iso["updated_at_us"].get<int64_t>() - iso["created_at_us"].get<int64_t>());
  BOOST_TEST(get("/devices/sim-0002")["device"]["isolated"] == true);

  auto rel = act("release_isolation", id);
  BOOST_TEST(rel["state"] == "completed");
  BOOST_TEST(get("/devices/sim-0002")["device"]["isolated"] == false);

  // Releasing a device that is not isolated is refused, and nothing is registered.
  auto before = get("/actions")["actions"].size();
  auto r = api->post("/api/v1/actions", json{{"type", "release_isolation"},
                                             {"incident_id", id},
                                             {"target", {{"kind", "detection"}}}});
  BOOST_TEST(r.status == 409);
  BOOST_TEST(r.body["error"]["code"] == "not_applicable");
  BOOST_TEST(get("/actions")["actions"].size() == before);
}

// Issue 11, item 4, end to end: idle devices become records in the directory, stay
// online on their heartbeats alone, and are woken for an action that then completes.
BOOST_AUTO_TEST_CASE(idle_devices_passivate_stay_online_and_are_woken_to_act) {
  auto device_actors = [&] { return get("/stats")["device_actors"]; };
  BOOST_REQUIRE_MESSAGE(
      eventually([&] { return device_actors()["passive"].get<int64_t>() == 5; }),
      device_actors().dump());
  // Heartbeats alone, ten from each device (3 s, over three times the offline limit
  // of 0.9 s): still online, not woken.
  auto woken = device_actors()["woken"].get<uint64_t>();
  auto frames = [&] { return get("/stats")["bus"]["frames_in"].get<uint64_t>(); };
  auto before = frames();
  BOOST_REQUIRE(eventually([&] { return frames() >= before + 50; }));
  BOOST_TEST(get("/stats")["devices_online"] == 5);
  BOOST_TEST(device_actors()["woken"].get<uint64_t>() == woken);
  BOOST_TEST(device_actors()["passive"].get<int64_t>() == 5);
  auto iso = act("isolate", incident_of("sim-0003")["incident_id"].get<std::string>());
  BOOST_TEST(iso["state"] == "completed");
  BOOST_TEST(device_actors()["woken"].get<uint64_t>() > woken);
  BOOST_TEST(get("/devices/sim-0003")["device"]["isolated"] == true);
  auto [status, page] = plain_get(metrics_port, "/metrics");
  BOOST_REQUIRE(status == "HTTP/1.1 200 OK");
  BOOST_TEST(sample(page, "parry_devices_passive") >= 4);
  BOOST_TEST(sample(page, "parry_actions_dormant") == 0);
}

// Issue 11, item 3: gateway processes hold the agents' connections on one shared
// port (SO_REUSEPORT) and parryd keeps the actors. A gateway killed -9 is
// restarted, its devices come back through either gateway, and actions go on; a
// revoked key is cut whichever gateway holds it.
BOOST_AUTO_TEST_CASE(gateway_processes_share_the_port_and_survive_a_kill) {
  agents->stop(SIGTERM);
  int status = server->stop(SIGTERM);
  BOOST_REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  start_server(bus_endpoint, {"--bus-gateways", "2"});
  auto gateways = [&] { return get("/stats")["bus"]["gateways"]; };
  BOOST_TEST(gateways()["listening"] == 2);
  BOOST_REQUIRE_EQUAL(children_of(server->pid()).size(), 2u);
  agents = start_agents("sim", 5, {}, "agent.log");
  // The fleet connects from two more loopback addresses, in turn (parry-agent
  // --source: past about 28,000 connections one address runs out of ports).
  auto fleet = start_agents("gw", 16, {"--source", "127.0.0.2,127.0.0.3"}, "gw.log");
  auto all_routed = [&] {
    auto g = gateways();
    return get("/stats")["devices_online"] == 21 && g["routed_devices"] == 21 &&
           g["connections"][0].get<int>() + g["connections"][1].get<int>() == 21;
  };
  BOOST_REQUIRE_MESSAGE(eventually(all_routed), gateways().dump());
  BOOST_TEST(connections_from("127.0.0.2", bus_endpoint) == 8);
  BOOST_TEST(connections_from("127.0.0.3", bus_endpoint) == 8);
  // The kernel spread the connections over both (all on one: about 1 in 10^6).
  BOOST_TEST(gateways()["connections"][0].get<int>() > 0);
  BOOST_TEST(gateways()["connections"][1].get<int>() > 0);
  auto id = incident_of("gw-0003")["incident_id"].get<std::string>();
  BOOST_TEST(act("isolate", id)["state"] == "completed");

  auto kids = children_of(server->pid());
  BOOST_REQUIRE_EQUAL(kids.size(), 2u);
  ::kill(kids[0], SIGKILL);
  BOOST_REQUIRE_MESSAGE(eventually([&] { return gateways()["restarts"] == 1; }),
                        gateways().dump());
  BOOST_REQUIRE_MESSAGE(eventually([&] { return gateways()["listening"] == 2; }),
                        gateways().dump());
  BOOST_REQUIRE_MESSAGE(eventually(all_routed), gateways().dump());
  BOOST_TEST(act("release_isolation", id)["state"] == "completed");
  for (const char* device : {"gw-0000", "gw-0009", "gw-0015", "sim-0001"})
    BOOST_TEST(
        act("isolate", incident_of(device)["incident_id"].get<std::string>())["state"] ==
            "completed",
        device);
  BOOST_TEST(gateways()["bad_link_messages"] == 0);

  auto cut_before = get("/stats")["bus"]["revoked_cut"].get<uint64_t>();
  BOOST_REQUIRE_EQUAL(api->request("DELETE", "/api/v1/devices/gw-0007/key").status, 200);
  BOOST_TEST(eventually(
      [&] { return get("/stats")["bus"]["revoked_cut"].get<uint64_t>() > cut_before; }));
  BOOST_TEST(
      eventually([&] { return get("/devices/gw-0007")["device"]["online"] == false; }));
  fleet->stop(SIGTERM);
}

// The bus takes descriptors only up to its cap (the open-files limit minus
// bus_fd_reserve): a flood of connections that never speak is closed as it is
// accepted, counted and logged, and REST goes on answering.
BOOST_AUTO_TEST_CASE(rest_answers_while_the_bus_is_flooded_past_its_descriptor_cap) {
  agents->stop(SIGTERM);
  int status = server->stop(SIGTERM);
  BOOST_REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  launcher = {"/usr/bin/prlimit", "--nofile=1024:1024", "--"};
  start_server(bus_endpoint, {"--bus-fd-reserve", "512"});
  launcher.clear();
  // The cap is 1024 - 512; with CURVE, 512 / 16 + 16 more (within a quarter of the
  // 512 left) may be in a handshake.
  constexpr int cap = 512, hard = cap + cap / 16 + 16, flood = 700;
  std::vector<int> fds;
  for (int i = 0; i < flood; ++i) {
    fds.push_back(test::loopback_connection(test::port_of(bus_endpoint)));
    BOOST_REQUIRE(fds.back() >= 0);
  }
  auto refused = [&] { return get("/stats")["bus"]["accept_refused_busy"].get<int>(); };
  BOOST_REQUIRE_MESSAGE(eventually([&] { return refused() >= flood - hard; }),
                        get("/stats")["bus"].dump());
  // REST answers, with the flood still connected; parryd holds no more than it may.
  BOOST_TEST(get("/stats")["bus"]["connections_open"].get<int>() <= hard);
  BOOST_TEST(api->get("/api/v1/incidents?limit=5").status == 200);
  std::size_t open_fds = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(
           "/proc/" + std::to_string(server->pid()) + "/fd"))
    ++open_fds;
  BOOST_TEST(open_fds < 1024u);
  BOOST_TEST(
      server->wait_for_line("closed a connection as it was accepted", 5s).has_value());
  for (int fd : fds)
    ::close(fd);
  // The flood gone, agents connect as before.
  agents = start_agents("sim", 5, {}, "agent.log");
  BOOST_TEST(eventually([&] { return get("/stats")["devices_online"] == 5; }));
}

// A parryd killed -9 takes its gateway processes with it (PR_SET_PDEATHSIG): left
// behind, they would hold the shared port and the agents' connections for good, and a
// restarted parryd would see none of its devices.
BOOST_AUTO_TEST_CASE(gateways_end_with_a_parryd_killed_minus_nine) {
  agents->stop(SIGTERM);
  int status = server->stop(SIGTERM);
  BOOST_REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  start_server(bus_endpoint, {"--bus-gateways", "2"});
  agents = start_agents("sim", 5, {}, "agent.log");
  BOOST_REQUIRE(eventually([&] { return get("/stats")["devices_online"] == 5; }));
  auto kids = children_of(server->pid());
  BOOST_REQUIRE_EQUAL(kids.size(), 2u);
  server->stop(SIGKILL);
  // Gone, or a zombie that nobody reaps (pid 1 of a container may not).
  auto ended = [](pid_t pid) {
    std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
    std::string line;
    if (!std::getline(stat, line)) return true;
    auto paren = line.rfind(')');
    return paren != std::string::npos && paren + 2 < line.size() &&
           line[paren + 2] == 'Z';
  };
  for (pid_t kid : kids)
    BOOST_TEST(eventually([&] { return ended(kid); }), "gateway " << kid);
  start_server(bus_endpoint, {"--bus-gateways", "2"});
  BOOST_TEST(eventually([&] { return get("/stats")["devices_online"] == 5; }));
}

BOOST_AUTO_TEST_CASE(idempotency_key_returns_the_same_action) {
  auto id = incident_of("sim-0001")["incident_id"].get<std::string>();
  json body{
      {"type", "isolate"}, {"incident_id", id}, {"target", {{"kind", "detection"}}}};
  auto a = api->request("POST", "/api/v1/actions", &body, {{"Idempotency-Key", "k-1"}});
  auto b = api->request("POST", "/api/v1/actions", &body, {{"Idempotency-Key", "k-1"}});
  BOOST_REQUIRE_EQUAL(a.status, 202);
  BOOST_REQUIRE_EQUAL(b.status, 200);
  BOOST_TEST(a.body["action"]["action_id"] == b.body["action"]["action_id"]);
}

// parryctl --all-incidents: a canary first, then the rest in one bulk request; a
// filter key the list does not know is refused before anything is sent.
BOOST_AUTO_TEST_CASE(parryctl_acts_on_every_matching_incident_after_a_canary) {
  incident_of("sim-0003");
  auto [bad_rc, bad_out] =
      parryctl({"isolate", "--all-incidents", "--filter", "devce_id=sim-0003", "--yes"},
               "bad.log");
  BOOST_TEST(bad_rc == 2, bad_out);
  // An empty value would match every incident (an unset shell variable).
  auto [empty_rc, empty_out] = parryctl(
      {"isolate", "--all-incidents", "--filter", "device_id=", "--yes"}, "empty.log");
  BOOST_TEST(empty_rc == 2, empty_out);
  BOOST_TEST(get("/actions")["actions"].empty());
  auto [rc, out] =
      parryctl({"isolate", "--all-incidents", "--filter", "device_id=sim-0003",
                "--canary", "1", "--comment", "bulk", "--yes", "--wait"},
               "bulk.log");
  BOOST_TEST(rc == 0, out);
  BOOST_TEST(out.find("canary: 1 completed; going on with the rest") != std::string::npos,
             out);
  std::size_t lines = 0;
  for (auto i = out.find(": action act-"); i != std::string::npos;
       i = out.find(": action act-", i + 1))
    ++lines;
  BOOST_TEST(lines >= 1u);
  BOOST_TEST(out.find("registered " + std::to_string(lines) + ", refused 0") !=
                 std::string::npos,
             out);
  auto acts = get("/actions?device_id=sim-0003")["actions"];
  BOOST_TEST(acts.size() == lines);
  for (auto& a : acts) {
    BOOST_TEST(a["type"] == "isolate");
    BOOST_TEST(a["state"] == "completed");
    BOOST_TEST(a["comment"] == "bulk");
  }
  BOOST_TEST(get("/devices/sim-0003")["device"]["isolated"] == true);
}

// A canary that does not complete leaves the rest alone, on the server's side
// (POST /actions/bulk "canary") and on parryctl's (--canary).
BOOST_AUTO_TEST_CASE(a_canary_that_does_not_complete_leaves_the_rest_alone) {
  auto incident = [&](const std::string& device) {
    return incident_of(device)["incident_id"].get<std::string>();
  };
  auto bulk = [&](const std::vector<std::string>& ids, int wait_ms) {
    json targets = json::array();
    for (auto& id : ids)
      targets.push_back({{"incident_id", id}, {"target", {{"kind", "detection"}}}});
    json body{{"type", "isolate"},
              {"targets", targets},
              {"canary", {{"count", 1}, {"wait_ms", wait_ms}}}};
    auto r = api->post("/api/v1/actions/bulk", body);
    BOOST_REQUIRE_MESSAGE(r.status == 202, r.raw);
    return r.body;
  };
  // Live devices: the canary completes and the rest follows.
  auto live = bulk({incident("sim-0001"), incident("sim-0003")}, 10000);
  BOOST_TEST(live["canary"]["passed"] == true, live.dump());
  BOOST_TEST(live["registered"] == 2);
  auto offline = std::vector<std::string>{incident("sim-0002"), incident("sim-0000")};
  incident("sim-0004");
  agents->stop(SIGTERM);
  BOOST_REQUIRE(eventually([&] { return get("/stats")["devices_online"] == 0; }));
  // Its device gone, the canary's action is not final in time: the rest is refused.
  auto gone = bulk(offline, 1000);
  BOOST_TEST(gone["registered"] == 1, gone.dump());
  BOOST_TEST(gone["canary"]["passed"] == false);
  const auto& second = gone["results"][1];
  BOOST_TEST(second["error"]["code"] == "canary_failed");
  BOOST_TEST(second["error"]["message"].get<std::string>().find("after 1000 ms") !=
                 std::string::npos,
             second.dump());
  BOOST_TEST(get("/actions?device_id=sim-0000")["actions"].empty());
  // parryctl's own canary, over the incidents of three devices that reported and
  // left: the canary is not final within --timeout, exit 1, the rest not acted on.
  auto since = format_time(now_us());
  auto late = start_agents("cn", 3, {}, "late.log");
  for (auto d : {"cn-0000", "cn-0001", "cn-0002"})
    incident(d);
  late->stop(SIGTERM);
  BOOST_REQUIRE(eventually([&] { return get("/stats")["devices_online"] == 0; }));
  auto [rc, out] = parryctl({"isolate", "--all-incidents", "--filter", "since=" + since,
                             "--canary", "1", "--timeout", "2", "--yes"},
                            "canary.log");
  BOOST_TEST(rc == 1, out);
  BOOST_TEST(out.find("error: canary: action act-") != std::string::npos, out);
  BOOST_TEST(out.find("not final after the timeout; the other 2 incidents were not "
                      "acted on") != std::string::npos,
             out);
  std::size_t acted = 0;
  for (auto d : {"cn-0000", "cn-0001", "cn-0002"})
    acted += get(std::string{"/actions?device_id="} + d)["actions"].size();
  BOOST_TEST(acted == 1u);
}

BOOST_AUTO_TEST_CASE(malformed_frames_are_dropped_and_counted_while_others_are_served) {
  BOOST_REQUIRE(eventually([&] { return get("/stats")["devices_online"] == 5; }));
  auto bad_before = get("/stats")["bus"]["bad_frames"].get<uint64_t>();
  {
    zmq::context_t ctx;
    zmq::socket_t evil{ctx, zmq::socket_type::dealer};
    auto keys = enrolled_key(*this, "evil-1");
    evil.set(zmq::sockopt::routing_id, "evil-1");
    evil.set(zmq::sockopt::linger, 1000);
    evil.set(zmq::sockopt::curve_serverkey, server_key);
    evil.set(zmq::sockopt::curve_publickey, keys.public_z85);
    evil.set(zmq::sockopt::curve_secretkey, keys.secret_z85);
    evil.connect(bus_endpoint);
    // Not msgpack; truncated msgpack; a header speaking for another device; a
    // body of the wrong shape; a lone frame.
    evil.send(zmq::str_buffer("\xc1\xc1\xc1"), zmq::send_flags::sndmore);
    evil.send(zmq::str_buffer("x"), zmq::send_flags::none);
    evil.send(zmq::str_buffer("\x86\xa1v"), zmq::send_flags::sndmore);
    evil.send(zmq::str_buffer("x"), zmq::send_flags::none);
    bus::header spoof;
    spoof.type = "action_result";
    spoof.device_id = "sim-0000";
    evil.send(zmq::buffer(bus::encode(spoof)), zmq::send_flags::sndmore);
    evil.send(zmq::buffer(bus::encode(bus::action_result{"act-x", true, "", {}, 0})),
              zmq::send_flags::none);
    bus::header own = spoof;
    own.device_id = "evil-1";
    own.type = "incident";
    evil.send(zmq::buffer(bus::encode(own)), zmq::send_flags::sndmore);
    evil.send(zmq::str_buffer("\x93\x01\x02\x03"), zmq::send_flags::none);
    evil.send(zmq::str_buffer("lonely"), zmq::send_flags::none);
  }
  BOOST_TEST(eventually([&] {
    return get("/stats")["bus"]["bad_frames"].get<uint64_t>() >= bad_before + 5;
  }));
  // The bad peer left no trace, and the good ones are still served.
  auto r = api->get("/api/v1/devices/evil-1");
  BOOST_TEST(r.status == 404);
  auto id = incident_of("sim-0004")["incident_id"].get<std::string>();
  BOOST_TEST(act("isolate", id)["state"] == "completed");
  BOOST_TEST(server->running());
}

namespace {

/// A hand-driven agent connection for hostile-peer tests.
struct raw_peer {
  zmq::context_t ctx;
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  std::string id;
  uint64_t msg_id = 0;

  /// A DEALER speaking as `device`; with `keys`, a CURVE client pinning `server_key`.
  raw_peer(const std::string& endpoint, std::string device,
           std::optional<bus::curve_key_pair> keys = std::nullopt,
           const std::string& server_key = "")
      : id(std::move(device)) {
    s.set(zmq::sockopt::routing_id, id);
    s.set(zmq::sockopt::linger, 0);
    if (keys) {
      s.set(zmq::sockopt::curve_serverkey, server_key);
      s.set(zmq::sockopt::curve_publickey, keys->public_z85);
      s.set(zmq::sockopt::curve_secretkey, keys->secret_z85);
    }
    s.connect(endpoint);
  }

  template <class Body> uint64_t send(const char* type, const Body& body) {
    bus::header h;
    h.type = type;
    h.msg_id = ++msg_id;
    h.device_id = id;
    s.send(zmq::buffer(bus::encode(h)), zmq::send_flags::sndmore);
    s.send(zmq::buffer(bus::encode(body)), zmq::send_flags::none);
    return h.msg_id;
  }

  /// The next message of `type` within `timeout` (others are skipped), as its body.
  std::optional<std::string> next(const std::string& type,
                                  std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}};
      if (zmq::poll(items, 1, left) <= 0) return std::nullopt;
      zmq::message_t h, b;
      if (!s.recv(h, zmq::recv_flags::dontwait)) continue;
      (void)s.recv(b, zmq::recv_flags::none);
      std::string why;
      auto hdr = bus::decode_header(h.to_string_view(), bus::decode_limits{}, why);
      if (hdr && hdr->type == type) return b.to_string();
    }
  }
};

/// A raw peer for `device` with a key enrolled for `as` (by default, itself).
std::unique_ptr<raw_peer> enrolled_peer(const system_fixture& f,
                                        const std::string& device,
                                        const std::string& as = "") {
  return std::make_unique<raw_peer>(
      f.bus_endpoint, device, enrolled_key(f, as.empty() ? device : as), f.server_key);
}

bus::incident_report small_report(const std::string& report_id) {
  bus::incident_report r;
  r.report_id = report_id;
  r.det = {"HEUR:Trojan.Win32.Generic", "high", "epp"};
  r.key_event_id = "e1";
  bus::activity_event e;
  e.id = "e1";
  e.type = "process_started";
  e.time = 1795000000000000;
  e.process.pid = 4242;
  e.process.start_time = 1795000000000000;
  e.process.image = "C:\\Users\\a\\payload.exe";
  e.process.sha256 = std::string(64, 'a');
  e.process.cmdline = "payload.exe";
  r.events = {e};
  return r;
}

uint64_t refused(const json& stats, const char* kind) {
  return stats["bus"]["refused"][kind].get<uint64_t>();
}

} // namespace

// An agent saying hello with a hostname that is not UTF-8 is refused at the bus
// (told so with `rejected`) and leaves nothing behind: GET /devices keeps answering.
// A second connection claiming a live device's id never gets that device's
// commands. A frame over max_frame_bytes is counted and answered.
BOOST_AUTO_TEST_CASE(hostile_peers_are_refused_at_the_bus_edge) {
  BOOST_REQUIRE(eventually([&] { return get("/stats")["devices_online"] == 5; }));
  auto bad_peer = enrolled_peer(*this, "bad-utf8");
  auto& bad = *bad_peer;
  bus::hello h;
  h.hostname = "bad\xffhost";
  auto mid = bad.send(bus::type::hello, h);
  auto rej = bad.next(bus::type::rejected, 10s);
  BOOST_REQUIRE(rej);
  std::string why;
  auto r = bus::decode<bus::rejected>(*rej, bus::decode_limits{}, why);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->msg_id == mid);
  BOOST_TEST(r->reason == "hostname is not valid UTF-8");
  BOOST_TEST(api->get("/api/v1/devices").status == 200);
  BOOST_TEST(api->get("/api/v1/devices/bad-utf8").status == 404);
  BOOST_TEST(refused(get("/stats"), "invalid") >= 1u);

  // Oversized: answered with the limit, counted.
  bus::incident_report big = small_report("big-1");
  big.events[0].detail = std::string(60000, 'x');
  for (int i = 0; i < 20; ++i)
    big.events.push_back(big.events[0]), big.events.back().id = "x" + std::to_string(i);
  mid = bad.send(bus::type::incident, big);
  rej = bad.next(bus::type::rejected, 10s);
  BOOST_REQUIRE(rej);
  r = bus::decode<bus::rejected>(*rej, bus::decode_limits{}, why);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->msg_id == mid);
  BOOST_TEST(r->limit == "max_frame_bytes");
  BOOST_TEST(r->value == 1048576u);
  BOOST_TEST(refused(get("/stats"), "oversized") >= 1u);

  // Takeover: a connection with another enrolled key says it is sim-0002.
  auto thief_peer = enrolled_peer(*this, "sim-0002", "thief-1");
  auto& thief = *thief_peer;
  thief.send(bus::type::hello, bus::hello{"thief", "linux", "0", {}, false});
  auto id = incident_of("sim-0002")["incident_id"].get<std::string>();
  auto iso = act("isolate", id);
  BOOST_TEST(iso["state"] == "completed");
  BOOST_TEST(!thief.next(bus::type::command, 500ms));
  BOOST_TEST(get("/devices/sim-0002")["device"]["hostname"] != "thief");
  BOOST_TEST(server->running());
}

// Only enrolled keys get onto the bus: a stranger's key never completes the
// handshake, a one-time token enrolls once, an expired token enrolls nothing, and
// revoking a device cuts its open connection at once and keeps it out.
BOOST_AUTO_TEST_CASE(only_enrolled_keys_connect_and_a_revoked_one_is_cut_at_once) {
  BOOST_REQUIRE(eventually([&] { return get("/stats")["devices_online"] == 5; }));
  auto zap = [&](const char* what) { return get("/stats")["bus"][what].get<uint64_t>(); };
  auto unknown_before = zap("zap_refused_unknown");
  raw_peer stranger{bus_endpoint, "stranger-1", bus::generate_curve_key_pair(),
                    server_key};
  stranger.send(bus::type::hello, bus::hello{"s", "linux", "1", {}, false});
  BOOST_TEST(eventually([&] { return zap("zap_refused_unknown") > unknown_before; }));
  BOOST_TEST(!stranger.next(bus::type::welcome, 500ms));
  BOOST_TEST(api->get("/api/v1/devices/stranger-1").status == 404);

  auto enroll_with = [&](const std::string& text, const std::string& device) {
    auto token = bus::parse_token(text);
    BOOST_REQUIRE(token);
    return bus::enroll_devices(enroll_endpoint, *token,
                               {{device, bus::generate_curve_key_pair()}}, 1, 10s)
        .at(0);
  };
  auto once = api->post("/api/v1/enrollment-tokens", json{{"ttl_seconds", 600}});
  BOOST_REQUIRE_EQUAL(once.status, 201);
  auto once_text = once.body["token"].get<std::string>();
  BOOST_TEST(enroll_with(once_text, "once-1").ok);
  auto again = enroll_with(once_text, "once-2");
  BOOST_TEST(!again.ok);
  BOOST_TEST(again.reason == "bad_token");
  // Enrollments go through until the second is over, and none after it.
  auto brief =
      api->post("/api/v1/enrollment-tokens", json{{"ttl_seconds", 1}, {"uses", 100}});
  BOOST_REQUIRE_EQUAL(brief.status, 201);
  auto brief_text = brief.body["token"].get<std::string>();
  int late = 0;
  BOOST_TEST(eventually([&] {
    return enroll_with(brief_text, "late-" + std::to_string(++late)).reason ==
           "token_expired";
  }));

  auto cut_before = get("/stats")["bus"]["revoked_cut"].get<uint64_t>();
  auto r = api->request("DELETE", "/api/v1/devices/sim-0004/key");
  BOOST_REQUIRE_EQUAL(r.status, 200);
  BOOST_TEST(eventually(
      [&] { return get("/stats")["bus"]["revoked_cut"].get<uint64_t>() > cut_before; }));
  BOOST_TEST(
      eventually([&] { return get("/devices/sim-0004")["device"]["online"] == false; }));
  // Its agent keeps trying with the revoked key and is refused every time.
  auto unknown = zap("zap_refused_unknown");
  BOOST_TEST(eventually([&] { return zap("zap_refused_unknown") > unknown; }));
  BOOST_TEST(get("/devices/sim-0004")["device"]["online"] == false);

  // No token and no secret key is ever written to a log.
  auto whole = [](const std::filesystem::path& p) {
    std::ifstream in{p};
    return std::string{std::istreambuf_iterator<char>{in}, {}};
  };
  std::vector<std::string> secrets{enroll_token.substr(4, 64), once_text.substr(4, 64),
                                   brief_text.substr(4, 64)};
  std::istringstream keys{whole(dir / "agent-state-sim" / "agent-keys")};
  for (std::string kind, a, b; keys >> kind >> a >> b;)
    if (kind == "device") secrets.push_back(b);
  BOOST_REQUIRE(secrets.size() >= 8u); // three tokens and five device keys
  // Nor a password, nor a bearer token.
  secrets.push_back(admin_password);
  secrets.push_back(token);
  for (const auto& log : {std::filesystem::path{server->log_file()}, dir / "agent.log"}) {
    auto text = whole(log);
    BOOST_REQUIRE(!text.empty());
    for (const auto& secret : secrets)
      BOOST_TEST(text.find(secret) == std::string::npos, log << " holds a secret");
  }
}

/// An integrator's two sockets: requests (DEALER) and events (SUB), both CURVE.
struct integrator_client {
  zmq::context_t ctx;
  zmq::socket_t req{ctx, zmq::socket_type::dealer};
  zmq::socket_t sub{ctx, zmq::socket_type::sub};
  uint64_t msg_id = 0;

  integrator_client(const system_fixture& f, const bus::curve_key_pair& keys) {
    for (auto* s : {&req, &sub}) {
      s->set(zmq::sockopt::linger, 0);
      s->set(zmq::sockopt::curve_serverkey, f.server_key);
      s->set(zmq::sockopt::curve_publickey, keys.public_z85);
      s->set(zmq::sockopt::curve_secretkey, keys.secret_z85);
    }
    sub.set(zmq::sockopt::subscribe, "action.");
    sub.connect(f.events_endpoint);
    req.connect(f.integrator_endpoint);
  }

  /// Sends raw frames.
  void send_raw(std::initializer_list<std::string> frames) {
    std::size_t i = 0;
    for (const auto& fr : frames)
      req.send(zmq::buffer(fr),
               ++i < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }

  /// One request and its reply (status 0: none within `timeout`; -1: rejected).
  std::pair<int, json> call(const std::string& method, const std::string& path,
                            const std::string& body = "",
                            const char* type = bus::type::request,
                            std::chrono::milliseconds timeout = 10s) {
    bus::header h;
    h.type = type;
    h.msg_id = ++msg_id;
    send_raw({bus::encode(h), bus::encode(bus::api_request{method, path, body, ""})});
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {0, json{}};
      zmq::pollitem_t items[] = {{req.handle(), 0, ZMQ_POLLIN, 0}};
      if (zmq::poll(items, 1, left) <= 0) return {0, json{}};
      zmq::message_t hf, bf;
      if (!req.recv(hf, zmq::recv_flags::dontwait)) continue;
      (void)req.recv(bf, zmq::recv_flags::none);
      std::string why;
      auto rh = bus::decode_header(hf.to_string_view(), bus::decode_limits{}, why, false);
      if (rh && rh->type == "rejected") {
        auto rej =
            bus::decode<bus::rejected>(bf.to_string_view(), bus::decode_limits{}, why);
        if (rej && rej->msg_id == h.msg_id) return {-1, json{}};
        continue; // the answer to an earlier, refused message
      }
      auto r =
          bus::decode<bus::api_reply>(bf.to_string_view(), bus::decode_limits{}, why);
      if (rh && rh->type == bus::type::reply && r && r->request_id == h.msg_id)
        return {r->status, r->body.empty() ? json{} : json::parse(r->body)};
    }
  }

  /// The next event: topic, header, body (nothing within `timeout`).
  std::optional<std::tuple<std::string, bus::header, bus::action_event>>
  next_event(std::chrono::milliseconds timeout) {
    zmq::pollitem_t items[] = {{sub.handle(), 0, ZMQ_POLLIN, 0}};
    if (zmq::poll(items, 1, timeout) <= 0) return std::nullopt;
    zmq::message_t t, hf, bf;
    (void)sub.recv(t, zmq::recv_flags::none);
    (void)sub.recv(hf, zmq::recv_flags::none);
    (void)sub.recv(bf, zmq::recv_flags::none);
    std::string why;
    auto h = bus::decode_header(hf.to_string_view(), bus::decode_limits{}, why, false);
    auto b =
        bus::decode<bus::action_event>(bf.to_string_view(), bus::decode_limits{}, why);
    if (!h || !b) return std::nullopt;
    return std::make_tuple(t.to_string(), *h, *b);
  }
};

// An integrator registered with a role drives Parry over the bus as REST would let
// it: it reads, triggers an isolate and follows it on the event stream without a gap,
// reads the sequence numbers to resync, is held to its role and to what integrators
// are offered, has bad frames dropped and counted, and is refused once revoked.
BOOST_AUTO_TEST_CASE(an_integrator_triggers_over_the_bus_and_follows_its_events) {
  BOOST_REQUIRE(eventually([&] { return get("/stats")["devices_online"] == 5; }));
  auto keys = bus::generate_curve_key_pair();
  auto reg = api->post("/api/v1/integrators", json{{"name", "soar"},
                                                   {"role", "security_officer"},
                                                   {"public_key", keys.public_z85}});
  BOOST_REQUIRE_MESSAGE(reg.status == 201, reg.raw);
  integrator_client soar{*this, keys};

  auto incident = incident_of("sim-0001")["incident_id"].get<std::string>();
  auto [st, read] = soar.call("GET", "/api/v1/incidents/" + incident);
  BOOST_REQUIRE_EQUAL(st, 200);
  BOOST_TEST(read["incident"]["device_id"] == "sim-0001");
  auto [st2, created] = soar.call("POST", "/api/v1/actions",
                                  json{{"type", "isolate"},
                                       {"incident_id", incident},
                                       {"target", {{"kind", "detection"}}}}
                                      .dump());
  BOOST_REQUIRE_MESSAGE(st2 == 202, created.dump());
  auto action_id = created["action"]["action_id"].get<std::string>();
  BOOST_TEST(created["action"]["requested_by"] == "integrator:soar");

  // The events of the action, in order, each family's seq one above the last.
  std::vector<std::string> states;
  uint64_t last_seq = 0;
  bool gap = false;
  BOOST_TEST(eventually([&] {
    while (auto e = soar.next_event(100ms)) {
      auto& [topic, h, body] = *e;
      if (last_seq != 0 && h.seq != last_seq + 1) gap = true;
      last_seq = h.seq;
      if (body.action_id == action_id) states.push_back(body.state);
      BOOST_TEST(topic == "action." + body.state);
    }
    return !states.empty() && states.back() == "completed";
  }));
  BOOST_TEST(!gap);
  BOOST_TEST(states.front() == "registered");
  // The snapshot names where each family stands.
  auto [st3, snap] = soar.call("", "", "", bus::type::snapshot);
  BOOST_REQUIRE_EQUAL(st3, 200);
  BOOST_TEST(snap["seq"]["action"].get<uint64_t>() >= last_seq);

  // Only what integrators are offered, and only what the role allows.
  BOOST_TEST(soar.call("GET", "/api/v1/audit").first == 403);
  BOOST_TEST(soar.call("POST", "/api/v1/users", "{}").first == 403);
  auto viewer_keys = bus::generate_curve_key_pair();
  BOOST_REQUIRE_EQUAL(
      api->post("/api/v1/integrators", json{{"name", "siem"},
                                            {"role", "operator"},
                                            {"public_key", viewer_keys.public_z85}})
          .status,
      201);
  integrator_client siem{*this, viewer_keys};
  BOOST_TEST(siem.call("GET", "/api/v1/actions/" + action_id).first == 200);
  BOOST_TEST(siem.call("POST", "/api/v1/actions/" + action_id + "/reverse", "{}").first ==
             403);

  // Malformed and oversized frames are dropped and counted; the socket lives on.
  auto bad_before = get("/stats")["integrators"]["bad_frames"].get<uint64_t>();
  soar.send_raw({"\xc1\xc1", "x"});
  soar.send_raw({"lonely"});
  bus::header h;
  h.type = bus::type::request;
  soar.send_raw({bus::encode(h), std::string(300 * 1024, 'x')});
  BOOST_TEST(eventually([&] {
    return get("/stats")["integrators"]["bad_frames"].get<uint64_t>() >= bad_before + 3;
  }));
  BOOST_TEST(soar.call("GET", "/api/v1/health").first == 200);

  // Revoked: nothing more is answered.
  BOOST_REQUIRE_EQUAL(api->request("DELETE", "/api/v1/integrators/soar").status, 200);
  BOOST_TEST(soar.call("GET", "/api/v1/health", "", bus::type::request, 2s).first != 200);
}

// One device floods incidents: what is over its per-minute cap is shed, counted and
// answered with `rejected`; the other devices are served as usual.
BOOST_AUTO_TEST_CASE(incident_flood_is_shed_and_counted) {
  BOOST_REQUIRE(eventually([&] { return get("/stats")["devices_online"] == 5; }));
  auto flood_peer = enrolled_peer(*this, "flood-1");
  auto& flood = *flood_peer;
  flood.send(bus::type::hello, bus::hello{"flood", "linux", "1", {"10.0.0.9"}, false});
  BOOST_REQUIRE(flood.next(bus::type::welcome, 10s));
  for (int i = 0; i < 1000; ++i) // over the default cap of 600 a minute
    flood.send(bus::type::incident, small_report("r-" + std::to_string(i)));
  auto rej = flood.next(bus::type::rejected, 10s);
  BOOST_REQUIRE(rej);
  std::string why;
  auto r = bus::decode<bus::rejected>(*rej, bus::decode_limits{}, why);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->limit == "max_incidents_per_minute");
  BOOST_TEST(r->retry_after_ms > 0u);
  BOOST_REQUIRE(eventually([&] { return refused(get("/stats"), "rate") >= 200u; }));
  // What was admitted is stored (the store commits in its own time).
  std::size_t stored = 0;
  BOOST_TEST(eventually([&] {
    stored = get("/incidents?device_id=flood-1")["incidents"].size();
    return stored >= 1u;
  }));
  BOOST_TEST(stored <= 600u); // the per-minute cap
  // The well-behaved devices still work.
  auto id = incident_of("sim-0003")["incident_id"].get<std::string>();
  BOOST_TEST(act("isolate", id)["state"] == "completed");
}

BOOST_AUTO_TEST_CASE(rest_refuses_bad_credentials_and_bad_requests) {
  client anon{base_url, tls_options{(dir / "data/tls/cert.pem").string(), false}};
  BOOST_TEST(anon.get("/api/v1/devices").status == 401);
  auto bad =
      anon.post("/api/v1/login", json{{"username", "admin"}, {"password", "nope"}});
  BOOST_TEST(bad.status == 401);
  BOOST_TEST(bad.body["error"]["code"] == "unauthenticated");
  // A session without its CSRF token may read but not act.
  auto ok = anon.post("/api/v1/login",
                      json{{"username", "admin"}, {"password", admin_password}});
  BOOST_REQUIRE_EQUAL(ok.status, 200);
  BOOST_TEST(anon.get("/api/v1/devices").status == 200);
  auto forged = anon.post("/api/v1/actions", json{{"type", "isolate"}});
  BOOST_TEST(forged.status == 403);
  // Malformed bodies and unknown things get clear errors.
  BOOST_TEST(api->request("POST", "/api/v1/actions", nullptr).status == 400);
  auto junk = api->post("/api/v1/actions", json{{"type", "isolate"},
                                                {"incident_id", "../../etc"},
                                                {"target", {{"kind", "detection"}}}});
  BOOST_TEST(junk.status == 400);
  BOOST_TEST(api->get("/api/v1/incidents/inc-nope").status == 404);
  BOOST_TEST(api->get("/api/v1/nothing-here").status == 404);
  // Repeated wrong passwords lock the account, even for the right password.
  for (int i = 0; i < 3; ++i)
    anon.post("/api/v1/login", json{{"username", "admin"}, {"password", "wrong"}});
  auto locked = anon.post("/api/v1/login",
                          json{{"username", "admin"}, {"password", admin_password}});
  BOOST_TEST(locked.status == 429);
}

BOOST_AUTO_TEST_CASE(role_matrix) {
  auto officer = as("olivia", "security_officer");
  auto viewer = as("oscar", "operator");
  auto id = incident_of("sim-0003")["incident_id"].get<std::string>();
  json iso{{"type", "isolate"}, {"incident_id", id}, {"target", {{"kind", "detection"}}}};
  struct row {
    const char* method;
    std::string path;
    json body;
    int admin, officer, viewer; // expected status per role
  };
  // Reads for everyone; actions for administrators and security officers; users and
  // audit for administrators only.
  std::vector<row> rows{
      {"GET", "/devices", nullptr, 200, 200, 200},
      {"GET", "/incidents", nullptr, 200, 200, 200},
      {"GET", "/incidents/" + id, nullptr, 200, 200, 200},
      {"GET", "/incidents/" + id + "/available-actions", nullptr, 200, 200, 200},
      {"GET", "/actions", nullptr, 200, 200, 200},
      {"GET", "/stats", nullptr, 200, 200, 200},
      {"GET", "/users", nullptr, 200, 403, 403},
      {"GET", "/audit", nullptr, 200, 403, 403},
      {"POST", "/users",
       json{{"username", "x"}, {"password", "short"}, {"role", "operator"}}, 400, 403,
       403},
      {"POST", "/actions",
       json{{"type", "nope"}, {"incident_id", id}, {"target", {{"kind", "detection"}}}},
       400, 400, 403},
      {"POST", "/actions/act-missing/cancel", json::object(), 404, 404, 403},
      {"POST", "/actions/act-missing/reverse", json::object(), 404, 404, 403},
  };
  for (auto& r : rows) {
    int i = 0;
    for (client* c : {api.get(), officer.get(), viewer.get()}) {
      int expected = i == 0 ? r.admin : i == 1 ? r.officer : r.viewer;
      auto res =
          c->request(r.method, "/api/v1" + r.path, r.body.is_null() ? nullptr : &r.body);
      BOOST_TEST(res.status == expected,
                 r.method << " " << r.path << " as role #" << i << ": " << res.raw);
      ++i;
    }
  }
  // A security officer triggers; an operator cannot.
  BOOST_TEST(officer->post("/api/v1/actions", iso).status == 202);
  BOOST_TEST(viewer->post("/api/v1/actions", iso).status == 403);
  // Users: a deleted user's token stops working; the last administrator stays.
  BOOST_TEST(api->request("DELETE", "/api/v1/users/oscar").status == 200);
  BOOST_TEST(viewer->get("/api/v1/devices").status == 401);
  BOOST_TEST(api->request("DELETE", "/api/v1/users/admin").status == 409);
  json demote{{"role", "operator"}};
  BOOST_TEST(api->request("PATCH", "/api/v1/users/admin", &demote).status == 409);
  json promote{{"role", "administrator"}};
  BOOST_TEST(api->request("PATCH", "/api/v1/users/olivia", &promote).status == 200);
  // Her old token ended with the change of role.
  BOOST_TEST(officer->get("/api/v1/devices").status == 401);
}

BOOST_AUTO_TEST_CASE(password_reentry_and_lockout) {
  auto officer = as("petra", "security_officer");
  auto inc =
      get("/incidents/" + incident_of("sim-0001")["incident_id"].get<std::string>());
  auto id = inc["incident"]["incident_id"].get<std::string>();
  json q{
      {"type", "quarantine"}, {"incident_id", id}, {"target", {{"kind", "detection"}}}};
  auto before = get("/actions")["actions"].size();
  auto none = officer->post("/api/v1/actions", q);
  BOOST_TEST(none.status == 401);
  q["password"] = "not-her-password";
  BOOST_TEST(officer->post("/api/v1/actions", q).status == 401);
  q["password"] = "petra-password-123";
  auto ok = officer->post("/api/v1/actions", q);
  BOOST_TEST(ok.status == 202);
  BOOST_TEST(ok.body["action"]["password_confirmed"] == true);
  // Wrong passwords count toward the lockout (3 here), which then refuses even the
  // right one, for actions and logins alike.
  q["password"] = "wrong";
  for (int i = 0; i < 3; ++i)
    officer->post("/api/v1/actions", q);
  q["password"] = "petra-password-123";
  BOOST_TEST(officer->post("/api/v1/actions", q).status == 429);
  BOOST_TEST(get("/actions")["actions"].size() == before + 1);
  // Every attempt is in the audit trail.
  auto audit = get("/audit?limit=10000")["records"];
  int confirmations = 0, refused = 0;
  for (auto& r : audit) {
    confirmations += r["kind"] == "password_confirmation" && r["actor"] == "petra";
    refused += r["kind"] == "trigger_refused" && r["actor"] == "petra";
  }
  BOOST_TEST(confirmations >= 6);
  BOOST_TEST(refused >= 5);
}

BOOST_AUTO_TEST_CASE(every_action_has_its_effect_on_a_simulated_endpoint) {
  auto inc = get("/incidents/" +
                 incident_of("sim-0002")["incident_id"].get<std::string>())["incident"];
  auto id = inc["incident_id"].get<std::string>();
  auto avail = get("/incidents/" + id + "/available-actions");
  // The first file_created event of the chain, and the key event.
  std::string file_event, key_type = avail["targets"][0]["event_type"];
  for (auto& t : avail["targets"])
    if (t["event_type"] == "file_created" && file_event.empty())
      file_event = t["event_id"];
  BOOST_REQUIRE(!file_event.empty());

  auto q = act("quarantine", id, file_event);
  BOOST_TEST(q["state"] == "completed");
  BOOST_TEST(q["result"]["effect"]["quarantine_id"].get<std::string>().rfind("q-", 0) ==
             0u);
  // The file is gone: deleting it now fails with the agent's reason.
  auto gone = act("delete_file", id, file_event);
  BOOST_TEST(gone["state"] == "failed");
  BOOST_TEST(gone["result"]["error"].get<std::string>().find("no file at") == 0u);
  // Restore brings it back and marks the quarantine reverted; then it can be deleted.
  auto restore = reverse(q["action_id"]);
  BOOST_TEST(restore["type"] == "restore_from_quarantine");
  BOOST_TEST(restore["state"] == "completed");
  BOOST_TEST(restore["reverses"] == q["action_id"]);
  auto q_after = get("/actions/" + q["action_id"].get<std::string>())["action"];
  BOOST_TEST(q_after["state"] == "reverted");
  BOOST_TEST(q_after["reversed_by"] == restore["action_id"]);
  BOOST_TEST(act("delete_file", id, file_event)["state"] == "completed");

  auto prevent = act("prevent_run", id);
  BOOST_TEST(prevent["state"] == "completed");
  auto allow = reverse(prevent["action_id"]);
  BOOST_TEST(allow["type"] == "allow_run");
  BOOST_TEST(allow["state"] == "completed");

  if (key_type == "process_started") {
    auto term = act("terminate_process", id);
    BOOST_TEST(term["state"] == "completed");
    BOOST_TEST(term["result"]["effect"]["pid"] == term["params"]["pid"]);
    BOOST_TEST(act("terminate_process", id)["state"] == "failed"); // already gone
  }

  bool windows = get("/devices/sim-0002")["device"]["os"].get<std::string>().find(
                     "Windows") != std::string::npos;
  auto start = act(
      "start_process", id, "",
      json{{"path", windows ? "C:\\Windows\\System32\\whoami.exe" : "/usr/bin/whoami"},
           {"working_directory", windows ? "C:\\Windows\\Temp" : "/tmp"},
           {"arguments", "--help \"two words\""}}); // double quotes: POSIX and Windows
  BOOST_TEST(start["state"] == "completed");
  BOOST_TEST(start["params"]["argc"] == "2");
  BOOST_TEST(start["params"]["arg.1"] == "two words");
  BOOST_TEST(start["argv"] == json::array({"--help", "two words"}));
  BOOST_TEST(start["result"]["effect"]["exit_code"] == "0");
  // The list form is taken as it is: backslashes and quotes survive on any device.
  auto listed = act(
      "start_process", id, "",
      json{{"path", windows ? "C:\\Windows\\System32\\whoami.exe" : "/usr/bin/whoami"},
           {"arguments",
            json::array({"C:\\Temp\\plain.txt", "\\\\fileserver\\share\\x", "a\tb"})}});
  BOOST_TEST(listed["argv"] ==
             json::array({"C:\\Temp\\plain.txt", "\\\\fileserver\\share\\x", "a\tb"}));
  BOOST_TEST(listed["params"]["argc"] == "3");
  // A hostile start is refused before anything is registered.
  auto before = get("/actions")["actions"].size();
  auto bad = api->post("/api/v1/actions", json{{"type", "start_process"},
                                               {"incident_id", id},
                                               {"target", {{"kind", "detection"}}},
                                               {"params", {{"path", "../../bin/sh"}}},
                                               {"password", admin_password}});
  BOOST_TEST(bad.status == 400);
  BOOST_TEST(get("/actions")["actions"].size() == before);
  // Cancel: an action for an offline device waits, and can be cancelled.
  agents->stop(SIGTERM);
  BOOST_REQUIRE(
      eventually([&] { return get("/devices/sim-0002")["device"]["online"] == false; }));
  auto waiting = trigger("isolate", id);
  BOOST_REQUIRE(reaches(waiting, "queued"));
  auto c =
      api->post("/api/v1/actions/" + waiting + "/cancel", json{{"comment", "no need"}});
  BOOST_TEST(c.status == 200);
  BOOST_TEST(c.body["action"]["state"] == "cancelled");
  BOOST_TEST(api->post("/api/v1/actions/" + waiting + "/cancel", json::object()).status ==
             409);
}

BOOST_AUTO_TEST_CASE(kill_9_with_actions_in_every_open_state_loses_and_repeats_nothing) {
  auto hold_commands = dir / "hold-commands";
  auto hold_results = dir / "hold-results";
  std::ofstream{hold_commands};
  std::ofstream{hold_results};
  auto q = start_agents("q", 1, {}, "q.log");
  auto s = start_agents("s", 1, {"--hold-file", hold_commands.string()}, "s.log");
  auto a = start_agents("a", 1, {"--hold-results-file", hold_results.string()}, "a.log");
  auto inc_q = incident_of("q-0000")["incident_id"].get<std::string>();
  auto inc_s = incident_of("s-0000")["incident_id"].get<std::string>();
  auto inc_a = incident_of("a-0000")["incident_id"].get<std::string>();
  // queued: the device is offline.
  q->stop(SIGTERM);
  BOOST_REQUIRE(
      eventually([&] { return get("/devices/q-0000")["device"]["online"] == false; }));
  auto act_q = trigger("isolate", inc_q);
  BOOST_REQUIRE(reaches(act_q, "queued"));
  // sent: the agent holds the command without acknowledging it.
  auto act_s = trigger("isolate", inc_s);
  BOOST_REQUIRE(reaches(act_s, "sent"));
  // acknowledged: the agent executed it but holds the result.
  auto act_a = trigger("isolate", inc_a);
  BOOST_REQUIRE(reaches(act_a, "acknowledged"));
  BOOST_REQUIRE(eventually([&] {
    std::ifstream in{dir / "a.log"};
    std::string all{std::istreambuf_iterator<char>{in}, {}};
    return all.find("executed " + act_a) != std::string::npos;
  }));

  server->stop(SIGKILL);
  start_server(bus_endpoint);
  // Nothing moved while the server was dead, nothing was lost.
  BOOST_TEST(get("/actions/" + act_q)["action"]["state"] == "queued");
  BOOST_TEST(get("/actions/" + act_s)["action"]["state"] == "sent");
  BOOST_TEST(get("/actions/" + act_a)["action"]["state"] == "acknowledged");

  q = start_agents("q", 1, {}, "q.log");
  std::filesystem::remove(hold_commands);
  std::filesystem::remove(hold_results);
  for (auto& id : {act_q, act_s, act_a})
    BOOST_TEST(until_final(id)["state"] == "completed", id);
  BOOST_TEST(states(get("/actions/" + act_s)["action"]) ==
             (strings{"registered", "sent", "acknowledged", "completed"}));
  BOOST_TEST(states(get("/actions/" + act_a)["action"]) ==
             (strings{"registered", "sent", "acknowledged", "completed"}));
  BOOST_TEST(states(get("/actions/" + act_q)["action"]) ==
             (strings{"registered", "queued", "sent", "acknowledged", "completed"}));
  // Each command ran exactly once on its endpoint.
  for (auto [id, log] : {std::pair{act_q, "q.log"}, {act_s, "s.log"}, {act_a, "a.log"}}) {
    std::ifstream in{dir / log};
    std::string line;
    int runs = 0;
    while (std::getline(in, line))
      runs += line.find("executed " + id + " ") != std::string::npos;
    BOOST_TEST(runs == 1, id << " ran " << runs << " times");
  }
  for (auto* p : {q.get(), s.get(), a.get()})
    p->stop(SIGTERM);
}

BOOST_AUTO_TEST_CASE(audit_tampering_is_found_and_named) {
  auto id = incident_of("sim-0000")["incident_id"].get<std::string>();
  BOOST_TEST(act("isolate", id)["state"] == "completed");
  // parryctl audit verify, as an administrator would run it.
  auto verify = [&](const std::string& log) {
    return parryctl({"audit", "verify"}, log);
  };
  auto [rc, out] = verify("verify-1.log");
  BOOST_TEST(rc == 0, out);
  BOOST_TEST(out.find("intact") != std::string::npos, out);

  // Someone with the database file in hand changes record 2 ...
  sqlite3* db = nullptr;
  BOOST_REQUIRE(sqlite3_open((dir / "data/parry.db").c_str(), &db) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  auto exec = [&](const char* sql) {
    char* err = nullptr;
    BOOST_REQUIRE_MESSAGE(sqlite3_exec(db, sql, nullptr, nullptr, &err) == SQLITE_OK,
                          (err ? err : "?"));
  };
  // The database itself refuses ...
  BOOST_TEST(sqlite3_exec(db, "UPDATE audit SET detail = 'nothing' WHERE seq = 2",
                          nullptr, nullptr, nullptr) != SQLITE_OK);
  // ... so they drop the guards first.
  exec("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;");
  // A record removed from the middle ...
  exec("DELETE FROM audit WHERE seq = 3");
  std::tie(rc, out) = verify("verify-2.log");
  BOOST_TEST(rc == 1, out);
  BOOST_TEST(out.find("record 3 is missing") != std::string::npos, out);
  // ... a record changed before it ...
  exec("UPDATE audit SET detail = 'nothing happened' WHERE seq = 2");
  std::tie(rc, out) = verify("verify-3.log");
  BOOST_TEST(rc == 1, out);
  BOOST_TEST(out.find("record 2 was changed") != std::string::npos, out);
  // ... and records cut from the end, where the server's head gives it away.
  exec("DELETE FROM audit WHERE seq >= 2");
  std::tie(rc, out) = verify("verify-4.log");
  BOOST_TEST(rc == 1, out);
  BOOST_TEST(out.find("removed from the end") != std::string::npos, out);
  sqlite3_close(db);
}

BOOST_AUTO_TEST_CASE(runs_as_a_service_ready_watched_measured_reloaded_backed_up) {
  // Readiness and the watchdog, as systemd sees them.
  BOOST_TEST(notify->heard("READY=1"));
  BOOST_TEST(notify->heard("WATCHDOG=1"));

  // Metrics on their own listener, no session needed.
  BOOST_REQUIRE(eventually([&] { return get("/stats")["devices_online"] == 5; }));
  auto incident = incident_of("sim-0001");
  auto done = act("isolate", incident["incident_id"].get<std::string>());
  BOOST_REQUIRE_EQUAL(done["state"], "completed");
  auto [status, page] = plain_get(metrics_port, "/metrics");
  BOOST_TEST_INFO(page.substr(0, 4000));
  BOOST_REQUIRE(status == "HTTP/1.1 200 OK");
  BOOST_TEST(sample(page, "parry_devices_online") == 5);
  BOOST_TEST(
      sample(page,
             R"(parry_action_transitions_total{state="completed",type="isolate"})") >= 1);
  BOOST_TEST(
      sample(
          page,
          R"(parry_action_latency_seconds_count{phase="registered_to_final",state="completed",type="isolate"})") >=
      1);
  BOOST_TEST(
      sample(
          page,
          R"(parry_http_request_duration_seconds_count{route="GET /actions/{id}",status="200"})") >=
      1);
  BOOST_TEST(sample(page, R"(parry_bus_frames_in_total{endpoint="bus"})") > 0);
  BOOST_TEST(sample(page, "parry_incidents_stored_total") >= 1);
  BOOST_TEST(plain_get(metrics_port, "/").first == "HTTP/1.1 404 Not Found");

  // A consistent copy of the live database, checked; restore refused while running.
  auto copy = (dir / "backup.db").string();
  auto run = [&](std::vector<std::string> args, const std::string& log) {
    args.insert(args.begin(), {env_or_fail("PARRY_BIN_DIR") + "/parryd", "--data-dir",
                               (dir / "data").string()});
    child_process p{args, {}, (dir / log).string()};
    return p.wait(60s);
  };
  BOOST_TEST(run({"--backup", copy}, "backup.log") == 0);
  BOOST_TEST(log_tail((dir / "backup.log").string(), 5).find("audit chain of") !=
             std::string::npos);
  BOOST_TEST(run({"--check-backup", copy}, "check.log") == 0);
  BOOST_TEST(run({"--restore", copy}, "restore.log") == 1);
  BOOST_TEST(log_tail((dir / "restore.log").string(), 5).find("a parryd is running") !=
             std::string::npos);

  // The same from afar: parryctl admin backup streams a copy over HTTPS.
  auto remote = (dir / "remote-backup.db").string();
  auto [ctl_rc, ctl_out] = parryctl({"admin", "backup", remote}, "ctl-backup.log");
  BOOST_TEST(ctl_rc == 0, ctl_out);
  BOOST_TEST(ctl_out.find("audit records") != std::string::npos, ctl_out);
  BOOST_TEST(run({"--check-backup", remote}, "check-remote.log") == 0);
  BOOST_TEST(!std::filesystem::exists(remote + ".partial"));
  // As private as the data directory: it holds password and token hashes.
  BOOST_TEST(
      (std::filesystem::status(remote).permissions() ==
       (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write)));
  // Nothing stays behind on the server, and an existing file is never overwritten.
  BOOST_TEST(std::filesystem::is_empty(dir / "data/outgoing"));
  auto size = std::filesystem::file_size(remote);
  auto [again_rc, again_out] = parryctl({"admin", "backup", remote}, "ctl-again.log");
  BOOST_TEST(again_rc != 0);
  BOOST_TEST(again_out.find("exists") != std::string::npos, again_out);
  BOOST_TEST(std::filesystem::file_size(remote) == size);
  auto audit = get("/audit?limit=1000")["records"];
  BOOST_TEST(std::any_of(audit.begin(), audit.end(), [](const json& r) {
    return r["kind"] == "backup_taken" && r["actor"] == "admin";
  }));

  // SIGHUP: a new certificate for new connections; agents stay connected.
  auto admitted = get("/stats")["bus"]["zap_admitted"].get<uint64_t>();
  auto fresh = dir / "fresh";
  std::filesystem::create_directories(fresh);
  auto cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout " +
             (fresh / "key.pem").string() + " -out " + (fresh / "cert.pem").string() +
             " -days 2 -subj /CN=parry-reloaded -addext subjectAltName=IP:127.0.0.1 "
             ">/dev/null 2>&1";
  BOOST_REQUIRE(std::system(cmd.c_str()) == 0);
  for (auto f : {"cert.pem", "key.pem"})
    std::filesystem::copy_file(fresh / f, dir / "data/tls" / f,
                               std::filesystem::copy_options::overwrite_existing);
  // ... and a new action policy, which applies at once, and a key that waits for
  // the next restart.
  auto inc_id = incident["incident_id"].get<std::string>();
  auto available = [&] {
    return get("/incidents/" + inc_id + "/available-actions")["password_required"];
  };
  BOOST_TEST(available() == json({"start_process", "prevent_run", "quarantine",
                                  "delete_file", "terminate_process"}));
  {
    std::ofstream cfg{dir / "parryd.toml", std::ios::app};
    cfg << "workers = 1\n[actions]\npassword_required = [\"isolate\"]\n";
  }
  BOOST_REQUIRE(::kill(server->pid(), SIGHUP) == 0);
  BOOST_TEST(notify->heard("RELOADING=1"));
  BOOST_TEST(eventually([&] {
    return available() == json({"isolate", "start_process"});
  }));
  BOOST_TEST(eventually([&] {
    return log_tail(server->log_file(), 20000).find("next restart: workers") !=
           std::string::npos;
  }));
  BOOST_TEST(eventually([&] {
    client c{base_url, tls_options{(fresh / "cert.pem").string(), false}};
    try {
      return c.get("/api/v1/health").status == 200;
    } catch (const client_error&) {
      return false;
    }
  }));
  // The fixture's client trusts the new certificate from now on.
  api = std::make_unique<client>(base_url,
                                 tls_options{(fresh / "cert.pem").string(), false});
  api->set_bearer(token);
  BOOST_TEST(get("/stats")["devices_online"] == 5);
  BOOST_TEST(get("/stats")["bus"]["zap_admitted"].get<uint64_t>() == admitted);

  // The audit trail reached the SIEM receiver: the trigger, as CEF in RFC 5424
  // frames, numbered for de-duplication.
  BOOST_TEST(eventually(
      [&] {
        auto text = log_tail((dir / "siem.log").string(), 100000);
        return text.find("CEF:0|Parry|parryd|") != std::string::npos &&
               text.find("act=trigger") != std::string::npos &&
               text.find("externalId=1 ") != std::string::npos;
      },
      60s));
  BOOST_TEST(get("/stats")["siem"]["tls_failures"] == 0);
  // The exporter the reload started ships what happens after it too.
  auto head_seq = [&] { return get("/audit?limit=1")["head"]["seq"].get<int64_t>(); };
  auto before_login = head_seq();
  {
    client fresh_login{base_url, tls_options{(fresh / "cert.pem").string(), false}};
    BOOST_REQUIRE_EQUAL(fresh_login
                            .post("/api/v1/login", json{{"username", "admin"},
                                                        {"password", admin_password}})
                            .status,
                        200);
  }
  int64_t newest = 0;
  BOOST_REQUIRE(eventually([&] { return (newest = head_seq()) > before_login; }));
  BOOST_TEST(eventually(
      [&] {
        return log_tail((dir / "siem.log").string(), 100000)
                   .find("externalId=" + std::to_string(newest) + " ") !=
               std::string::npos;
      },
      60s));

  // Every log line is one JSON object; lines about an action name it as a field.
  std::ifstream in{server->log_file()};
  int json_lines = 0, about_actions = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line.front() != '{') continue;
    auto j = json::parse(line, nullptr, false);
    BOOST_TEST_INFO(line);
    BOOST_REQUIRE(!j.is_discarded());
    ++json_lines;
    if (j.contains("action") && j.contains("device")) ++about_actions;
  }
  BOOST_TEST(json_lines > 0);
  BOOST_TEST(about_actions > 0);
}

BOOST_AUTO_TEST_SUITE_END()

// The REST edge against the real binary (issue 6).
BOOST_FIXTURE_TEST_SUITE(rest_edge, system_fixture)

// Reproduction: `curl -k https://HOST/%ff` without logging in made every later request
// 503 until restart.
BOOST_AUTO_TEST_CASE(invalid_utf8_in_the_path_is_400_and_the_api_lives_on) {
  client anon{base_url, tls_options{(dir / "data/tls/cert.pem").string(), false}};
  BOOST_TEST(anon.get("/api/v1/%ff").status == 400);
  // Outside /api/ it is a console page that does not exist.
  BOOST_TEST(anon.get("/%ff").status == 404);
  BOOST_TEST(anon.get("/api/v1/devices/%ff%fe").status == 400);
  BOOST_TEST(anon.get("/api/v1/health").status == 200);
  auto stats = get("/stats");
  BOOST_TEST(stats["supervision"]["api_restarts"] == 0);
  BOOST_TEST(stats["http"]["accepted"].get<uint64_t>() > 0u);
}

// Reproduction: a comment of 4095 'a' + 'é' was cut mid-character and broke
// GET /actions/{id} and GET /audit.
BOOST_AUTO_TEST_CASE(a_long_comment_is_cut_on_a_character_boundary) {
  auto inc = incident_of("sim-0002")["incident_id"].get<std::string>();
  auto id = trigger("isolate", inc);
  auto comment = std::string(4095, 'a') + "\xc3\xa9";
  json body{{"comment", comment}};
  auto r = api->request("POST", "/api/v1/actions/" + id + "/cancel", &body);
  BOOST_TEST((r.status == 200 || r.status == 409), r.status << " " << r.raw);
  BOOST_TEST(api->get("/api/v1/actions/" + id).status == 200);
  BOOST_TEST(api->get("/api/v1/audit").status == 200);
  BOOST_TEST(api->get("/api/v1/devices").status == 200);
}

// Reproduction: five unauthenticated requests locked the administrator out for
// everyone. Throttling is per account and source address.
BOOST_AUTO_TEST_CASE(guessing_does_not_lock_the_owner_out_from_elsewhere) {
  client guesser{base_url, tls_options{(dir / "data/tls/cert.pem").string(), false}};
  for (int i = 0; i < 3; ++i)
    BOOST_TEST(
        guesser.post("/api/v1/login", json{{"username", "admin"}, {"password", "nope"}})
            .status == 401);
  auto r =
      guesser.post("/api/v1/login", json{{"username", "admin"}, {"password", "nope"}});
  BOOST_TEST(r.status == 429);
  // Same address here (loopback): the owner's bearer token still works, and tokens
  // are listed with their expiry.
  auto tokens = get("/tokens");
  BOOST_REQUIRE(!tokens["tokens"].empty());
  BOOST_TEST(tokens["tokens"][0]["expires_at"].is_string());
}

BOOST_AUTO_TEST_SUITE_END()
