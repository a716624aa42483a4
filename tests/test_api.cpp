#define BOOST_TEST_MODULE api
#include "tests/caf_boost.hpp"

// The REST edge on CAF's test coordinator: the api actor (behind its supervisor), the
// auth actor, a hasher, the real store on a temporary SQLite file, a directory and a
// mock gateway. Time moves only through advance_time().

#include <filesystem>
#include <limits>
#include <memory>

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "actors/api.hpp"
#include "actors/auth.hpp"
#include "actors/bus_keys.hpp"
#include "actors/directory.hpp"
#include "actors/error.hpp"
#include "actors/rest_bodies.hpp"
#include "actors/store.hpp"
#include "actors/supervisor.hpp"
#include "bus/codec.hpp"
#include "bus/curve_keys.hpp"
#include "bus/enroll.hpp"
#include "bus/zap.hpp"
#include "common/crypto.hpp"
#include "common/time.hpp"

using namespace parry;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr const char* admin_password = "api-test-password";

// The unused argument: CAF 0.17.6 trips UBSan on an argument-less spawn.
gateway_actor::behavior_type mock_gateway(gateway_actor::pointer, int) {
  return {
      [](atom::send, const std::string&, const std::string&, const std::string&) {},
  };
}

bus::incident_report report(const std::string& odd_type = "network_connection") {
  bus::incident_report r;
  r.report_id = "r-1";
  r.det = {"HEUR:Trojan.Test", "high", "epp"};
  r.key_event_id = "e2";
  bus::activity_event e1, e2, e3;
  e1.id = "e1";
  e1.type = "file_created";
  e1.file = {"C:\\Temp\\payload.exe", std::string(64, 'a'), 73216};
  e2.id = "e2";
  e2.type = "process_started";
  e2.parent_id = "e1";
  e2.process = {4242, 2, e1.file.path, e1.file.sha256, "payload.exe", "alice", 4100};
  e3.id = "e3";
  e3.type = odd_type;
  e3.parent_id = "e2";
  e3.detail = "tcp 10.9.9.9:443";
  r.events = {e1, e2, e3};
  return r;
}

struct fixture : test_coordinator_fixture<caf::actor_system_config> {
  std::string db_path;
  store_actor st;
  store_reader_actor reader;
  gateway_actor gw;
  directory_actor dir;
  hasher_actor hash;
  auth_actor au;
  api_actor aut;
  std::shared_ptr<supervision_stats> stats = std::make_shared<supervision_stats>();
  auth_config acfg;
  action_policy policy;
  std::shared_ptr<bus::key_registry> registry = std::make_shared<bus::key_registry>();
  std::vector<std::string> cut; ///< "device:<id>" / "integrator:<name>", as cut
  std::vector<bus::enroll_result> enrolled; ///< Answers sent to enrolling agents.
  std::string server_key = bus::generate_curve_key_pair().public_z85;
  bus_keys_actor keys;

  /// The api's collaborators, with `a` as its auth.
  api_state deps(auth_actor a) {
    api_state d;
    d.auth = std::move(a);
    d.hasher = hash;
    d.directory = dir;
    d.store = st;
    d.reader = reader;
    d.policy = policy;
    d.supervision = stats;
    d.bus_keys = keys;
    return d;
  }

  fixture() {
    db_path = (std::filesystem::temp_directory_path() /
               ("parry-api-test-" + std::to_string(::getpid()) + ".db"))
                  .string();
    std::filesystem::remove(db_path);
    acfg.pbkdf2_iterations = 1000;
    acfg.max_failures = 5;
    acfg.lockout = 15min;
    acfg.max_source_failures = 20;
    acfg.max_account_failures = 12;
    acfg.max_hashing = 16;
    st = sys.spawn(store, db_path);
    sched.run();
    reader = sys.spawn(store_reader, db_path);
    gw = sys.spawn(mock_gateway, 0);
    dir = sys.spawn(directory, device_config{}, policy, caf::timespan{5min}, st, reader,
                    gw);
    hash = sys.spawn(hasher, acfg.pbkdf2_iterations);
    au = spawn_supervised_auth(sys, stats, acfg, st, hash);
    bus_keys_config kc;
    kc.registry = registry;
    kc.server_key_z85 = server_key;
    kc.signing_key_hex = std::string(64, 'a');
    kc.reply = [this](std::string, std::string, std::string body) {
      std::string why;
      auto r = bus::decode<bus::enroll_result>(body, bus::decode_limits{}, why);
      BOOST_REQUIRE_MESSAGE(r, why);
      enrolled.push_back(*r);
    };
    kc.cut = [this](bool integrator, const std::string& name) {
      cut.push_back((integrator ? "integrator:" : "device:") + name);
    };
    keys = sys.spawn(bus_keys, kc, st);
    aut = spawn_supervised_api(sys, deps(au));
    sched.run();
    auto boot =
        self->request(au, caf::infinite, atom::bootstrap_v, std::string{admin_password});
    sched.run();
    boot.receive([](std::string&) {},
                 [](caf::error& err) { BOOST_FAIL("bootstrap: " << message_of(err)); });
  }

  ~fixture() override {
    for (auto h : {caf::actor_cast<caf::actor>(aut), caf::actor_cast<caf::actor>(au),
                   caf::actor_cast<caf::actor>(hash), caf::actor_cast<caf::actor>(dir),
                   caf::actor_cast<caf::actor>(gw), caf::actor_cast<caf::actor>(reader),
                   caf::actor_cast<caf::actor>(st)})
      caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
    sched.run();
    for (auto suffix : {"", "-wal", "-shm"})
      std::filesystem::remove(db_path + suffix);
  }

  /// Sends one request through the api; status -1 when the api did not answer.
  http_response call(http_request req) {
    if (req.source.empty()) req.source = "192.0.2.1";
    auto h = self->request(aut, caf::infinite, std::move(req));
    sched.run();
    http_response out{-1, "", {}, {}, {}};
    h.receive([&](http_response& r) { out = std::move(r); },
              [&](caf::error& err) { out.body = message_of(err); });
    return out;
  }

  http_response call(std::string method, std::string target, std::string body = "") {
    http_request r;
    r.method = std::move(method);
    r.target = std::move(target);
    r.body = std::move(body);
    return call(std::move(r));
  }

  /// A logged-in session: cookie token and CSRF token.
  struct login_session {
    std::string token;
    std::string csrf;
  };

  http_request login_request(const std::string& user, const std::string& password,
                             const std::string& source) {
    http_request r;
    r.method = "POST";
    r.target = "/api/v1/login";
    r.body = json{{"username", user}, {"password", password}}.dump();
    r.source = source;
    return r;
  }

