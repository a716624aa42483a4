#define BOOST_TEST_MODULE agent_sim
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "agent-sim/scenario.hpp"
#include "agent-sim/sim_endpoint.hpp"
#include "agent-sim/sim_runner.hpp"
#include "bus/codec.hpp"
#include "common/time.hpp"

using namespace parry;
using namespace parry::sim;

// Commands log at info; keep the test output to what failed.
struct quiet_logs {
  quiet_logs() { spdlog::set_level(spdlog::level::warn); }
};
BOOST_TEST_GLOBAL_FIXTURE(quiet_logs);

namespace {

constexpr int64_t t0 = 1'700'000'000'000'000; // a fixed "now" for pure tests

std::vector<scenario> shipped_scenarios() {
  const char* dir = std::getenv("PARRY_SCENARIOS_DIR");
  BOOST_TEST_REQUIRE((dir && *dir),
                     "PARRY_SCENARIOS_DIR is not set: CTest passes the scenario "
                     "directory (config/scenarios) through it");
  return load_scenarios(dir);
}

endpoint_config test_config(uint64_t seed = 7) {
  endpoint_config cfg;
  cfg.seed = seed;
  cfg.server = "tcp://192.0.2.1:7400";
  return cfg;
}

bus::command make_command(const std::string& id, const std::string& type,
                          int64_t expires_at = 0) {
  bus::command c;
  c.action_id = id;
  c.type = type;
  c.issued_at = t0;
  c.expires_at = expires_at;
  return c;
}

std::size_t count_type(const bus::incident_report& r, const std::string& type) {
  return std::count_if(r.events.begin(), r.events.end(),
                       [&](const bus::activity_event& e) { return e.type == type; });
}

bool is_hex64(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// Every parent is an earlier event, ids are unique, the key event is there.
void check_chain(const bus::incident_report& r) {
  std::set<std::string> seen;
  bool key_found = false;
  for (const auto& e : r.events) {
    BOOST_TEST(known_event_type(e.type));
    if (!e.parent_id.empty())
      BOOST_TEST(seen.count(e.parent_id) == 1u,
                 "parent " << e.parent_id << " of " << e.id << " not earlier");
    BOOST_TEST(seen.insert(e.id).second, "duplicate event id " << e.id);
    key_found |= e.id == r.key_event_id;
  }
  BOOST_TEST(key_found, "key event " << r.key_event_id << " missing");
}

std::string header_frame(const std::string& type, const std::string& device) {
  bus::header h;
  h.type = type;
  h.device_id = device;
  h.msg_id = 1;
  h.seq = 1;
  h.time = t0;
  return bus::encode(h);
}

template <class T> T body_of(const outbound& o) {
  std::string why;
  auto x = bus::decode<T>(o.body, bus::decode_limits{}, why);
  BOOST_TEST_REQUIRE(x.has_value(), "body of " << o.head.type << ": " << why);
  return *x;
}

std::vector<std::string> types_of(const std::vector<outbound>& out) {
  std::vector<std::string> t;
  for (const auto& o : out)
    t.push_back(o.head.type);
  return t;
}

std::string expect_rejected(const std::string& text) {
  try {
    parse_scenario(text, "hostile.toml");
  } catch (const scenario_error& e) {
    return e.what();
  }
  BOOST_FAIL("scenario was accepted:\n" << text);
  return {};
}

const char* valid_head = R"(
[scenario]
name = "t"
os = "linux"
[detection]
name = "HEUR:Test"
severity = "high"
engine = "test"
)";

} // namespace

