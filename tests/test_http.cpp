#define BOOST_TEST_MODULE http
#include <boost/test/unit_test.hpp>

// The HTTPS front end on its own, against a mock api actor: connection limits (total,
// per source, counted), the shutdown order (an answer that arrives after the server
// stopped lands nowhere harmful), the console's files and the event stream (the hub,
// the WebSocket, its session checks and its bound on slow clients). Loopback only:
// 127.0.0.1 and 127.0.0.2.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>

#include "actors/actors.hpp"
#include "common/process.hpp"
#include "ctl/client.hpp"
#include "server/event_hub.hpp"
#include "server/http_server.hpp"
#include "server/tls.hpp"
#include "server/web_assets.hpp"

using namespace parry;
using namespace std::chrono_literals;

namespace {

/// Answers every request 200 at once, or holds the answers until told `ok`.
/// Dynamically typed so that the test can release it; the server sees an api_actor.
struct mock_api_state {
  std::vector<caf::response_promise> held;
};

caf::behavior mock_api(caf::stateful_actor<mock_api_state>* self, bool hold,
                       std::shared_ptr<std::atomic<int>> seen) {
  return {
      [self, hold, seen](http_request&) -> caf::result<http_response> {
        ++*seen;
        if (!hold) return http_response{200, R"({"status":"ok"})", {}, {}, {}};
        auto rp = self->make_response_promise();
        self->state.held.push_back(rp);
        return rp;
      },
      [self](atom::ok) {
        for (auto& rp : self->state.held)
          rp.deliver(http_response{200, R"({"status":"late"})", {}, {}, {}});
        self->state.held.clear();
      },
  };
}

/// A plain TCP connection from `source` (a loopback address) to 127.0.0.1:`port`.
struct tcp_conn {
  int fd = -1;
  tcp_conn(const char* source, uint16_t port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    BOOST_REQUIRE(fd >= 0);
    sockaddr_in from{};
    from.sin_family = AF_INET;
    ::inet_pton(AF_INET, source, &from.sin_addr);
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) == 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    BOOST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
  }
  ~tcp_conn() {
    if (fd >= 0) ::close(fd);
  }
  tcp_conn(const tcp_conn&) = delete;
  tcp_conn& operator=(const tcp_conn&) = delete;
};

struct fixture {
  std::filesystem::path dir;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<std::atomic<int>> seen = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<http_stats> stats = std::make_shared<http_stats>();
  tls_files tls;