  login_session login(const std::string& user = "admin",
                      const std::string& password = admin_password,
                      const std::string& source = "192.0.2.1") {
    http_request r;
    r.method = "POST";
    r.target = "/api/v1/login";
    r.body = json{{"username", user}, {"password", password}}.dump();
    r.source = source;
    auto resp = call(r);
    BOOST_REQUIRE_MESSAGE(resp.status == 200,
                          "login -> " << resp.status << " " << resp.body);
    BOOST_REQUIRE(!resp.set_cookies.empty());
    auto& c = resp.set_cookies[0];
    auto start = c.find('=') + 1;
    return {c.substr(start, c.find(';') - start),
            json::parse(resp.body)["csrf_token"].get<std::string>()};
  }

  /// A request of session `s` (cookie and CSRF token).
  static http_request request_as(const login_session& s, std::string method,
                                 std::string target, std::string body = "") {
    http_request r;
    r.method = std::move(method);
    r.target = std::move(target);
    r.body = std::move(body);
    r.session = s.token;
    r.csrf = s.csrf;
    return r;
  }

  http_response as(const login_session& s, std::string method, std::string target,
                   std::string body = "") {
    return call(request_as(s, std::move(method), std::move(target), std::move(body)));
  }

  /// Triggers an isolate of the incident's detection; answers the action id.
  std::string isolate_on(const login_session& s, const std::string& inc) {
    auto r = as(s, "POST", "/api/v1/actions",
                json{{"type", "isolate"},
                     {"incident_id", inc},
                     {"target", {{"kind", "detection"}}}}
                    .dump());
    BOOST_REQUIRE_MESSAGE(r.status == 202, r.status << " " << r.body);
    return json::parse(r.body)["action"]["action_id"].get<std::string>();
  }

