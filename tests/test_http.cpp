#define BOOST_TEST_MODULE http
#include <boost/test/unit_test.hpp>

// The HTTPS front end on its own, against a mock api actor: connection limits (total,
// per source, counted) and the shutdown order (an answer that arrives after the
// server stopped lands nowhere harmful). Loopback only: 127.0.0.1 and 127.0.0.2.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/response_promise.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include "actors/actors.hpp"
#include "common/process.hpp"
#include "ctl/client.hpp"
#include "server/http_server.hpp"
#include "server/tls.hpp"

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
        if (!hold) return http_response{200, R"({"status":"ok"})", {}, {}};
        auto rp = self->make_response_promise();
        self->state.held.push_back(rp);
        return rp;
      },
      [self](atom::ok) {
        for (auto& rp : self->state.held)
          rp.deliver(http_response{200, R"({"status":"late"})", {}, {}});
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