  fixture() {
    dir = std::filesystem::temp_directory_path() /
          ("parry-http-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    cfg.set("scheduler.max-threads", size_t{2});
    sys = std::make_unique<caf::actor_system>(cfg);
    tls = ensure_certificate((dir / "tls").string());
  }
  ~fixture() {
    sys.reset();
    std::filesystem::remove_all(dir);
  }

  std::unique_ptr<http_server> start(const caf::actor& api, http_limits lim,
                                     uint16_t& port) {
    auto s = std::make_unique<http_server>(*sys, caf::actor_cast<api_actor>(api),
                                           "127.0.0.1", 0, tls.cert, tls.key, lim, stats);
    port = s->start();
    return s;
  }

  client make_client(uint16_t port) {
    return client{"https://127.0.0.1:" + std::to_string(port), tls_options{tls.cert}};
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(front_end, fixture)

BOOST_AUTO_TEST_CASE(connections_are_capped_per_source_and_in_total_and_counted) {
  auto api = sys->spawn(mock_api, false, seen);
  http_limits lim;
  lim.max_connections = 3;
  lim.max_connections_per_source = 2;
  uint16_t port = 0;
  auto server = start(api, lim, port);
  // Two idle connections from 127.0.0.1 are kept; a third from it is refused.
  tcp_conn a{"127.0.0.1", port}, b{"127.0.0.1", port};
  BOOST_REQUIRE(poll_until([&] { return stats->open.load() == 2; }, 10s));
  tcp_conn c{"127.0.0.1", port};
  BOOST_REQUIRE(poll_until([&] { return stats->refused_source_limit.load() == 1; }, 10s));
  // Another source may still connect, up to the total.
  tcp_conn d{"127.0.0.2", port};
  BOOST_REQUIRE(poll_until([&] { return stats->open.load() == 3; }, 10s));
  tcp_conn e{"127.0.0.2", port};
  BOOST_REQUIRE(poll_until([&] { return stats->refused_total_limit.load() == 1; }, 10s));
  BOOST_TEST(stats->open.load() == 3u);
  // A refused connection is closed by the server: the client reads end of stream.
  char byte = 0;
  BOOST_TEST(::recv(e.fd, &byte, 1, 0) == 0);
  // Once idle connections go, a real request is served again.
  ::close(a.fd);
  a.fd = -1;
  ::close(b.fd);
  b.fd = -1;
  BOOST_REQUIRE(poll_until([&] { return stats->open.load() == 1; }, 10s));
  auto cl = make_client(port);
  auto r = cl.get("/api/v1/health");
  BOOST_TEST(r.status == 200);
  BOOST_TEST(seen->load() == 1);
  server.reset();
  caf::anon_send_exit(api, caf::exit_reason::user_shutdown);
}

// Reproduction: a request the api held when it ended (a shutdown during a backup)
// waited out the front end's whole timeout, and the actor system's end with it.
BOOST_AUTO_TEST_CASE(an_api_that_ends_owing_an_answer_is_a_503_at_once) {
  auto api = sys->spawn(mock_api, true, seen);
  uint16_t port = 0;
  auto server = start(api, {}, port);
  std::atomic<int> status{0};
  std::thread t{[&] {
    try {
      auto cl = make_client(port);
      status = cl.request("GET", "/api/v1/health", nullptr, {}, 25s).status;
    } catch (const client_error&) {
      status = -1; // no answer in 25 s
    }
  }};
  BOOST_REQUIRE(poll_until([&] { return seen->load() == 1; }, 10s));
  caf::anon_send_exit(api, caf::exit_reason::user_shutdown);
  // Well before the front end's own 30 s.
  BOOST_TEST(poll_until([&] { return status.load() != 0; }, 10s));
  t.join();
  BOOST_TEST(status.load() == 503);
  server.reset();
}

BOOST_AUTO_TEST_CASE(an_answer_after_the_server_stopped_lands_nowhere_harmful) {
  auto api = sys->spawn(mock_api, true, seen);
  uint16_t port = 0;
  auto server = start(api, {}, port);
  // A request the api holds; the client gives up when the server goes away.
  std::atomic<bool> client_done{false};
  std::thread t{[&] {
    try {
      auto cl = make_client(port);
      cl.request("GET", "/api/v1/health", nullptr, {}, 20s);
    } catch (const client_error&) {
    }
    client_done = true;
  }};
  BOOST_REQUIRE(poll_until([&] { return seen->load() == 1; }, 10s));
  server->stop();
  server.reset(); // the io_context's owner is gone
  BOOST_REQUIRE(poll_until([&] { return client_done.load(); }, 20s));
  t.join();
  // Now the api answers: the request's actor must not touch the destroyed server
  // (AddressSanitizer reports it if it did).
  caf::anon_send(api, atom::ok_v);
  caf::anon_send_exit(api, caf::exit_reason::user_shutdown);
  // And a new server on the same system still works.
  auto api2 = sys->spawn(mock_api, false, seen);
  server = start(api2, {}, port);
  auto cl = make_client(port);
  BOOST_TEST(cl.get("/api/v1/health").status == 200);
  server.reset();
  caf::anon_send_exit(api2, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_SUITE_END()

// -- the event hub ------------------------------------------------------------------

namespace {

namespace beast = boost::beast;
namespace net = boost::asio;
namespace websocket = beast::websocket;
using nlohmann::json;

/// An action event body as the store publishes it: a msgpack map.
std::string action_body(const std::string& id, const std::string& state,
                        std::size_t padding = 0) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  pk.pack_map(3);
  pk.pack(std::string{"action_id"});
  pk.pack(id);
  pk.pack(std::string{"state"});
  pk.pack(state);
  pk.pack(std::string{"comment"});
  pk.pack(std::string(padding, 'x'));
  return {buf.data(), buf.size()};
}

std::vector<json> parsed(const std::vector<event_message>& msgs) {
  std::vector<json> out;
  for (const auto& m : msgs)
    out.push_back(json::parse(*m));
  return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(hub)

BOOST_AUTO_TEST_CASE(events_are_numbered_kept_and_replayed_or_resynced) {
  event_hub h{event_hub_limits{3, 1u << 20, 10}};
  std::vector<event_message> got;
  auto first = h.subscribe(std::nullopt, "", [&](event_message m) { got.push_back(m); });
  BOOST_REQUIRE(first);
  auto hello = parsed(first->first);
  BOOST_REQUIRE(hello.size() == 1u);
  BOOST_TEST(hello[0]["type"] == "hello");
  BOOST_TEST(hello[0]["seq"] == 0);
  BOOST_TEST(hello[0]["epoch"] == h.epoch());
  for (int i = 1; i <= 5; ++i)
    h.publish("action", "sent", action_body("act-" + std::to_string(i), "sent"));
  auto live = parsed(got);
  BOOST_REQUIRE(live.size() == 5u);
  BOOST_TEST(live[4]["type"] == "event");
  BOOST_TEST(live[4]["seq"] == 5);
  BOOST_TEST(live[4]["topic"] == "action.sent");
  BOOST_TEST(live[4]["data"]["action_id"] == "act-5");
  BOOST_TEST(h.last_seq() == 5u);
  // Within the backlog (3 kept: 3, 4, 5): what came after `since`.
  auto back = h.subscribe(3, h.epoch(), [](event_message) {});
  auto replay = parsed(back->first);
  BOOST_REQUIRE(replay.size() == 3u);
  BOOST_TEST(replay[1]["seq"] == 4);
  BOOST_TEST(replay[2]["seq"] == 5);
  // Up to date: the hello only.
  BOOST_TEST(h.subscribe(5, h.epoch(), [](event_message) {})->first.size() == 1u);
  // Forgotten (1 is older than the backlog), another epoch, or a number never given:
  // one resync with the current number.
  for (auto [since, epoch] : {std::pair<uint64_t, std::string>{1, h.epoch()},
                              {5, "another-run"},
                              {99, h.epoch()}}) {
    auto r = parsed(h.subscribe(since, epoch, [](event_message) {})->first);
    BOOST_REQUIRE(r.size() == 2u);
    BOOST_TEST(r[1]["type"] == "resync");
    BOOST_TEST(r[1]["seq"] == 5);
  }
  BOOST_TEST(h.stats()->resyncs.load() == 3u);
  BOOST_TEST(h.stats()->replayed.load() == 2u);
  // Unsubscribed sinks hear nothing more.
  h.unsubscribe(first->id);
  h.publish("device", "updated", action_body("x", "y"));
  BOOST_TEST(got.size() == 5u);
}

BOOST_AUTO_TEST_CASE(subscribers_are_bounded_and_bad_bodies_dropped) {
  event_hub h{event_hub_limits{10, 1u << 20, 2}};
  auto one = h.subscribe(std::nullopt, "", [](event_message) {});
  BOOST_REQUIRE(one.has_value());
  BOOST_TEST(h.subscribe(std::nullopt, "", [](event_message) {}).has_value());
  BOOST_TEST(!h.subscribe(std::nullopt, "", [](event_message) {}).has_value());
  h.unsubscribe(one->id);
  BOOST_TEST(h.stats()->refused_subscribers.load() == 1u);
  // Not a msgpack map: dropped, numbered never.
  h.publish("action", "sent", "\x92\x01\x02");
  h.publish("action", "sent", "\xc1");
  BOOST_TEST(h.last_seq() == 0u);
  // Text that is not UTF-8 arrives as valid JSON.
  h.publish("action", "sent", action_body("act-\xff", "sent"));
  auto s = h.subscribe(0, h.epoch(), [](event_message) {});
  BOOST_REQUIRE(s.has_value());
  auto r = parsed(s->first);
  BOOST_TEST(r.back()["data"]["action_id"] == "act-\xef\xbf\xbd");
}

BOOST_AUTO_TEST_CASE(every_msgpack_value_arrives_as_the_json_it_means) {
  event_hub h;
  std::vector<event_message> got;
  BOOST_REQUIRE(
      h.subscribe(std::nullopt, "", [&](event_message m) { got.push_back(m); }));
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  pk.pack_map(11);
  pk.pack(std::string{"yes"});
  pk.pack(true);
  pk.pack(std::string{"yes"}); // a repeated key: its first value stands
  pk.pack(false);
  pk.pack(std::string{"big"});
  pk.pack(uint64_t{18446744073709551615u});
  pk.pack(std::string{"neg"});
  pk.pack(int64_t{-42});
  pk.pack(std::string{"half"});
  pk.pack(0.5);
  pk.pack(std::string{"text"});
  pk.pack(std::string{"a\"b\\c\n\x01\x7f\xff \xc3\xa9"});
  pk.pack(std::string{"bin"});
  pk.pack_bin(2);
  pk.pack_bin_body("\x0a\xff", 2);
  pk.pack(std::string{"list"});
  pk.pack_array(2);
  pk.pack_nil();
  pk.pack(std::string{"x"});
  pk.pack(std::string{"nested"});
  pk.pack_map(1);
  pk.pack(std::string{"k"});
  pk.pack(1);
  pk.pack(7); // not a string key: left out
  pk.pack(std::string{"dropped"});
  pk.pack(std::string{"empty"});
  pk.pack_map(0);
  h.publish("device",
            "up\xff"
            "dated",
            std::string{buf.data(), buf.size()});
  BOOST_REQUIRE(got.size() == 1u);
  auto j = json::parse(*got[0]); // throws if it is not JSON
  BOOST_TEST(j["topic"] == "device.up\xef\xbf\xbd"
                           "dated");
  BOOST_TEST(j["seq"] == 1);
  BOOST_TEST(j["time_us"].is_number_integer());
  auto want = json::parse(R"({"yes": true, "big": 18446744073709551615, "neg": -42,
      "half": 0.5, "text": "a\"b\\c\n\u0001\u007f\ufffd \u00e9", "bin": "0aff",
      "list": [null, "x"], "nested": {"k": 1}, "empty": {}})");
  BOOST_TEST(j["data"] == want, j["data"].dump());
  BOOST_TEST(j["data"].size() == 9u); // the integer key is not there
}

// Regression (review): a replay larger than what a stream may have queued was cut as
// "too slow" on every reconnect; it is a resync instead.
BOOST_AUTO_TEST_CASE(a_replay_over_the_budget_is_a_resync) {
  event_hub h;
  for (int i = 0; i < 10; ++i)
    h.publish("action", "sent", action_body("a", "sent", 1000));
  auto big = parsed(h.subscribe(
                         2, h.epoch(), [](event_message) {}, 4000)
                        ->first);
  BOOST_REQUIRE(big.size() == 2u);
  BOOST_TEST(big[1]["type"] == "resync");
  auto small = parsed(h.subscribe(
                           8, h.epoch(), [](event_message) {}, 4000)
                          ->first);
  BOOST_TEST(small.size() == 3u); // hello + 9, 10
}

BOOST_AUTO_TEST_CASE(the_backlog_is_bounded_in_bytes_too) {
  event_hub h{event_hub_limits{1000, 4096, 10}};
  for (int i = 0; i < 20; ++i)
    h.publish("action", "sent", action_body("a", "sent", 1000));
  // About 1 KiB each: at most four fit, so an old number resyncs.
  auto r = parsed(h.subscribe(10, h.epoch(), [](event_message) {})->first);
  BOOST_TEST(r.back()["type"] == "resync");
  auto recent = parsed(h.subscribe(17, h.epoch(), [](event_message) {})->first);
  BOOST_TEST(recent.size() == 4u); // hello + 18, 19, 20
}

BOOST_AUTO_TEST_SUITE_END()

// -- the console's files and the event stream over HTTPS -----------------------------

namespace {

/// GET /events answers `status` (200: upgrade); every other request is 200. Counts
/// the session checks that were passive (not use of the session).
caf::behavior session_api(caf::event_based_actor*,
                          std::shared_ptr<std::atomic<int>> status,
                          std::shared_ptr<std::atomic<int>> passive_checks) {
  return {
      [status, passive_checks](http_request& r) -> http_response {
        if (r.passive) ++*passive_checks;
        if (r.upgrade && *status != 200)
          return {*status, R"({"error":{"code":"x","message":"no"}})", {}, {}, {}};
        return {200, R"({"status":"ok"})", {}, {}, {}};
      },
  };
}

using ws_stream = websocket::stream<beast::ssl_stream<net::ip::tcp::socket>>;

/// A WebSocket client of the test's server; every read gives up after 10 s.
struct ws_client {
  net::io_context ioc;
  net::ssl::context ctx{net::ssl::context::tls_client};
  ws_stream ws{ioc, ctx};

  ws_client(const std::string& cert, uint16_t port) {
    ctx.load_verify_file(cert);
    auto& sock = beast::get_lowest_layer(ws);
    sock.connect({net::ip::make_address("127.0.0.1"), port});
    timeval tv{10, 0};
    ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ws.next_layer().handshake(net::ssl::stream_base::client);
  }

  /// Upgrades `target`: 101, or 0 when the server declined.
  int open(const std::string& target, const std::string& origin = "") {
    ws.set_option(websocket::stream_base::decorator([origin](websocket::request_type& r) {
      r.set(beast::http::field::cookie, "parry_session=s1");
      if (!origin.empty()) r.set(beast::http::field::origin, origin);
    }));
    websocket::response_type res;
    beast::error_code ec;
    ws.handshake(res, "127.0.0.1", target, ec);
    return ec ? 0 : res.result_int();
  }

  json next() {
    beast::flat_buffer buf;
    ws.read(buf);
    return json::parse(beast::buffers_to_string(buf.data()));
  }
};

struct stream_fixture : fixture {
  std::shared_ptr<event_hub> hub = std::make_shared<event_hub>();
  std::shared_ptr<std::atomic<int>> status = std::make_shared<std::atomic<int>>(200);
  std::shared_ptr<std::atomic<int>> passive = std::make_shared<std::atomic<int>>(0);
  caf::actor api = sys->spawn(session_api, status, passive);
  uint16_t port = 0;
  std::unique_ptr<http_server> server;

  void run(http_limits lim = {}) {
    server = std::make_unique<http_server>(*sys, caf::actor_cast<api_actor>(api),
                                           "127.0.0.1", 0, tls.cert, tls.key, lim, stats);
    server->serve_events(hub);
    port = server->start();
  }
  ~stream_fixture() {
    server.reset();
    caf::anon_send_exit(api, caf::exit_reason::user_shutdown);
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(event_stream, stream_fixture)

BOOST_AUTO_TEST_CASE(a_stream_needs_a_session_and_this_origin) {
  run();
  // What a declined upgrade answers, seen through a plain HTTPS client.
  auto upgrade = [&](header_list extra) {
    extra.push_back({"Connection", "Upgrade"});
    extra.push_back({"Upgrade", "websocket"});
    extra.push_back({"Sec-WebSocket-Version", "13"});
    extra.push_back({"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="});
    return make_client(port).request("GET", "/api/v1/events", nullptr, extra).status;
  };
  *status = 401;
  BOOST_TEST(ws_client(tls.cert, port).open("/api/v1/events") == 0);
  BOOST_TEST(upgrade({}) == 401);
  *status = 200;
  BOOST_TEST(ws_client(tls.cert, port).open("/api/v1/events", "https://evil.example") ==
             0);
  BOOST_TEST(upgrade({{"Origin", "https://evil.example"}}) == 403);
  ws_client c{tls.cert, port};
  BOOST_REQUIRE(c.open("/api/v1/events", "https://127.0.0.1") == 101);
  auto hello = c.next();
  BOOST_TEST(hello["type"] == "hello");
  BOOST_TEST(hello["epoch"] == hub->epoch());
}

BOOST_AUTO_TEST_CASE(events_arrive_live_and_a_reconnect_gets_what_it_missed) {
  run();
  uint64_t last = 0;
  {
    ws_client c{tls.cert, port};
    BOOST_REQUIRE(c.open("/api/v1/events") == 101);
    BOOST_TEST(c.next()["type"] == "hello");
    BOOST_REQUIRE(poll_until([&] { return hub->stats()->subscribers.load() == 1; }, 10s));
    hub->publish("action", "completed", action_body("act-1", "completed"));
    hub->publish("incident", "created", action_body("inc-1", "new"));
    auto a = c.next(), b = c.next();
    BOOST_TEST(a["topic"] == "action.completed");
    BOOST_TEST(b["topic"] == "incident.created");
    BOOST_TEST(b["seq"].get<uint64_t>() == a["seq"].get<uint64_t>() + 1);
    last = b["seq"].get<uint64_t>();
    c.ws.close(websocket::close_code::normal);
  }
  BOOST_REQUIRE(poll_until([&] { return hub->stats()->subscribers.load() == 0; }, 10s));
  hub->publish("action", "sent", action_body("act-2", "sent"));
  hub->publish("action", "failed", action_body("act-2", "failed"));
  ws_client c{tls.cert, port};
  BOOST_REQUIRE(c.open("/api/v1/events?since=" + std::to_string(last) +
                       "&epoch=" + hub->epoch()) == 101);
  BOOST_TEST(c.next()["type"] == "hello");
  auto x = c.next(), y = c.next();
  BOOST_TEST(x["seq"] == last + 1);
  BOOST_TEST(y["topic"] == "action.failed");
  ws_client stale{tls.cert, port};
  BOOST_REQUIRE(stale.open("/api/v1/events?since=1&epoch=an-older-run") == 101);
  stale.next();
  BOOST_TEST(stale.next()["type"] == "resync");
}

BOOST_AUTO_TEST_CASE(a_stream_ends_when_its_session_does) {
  http_limits lim;
  lim.events.recheck = 1s;
  run(lim);
  ws_client c{tls.cert, port};
  BOOST_REQUIRE(c.open("/api/v1/events") == 101);
  c.next();
  // The checks go on without counting as use of the session...
  BOOST_REQUIRE(poll_until([&] { return passive->load() >= 1; }, 10s));
  // ...a server too busy to answer (503) is asked again, the stream stays...
  *status = 503;
  auto seen = passive->load();
  BOOST_REQUIRE(poll_until([&] { return passive->load() >= seen + 2; }, 10s));
  BOOST_TEST(hub->stats()->subscribers.load() == 1u);
  BOOST_TEST(hub->stats()->closed_session.load() == 0u);
  // ...and once the session is gone, the stream closes with 1008.
  *status = 401;
  beast::error_code ec;
  beast::flat_buffer buf;
  c.ws.read(buf, ec);
  BOOST_TEST((ec == websocket::error::closed), ec.message());
  BOOST_TEST(c.ws.reason().code == uint16_t{websocket::close_code::policy_error});
  BOOST_TEST(hub->stats()->closed_session.load() == 1u);
}

BOOST_AUTO_TEST_CASE(a_client_that_does_not_read_is_cut_not_buffered) {
  http_limits lim;
  lim.events.max_queue_bytes = 64 * 1024;
  run(lim);
  ws_client c{tls.cert, port};
  BOOST_REQUIRE(c.open("/api/v1/events") == 101);
  BOOST_REQUIRE(poll_until([&] { return hub->stats()->subscribers.load() == 1; }, 10s));
  // Far more than the socket buffers and the queue hold, and nothing read.
  for (int i = 0; i < 20000 && hub->stats()->dropped_slow.load() == 0; ++i)
    hub->publish("action", "sent", action_body("act", "sent", 2000));
  BOOST_REQUIRE(poll_until([&] { return hub->stats()->dropped_slow.load() == 1; }, 20s));
  BOOST_REQUIRE(poll_until([&] { return hub->stats()->subscribers.load() == 0; }, 20s));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(console_files, fixture)

BOOST_AUTO_TEST_CASE(only_the_files_found_at_start_are_served_with_their_headers) {
  auto web = dir / "web";
  std::filesystem::create_directories(web);
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream{web / name} << text;
  };
  write("index.html", "<!doctype html><title>Parry</title>");
  write("app.js", "console.log(1)");
  write("notes.md", "not served");
  write(".hidden.js", "not served");
  BOOST_CHECK_THROW(web_assets::load((dir / "nowhere").string()), std::runtime_error);
  auto api = sys->spawn(mock_api, false, seen);
  http_server server{
      *sys, caf::actor_cast<api_actor>(api), "127.0.0.1", 0, tls.cert, tls.key, {},
      stats};
  server.serve_console(web_assets::load(web.string()));
  auto port = server.start();
  auto cl = make_client(port);
  auto index = cl.get("/../"); // the client sends the path as given
  auto root = cl.get("/");
  BOOST_TEST(root.status == 200);
  BOOST_TEST(root.raw == "<!doctype html><title>Parry</title>");
  BOOST_TEST(root.headers["content-type"] == "text/html; charset=utf-8");
  BOOST_TEST(root.headers["content-security-policy"].find("script-src 'self'") !=
             std::string::npos);
  BOOST_TEST(root.headers["x-frame-options"] == "DENY");
  auto js = cl.get("/app.js");
  BOOST_TEST(js.headers["content-type"] == "text/javascript; charset=utf-8");
  auto again =
      cl.request("GET", "/app.js", nullptr, {{"If-None-Match", js.headers["etag"]}});
  BOOST_TEST(again.status == 304);
  BOOST_TEST(again.raw.empty());
  for (const char* path : {"/notes.md", "/.hidden.js", "/../etc/passwd", "/web/app.js",
                           "/app.js/", "/%2e%2e/etc/passwd"})
    BOOST_TEST(cl.get(path).status == 404, path);
  BOOST_TEST(index.status == 404);
  BOOST_TEST(cl.request("POST", "/").status == 405);
  // Regression (review): HEAD of a missing file sent the error's body, which a
  // keep-alive client then read as the start of its next answer.
  {
    namespace http = beast::http;
    net::io_context ioc;
    net::ssl::context ctx{net::ssl::context::tls_client};
    ctx.load_verify_file(tls.cert);
    beast::ssl_stream<net::ip::tcp::socket> s{ioc, ctx};
    beast::get_lowest_layer(s).connect({net::ip::make_address("127.0.0.1"), port});
    timeval tv{10, 0};
    ::setsockopt(beast::get_lowest_layer(s).native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv,
                 sizeof tv);
    s.handshake(net::ssl::stream_base::client);
    for (const char* target : {"/missing.js", "/app.js"}) {
      http::request<http::empty_body> head{http::verb::head, target, 11};
      head.set(http::field::host, "127.0.0.1");
      http::write(s, head);
      beast::flat_buffer buf;
      http::response_parser<http::string_body> p;
      p.skip(true); // a HEAD answer has no body
      http::read(s, buf, p);
      BOOST_TEST(p.get().result_int() == (target[1] == 'm' ? 404 : 200));
      BOOST_TEST(buf.size() == 0u, "bytes after the HEAD answer: " << buf.size());
    }
    http::request<http::empty_body> get{http::verb::get, "/app.js", 11};
    get.set(http::field::host, "127.0.0.1");
    http::write(s, get);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(s, buf, res);
    BOOST_TEST(res.body() == "console.log(1)");
  }
  // The api is where it was, and nothing above reached it.
  BOOST_TEST(seen->load() == 0);
  BOOST_TEST(cl.get("/api/v1/health").status == 200);
  BOOST_TEST(seen->load() == 1);
  server.stop();
  caf::anon_send_exit(api, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_SUITE_END()