  std::string incident_on(const std::string& dev, const bus::incident_report& rep) {
    bus::hello h;
    h.hostname = "ws-" + dev;
    h.os = "Windows 10";
    caf::anon_send(dir, atom::hello_v, dev, h, hello_ticket{});
    sched.run();
    caf::anon_send(dir, atom::incident_v, dev, rep, uint64_t{0});
    sched.run();
    auto q = self->request(st, caf::infinite, atom::query_v, atom::incidents_v,
                           page_request{});
    sched.run();
    std::string id;
    q.receive(
        [&](std::string& body) {
          auto j = json::parse(body);
          BOOST_REQUIRE(!j["incidents"].empty());
          id = j["incidents"][0]["incident_id"].get<std::string>();
        },
        [](caf::error& err) { BOOST_FAIL(message_of(err)); });
    return id;
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(utf8_edge, fixture)

// Reproduction: `curl -k https://HOST/%ff` without logging in ended the api for good.
BOOST_AUTO_TEST_CASE(invalid_utf8_in_the_path_is_refused_and_the_api_lives_on) {
  auto r = call("GET", "/%ff");
  BOOST_TEST(r.status == 400);
  BOOST_TEST(json::parse(r.body)["error"]["code"] == "bad_request");
  r = call("GET", "/api/v1/devices/%ff%fe");
  BOOST_TEST(r.status == 400);
  r = call("GET", "/api/v1/actions?state=%c3");
  BOOST_TEST(r.status == 400);
  BOOST_TEST(call("GET", "/api/v1/health").status == 200);
  BOOST_TEST(stats->api_restarts.load() == 0u);
}

BOOST_AUTO_TEST_CASE(invalid_utf8_in_headers_is_refused) {
  http_request r;
  r.method = "GET";
  r.target = "/api/v1/devices";
  r.bearer = "\xff\xfe";
  BOOST_TEST(call(r).status == 400);
  r.bearer.clear();
  r.idempotency_key = "k\xc3";
  BOOST_TEST(call(r).status == 400);
  BOOST_TEST(call("GET", "/api/v1/health").status == 200);
}

// Reproduction: an event `type` of "\xff" killed the api from available-actions.
BOOST_AUTO_TEST_CASE(invalid_utf8_in_a_stored_event_type_does_not_end_the_api) {
  auto s = login();
  auto inc = incident_on("dev-1", report("\xff"));
  auto r = as(s, "GET", "/api/v1/incidents/" + inc + "/available-actions");
  BOOST_TEST(r.status == 200);
  BOOST_TEST(json::parse(r.body).is_object());
  BOOST_TEST(as(s, "GET", "/api/v1/devices").status == 200);
  BOOST_TEST(stats->api_restarts.load() == 0u);
}

// Reproduction: a comment of 4095 'a' + 'é' was cut mid-character and broke
// GET /actions/{id} and GET /audit.
BOOST_AUTO_TEST_CASE(long_comments_are_cut_on_character_boundaries) {
  auto s = login();
  auto inc = incident_on("dev-1", report());
  auto id = isolate_on(s, inc);
  auto comment = std::string(4095, 'a') + "\xc3\xa9";
  auto r = as(s, "POST", "/api/v1/actions/" + id + "/cancel",
              json{{"comment", comment}}.dump());
  BOOST_REQUIRE_MESSAGE(r.status == 200, r.status << " " << r.body);
  r = as(s, "GET", "/api/v1/actions/" + id);
  BOOST_TEST(r.status == 200);
  BOOST_TEST(r.body.find("\xef\xbf\xbd") == std::string::npos); // no replacement mark
  r = as(s, "GET", "/api/v1/audit");
  BOOST_TEST(r.status == 200);
  BOOST_TEST(as(s, "GET", "/api/v1/devices").status == 200);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

/// The request body of a quarantine of the detection on `inc`.
std::string quarantine(const std::string& inc, const std::string& password) {
  return json{{"type", "quarantine"},
              {"incident_id", inc},
              {"target", {{"kind", "detection"}}},
              {"password", password}}
      .dump();
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(lockout, fixture)

// Reproduction: 12 wrong passwords and one right one sent at once were all hashed, the
// right one logged in and cleared the lock.
BOOST_AUTO_TEST_CASE(concurrent_guesses_are_reserved_before_hashing) {
  std::vector<caf::response_handle<caf::blocking_actor,
                                   caf::detail::type_list<http_response>, true>>
      handles;
  std::vector<int> statuses;
  for (int i = 0; i < 12; ++i)
    handles.push_back(self->request(
        aut, caf::infinite,
        login_request("admin", "wrong-password-" + std::to_string(i), "198.51.100.7")));
  handles.push_back(self->request(
      aut, caf::infinite, login_request("admin", admin_password, "198.51.100.7")));
  sched.run();
  for (auto& h : handles)
    h.receive([&](http_response& r) { statuses.push_back(r.status); },
              [&](caf::error&) { statuses.push_back(-1); });
  BOOST_REQUIRE_EQUAL(statuses.size(), 13u);
  // Only max_failures checks were let through to the hasher; the rest, the right
  // password included, were refused before hashing.
  BOOST_TEST(std::count(statuses.begin(), statuses.end(), 401) == 5);
  BOOST_TEST(std::count(statuses.begin(), statuses.end(), 429) == 8);
  BOOST_TEST(statuses.back() == 429);
  // The lock stands: the right password does not clear it...
  auto r = call(login_request("admin", admin_password, "198.51.100.7"));
  BOOST_TEST(r.status == 429);
  BOOST_TEST(r.headers.count("Retry-After") == 1u);
  // ...until the lockout has passed.
  sched.advance_time(16min);
  sched.run();
  BOOST_TEST(call(login_request("admin", admin_password, "198.51.100.7")).status == 200);
}

// Reproduction: five unauthenticated requests locked any account for everyone, and
// the locked user's existing session got 429 on every password-gated action.
BOOST_AUTO_TEST_CASE(guessing_from_one_source_does_not_lock_out_others) {
  auto s = login("admin", admin_password, "192.0.2.10");
  auto inc = incident_on("dev-1", report());
  for (int i = 0; i < 5; ++i)
    BOOST_TEST(call(login_request("admin", "guess-" + std::to_string(i), "203.0.113.66"))
                   .status == 401);
  BOOST_TEST(call(login_request("admin", admin_password, "203.0.113.66")).status == 429);
  // The owner logs in from elsewhere, and the open session confirms its password.
  BOOST_TEST(call(login_request("admin", admin_password, "192.0.2.11")).status == 200);
  auto r = as(s, "POST", "/api/v1/actions", quarantine(inc, admin_password));
  BOOST_TEST(r.status == 202, r.status << " " << r.body);
  // The lock lasts its window and then goes.
  sched.advance_time(16min);
  sched.run();
  BOOST_TEST(call(login_request("admin", admin_password, "203.0.113.66")).status == 200);
}

BOOST_AUTO_TEST_CASE(one_source_guessing_many_accounts_is_throttled) {
  // Four guesses at each of five names: no account+source key reaches 5, but the
  // source reaches max_source_failures (20).
  for (int u = 0; u < 5; ++u)
    for (int i = 0; i < 4; ++i)
      BOOST_TEST(
          call(login_request("user" + std::to_string(u), "guess-password", "203.0.113.9"))
              .status == 401);
  auto r = call(login_request("admin", admin_password, "203.0.113.9"));
  BOOST_TEST(r.status == 429);
  BOOST_TEST(call(login_request("admin", admin_password, "203.0.113.10")).status == 200);
}

BOOST_AUTO_TEST_CASE(a_session_that_failed_its_confirmations_is_locked_alone) {
  auto inc = incident_on("dev-1", report());
  auto s1 = login("admin", admin_password, "192.0.2.20");
  auto s2 = login("admin", admin_password, "192.0.2.21");
  for (int i = 0; i < 5; ++i)
    BOOST_TEST(
        as(s1, "POST", "/api/v1/actions", quarantine(inc, "wrong-password")).status ==
        401);
  auto r = as(s1, "POST", "/api/v1/actions", quarantine(inc, admin_password));
  BOOST_TEST(r.status == 429);
  BOOST_TEST(r.headers.count("Retry-After") == 1u);
  r = as(s2, "POST", "/api/v1/actions", quarantine(inc, admin_password));
  BOOST_TEST(r.status == 202, r.status << " " << r.body);
}

BOOST_AUTO_TEST_CASE(distributed_guessing_locks_the_account_and_users_show_it) {
  auto s = login("admin", admin_password, "192.0.2.30");
  // Twelve sources, one guess each: max_account_failures (12) is reached.
  for (int i = 0; i < 12; ++i)
    call(
        login_request("admin", "guess-password", "203.0.113." + std::to_string(100 + i)));
  auto r = as(s, "GET", "/api/v1/users");
  BOOST_REQUIRE_EQUAL(r.status, 200);
  auto users = json::parse(r.body)["users"];
  BOOST_REQUIRE(!users.empty());
  BOOST_TEST(users[0]["username"] == "admin");
  BOOST_TEST(users[0]["locked"] == true);
  // A locked account mints no bearer token, whichever session asks.
  r = as(s, "POST", "/api/v1/tokens", json{{"name", "ci"}}.dump());
  BOOST_TEST(r.status == 429);
  sched.advance_time(16min);
  sched.run();
  r = as(s, "GET", "/api/v1/users");
  BOOST_TEST(json::parse(r.body)["users"][0]["locked"] == false);
}

BOOST_AUTO_TEST_CASE(a_full_hasher_queue_answers_429_with_retry_after) {
  std::vector<caf::response_handle<caf::blocking_actor,
                                   caf::detail::type_list<http_response>, true>>
      handles;
  for (int i = 0; i < 20; ++i)
    handles.push_back(
        self->request(aut, caf::infinite,
                      login_request("nobody" + std::to_string(i), "some-password",
                                    "198.51.100." + std::to_string(i))));
  sched.run();
  int busy = 0;
  for (auto& h : handles)
    h.receive(
        [&](http_response& r) {
          if (r.status == 429) {
            ++busy;
            BOOST_TEST(r.headers.count("Retry-After") == 1u);
          }
        },
        [&](caf::error&) {});
  BOOST_TEST(busy == 4);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(routing, fixture)

BOOST_AUTO_TEST_CASE(unknown_routes_are_404_and_wrong_methods_405) {
  auto s = login();
  BOOST_TEST(as(s, "GET", "/api/v1/nothing").status == 404);
  BOOST_TEST(as(s, "GET", "/api/v1/devices/dev-1/extra").status == 404);
  BOOST_TEST(call("GET", "/elsewhere").status == 404);
  auto r = as(s, "DELETE", "/api/v1/devices");
  BOOST_TEST(r.status == 405);
  BOOST_TEST(r.headers["Allow"] == "GET");
  r = as(s, "PUT", "/api/v1/actions");
  BOOST_TEST(r.status == 405);
  BOOST_TEST(r.headers["Allow"] == "GET, POST");
  BOOST_TEST(json::parse(r.body)["error"]["code"] == "method_not_allowed");
  BOOST_TEST(as(s, "GET", "/api/v1/devices/bad%20id").status == 404);
}

BOOST_AUTO_TEST_CASE(roles_are_checked_per_route) {
  auto s = login();
  BOOST_TEST(call("GET", "/api/v1/devices").status == 401);
  BOOST_TEST(call("GET", "/api/v1/health").status == 200);
  auto r = as(
      s, "POST", "/api/v1/users",
      json{{"username", "olga"}, {"password", "operator-password"}, {"role", "operator"}}
          .dump());
  BOOST_REQUIRE_EQUAL(r.status, 201);
  auto op = login("olga", "operator-password");
  BOOST_TEST(as(op, "GET", "/api/v1/devices").status == 200);
  BOOST_TEST(as(op, "GET", "/api/v1/users").status == 403);
  BOOST_TEST(as(op, "GET", "/api/v1/audit").status == 403);
  BOOST_TEST(as(op, "POST", "/api/v1/actions", "{}").status == 403);
  BOOST_TEST(as(op, "POST", "/api/v1/actions/bulk", "{}").status == 403);
  BOOST_TEST(as(op, "POST", "/api/v1/actions/a-1/cancel", "{}").status == 403);
  // CSRF: a session's non-GET without the token is refused.
  auto no_csrf = op;
  no_csrf.csrf = "wrong";
  BOOST_TEST(as(no_csrf, "POST", "/api/v1/logout").status == 403);
  BOOST_TEST(as(op, "POST", "/api/v1/logout").status == 200);
  BOOST_TEST(as(op, "GET", "/api/v1/devices").status == 401);
}

// One request registers an action per target, each with its own outcome; a body
// that is wrong anywhere registers nothing.
BOOST_AUTO_TEST_CASE(bulk_actions_register_one_action_per_target) {
  auto s = login();
  auto inc1 = incident_on("dev-1", report());
  auto inc2 = incident_on("dev-2", report());
  BOOST_REQUIRE(inc1 != inc2);
  auto target = [](const std::string& inc) {
    return json{{"incident_id", inc}, {"target", {{"kind", "detection"}}}};
  };
  auto bulk = [&](json body) {
    return as(s, "POST", "/api/v1/actions/bulk", body.dump());
  };
  auto actions = [&] {
    return json::parse(as(s, "GET", "/api/v1/actions").body)["actions"].size();
  };
  auto message = [](const http_response& r) {
    return json::parse(r.body)["error"]["message"].get<std::string>();
  };
  // Refused whole: no targets, too many, one malformed, an unknown type, a missing
  // password, an Idempotency-Key.
  BOOST_TEST(bulk(json{{"type", "isolate"}, {"targets", json::array()}}).status == 400);
  json many = json::array();
  for (std::size_t i = 0; i <= rest::max_bulk_targets; ++i)
    many.push_back(target(inc1));
  BOOST_TEST(bulk(json{{"type", "isolate"}, {"targets", many}}).status == 400);
  auto bad =
      json{{"type", "isolate"},
           {"targets",
            {target(inc1), {{"incident_id", inc2}, {"target", {{"kind", "galaxy"}}}}}}};
  auto r = bulk(bad);
  BOOST_TEST(r.status == 400);
  BOOST_TEST(message(r).rfind("targets[1]: target.kind must be one of", 0) == 0,
             message(r));
  BOOST_TEST(bulk(json{{"type", "nuke"}, {"targets", {target(inc1)}}}).status == 400);
  BOOST_TEST(bulk(json{{"type", "quarantine"}, {"targets", {target(inc1), target(inc2)}}})
                 .status == 401);
  http_request keyed;
  keyed.method = "POST";
  keyed.target = "/api/v1/actions/bulk";
  keyed.body = json{{"type", "isolate"}, {"targets", {target(inc1)}}}.dump();
  keyed.session = s.token;
  keyed.csrf = s.csrf;
  keyed.idempotency_key = "k-1";
  BOOST_TEST(call(keyed).status == 400);
  BOOST_TEST(actions() == 0u);
  // Two incidents the server knows and one it does not: two actions, one refusal,
  // in the order given.
  r = bulk(json{{"type", "isolate"},
                {"comment", "contain the outbreak"},
                {"targets", {target(inc1), target("inc-nowhere"), target(inc2)}}});
  BOOST_REQUIRE_MESSAGE(r.status == 202, r.status << " " << r.body);
  auto out = json::parse(r.body);
  BOOST_TEST(out["registered"] == 2);
  BOOST_TEST(out["refused"] == 1);
  BOOST_REQUIRE(out["results"].size() == 3u);
  BOOST_TEST(out["results"][0]["incident_id"] == inc1);
  BOOST_TEST(out["results"][0]["action"]["type"] == "isolate");
  BOOST_TEST(out["results"][0]["action"]["device_id"] == "dev-1");
  BOOST_TEST(out["results"][0]["action"]["comment"] == "contain the outbreak");
  BOOST_TEST(out["results"][1]["status"] == 404);
  BOOST_TEST(out["results"][1]["error"]["code"] == "not_found");
  BOOST_TEST(!out["results"][1].contains("action"));
  BOOST_TEST(out["results"][2]["action"]["device_id"] == "dev-2");
  BOOST_TEST(out["results"][0]["action"]["action_id"] !=
             out["results"][2]["action"]["action_id"]);
  BOOST_TEST(actions() == 2u);
  // Each is its own action in the audit trail; the refusal is there too.
  auto audit = json::parse(as(s, "GET", "/api/v1/audit").body)["records"];
  int refused = 0;
  for (auto& rec : audit)
    refused +=
        rec["kind"] == "trigger_refused" && rec["target"] == "isolate on inc-nowhere";
  BOOST_TEST(refused == 1);
}

// A canary: the first targets alone, the rest only once each of their actions
// completed; a canary refused, failed or not final in time leaves the rest alone.
BOOST_AUTO_TEST_CASE(a_bulk_canary_acts_on_the_rest_only_once_it_completed) {
  auto s = login();
  std::vector<std::string> inc;
  for (int i = 0; i < 6; ++i)
    inc.push_back(incident_on("dev-" + std::to_string(i), report()));
  auto target = [](const std::string& id) {
    return json{{"incident_id", id}, {"target", {{"kind", "detection"}}}};
  };
  auto body = [&](std::vector<std::string> ids, json canary) {
    json t = json::array();
    for (auto& id : ids)
      t.push_back(target(id));
    return json{{"type", "isolate"}, {"targets", t}, {"canary", canary}}.dump();
  };
  // Sent, not yet answered: the canary waits for what the test does next.
  auto start = [&](std::string b) {
    auto r = request_as(s, "POST", "/api/v1/actions/bulk", std::move(b));
    r.source = "192.0.2.1";
    auto h = self->request(aut, caf::infinite, std::move(r));
    sched.run();
    return h;
  };
  auto answer_of = [&](auto& h) {
    json out;
    h.receive(
        [&](http_response& r) {
          BOOST_REQUIRE_MESSAGE(r.status == 202, r.status << " " << r.body);
          out = json::parse(r.body);
        },
        [](caf::error& err) { BOOST_FAIL(message_of(err)); });
    return out;
  };
  auto actions_of = [&](const std::string& incident) {
    auto r = as(s, "GET", "/api/v1/actions?incident_id=" + incident);
    BOOST_REQUIRE_EQUAL(r.status, 200);
    auto list = json::parse(r.body)["actions"];
    BOOST_REQUIRE(list.is_array());
    return list;
  };
  auto result = [&](const std::string& dev, const std::string& id, bool ok) {
    caf::anon_send(dir, atom::result_v, dev,
                   bus::action_result{id, ok, ok ? "" : "no such adapter", {}, 0});
    sched.run();
  };
  // A canary that is no canary, or waits too long: 400, nothing registered.
  for (auto bad :
       {json{{"count", 0}}, json{{"count", 3}}, json{{"count", -1}}, json{{"count", 1.0}},
        json{{"count", "1"}}, json{{"count", true}},
        json{{"count", std::numeric_limits<uint64_t>::max()}}, json::object(),
        json{{"count", 1}, {"wait_ms", 60000}}, json{{"count", 1}, {"wait_ms", 50}},
        json{{"count", 1}, {"wait_ms", 1.5}}, json(7)}) {
    auto r = as(s, "POST", "/api/v1/actions/bulk", body({inc[0], inc[1], inc[2]}, bad));
    BOOST_TEST(r.status == 400, bad.dump());
  }
  // A single target leaves nothing to hold back.
  BOOST_TEST(
      as(s, "POST", "/api/v1/actions/bulk", body({inc[0]}, {{"count", 1}})).status ==
      400);
  BOOST_TEST(actions_of(inc[0]).empty());

  // It completes: the rest is registered.
  auto h = start(body({inc[0], inc[1], inc[2]}, {{"count", 1}, {"wait_ms", 2000}}));
  auto canary = actions_of(inc[0]);
  BOOST_REQUIRE_EQUAL(canary.size(), 1u);
  BOOST_TEST(actions_of(inc[1]).empty());
  result("dev-0", canary[0]["action_id"].get<std::string>(), true);
  sched.advance_time(std::chrono::milliseconds{100});
  sched.run();
  auto out = answer_of(h);
  BOOST_TEST(out["registered"] == 3);
  BOOST_TEST(out["refused"] == 0);
  BOOST_TEST(out["canary"] == json({{"count", 1}, {"completed", 1}, {"passed", true}}));
  BOOST_TEST(out["results"][1]["action"]["incident_id"] == inc[1]);
  BOOST_TEST(actions_of(inc[2]).size() == 1u);

  // It fails on its device: the rest is refused, 409 canary_failed, and audited.
  h = start(body({inc[3], inc[4]}, {{"count", 1}}));
  auto failing = actions_of(inc[3]);
  BOOST_REQUIRE_EQUAL(failing.size(), 1u);
  auto failing_id = failing[0]["action_id"].get<std::string>();
  result("dev-3", failing_id, false);
  sched.advance_time(std::chrono::milliseconds{100});
  sched.run();
  out = answer_of(h);
  BOOST_TEST(out["registered"] == 1);
  BOOST_TEST(out["refused"] == 1);
  BOOST_TEST(out["canary"]["passed"] == false);
  BOOST_TEST(out["results"][1]["status"] == 409);
  BOOST_TEST(out["results"][1]["error"]["code"] == "canary_failed");
  BOOST_TEST(out["results"][1]["error"]["message"] ==
             "not acted on: canary action " + failing_id + " ended failed");
  BOOST_TEST(actions_of(inc[4]).empty());
  auto audit = json::parse(as(s, "GET", "/api/v1/audit").body)["records"];
  int refused = 0;
  for (auto& rec : audit)
    refused +=
        rec["kind"] == "trigger_refused" && rec["target"] == "isolate on " + inc[4];
  BOOST_TEST(refused == 1);

  // Its device never answers: after wait_ms the rest is refused.
  h = start(body({inc[5], inc[4]}, {{"count", 1}, {"wait_ms", 500}}));
  for (int i = 0; i < 6; ++i) {
    sched.advance_time(std::chrono::milliseconds{100});
    sched.run();
  }
  out = answer_of(h);
  BOOST_TEST(out["registered"] == 1);
  BOOST_TEST(out["canary"] == json({{"count", 1}, {"completed", 0}, {"passed", false}}));
  auto msg = out["results"][1]["error"]["message"].get<std::string>();
  BOOST_TEST(msg.find("after 500 ms") != std::string::npos, msg);
  BOOST_TEST(actions_of(inc[4]).empty());

  // A canary target that is refused: nothing more is registered.
  out = json::parse(
      as(s, "POST", "/api/v1/actions/bulk", body({"inc-nowhere", inc[4]}, {{"count", 1}}))
          .body);
  BOOST_TEST(out["registered"] == 0);
  BOOST_TEST(out["results"][0]["status"] == 404);
  BOOST_TEST(out["results"][1]["error"]["code"] == "canary_failed");
  BOOST_TEST(actions_of(inc[4]).empty());
}

// The words of the domain are parsed at the REST edge: an unknown action type, target
// kind or role is 400 naming the legal values, and nothing is registered or stored.
BOOST_AUTO_TEST_CASE(unknown_words_at_the_rest_edge_are_400_naming_the_legal_values) {
  auto s = login();
  auto inc = incident_on("dev-1", report());
  auto post = [&](const std::string& type, const std::string& kind) {
    return as(
        s, "POST", "/api/v1/actions",
        json{{"type", type}, {"incident_id", inc}, {"target", {{"kind", kind}}}}.dump());
  };
  auto message = [](const http_response& r) {
    return json::parse(r.body)["error"]["message"].get<std::string>();
  };
  auto r = post("nuke", "detection");
  BOOST_TEST(r.status == 400);
  BOOST_TEST(message(r) ==
             "unknown action type 'nuke'; legal values are " + legal_action_types());
  r = post("isolate", "galaxy");
  BOOST_TEST(r.status == 400);
  BOOST_TEST(message(r) ==
             "target.kind must be one of " + legal_target_kinds() + ", not 'galaxy'");
  BOOST_TEST(json::parse(as(s, "GET", "/api/v1/actions").body)["actions"].empty());
  // A refused trigger is in the audit trail, as one refused further in would be.
  auto audit = json::parse(as(s, "GET", "/api/v1/audit").body)["records"];
  int refused = 0;
  for (auto& rec : audit)
    refused += rec["kind"] == "trigger_refused" && rec["target"] == "nuke on " + inc;
  BOOST_TEST(refused == 1);
  r = as(s, "POST", "/api/v1/users",
         json{{"username", "olga"}, {"password", "operator-password"}, {"role", "root"}}
             .dump());
  BOOST_TEST(r.status == 400);
  BOOST_TEST(message(r) == "role must be one of " + legal_user_roles());
  r = as(s, "PATCH", "/api/v1/users/admin", json{{"role", "root"}}.dump());
  BOOST_TEST(r.status == 400);
  BOOST_TEST(message(r) == "role must be one of " + legal_user_roles());
  auto users = json::parse(as(s, "GET", "/api/v1/users").body)["users"];
  BOOST_REQUIRE(users.size() == 1u);
  BOOST_TEST(users[0]["role"] == "administrator");
}

// A row the store cannot read (a word from a newer server, or edited by hand) is a
// storage error: 503 as docs/rest-api.md says, the api lives on, the list still works.
BOOST_AUTO_TEST_CASE(an_unreadable_stored_action_is_503_storage) {
  auto s = login();
  auto inc = incident_on("dev-1", report());
  auto id = isolate_on(s, inc);
  sqlite3* db = nullptr;
  BOOST_REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  auto sql = "UPDATE actions SET type = 'nuke' WHERE action_id = '" + id + "'";
  BOOST_REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  auto r = as(s, "GET", "/api/v1/actions/" + id);
  BOOST_TEST(r.status == 503);
  BOOST_TEST(json::parse(r.body)["error"]["code"] == "storage");
  BOOST_TEST(as(s, "GET", "/api/v1/actions").status == 200);
  BOOST_TEST(as(s, "GET", "/api/v1/health").status == 200);
}

BOOST_AUTO_TEST_CASE(tokens_expire_and_are_listed_and_revoked) {
  auto s = login();
  auto r =
      as(s, "POST", "/api/v1/tokens", json{{"name", "ci"}, {"expires_in", 3600}}.dump());
  BOOST_REQUIRE_MESSAGE(r.status == 201, r.body);
  auto created = json::parse(r.body);
  auto token = created["token"].get<std::string>();
  auto id = created["token_id"].get<std::string>();
  BOOST_TEST(created["name"] == "ci");
  BOOST_TEST(!created["expires_at"].get<std::string>().empty());
  BOOST_TEST(
      as(s, "POST", "/api/v1/tokens", json{{"expires_in", 10LL * 365 * 86400}}.dump())
          .status == 400);
  http_request viaTok;
  viaTok.method = "GET";
  viaTok.target = "/api/v1/tokens";
  viaTok.bearer = token;
  r = call(viaTok);
  BOOST_REQUIRE_EQUAL(r.status, 200);
  auto list = json::parse(r.body)["tokens"];
  BOOST_REQUIRE_EQUAL(list.size(), 1u);
  BOOST_TEST(list[0]["token_id"] == id);
  BOOST_TEST(!list[0].contains("token"));
  BOOST_TEST(as(s, "DELETE", "/api/v1/tokens/" + id).status == 200);
  sched.advance_time(2min); // past the token cache
  sched.run();
  BOOST_TEST(call(viaTok).status == 401);
  BOOST_TEST(as(s, "DELETE", "/api/v1/tokens/" + id).status == 404);
  // A token whose expiry has passed is refused.
  token_record old{"0123456789abcdef", "old", "admin", now_us() - 2000000,
                   now_us() - 1000000};
  auto put =
      self->request(st, caf::infinite, atom::token_v, sha256_hex("old-token"), old);
  sched.run();
  put.receive([](atom::ok) {}, [](caf::error& err) { BOOST_FAIL(message_of(err)); });
  viaTok.bearer = "old-token";
  BOOST_TEST(call(viaTok).status == 401);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

/// A hasher that holds every verification until told to answer.
struct slow_hasher_state {
  std::vector<caf::typed_response_promise<bool>> held;
};

/// The hasher's interface plus a message that releases what it holds.
using slow_hasher_actor = hasher_actor::extend<caf::reacts_to<atom::flush>>;

slow_hasher_actor::behavior_type
slow_hasher(slow_hasher_actor::stateful_pointer<slow_hasher_state> self, int) {
  return {
      [self](atom::flush) {
        for (auto& rp : self->state.held)
          rp.deliver(true);
        self->state.held.clear();
      },
      [self](atom::verify, const std::string&, const user_record&) {
        auto rp = self->make_response_promise<bool>();
        self->state.held.push_back(rp);
        return rp;
      },
      [](atom::hash, const std::string&, user_record u) { return u; },
  };
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(deadlines, fixture)

// Reproduction: a POST /actions whose password check waited behind a full hasher got
// 503 and was registered afterwards anyway.
BOOST_AUTO_TEST_CASE(an_action_whose_caller_timed_out_is_not_registered) {
  auto s = login();
  auto inc = incident_on("dev-1", report());
  auto slow = sys.spawn(slow_hasher, 0);
  auto slow_auth = sys.spawn(auth, acfg, st, caf::actor_cast<hasher_actor>(slow));
  auto direct = sys.spawn(api, deps(slow_auth));
  sched.run();
  deref<api_actor::stateful_base<api_state>>(direct).state.deadline = 5s;
  http_request req;
  req.method = "POST";
  req.target = "/api/v1/actions";
  req.body = quarantine(inc, admin_password);
  req.source = "192.0.2.1";
  // The session lives in the fixture's auth; this auth needs its own bearer token.
  auto tok = as(s, "POST", "/api/v1/tokens", "{}");
  BOOST_REQUIRE_EQUAL(tok.status, 201);
  req.bearer = json::parse(tok.body)["token"].get<std::string>();
  auto h = self->request(direct, caf::infinite, req);
  sched.run();
  sched.advance_time(6s);
  sched.run();
  // The hasher answers late: right password.
  BOOST_REQUIRE_EQUAL(
      deref<slow_hasher_actor::stateful_base<slow_hasher_state>>(slow).state.held.size(),
      1u);
  caf::anon_send(slow, atom::flush_v);
  sched.run();
  int status = 0;
  h.receive([&](http_response& r) { status = r.status; }, [&](caf::error&) {});
  BOOST_TEST(status == 503);
  auto list = as(s, "GET", "/api/v1/actions");
  BOOST_TEST(json::parse(list.body)["actions"].empty());
  for (auto a :
       {caf::actor_cast<caf::actor>(direct), caf::actor_cast<caf::actor>(slow_auth),
        caf::actor_cast<caf::actor>(slow)})
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  sched.run();
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(bus_keys_rest, fixture)

BOOST_AUTO_TEST_CASE(enrollment_tokens_admit_keys_once_and_revocation_cuts) {
  auto s = login();
  BOOST_TEST(as(s, "POST", "/api/v1/enrollment-tokens", json{{"ttl_seconds", 0}}.dump())
                 .status == 400);
  auto r = as(s, "POST", "/api/v1/enrollment-tokens",
              json{{"ttl_seconds", 3600}, {"uses", 2}}.dump());
  BOOST_REQUIRE_MESSAGE(r.status == 201, r.body);
  auto created = json::parse(r.body);
  auto token = bus::parse_token(created["token"].get<std::string>());
  BOOST_REQUIRE(token);
  BOOST_TEST(token->server_key_z85 == server_key);
  BOOST_TEST(created["uses_left"] == 2);
  r = as(s, "GET", "/api/v1/enrollment-tokens");
  auto listed = json::parse(r.body)["enrollment_tokens"];
  BOOST_REQUIRE_EQUAL(listed.size(), 1u);
  BOOST_TEST(!listed[0].contains("token"));

  auto hash = bus::token_hash(*token);
  auto k1 = bus::generate_curve_key_pair(), k2 = bus::generate_curve_key_pair(),
       k3 = bus::generate_curve_key_pair();
  auto enroll = [&](const std::string& dev, const bus::curve_key_pair& k,
                    const std::string& h) {
    caf::anon_send(keys, atom::enroll_v, dev, k.public_z85, h, uint64_t{1});
    sched.run();
    BOOST_REQUIRE(!enrolled.empty());
    return enrolled.back();
  };
  auto e = enroll("dev-1", k1, hash);
  BOOST_TEST(e.ok);
  BOOST_TEST(e.server_key == server_key);
  BOOST_TEST(registry->find(bus::z85_to_raw(k1.public_z85)).has_value());
  // Another key for an enrolled device is refused; the same key again uses nothing.
  BOOST_TEST(enroll("dev-1", k2, hash).reason == "already_enrolled");
  BOOST_TEST(enroll("dev-1", k1, hash).ok);
  BOOST_TEST(enroll("dev-2", k2, hash).ok);
  // Both uses are spent.
  BOOST_TEST(enroll("dev-3", k3, hash).reason == "bad_token");
  BOOST_TEST(!registry->find(bus::z85_to_raw(k3.public_z85)).has_value());
  // An expired token.
  auto old = bus::make_enrollment_token(server_key);
  auto put = self->request(st, caf::infinite, atom::put_v, bus::token_hash(old),
                           enrollment_token_record{"00000000000000aa", "admin",
                                                   now_us() - 2000, now_us() - 1000, 1});
  sched.run();
  put.receive([](atom::ok) {}, [](caf::error& err) { BOOST_FAIL(message_of(err)); });
  BOOST_TEST(enroll("dev-3", k3, bus::token_hash(old)).reason == "token_expired");

  // Revoking a device removes its key from the registry and cuts its connection.
  BOOST_TEST(as(s, "DELETE", "/api/v1/devices/dev-1/key").status == 200);
  BOOST_TEST(!registry->find(bus::z85_to_raw(k1.public_z85)).has_value());
  BOOST_REQUIRE_EQUAL(cut.size(), 1u);
  BOOST_TEST(cut[0] == "device:dev-1");
  BOOST_TEST(as(s, "DELETE", "/api/v1/devices/dev-1/key").status == 404);

  // Integrators: registered with a role, listed, revoked.
  BOOST_TEST(
      as(s, "POST", "/api/v1/integrators",
         json{{"name", "soar"}, {"role", "security_officer"}, {"public_key", "x"}}.dump())
          .status == 400);
  auto ik = bus::generate_curve_key_pair();
  r = as(
      s, "POST", "/api/v1/integrators",
      json{{"name", "soar"}, {"role", "security_officer"}, {"public_key", ik.public_z85}}
          .dump());
  BOOST_REQUIRE_MESSAGE(r.status == 201, r.body);
  auto who = registry->find(bus::z85_to_raw(ik.public_z85));
  BOOST_REQUIRE(who.has_value());
  BOOST_TEST(who->user_id() == "integrator:soar");
  BOOST_TEST(who->role == "security_officer");
  r = as(s, "GET", "/api/v1/bus-keys");
  auto keys_listed = json::parse(r.body)["bus_keys"];
  BOOST_TEST(keys_listed.size() == 2u); // dev-2 and soar
  BOOST_TEST(as(s, "DELETE", "/api/v1/integrators/soar").status == 200);
  BOOST_TEST(!registry->find(bus::z85_to_raw(ik.public_z85)).has_value());
  BOOST_TEST(cut.back() == "integrator:soar");
}

BOOST_AUTO_TEST_SUITE_END()

// What the web console needs beyond the rest: who is signed in, the event stream's
// admission, filtered incidents and disabled accounts.
BOOST_FIXTURE_TEST_SUITE(console, fixture)

BOOST_AUTO_TEST_CASE(the_session_tells_its_user_csrf_token_and_policy) {
  BOOST_TEST(call("GET", "/api/v1/session").status == 401);
  auto s = login();
  auto r = as(s, "GET", "/api/v1/session");
  BOOST_REQUIRE_EQUAL(r.status, 200);
  auto j = json::parse(r.body);
  BOOST_TEST(j["user"]["username"] == "admin");
  BOOST_TEST(j["user"]["role"] == "administrator");
  BOOST_TEST(j["csrf_token"] == s.csrf);
  BOOST_TEST(j["idle_timeout_s"] == 1800);
  auto pw = j["password_required"].get<std::vector<std::string>>();
  BOOST_TEST((std::find(pw.begin(), pw.end(), "start_process") != pw.end()));
  BOOST_TEST((std::find(pw.begin(), pw.end(), "isolate") == pw.end()));
}

BOOST_AUTO_TEST_CASE(events_admits_upgrades_only_and_passive_checks_do_not_renew) {
  auto s = login();
  // Without the upgrade headers it is no WebSocket.
  BOOST_TEST(as(s, "GET", "/api/v1/events").status == 426);
  http_request up;
  up.method = "GET";
  up.target = "/api/v1/events?since=3&epoch=ab";
  up.session = s.token;
  up.upgrade = true;
  BOOST_TEST(call(up).status == 200);
  up.session = "not-a-session";
  BOOST_TEST(call(up).status == 401);
  // A passive check leaves the idle time running: past the idle limit the session is
  // gone although the stream checked it every few seconds.
  up.session = s.token;
  up.passive = true;
  sched.clock().current_time += acfg.session_idle - 1min;
  BOOST_TEST(call(up).status == 200);
  sched.clock().current_time += 2min;
  BOOST_TEST(call(up).status == 401);
}

BOOST_AUTO_TEST_CASE(incidents_filter_by_severity_status_and_time) {
  auto s = login();
  auto inc = incident_on("dev-1", report());
  auto count = [&](const std::string& query) {
    auto r = as(s, "GET", "/api/v1/incidents?" + query);
    BOOST_REQUIRE_MESSAGE(r.status == 200, query << " -> " << r.status << " " << r.body);
    return json::parse(r.body)["incidents"].size();
  };
  BOOST_TEST(count("severity=high") == 1u);
  BOOST_TEST(count("severity=low") == 0u);
  BOOST_TEST(count("status=new&device_id=dev-1") == 1u);
  BOOST_TEST(count("status=closed") == 0u);
  BOOST_TEST(count("since=2000-01-01T00:00:00Z") == 1u);
  BOOST_TEST(count("until=2000-01-01T00:00:00Z") == 0u);
  BOOST_TEST(count("until=1970-01-01T00:00:00Z") == 0u); // the epoch is a time too
  BOOST_TEST(count("since=2999-01-01T00:00:00%2B02:00") == 0u);
  for (const char* bad : {"since=yesterday", "until=2026-13-01T00:00:00Z",
                          "since=2026-02-30T00:00:00Z", "until=1969-12-31T23:59:59Z"}) {
    auto r = as(s, "GET", std::string{"/api/v1/incidents?"} + bad);
    BOOST_TEST(r.status == 400, bad);
    BOOST_TEST(r.body.find("RFC 3339") != std::string::npos, r.body);
  }
  BOOST_TEST(!inc.empty());
}

BOOST_AUTO_TEST_CASE(a_disabled_user_cannot_sign_in_and_the_last_admin_stays) {
  auto s = login();
  auto r = as(s, "POST", "/api/v1/users",
              json{{"username", "sofia"},
                   {"password", "officer-password"},
                   {"role", "security_officer"}}
                  .dump());
  BOOST_REQUIRE_EQUAL(r.status, 201);
  auto so = login("sofia", "officer-password");
  auto tok = as(so, "POST", "/api/v1/tokens", "{}");
  BOOST_REQUIRE_EQUAL(tok.status, 201);
  auto bearer = json::parse(tok.body)["token"].get<std::string>();
  r = as(s, "PATCH", "/api/v1/users/sofia", R"({"disabled": true})");
  BOOST_REQUIRE_EQUAL(r.status, 200);
  BOOST_TEST(json::parse(r.body)["user"]["disabled"] == true);
  // Her session and token end; the right password no longer signs her in.
  BOOST_TEST(as(so, "GET", "/api/v1/session").status == 401);
  http_request with_token;
  with_token.method = "GET";
  with_token.target = "/api/v1/devices";
  with_token.bearer = bearer;
  BOOST_TEST(call(with_token).status == 401);
  auto again = call(login_request("sofia", "officer-password", "192.0.2.1"));
  BOOST_TEST(again.status == 401);
  BOOST_TEST(again.body.find("disabled") != std::string::npos);
  auto users = json::parse(as(s, "GET", "/api/v1/users").body)["users"];
  for (auto& u : users)
    BOOST_TEST(u["disabled"] == (u["username"] == "sofia"));
  // Enabled again, she signs in.
  BOOST_TEST(as(s, "PATCH", "/api/v1/users/sofia", R"({"disabled": false})").status ==
             200);
  login("sofia", "officer-password");
  BOOST_TEST(as(s, "PATCH", "/api/v1/users/sofia", R"({"disabled": "yes"})").status ==
             400);
  // The last enabled administrator can be neither disabled nor deleted.
  BOOST_TEST(as(s, "PATCH", "/api/v1/users/admin", R"({"disabled": true})").status ==
             409);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

/// Stands in for the backup actor: holds each request until told how it ends
/// (atom::ok and true for a failure); a copy made is at `path`. (An argument it
/// needs anyway: CAF 0.17.6 dereferences a null tuple pointer when a function-based
/// actor is spawned without one, which UBSan reports.)
struct backup_mock_state {
  std::vector<caf::response_promise> held;
};

caf::behavior backup_mock(caf::stateful_actor<backup_mock_state>* self,
                          std::string path) {
  return {
      [self](atom::backup) { self->state.held.push_back(self->make_response_promise()); },
      [self, path](atom::ok, bool fail) {
        for (auto& rp : self->state.held)
          if (fail)
            rp.deliver(make_error(ec::storage, "disk full"));
          else
            rp.deliver(path, int64_t{4096}, int64_t{7}, std::string(64, 'a'));
        self->state.held.clear();
      },
  };
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(operations, fixture)

BOOST_AUTO_TEST_CASE(a_backup_is_for_administrators_one_at_a_time_and_audited) {
  auto s = login();
  // Without a backup actor the route says so.
  BOOST_TEST(as(s, "POST", "/api/v1/backup").status == 503);
  auto mock = sys.spawn(backup_mock, std::string{"/nonexistent/backup-1.db"});
  caf::anon_send_exit(aut, caf::exit_reason::user_shutdown);
  auto d = deps(au);
  d.backup = caf::actor_cast<backup_actor>(mock);
  aut = spawn_supervised_api(sys, d);
  sched.run();
  BOOST_REQUIRE_EQUAL(as(s, "POST", "/api/v1/users",
                         json{{"username", "sofia"},
                              {"password", "officer-password"},
                              {"role", "security_officer"}}
                             .dump())
                          .status,
                      201);
  auto so = login("sofia", "officer-password");
  BOOST_TEST(as(so, "POST", "/api/v1/backup").status == 403);
  BOOST_TEST(as(s, "GET", "/api/v1/backup").status == 405);
  // Other spellings of the path would get the front end's short wait: refused.
  for (const char* other : {"/api/v1/backup/", "/api/v1//backup", "/api/v1/back%75p"})
    BOOST_TEST(as(s, "POST", other).status == 404, other);

  auto backup_request = [&] {
    http_request r;
    r.method = "POST";
    r.target = "/api/v1/backup";
    r.session = s.token;
    r.csrf = s.csrf;
    r.source = "192.0.2.1";
    return r;
  };
  auto first = self->request(aut, caf::infinite, backup_request());
  sched.run();
  // A second one while the first is being taken.
  auto busy = as(s, "POST", "/api/v1/backup");
  BOOST_TEST(busy.status == 409);
  BOOST_TEST(json::parse(busy.body)["error"]["code"] == "conflict");
  http_response got{-1, "", {}, {}, {}};
  // Lets the mock end the backup it holds, and takes the api's answer to `request`.
  auto finish = [&](auto& request, bool fail) {
    caf::anon_send(mock, atom::ok_v, fail);
    sched.run();
    request.receive([&](http_response& r) { got = std::move(r); },
                    [](caf::error& err) { BOOST_FAIL(message_of(err)); });
  };
  finish(first, false);
  BOOST_TEST(got.status == 200);
  BOOST_TEST(got.file == "/nonexistent/backup-1.db");
  BOOST_TEST(got.headers["Content-Type"] == "application/vnd.sqlite3");
  BOOST_TEST(got.headers["X-Parry-Audit-Records"] == "7");
  BOOST_TEST(got.headers["X-Parry-Audit-Head"] == std::string(64, 'a'));
  BOOST_TEST(got.headers["Content-Disposition"].find(
                 "attachment; filename=\"parry-backup-") == 0u);
  auto records = json::parse(as(s, "GET", "/api/v1/audit").body)["records"];
  BOOST_REQUIRE(!records.empty());
  auto last = records.back();
  BOOST_TEST(last["kind"] == "backup_taken");
  BOOST_TEST(last["actor"] == "admin");
  BOOST_TEST(last["detail"].get<std::string>().find("4096 bytes, 7 audit records") == 0u);

  // A failed backup answers 503, is audited, and frees the way for the next one.
  auto failing = self->request(aut, caf::infinite, backup_request());
  sched.run();
  finish(failing, true);
  BOOST_TEST(got.status == 503);
  BOOST_TEST(got.file.empty());
  records = json::parse(as(s, "GET", "/api/v1/audit").body)["records"];
  BOOST_TEST(records.back()["detail"] == "failed");
  auto again = self->request(aut, caf::infinite, backup_request());
  sched.run();
  finish(again, false);
  BOOST_TEST(got.status == 200);
  caf::anon_send_exit(mock, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_CASE(a_reloaded_action_policy_is_what_the_api_tells_from_then_on) {
  shared_setting<action_policy> live{policy};
  caf::anon_send_exit(aut, caf::exit_reason::user_shutdown);
  auto d = deps(au);
  d.policy = live;
  aut = spawn_supervised_api(sys, d);
  sched.run();
  auto s = login();
  auto required = [&] {
    auto r = as(s, "GET", "/api/v1/session");
    BOOST_REQUIRE_EQUAL(r.status, 200);
    return json::parse(r.body)["password_required"].get<std::vector<std::string>>();
  };
  auto before = required();
  BOOST_TEST((std::find(before.begin(), before.end(), "quarantine") != before.end()));
  auto next = policy;
  next.password_required = {action_type::start_process, action_type::isolate};
  live.set(next);
  auto after = required();
  BOOST_TEST((after == std::vector<std::string>{"isolate", "start_process"} ||
              after == std::vector<std::string>{"start_process", "isolate"}));
}

BOOST_AUTO_TEST_SUITE_END()