BOOST_AUTO_TEST_CASE(shipped_scenarios_are_valid) {
  auto all = shipped_scenarios();
  BOOST_TEST(all.size() >= 3u);
  std::set<std::string> oses;
  for (const auto& sc : all) {
    BOOST_TEST_CONTEXT(sc.source) {
      oses.insert(sc.os);
      BOOST_TEST_REQUIRE(sc.key_index < sc.events.size());
      BOOST_TEST(sc.events[sc.key_index].key);
      BOOST_TEST(std::count_if(sc.events.begin(), sc.events.end(),
                               [](const scenario_event& e) { return e.key; }) == 1);
      for (std::size_t i = 0; i < sc.events.size(); ++i) {
        const auto& e = sc.events[i];
        if (e.parent.empty()) {
          BOOST_TEST(e.parent_index == no_parent);
        } else {
          BOOST_TEST_REQUIRE(e.parent_index < i);
          BOOST_TEST(sc.events[e.parent_index].id == e.parent);
        }
      }
    }
  }
  BOOST_TEST(oses.count("windows") == 1u);
}

BOOST_AUTO_TEST_CASE(incidents_are_well_formed_and_recorded) {
  auto all = shipped_scenarios();
  std::set<std::string> detections;
  for (std::size_t idx = 0; idx < 16; ++idx) {
    sim_endpoint ep(idx, test_config(), all, t0);
    std::set<std::string> report_ids;
    for (int k = 0; k < 12; ++k) {
      int64_t now = t0 + k * 60'000'000;
      bus::incident_report r = ep.next_incident(now);
      check_chain(r);
      detections.insert(r.det.name);
      BOOST_TEST(report_ids.insert(r.report_id).second);
      BOOST_TEST(r.events.back().time == now);
      for (std::size_t i = 1; i < r.events.size(); ++i)
        BOOST_TEST(r.events[i - 1].time <= r.events[i].time);
      for (const auto& e : r.events) {
        BOOST_TEST(e.process.pid != 0u, e.id << " has no process");
        if (e.type == "process_started") {
          BOOST_TEST(is_hex64(e.process.sha256));
          BOOST_TEST(e.file.sha256 == e.process.sha256);
          BOOST_TEST(e.file.path == e.process.image);
          BOOST_TEST(e.process.start_time == e.time);
          BOOST_TEST(ep.processes().count(e.process.pid) == 1u);
        }
        if (e.type == "file_created") {
          BOOST_TEST(is_hex64(e.file.sha256));
          BOOST_TEST(e.file.size > 0u);
        }
        BOOST_TEST(e.file.path.find('{') == std::string::npos,
                   "unexpanded " << e.file.path);
      }
    }
  }
  BOOST_TEST(detections.size() >= 3u, "only " << detections.size() << " scenarios seen");
}

BOOST_AUTO_TEST_CASE(started_payload_has_the_hash_of_the_file_written_before) {
  auto all = shipped_scenarios();
  sim_endpoint ep(0, test_config(), all, t0);
  int checked = 0;
  for (int k = 0; k < 40; ++k) {
    auto r = ep.next_incident(t0 + k);
    for (const auto& started : r.events) {
      if (started.type != "process_started") continue;
      for (const auto& written : r.events)
        if (written.type == "file_created" && written.file.path == started.file.path) {
          BOOST_TEST(written.file.sha256 == started.process.sha256);
          ++checked;
        }
    }
  }
  BOOST_TEST(checked > 0);
}

BOOST_AUTO_TEST_CASE(same_seed_same_run_other_seed_other_run) {
  auto all = shipped_scenarios();
  runner_config cfg;
  cfg.endpoints = 5;
  cfg.endpoint = test_config(42);
  std::ostringstream a, b, c;
  write_generated(cfg, all, 6, a);
  write_generated(cfg, all, 6, b);
  cfg.endpoint.seed = 43;
  write_generated(cfg, all, 6, c);
  std::string dump = a.str();
  BOOST_TEST(std::count(dump.begin(), dump.end(), '\n') == 5 * 7);
  BOOST_TEST(a.str() == b.str());
  BOOST_TEST(a.str() != c.str());
}

BOOST_AUTO_TEST_CASE(isolated_endpoint_reports_no_network_events) {
  auto all = shipped_scenarios();
  sim_endpoint ep(3, test_config(), all, t0);
  sim_endpoint twin(3, test_config(), all, t0);

  auto oc = ep.handle_command(make_command("a-1", "isolate"), t0);
  BOOST_TEST(oc.result.ok);
  BOOST_TEST(ep.isolated());
  BOOST_TEST(oc.result.effect.at("rules") ==
             "all traffic dropped except the management channel to "
             "tcp://192.0.2.1:7400");
  BOOST_TEST(oc.result.effect.at("previous") == "not isolated");

  for (int k = 0; k < 20; ++k) {
    auto r = ep.next_incident(t0 + k);
    auto full = twin.next_incident(t0 + k);
    check_chain(r);
    BOOST_TEST(count_type(r, "network_connection") == 0u);
    // Isolation removes events, it does not change the rest of the chain.
    std::vector<bus::activity_event> expected;
    for (const auto& e : full.events)
      if (e.type != "network_connection") expected.push_back(e);
    BOOST_TEST_REQUIRE(r.events.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      BOOST_TEST(r.events[i].id == expected[i].id);
      BOOST_TEST(r.events[i].file.sha256 == expected[i].file.sha256);
      BOOST_TEST(r.events[i].process.pid == expected[i].process.pid);
    }
  }

  auto again = ep.handle_command(make_command("a-2", "isolate"), t0);
  BOOST_TEST(again.result.ok);
  BOOST_TEST(again.result.effect.at("note") == "already isolated");

  auto rel = ep.handle_command(make_command("a-3", "release_isolation"), t0);
  BOOST_TEST(rel.result.ok);
  BOOST_TEST(rel.result.effect.at("rules") == "removed");
  BOOST_TEST(!ep.isolated());
  std::size_t network = 0;
  for (int k = 0; k < 10; ++k)
    network += count_type(ep.next_incident(t0 + k), "network_connection");
  BOOST_TEST(network > 0u);

  auto rel2 = ep.handle_command(make_command("a-4", "release_isolation"), t0);
  BOOST_TEST(rel2.result.ok);
  BOOST_TEST(rel2.result.effect.at("note") == "not isolated");
}

BOOST_AUTO_TEST_CASE(journal_executes_each_action_at_most_once) {
  auto all = shipped_scenarios();
  sim_endpoint ep(0, test_config(), all, t0);
  auto first = ep.handle_command(make_command("act-1", "isolate"), t0);
  BOOST_TEST(first.executed);
  BOOST_TEST(ep.handle_command(make_command("act-2", "release_isolation"), t0).executed);
  BOOST_TEST(!ep.isolated());

  // The server re-delivers act-1: same answer, and the endpoint stays released.
  auto replay = ep.handle_command(make_command("act-1", "isolate"), t0 + 5);
  BOOST_TEST(!replay.executed);
  BOOST_TEST(replay.ack.action_id == "act-1");
  BOOST_TEST(replay.result.ok == first.result.ok);
  BOOST_TEST((replay.result.effect == first.result.effect));
  BOOST_TEST(!ep.isolated());
  BOOST_TEST(ep.stats().commands_executed == 2u);
  BOOST_TEST(ep.stats().duplicate_commands == 1u);
}

BOOST_AUTO_TEST_CASE(unsupported_and_expired_commands_fail_with_a_reason) {
  auto all = shipped_scenarios();
  sim_endpoint ep(0, test_config(), all, t0);
  auto q = ep.handle_command(make_command("b-1", "quarantine"), t0);
  BOOST_TEST(!q.result.ok);
  BOOST_TEST(q.result.error == "unsupported action type: quarantine");

  auto late = ep.handle_command(make_command("b-2", "isolate", t0 - 1), t0);
  BOOST_TEST(!late.result.ok);
  BOOST_TEST(late.result.error == "expired");
  BOOST_TEST(!ep.isolated());

  auto in_time = ep.handle_command(make_command("b-3", "isolate", t0 + 1), t0);
  BOOST_TEST(in_time.result.ok);
  BOOST_TEST(ep.isolated());
}

BOOST_AUTO_TEST_CASE(hostile_scenarios_are_rejected_with_file_and_key) {
  std::string base = valid_head;
  std::string msg;

  msg = expect_rejected(base + R"(
[[event]]
id = "a"
type = "file_created"
path = "/tmp/a"
key = true
[[event]]
id = "b"
type = "process_started"
parent = "nowhere"
image = "/tmp/a"
cmdline = "a"
)");
  BOOST_TEST(msg.find("hostile.toml:") == 0u, msg);
  BOOST_TEST(msg.find("parent 'nowhere'") != std::string::npos, msg);

  msg = expect_rejected(base + R"(
[[event]]
id = "a"
type = "file_created"
path = "/tmp/a"
)");
  BOOST_TEST(msg.find("hostile.toml") == 0u, msg);
  BOOST_TEST(msg.find("key = true") != std::string::npos, msg);

  msg = expect_rejected(base + R"(
[[event]]
id = "a"
type = "registry_deleted"
path = "/tmp/a"
key = true
)");
  BOOST_TEST(msg.find("unknown event type 'registry_deleted'") != std::string::npos, msg);

  msg = expect_rejected(base + R"(
[[event]]
id = "a"
type = "file_created"
paht = "/tmp/a"
key = true
)");
  BOOST_TEST(msg.find("unknown key 'paht'") != std::string::npos, msg);

  msg = expect_rejected(base + R"(
[[event]]
id = "a"
type = "file_created"
path = "/tmp/{usr}"
key = true
)");
  BOOST_TEST(msg.find("{usr}") != std::string::npos, msg);

  msg = expect_rejected(base + R"(
[[event]]
id = "a"
type = "network_connection"
remote = "{c2}:443"
key = true
)");
  BOOST_TEST(msg.find("key event must be") != std::string::npos, msg);

  // A parent that comes later would allow loops.
  msg = expect_rejected(base + R"(
[[event]]
id = "a"
type = "file_created"
parent = "b"
path = "/tmp/a"
key = true
[[event]]
id = "b"
type = "file_created"
path = "/tmp/b"
)");
  BOOST_TEST(msg.find("parent 'b'") != std::string::npos, msg);

  msg = expect_rejected(base + "[[event]\nid = \"a\"\n");
  BOOST_TEST(msg.find("hostile.toml:") == 0u, msg);

  msg = expect_rejected(R"(
[scenario]
name = "t"
os = "windows"
[detection]
name = "x"
severity = "urgent"
engine = "e"
)");
  BOOST_TEST(msg.find("severity") != std::string::npos, msg);

  BOOST_CHECK_THROW(load_scenarios("/nonexistent/parry/scenarios"), scenario_error);
}

BOOST_AUTO_TEST_CASE(protocol_without_sockets) {
  auto all = shipped_scenarios();
  endpoint_config cfg = test_config();
  cfg.incident_interval_us = 10'000'000;
  sim_endpoint ep(1, cfg, all, t0);
  const std::string id = ep.device_id();
  BOOST_TEST(id == "sim-0001");

  auto out = ep.start(t0);
  BOOST_TEST_REQUIRE(out.size() == 1u);
  BOOST_TEST(out[0].head.type == "hello");
  BOOST_TEST(out[0].head.device_id == id);
  BOOST_TEST(out[0].head.v == 1);
  BOOST_TEST(body_of<bus::hello>(out[0]).hostname == ep.identity().hostname);
  uint64_t seq = out[0].head.seq;

  // No welcome: hello again after the retry interval, but only once linked.
  BOOST_TEST(ep.tick(t0 + sim_endpoint::hello_retry_us).empty());
  BOOST_TEST(ep.on_link_up(t0).empty());
  out = ep.tick(t0 + sim_endpoint::hello_retry_us);
  BOOST_TEST_REQUIRE(out.size() == 1u);
  BOOST_TEST(out[0].head.type == "hello");
  BOOST_TEST(out[0].head.seq == seq + 1);

  int64_t now = t0 + 4'000'000;
  bus::welcome w;
  w.heartbeat_interval_ms = 1000;
  BOOST_TEST(ep.on_message(header_frame("welcome", id), bus::encode(w), now).empty());
  BOOST_TEST(ep.welcomed());
  BOOST_TEST(ep.heartbeat_interval_us() == 1'000'000);

  // Within the next few seconds: heartbeats and the first incident.
  bool incident = false, heartbeat = false;
  for (int step = 0; step < 40 && !(incident && heartbeat); ++step) {
    now = std::max(now, ep.next_due());
    for (const auto& o : ep.tick(now)) {
      if (o.head.type == "heartbeat") heartbeat = !body_of<bus::heartbeat>(o).isolated;
      if (o.head.type == "incident")
        incident = !body_of<bus::incident_report>(o).events.empty();
    }
  }
  BOOST_TEST(heartbeat);
  BOOST_TEST(incident);
  BOOST_TEST(now <= t0 + 4'000'000 + 2'000'000);

  // A command: ack and result at once, then the result every second until acked.
  bus::command c = make_command("c-1", "isolate");
  out = ep.on_message(header_frame("command", id), bus::encode(c), now);
  BOOST_TEST((types_of(out) == std::vector<std::string>{"action_ack", "action_result"}));
  BOOST_TEST(body_of<bus::action_result>(out[1]).ok);
  auto resent = types_of(ep.tick(now + sim_endpoint::result_resend_us));
  BOOST_TEST(std::count(resent.begin(), resent.end(), "action_result") == 1);
  for (const auto& o : ep.tick(now + 10 * sim_endpoint::result_resend_us))
    if (o.head.type == "heartbeat") BOOST_TEST(body_of<bus::heartbeat>(o).isolated);

  bus::result_ack ra;
  ra.action_id = "c-1";
  BOOST_TEST(ep.on_message(header_frame("result_ack", id), bus::encode(ra), now).empty());
  BOOST_TEST(ep.unacked_results().empty());
  auto later = types_of(ep.tick(now + 20 * sim_endpoint::result_resend_us));
  BOOST_TEST(std::count(later.begin(), later.end(), "action_result") == 0);

  // A reconnect means hello again; nothing more until the new welcome.
  ep.on_link_down();
  BOOST_TEST(!ep.welcomed());
  out = ep.on_link_up(now);
  BOOST_TEST((types_of(out) == std::vector<std::string>{"hello"}));
  BOOST_TEST(body_of<bus::hello>(out[0]).isolated);
}

BOOST_AUTO_TEST_CASE(bad_frames_are_counted_and_dropped) {
  auto all = shipped_scenarios();
  sim_endpoint ep(2, test_config(), all, t0);
  const std::string id = ep.device_id();
  BOOST_TEST(ep.on_message("\xc1garbage", "", t0).empty());
  BOOST_TEST(ep.on_message(header_frame("command", "sim-9999"),
                           bus::encode(make_command("x-1", "isolate")), t0)
                 .empty());
  BOOST_TEST(ep.on_message(header_frame("command", id), "\x92\x01\x02", t0).empty());
  BOOST_TEST(ep.on_message(header_frame("command", id),
                           bus::encode(make_command("bad id!", "isolate")), t0)
                 .empty());
  std::string deep(200, '\x91');
  BOOST_TEST(ep.on_message(header_frame("welcome", id), deep, t0).empty());
  BOOST_TEST(ep.stats().bad_frames == 5u);
  BOOST_TEST(!ep.isolated());
  BOOST_TEST(!ep.welcomed());

  BOOST_TEST(
      ep.on_message(header_frame("surprise", id), bus::encode(bus::heartbeat{}), t0)
          .empty());
  BOOST_TEST(ep.stats().unknown_frames == 1u);
}

// The runner against a ROUTER on loopback, every wait a bounded poll.
BOOST_AUTO_TEST_CASE(runner_talks_to_a_router) {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  std::string endpoint = router.get(zmq::sockopt::last_endpoint);

  runner_config cfg;
  cfg.endpoints = 2;
  cfg.endpoint = test_config();
  cfg.endpoint.server = endpoint;
  cfg.endpoint.incident_interval_us = 100'000;
  cfg.endpoint.max_incidents = 2;
  cfg.raise_fd_limit = false;
  sim_runner runner(cfg, shipped_scenarios());
  runner.start();

  struct received {
    std::string routing_id;
    bus::header head;
    std::string body;
  };
  std::vector<received> inbox;
  auto pump = [&](auto done) {
    for (int i = 0; i < 1000 && !done(); ++i) {
      runner.poll_once(5);
      std::vector<zmq::message_t> parts;
      while (zmq::recv_multipart(router, std::back_inserter(parts),
                                 zmq::recv_flags::dontwait)) {
        BOOST_TEST_REQUIRE(parts.size() == 3u);
        std::string why;
        auto h = bus::decode_header(parts[1].to_string_view(), bus::decode_limits{}, why);
        BOOST_TEST_REQUIRE(h.has_value(), why);
        BOOST_TEST(h->device_id == parts[0].to_string());
        inbox.push_back({parts[0].to_string(), *h, parts[2].to_string()});
        parts.clear();
      }
    }
    return done();
  };
  auto count = [&](const std::string& type, const std::string& device) {
    return std::count_if(inbox.begin(), inbox.end(), [&](const received& r) {
      return r.head.type == type && r.routing_id == device;
    });
  };
  auto send = [&](const std::string& device, const std::string& type,
                  const std::string& body) {
    std::string head = header_frame(type, device);
    router.send(zmq::buffer(device), zmq::send_flags::sndmore);
    router.send(zmq::buffer(head), zmq::send_flags::sndmore);
    router.send(zmq::buffer(body), zmq::send_flags::none);
  };

  BOOST_TEST_REQUIRE(
      pump([&] { return count("hello", "sim-0000") && count("hello", "sim-0001"); }));
  bus::welcome w;
  w.heartbeat_interval_ms = 100;
  send("sim-0000", "welcome", bus::encode(w));
  send("sim-0001", "welcome", bus::encode(w));
  BOOST_TEST_REQUIRE(pump([&] {
    return count("heartbeat", "sim-0000") >= 2 && count("incident", "sim-0001") == 2;
  }));

  send("sim-0000", "command", bus::encode(make_command("r-1", "isolate")));
  // Not acknowledged yet: the result comes at once and again a second later.
  BOOST_TEST_REQUIRE(pump([&] { return count("action_result", "sim-0000") >= 2; }));
  BOOST_TEST(count("action_ack", "sim-0000") == 1);
  BOOST_TEST(runner.endpoint(0).isolated());
  BOOST_TEST(!runner.endpoint(1).isolated());

  bus::result_ack ra;
  ra.action_id = "r-1";
  send("sim-0000", "result_ack", bus::encode(ra));
  BOOST_TEST_REQUIRE(pump([&] { return runner.endpoint(0).unacked_results().empty(); }));

  // Garbage from the server: a one-frame message and a bad header.
  router.send(zmq::buffer(std::string("sim-0001")), zmq::send_flags::sndmore);
  router.send(zmq::buffer(std::string("junk")), zmq::send_flags::none);
  send("sim-0001", "command", "\xc1");
  BOOST_TEST(pump([&] { return runner.stats().totals.bad_frames >= 2; }));
  auto s = runner.stats();
  BOOST_TEST(s.welcomed == 2u);
  BOOST_TEST(s.linked == 2u);
  BOOST_TEST(s.totals.incidents == 4u);
}
