#define BOOST_TEST_MODULE agent_sim
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "agent-sim/agent_session.hpp"
#include "agent-sim/executor.hpp"
#include "agent-sim/scenario.hpp"
#include "agent-sim/sim_endpoint.hpp"
#include "agent-sim/sim_procs.hpp"
#include "agent-sim/sim_runner.hpp"
#include "bus/codec.hpp"
#include "bus/command_signature.hpp"
#include "common/domain.hpp"
#include "common/keys.hpp"
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

// --procs: the shares cover every endpoint once, in order, and differ by at most one.
BOOST_AUTO_TEST_CASE(shares_cover_every_endpoint_once) {
  for (std::size_t total : {1u, 7u, 50000u})
    for (std::size_t procs : {1u, 3u, 11u}) {
      if (procs > total) continue;
      std::size_t next = 0, least = total, most = 0;
      for (std::size_t k = 0; k < procs; ++k) {
        auto sh = sim::share_of(total, procs, k);
        BOOST_TEST(sh.first == next);
        next += sh.count;
        least = std::min(least, sh.count);
        most = std::max(most, sh.count);
      }
      BOOST_TEST(next == total);
      BOOST_TEST(most - least <= 1u);
    }
  BOOST_TEST(sim::endpoints_per_process_limit() >= 1u);
  BOOST_TEST(sim::processes_needed(sim::endpoints_per_process_limit() + 1) == 2u);
}

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
  auto q = ep.handle_command(make_command("b-1", "format_disk"), t0);
  BOOST_TEST(!q.result.ok);
  BOOST_TEST(q.result.error == "unsupported action type: format_disk");
  BOOST_TEST(q.result.effect.empty());

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
  out = ep.tick(t0 + sim_endpoint::hello_retry_us * 5 / 4); // give or take a quarter
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

  // A server that does not know the device (its database was replaced) answers
  // `rejected` with limit "hello": the endpoint says hello again.
  BOOST_TEST(ep.on_message(header_frame("welcome", id), bus::encode(w), now).empty());
  bus::rejected r;
  r.type = "heartbeat";
  r.limit = "hello";
  r.reason = "unknown device: send hello first";
  out = ep.on_message(header_frame("rejected", id), bus::encode(r), now);
  BOOST_TEST((types_of(out) == std::vector<std::string>{"hello"}));
  BOOST_TEST(!ep.welcomed());
  // Any other refusal is counted, nothing more.
  BOOST_TEST(ep.on_message(header_frame("welcome", id), bus::encode(w), now).empty());
  r.limit = "max_incidents_per_minute";
  BOOST_TEST(ep.on_message(header_frame("rejected", id), bus::encode(r), now).empty());
  BOOST_TEST(ep.welcomed());
}

BOOST_AUTO_TEST_CASE(unanswered_hellos_back_off_and_a_busy_server_is_waited_for) {
  auto all = shipped_scenarios();
  sim_endpoint ep(3, test_config(), all, t0);
  const std::string id = ep.device_id();
  ep.start(t0);
  ep.on_link_up(t0);
  // Each unanswered hello waits about twice as long as the one before (give or take
  // a quarter), up to a minute.
  int64_t now = t0;
  std::vector<int64_t> waits;
  for (int i = 0; i < 8; ++i) {
    int64_t due = ep.next_due();
    BOOST_TEST_REQUIRE(due > now);
    BOOST_TEST(ep.tick(due - 1).empty());
    auto out = ep.tick(due);
    BOOST_TEST_REQUIRE(out.size() == 1u);
    BOOST_TEST(out[0].head.type == "hello");
    waits.push_back(due - now);
    now = due;
  }
  int64_t nominal = sim_endpoint::hello_retry_us;
  for (auto wait : waits) {
    BOOST_TEST(wait >= nominal * 3 / 4);
    BOOST_TEST(wait <= nominal * 5 / 4);
    nominal = std::min<int64_t>(nominal * 2, agent_session::max_hello_retry_us);
  }
  // Two endpoints do not keep the same rhythm.
  sim_endpoint other(4, test_config(), all, t0);
  other.start(t0);
  other.on_link_up(t0);
  BOOST_TEST(other.next_due() != t0 + waits[0]);

  // A welcome starts the waits over.
  bus::welcome w;
  w.heartbeat_interval_ms = 1000;
  ep.on_message(header_frame("welcome", id), bus::encode(w), now);
  ep.on_link_down();
  auto out = ep.on_link_up(now);
  BOOST_TEST((types_of(out) == std::vector<std::string>{"hello"}));
  BOOST_TEST(ep.next_due() - now <= sim_endpoint::hello_retry_us * 5 / 4);

  // Refused as busy: no hello before the time the server named, and then within as
  // long again.
  bus::rejected r;
  r.type = "hello";
  r.limit = "max_hellos_in_flight";
  r.retry_after_ms = 20000;
  BOOST_TEST(ep.on_message(header_frame("rejected", id), bus::encode(r), now).empty());
  BOOST_TEST(ep.next_due() >= now + 20'000'000);
  BOOST_TEST(ep.next_due() < now + 40'000'000);
  BOOST_TEST(ep.tick(now + 19'999'999).empty());
  BOOST_TEST((types_of(ep.tick(ep.next_due())) == std::vector<std::string>{"hello"}));
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
  cfg.link.raise_fd_limit = false;
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

// Thousands of endpoints in one process come up in steps: a socket is opened only
// while fewer than connects_in_flight are still dialling, so the first ones say hello
// while later sockets are still to be made, and every one gets there.
BOOST_AUTO_TEST_CASE(runner_keeps_a_bounded_window_of_connects) {
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");

  runner_config cfg;
  cfg.endpoints = 5;
  cfg.endpoint = test_config();
  cfg.endpoint.server = router.get(zmq::sockopt::last_endpoint);
  cfg.link.raise_fd_limit = false;
  cfg.link.connects_in_flight = 2;
  sim_runner runner(cfg, shipped_scenarios());
  runner.start();
  BOOST_TEST(runner.stats().opened == 2u);
  runner.poll_once(0); // no handshake can have finished unseen: none more opened
  BOOST_TEST(runner.stats().opened - runner.stats().linked <= 2u);

  std::set<std::string> hellos;
  std::size_t most_dialling = 0;
  for (int i = 0; i < 1000 && hellos.size() < 5; ++i) {
    runner.poll_once(5);
    auto st = runner.stats();
    most_dialling = std::max(most_dialling, st.opened - st.linked);
    std::vector<zmq::message_t> parts;
    while (zmq::recv_multipart(router, std::back_inserter(parts),
                               zmq::recv_flags::dontwait)) {
      std::string why;
      auto h =
          bus::decode_header(parts.at(1).to_string_view(), bus::decode_limits{}, why);
      if (h && h->type == "hello") hellos.insert(parts[0].to_string());
      parts.clear();
    }
  }
  BOOST_TEST(hellos.size() == 5u);
  BOOST_TEST(runner.stats().opened == 5u);
  BOOST_TEST(most_dialling <= 2u);
  BOOST_TEST(runner.stats().send_failures == 0u);
}

// -- response actions -----------------------------------------------------------------

namespace {

// SHA-256 of the empty string: any fixed hash will do.
const std::string dropper_hash =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// nginx writes a payload with a fixed hash and starts it; the payload beacons and
// persists, and nginx also runs `id` on its own.
std::string dropper_toml(const std::string& name, const std::string& path,
                         bool fixed_hash) {
  return R"(
[scenario]
name = ")" +
         name + R"("
os = "linux"
[detection]
name = "HEUR:Trojan.Linux.Test"
severity = "high"
engine = "test"
[[event]]
id = "drop"
type = "file_created"
actor = "/usr/sbin/nginx"
actor_user = "www-data"
path = ")" +
         path + "\"\n" +
         (fixed_hash ? "sha256 = \"" + dropper_hash + "\"\n" : std::string()) + R"(
[[event]]
id = "run"
type = "process_started"
parent = "drop"
key = true
image = ")" +
         path + R"("
cmdline = ")" +
         path + R"( -d"
[[event]]
id = "beacon"
type = "network_connection"
parent = "run"
remote = "{c2}:443"
[[event]]
id = "persist"
type = "file_modified"
parent = "run"
path = "/etc/crontab"
[[event]]
id = "recon"
type = "process_started"
parent = "drop"
image = "/usr/bin/id"
cmdline = "id"
)";
}

std::vector<scenario> dropper_scenarios(bool fixed_hash = true) {
  return {parse_scenario(dropper_toml(fixed_hash ? "dropper" : "fresh-dropper",
                                      "/var/tmp/.cache/payload", fixed_hash),
                         "dropper.toml")};
}

bus::command make_action(const std::string& id, const std::string& type,
                         std::map<std::string, std::string> params) {
  bus::command c = make_command(id, type);
  c.params = std::move(params);
  return c;
}

// start_process parameters the way the server splits them.
std::map<std::string, std::string> start_params(const std::string& path,
                                                const std::vector<std::string>& args,
                                                const std::string& cwd = "") {
  std::map<std::string, std::string> p{
      {"path", path}, {"working_directory", cwd}, {"argc", std::to_string(args.size())}};
  for (std::size_t i = 0; i < args.size(); ++i)
    p["arg." + std::to_string(i)] = args[i];
  return p;
}

const bus::activity_event* find_event(const bus::incident_report& r,
                                      const std::string& id) {
  for (const auto& e : r.events)
    if (e.id == id) return &e;
  return nullptr;
}

std::vector<std::string> event_ids(const bus::incident_report& r) {
  std::vector<std::string> ids;
  for (const auto& e : r.events)
    ids.push_back(e.id);
  return ids;
}

std::size_t first_windows_index(const std::vector<scenario>& all) {
  for (std::size_t i = 0; i < 64; ++i)
    if (sim_endpoint(i, test_config(), all, t0).os_family() == "windows") return i;
  BOOST_FAIL("no Windows endpoint among the first 64");
  return 0;
}

// Runs one action with a fresh id and returns its result.
struct actor_helper {
  sim_endpoint& ep;
  int n = 0;
  bus::action_result operator()(const std::string& type,
                                std::map<std::string, std::string> params,
                                int64_t now = t0) {
    return ep.handle_command(make_action("x-" + std::to_string(++n), type, params), now)
        .result;
  }
};

} // namespace

BOOST_AUTO_TEST_CASE(prevent_run_blocks_starts_in_chains_and_allow_run_lifts_it) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  auto full = ep.next_incident(t0);
  BOOST_TEST((event_ids(full) ==
              std::vector<std::string>{"drop", "run", "beacon", "persist", "recon"}));
  BOOST_TEST(find_event(full, "run")->process.sha256 == dropper_hash);

  // An upper-case hash is the same hash.
  std::string upper = dropper_hash;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  auto r = act("prevent_run", {{"path", "/var/tmp/.cache/payload"}, {"sha256", upper}});
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(r.effect.at("sha256") == dropper_hash);
  BOOST_TEST(ep.prevented().count(dropper_hash) == 1u);
  // Prevention stops new starts; the instance already running is left alone.
  BOOST_TEST(ep.has_process(find_event(full, "run")->process.pid,
                            find_event(full, "run")->process.start_time));

  auto blocked = ep.next_incident(t0 + 60'000'000);
  check_chain(blocked);
  // The chain stops at the written file, which now holds the detection; the sibling
  // started by nginx itself still happens.
  BOOST_TEST((event_ids(blocked) == std::vector<std::string>{"drop", "recon"}));
  BOOST_TEST(blocked.key_event_id == "drop");
  BOOST_TEST(ep.stats().blocked_starts == 1u);
  std::size_t with_hash = 0;
  for (const auto& [pid, p] : ep.processes())
    with_hash += p.sha256 == dropper_hash && p.start_time > t0;
  BOOST_TEST(with_hash == 0u);

  auto again =
      act("prevent_run", {{"path", "/var/tmp/.cache/payload"}, {"sha256", dropper_hash}});
  BOOST_TEST(again.ok);
  BOOST_TEST(again.effect.at("note") == "already prevented");

  auto allowed =
      act("allow_run", {{"path", "/var/tmp/.cache/payload"}, {"sha256", dropper_hash}});
  BOOST_TEST_REQUIRE(allowed.ok, allowed.error);
  BOOST_TEST(allowed.effect.at("sha256") == dropper_hash);
  BOOST_TEST(ep.prevented().empty());
  auto after = ep.next_incident(t0 + 120'000'000);
  BOOST_TEST(after.key_event_id == "run");
  BOOST_TEST(after.events.size() == 5u);
  BOOST_TEST(ep.stats().blocked_starts == 1u);

  auto noop =
      act("allow_run", {{"path", "/var/tmp/.cache/payload"}, {"sha256", dropper_hash}});
  BOOST_TEST(noop.ok);
  BOOST_TEST(noop.effect.at("note") == "not prevented");
}

BOOST_AUTO_TEST_CASE(prevent_run_rejects_bad_hashes_and_paths) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  auto r = act("prevent_run", {{"path", "/tmp/x"}});
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error == "missing param sha256");
  r = act("prevent_run", {{"path", "/tmp/x"}, {"sha256", "xyz"}});
  BOOST_TEST(r.error == "sha256 must be 64 hex digits, got 'xyz'");
  r = act("prevent_run", {{"path", "/tmp/x"}, {"sha256", std::string(64, 'g')}});
  BOOST_TEST(!r.ok);
  r = act("allow_run", {{"path", "tmp/x"}, {"sha256", dropper_hash}});
  BOOST_TEST(r.error == "path is not absolute: tmp/x");
  BOOST_TEST(ep.prevented().empty());
  BOOST_TEST(r.effect.empty());
}

BOOST_AUTO_TEST_CASE(prevented_actor_that_was_terminated_cannot_come_back) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  const bus::process_info nginx = find_event(ep.next_incident(t0), "drop")->process;
  BOOST_TEST(nginx.image == "/usr/sbin/nginx");
  BOOST_TEST_REQUIRE(act("prevent_run", {{"sha256", nginx.sha256}}).ok);
  BOOST_TEST_REQUIRE(
      act("terminate_process", {{"pid", std::to_string(nginx.pid)},
                                {"start_time", std::to_string(nginx.start_time)},
                                {"image", nginx.image}})
          .ok);
  // Nothing of the chain can happen: there is nothing to report.
  auto r = ep.next_incident(t0 + 60'000'000);
  BOOST_TEST(r.events.empty());
  BOOST_TEST(ep.stats().suppressed_incidents == 1u);
  BOOST_TEST(ep.stats().blocked_starts == 1u);
}

BOOST_AUTO_TEST_CASE(suppressed_incidents_are_not_sent) {
  auto scenarios = dropper_scenarios();
  endpoint_config cfg = test_config();
  cfg.incident_interval_us = 1'000'000;
  sim_endpoint ep(0, cfg, scenarios, t0);
  actor_helper act{ep};
  ep.start(t0);
  ep.on_link_up(t0);
  bus::welcome w;
  w.heartbeat_interval_ms = 3'600'000;
  ep.on_message(header_frame("welcome", ep.device_id()), bus::encode(w), t0);
  int64_t now = t0;
  std::size_t sent = 0;
  auto run_until_incident = [&] {
    uint64_t before = ep.stats().incidents;
    while (ep.stats().incidents == before) {
      now = std::max(now, ep.next_due());
      for (const auto& o : ep.tick(now))
        sent += o.head.type == "incident";
    }
  };
  run_until_incident();
  BOOST_TEST(sent == 1u);
  auto nginx = std::find_if(ep.processes().begin(), ep.processes().end(), [](auto& kv) {
                 return kv.second.image == "/usr/sbin/nginx";
               })->second;
  BOOST_TEST_REQUIRE(act("prevent_run", {{"sha256", nginx.sha256}}).ok);
  BOOST_TEST_REQUIRE(
      act("terminate_process", {{"pid", std::to_string(nginx.pid)},
                                {"start_time", std::to_string(nginx.start_time)}})
          .ok);
  run_until_incident();
  BOOST_TEST(sent == 1u);
  BOOST_TEST(ep.stats().suppressed_incidents == 1u);
}

BOOST_AUTO_TEST_CASE(an_endpoint_told_to_report_no_incidents_sends_none) {
  auto all = shipped_scenarios();
  for (bool report : {true, false}) {
    endpoint_config cfg = test_config();
    cfg.incident_interval_us = 1'000'000;
    cfg.report_incidents = report;
    sim_endpoint ep(0, cfg, all, t0);
    ep.start(t0);
    ep.on_link_up(t0);
    bus::welcome w;
    w.heartbeat_interval_ms = 1000;
    ep.on_message(header_frame("welcome", ep.device_id()), bus::encode(w), t0);
    std::size_t incidents = 0, heartbeats = 0;
    for (int64_t now = t0; now < t0 + 60'000'000; now += 250'000)
      for (const auto& o : ep.tick(now)) {
        incidents += o.head.type == "incident";
        heartbeats += o.head.type == "heartbeat";
      }
    BOOST_TEST((incidents > 0) == report);
    BOOST_TEST(heartbeats >= 50u); // the endpoint keeps talking either way
  }
}

BOOST_AUTO_TEST_CASE(quarantine_and_restore_round_trip) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  ep.next_incident(t0);
  const std::string path = "/var/tmp/.cache/payload";
  BOOST_TEST_REQUIRE(ep.has_file(path));
  const bus::file_info original = ep.files().at(path);

  auto q = act("quarantine", {{"path", path}, {"sha256", dropper_hash}});
  BOOST_TEST_REQUIRE(q.ok, q.error);
  const std::string id = q.effect.at("quarantine_id");
  BOOST_TEST(id.size() == 18u);
  BOOST_TEST(id.rfind("q-", 0) == 0u);
  BOOST_TEST(id.find_first_not_of("0123456789abcdef", 2) == std::string::npos);
  BOOST_TEST(q.effect.at("path") == path);
  BOOST_TEST(!ep.has_file(path));
  BOOST_TEST_REQUIRE(ep.quarantine().count(id) == 1u);
  BOOST_TEST(ep.quarantine().at(id).sha256 == dropper_hash);

  // Gone means gone: a second quarantine finds nothing.
  auto twice = act("quarantine", {{"path", path}, {"sha256", dropper_hash}});
  BOOST_TEST(!twice.ok);
  BOOST_TEST(twice.error == "no file at " + path);

  auto unknown = act("restore_from_quarantine", {{"quarantine_id", "q-0000000000000000"},
                                                 {"path", path},
                                                 {"sha256", dropper_hash}});
  BOOST_TEST(!unknown.ok);
  BOOST_TEST(unknown.error == "no quarantine entry q-0000000000000000");
  auto other_path =
      act("restore_from_quarantine",
          {{"quarantine_id", id}, {"path", "/tmp/else"}, {"sha256", dropper_hash}});
  BOOST_TEST(!other_path.ok);
  BOOST_TEST(other_path.error.find("is for " + path) != std::string::npos,
             other_path.error);
  BOOST_TEST(!ep.has_file(path));

  auto back = act("restore_from_quarantine",
                  {{"quarantine_id", id}, {"path", path}, {"sha256", dropper_hash}});
  BOOST_TEST_REQUIRE(back.ok, back.error);
  BOOST_TEST(back.effect.at("path") == path);
  BOOST_TEST(ep.quarantine().empty());
  BOOST_TEST_REQUIRE(ep.has_file(path));
  BOOST_TEST(ep.files().at(path).sha256 == original.sha256);
  BOOST_TEST(ep.files().at(path).size == original.size);

  // The entry is used up.
  auto replay = act("restore_from_quarantine",
                    {{"quarantine_id", id}, {"path", path}, {"sha256", dropper_hash}});
  BOOST_TEST(!replay.ok);
}

BOOST_AUTO_TEST_CASE(file_actions_check_the_file_before_acting) {
  auto scenarios = dropper_scenarios(false);
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  const std::string path = "/var/tmp/.cache/payload";
  auto first = ep.next_incident(t0);
  const std::string h1 = find_event(first, "drop")->file.sha256;
  const std::string wrong(64, '0');

  auto changed = act("quarantine", {{"path", path}, {"sha256", wrong}});
  BOOST_TEST(!changed.ok);
  BOOST_TEST(changed.error == "file changed since detection");
  BOOST_TEST(changed.effect.empty());
  BOOST_TEST(ep.has_file(path));
  BOOST_TEST(ep.quarantine().empty());
  auto del_changed = act("delete_file", {{"path", path}, {"sha256", wrong}});
  BOOST_TEST(del_changed.error == "file changed since detection");
  BOOST_TEST(ep.has_file(path));
  auto missing = act("delete_file", {{"path", "/nope"}, {"sha256", h1}});
  BOOST_TEST(missing.error == "no file at /nope");

  auto q = act("quarantine", {{"path", path}, {"sha256", h1}});
  BOOST_TEST_REQUIRE(q.ok, q.error);
  // The next incident writes a new payload with another hash at the same path: the
  // quarantined one cannot go back over it.
  auto second = ep.next_incident(t0 + 60'000'000);
  const std::string h2 = find_event(second, "drop")->file.sha256;
  BOOST_TEST_REQUIRE(h2 != h1);
  auto conflict = act(
      "restore_from_quarantine",
      {{"quarantine_id", q.effect.at("quarantine_id")}, {"path", path}, {"sha256", h1}});
  BOOST_TEST(!conflict.ok);
  BOOST_TEST(conflict.error == "a different file now sits at " + path);
  BOOST_TEST(ep.files().at(path).sha256 == h2);
  BOOST_TEST(ep.quarantine().size() == 1u);

  auto del = act("delete_file", {{"path", path}, {"sha256", h2}});
  BOOST_TEST_REQUIRE(del.ok, del.error);
  BOOST_TEST(del.effect.at("path") == path);
  BOOST_TEST(!ep.has_file(path));
  BOOST_TEST(ep.files().count(path) == 0u);
  // With the path free, the quarantined file can go back.
  BOOST_TEST(
      act("restore_from_quarantine", {{"quarantine_id", q.effect.at("quarantine_id")},
                                      {"path", path},
                                      {"sha256", h1}})
          .ok);
  BOOST_TEST(ep.files().at(path).sha256 == h1);
}

BOOST_AUTO_TEST_CASE(terminate_process_checks_identity_and_the_process_stays_gone) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  auto first = ep.next_incident(t0);
  const bus::process_info payload = find_event(first, "run")->process;
  const bus::process_info nginx = find_event(first, "drop")->process;
  auto pid = std::to_string(payload.pid);
  auto start = std::to_string(payload.start_time);

  auto r = act("terminate_process", {{"pid", pid}, {"start_time", "12345"}});
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error ==
             "process " + pid + " is not the detected one (start time differs)");
  r = act("terminate_process",
          {{"pid", pid}, {"start_time", start}, {"image", "/usr/bin/other"}});
  BOOST_TEST(r.error == "process " + pid + " is not the detected one (image differs)");
  BOOST_TEST(ep.has_process(payload.pid, payload.start_time));

  r = act("terminate_process",
          {{"pid", pid}, {"start_time", start}, {"image", payload.image}});
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(r.effect.at("pid") == pid);
  BOOST_TEST(!ep.has_process(payload.pid, payload.start_time));
  r = act("terminate_process", {{"pid", pid}, {"start_time", start}});
  BOOST_TEST(r.error == "no process " + pid);

  // Killing the long-running actor: later chains are performed by a new instance,
  // and nothing more comes from the old one.
  r = act("terminate_process", {{"pid", std::to_string(nginx.pid)},
                                {"start_time", std::to_string(nginx.start_time)}});
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(!ep.has_process(nginx.pid, nginx.start_time));
  for (int k = 1; k <= 5; ++k) {
    int64_t now = t0 + k * 60'000'000;
    auto next = ep.next_incident(now);
    BOOST_TEST_REQUIRE(!next.events.empty());
    for (const auto& e : next.events) {
      bool old_nginx =
          e.process.pid == nginx.pid && e.process.start_time == nginx.start_time;
      bool old_payload =
          e.process.pid == payload.pid && e.process.start_time == payload.start_time;
      BOOST_TEST(!old_nginx, e.id);
      BOOST_TEST(!old_payload, e.id);
    }
    const auto& actor = find_event(next, "drop")->process;
    BOOST_TEST(actor.image == "/usr/sbin/nginx");
    BOOST_TEST(actor.start_time > nginx.start_time);
    BOOST_TEST(actor.start_time < now);
    BOOST_TEST(ep.has_process(actor.pid, actor.start_time));
  }
}

BOOST_AUTO_TEST_CASE(terminate_process_rejects_hostile_params) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  ep.next_incident(t0);
  std::size_t before = ep.processes().size();
  auto r = act("terminate_process", {});
  BOOST_TEST(r.error == "missing param pid");
  r = act("terminate_process", {{"pid", "42"}});
  BOOST_TEST(r.error == "missing param start_time");
  for (const char* bad :
       {"abc", "-1", "0", "4294967296", "12 ", "0x10", "99999999999999999999999"}) {
    r = act("terminate_process", {{"pid", bad}, {"start_time", "1"}});
    BOOST_TEST(!r.ok, bad);
    BOOST_TEST(r.error.rfind("pid must be a decimal number", 0) == 0u, r.error);
  }
  r = act("terminate_process", {{"pid", "42"}, {"start_time", "soon"}});
  BOOST_TEST(r.error ==
             "start_time must be a decimal number of microseconds, got 'soon'");
  r = act("terminate_process", {{"pid", "4"}, {"start_time", "1"}});
  BOOST_TEST(r.error == "no process 4");
  BOOST_TEST(ep.processes().size() == before);
}

BOOST_AUTO_TEST_CASE(start_process_runs_a_process_that_appears_in_the_table) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  BOOST_TEST_REQUIRE(ep.os_family() == "linux");
  const int64_t now = t0 + 5'000'000;

  auto r = act("start_process", start_params("/usr/bin/id", {}, "/tmp"), now);
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(r.effect.at("exit_code") == "0");
  BOOST_TEST(r.effect.at("stdout") == "uid=0(root) gid=0(root) groups=0(root)\n");
  BOOST_TEST(r.effect.at("stderr") == "");
  uint32_t pid = static_cast<uint32_t>(std::stoul(r.effect.at("pid")));
  BOOST_TEST_REQUIRE(ep.processes().count(pid) == 1u);
  const auto& p = ep.processes().at(pid);
  BOOST_TEST(p.image == "/usr/bin/id");
  BOOST_TEST(p.start_time == now);
  BOOST_TEST(p.user == "root");
  BOOST_TEST(is_hex64(p.sha256));
  BOOST_TEST(p.cmdline == "/usr/bin/id");
  BOOST_TEST(ep.has_process(pid, now));
  const launch_info* li = ep.launched(pid);
  BOOST_TEST_REQUIRE(li != nullptr);
  BOOST_TEST(li->working_directory == "/tmp");
  BOOST_TEST((li->argv == std::vector<std::string>{"/usr/bin/id"}));
  // The parent is the agent itself.
  BOOST_TEST_REQUIRE(ep.processes().count(p.parent_pid) == 1u);
  BOOST_TEST(ep.processes().at(p.parent_pid).image == "/opt/parry/bin/parry-agent");

  r = act("start_process", start_params("/bin/echo", {"hello world", "-x"}), now);
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(r.effect.at("stdout") == "hello world -x\n");
  pid = static_cast<uint32_t>(std::stoul(r.effect.at("pid")));
  BOOST_TEST(ep.processes().at(pid).cmdline == "/bin/echo \"hello world\" -x");
  BOOST_TEST((ep.launched(pid)->argv ==
              std::vector<std::string>{"/bin/echo", "hello world", "-x"}));
  BOOST_TEST(ep.launched(pid)->working_directory == "/"); // empty means the default

  r = act("start_process", start_params("/bin/sh", {"-c", "uname -a"}));
  BOOST_TEST(r.effect.at("stdout").find(" " + ep.identity().hostname + " ") !=
             std::string::npos);
  r = act("start_process", start_params("/usr/bin/hostname", {}));
  BOOST_TEST(r.effect.at("stdout") == ep.identity().hostname + "\n");
  r = act("start_process", start_params("/bin/false", {}));
  BOOST_TEST(r.ok);
  BOOST_TEST(r.effect.at("exit_code") == "1");
  r = act("start_process", start_params("/bin/ls", {"/nowhere"}));
  BOOST_TEST(r.effect.at("exit_code") == "2");
  BOOST_TEST(r.effect.at("stderr") ==
             "ls: cannot access '/nowhere': No such file or directory\n");

  // Output is bounded.
  r = act("start_process", start_params("/bin/echo", {std::string(10'000, 'y')}));
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(r.effect.at("stdout").size() == sim_endpoint::max_output);

  // A file an incident wrote can be started too; it prints nothing.
  ep.next_incident(now);
  r = act("start_process", start_params("/var/tmp/.cache/payload", {"--version"}));
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(r.effect.at("stdout") == "");
  pid = static_cast<uint32_t>(std::stoul(r.effect.at("pid")));
  BOOST_TEST(ep.processes().at(pid).sha256 == dropper_hash);
}

BOOST_AUTO_TEST_CASE(start_process_on_windows) {
  auto all = shipped_scenarios();
  sim_endpoint ep(first_windows_index(all), test_config(), all, t0);
  actor_helper act{ep};
  auto r = act("start_process", start_params(R"(c:\windows\system32\WHOAMI.EXE)", {},
                                             R"(C:\Users\Public)"));
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(r.effect.at("stdout") == "nt authority\\system\r\n");
  uint32_t pid = static_cast<uint32_t>(std::stoul(r.effect.at("pid")));
  BOOST_TEST(ep.processes().at(pid).image == R"(C:\Windows\System32\whoami.exe)");
  BOOST_TEST(ep.processes().at(pid).user == R"(NT AUTHORITY\SYSTEM)");
  BOOST_TEST(pid % 4 == 0u);
  BOOST_TEST(ep.launched(pid)->working_directory == R"(C:\Users\Public)");

  r = act("start_process",
          start_params(R"(C:\Windows\System32\cmd.exe)", {"/c", "hostname"}));
  BOOST_TEST(r.effect.at("stdout") == ep.identity().hostname + "\r\n");
  r = act("start_process", start_params(R"(C:\Windows\System32\ipconfig.exe)", {}));
  BOOST_TEST(r.effect.at("stdout").find(ep.identity().addresses.front()) !=
             std::string::npos);
  r = act("start_process", start_params("/usr/bin/id", {}));
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error == "path is not absolute: /usr/bin/id");
}

// The command line a started process reports splits back into the argv it was given,
// by the endpoint's own rules (issue 6: Windows paths lost backslashes).
BOOST_AUTO_TEST_CASE(started_command_line_splits_back_into_its_argv) {
  auto all = shipped_scenarios();
  for (bool windows : {true, false}) {
    std::size_t index = windows ? first_windows_index(all) : 0;
    while (!windows &&
           sim_endpoint(index, test_config(), all, t0).os_family() == "windows")
      ++index;
    sim_endpoint ep(index, test_config(), all, t0);
    BOOST_TEST_REQUIRE((ep.os_family() == "windows") == windows);
    actor_helper act{ep};
    std::vector<std::string> args{R"(\\fileserver\share\x)",
                                  R"(C:\Temp\plain.txt)",
                                  R"(C:\Temp\dir with space\)",
                                  "say \"hi\" there",
                                  "",
                                  "back\\slash \\\"quoted\\\"",
                                  "tab\there"};
    std::string exe = windows ? R"(C:\Windows\System32\cmd.exe)" : "/bin/echo";
    auto r = act("start_process", start_params(exe, args));
    BOOST_TEST_REQUIRE(r.ok, r.error);
    uint32_t pid = static_cast<uint32_t>(std::stoul(r.effect.at("pid")));
    std::vector<std::string> argv{exe};
    argv.insert(argv.end(), args.begin(), args.end());
    BOOST_TEST(ep.launched(pid)->argv == argv);
    std::string why;
    auto split = parry::split_arguments(
        ep.processes().at(pid).cmdline,
        windows ? parry::os_family::windows : parry::os_family::posix, why);
    BOOST_TEST_REQUIRE(split.has_value(), why);
    BOOST_TEST(*split == argv, ep.processes().at(pid).cmdline);
  }
}

BOOST_AUTO_TEST_CASE(start_process_refuses_prevented_and_missing_executables) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  auto r = act("start_process", start_params("/usr/bin/id", {}));
  BOOST_TEST_REQUIRE(r.ok, r.error);
  const std::string hash =
      ep.processes().at(static_cast<uint32_t>(std::stoul(r.effect.at("pid")))).sha256;
  std::size_t before = ep.processes().size();

  BOOST_TEST_REQUIRE(act("prevent_run", {{"path", "/usr/bin/id"}, {"sha256", hash}}).ok);
  r = act("start_process", start_params("/usr/bin/id", {}));
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error == "execution prevented by policy");
  BOOST_TEST(r.effect.empty());
  BOOST_TEST(ep.processes().size() == before);
  BOOST_TEST(ep.stats().blocked_starts == 1u);

  BOOST_TEST_REQUIRE(act("allow_run", {{"path", "/usr/bin/id"}, {"sha256", hash}}).ok);
  r = act("start_process", start_params("/usr/bin/id", {}));
  BOOST_TEST(r.ok, r.error);
  BOOST_TEST(ep.processes().size() == before + 1);

  r = act("start_process", start_params("/opt/nothing/here", {}));
  BOOST_TEST(r.error == "no executable at /opt/nothing/here");

  // A quarantined system binary cannot start until it is restored.
  auto q = act("quarantine", {{"path", "/usr/bin/id"}, {"sha256", hash}});
  BOOST_TEST_REQUIRE(q.ok, q.error);
  BOOST_TEST(!ep.has_file("/usr/bin/id"));
  r = act("start_process", start_params("/usr/bin/id", {}));
  BOOST_TEST(r.error == "no executable at /usr/bin/id");
  BOOST_TEST(
      act("restore_from_quarantine", {{"quarantine_id", q.effect.at("quarantine_id")},
                                      {"path", "/usr/bin/id"},
                                      {"sha256", hash}})
          .ok);
  BOOST_TEST(act("start_process", start_params("/usr/bin/id", {})).ok);
}

BOOST_AUTO_TEST_CASE(start_process_rejects_hostile_params) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  std::size_t before = ep.processes().size();
  auto error_for = [&](std::map<std::string, std::string> params) {
    auto r = act("start_process", std::move(params));
    BOOST_TEST(!r.ok);
    BOOST_TEST(r.effect.empty());
    BOOST_TEST(r.error.find('\n') == std::string::npos);
    return r.error;
  };
  BOOST_TEST(error_for({}) == "missing param path");
  BOOST_TEST(error_for(start_params("bin/id", {})) == "path is not absolute: bin/id");
  BOOST_TEST(error_for(start_params(std::string("/usr/bin/id\0x", 13), {})) ==
             "path contains a NUL byte");
  BOOST_TEST(error_for(start_params("/usr/bin/id\n", {})) ==
             "path contains control characters");
  BOOST_TEST(error_for(start_params("/usr/../usr/bin/id", {})) ==
             "path has a '..' component: /usr/../usr/bin/id");
  BOOST_TEST(error_for(start_params("/" + std::string(5000, 'a'), {})) ==
             "path is longer than 4096 bytes");
  BOOST_TEST(error_for(start_params("/usr/bin/id", {}, "tmp")) ==
             "working_directory is not absolute: tmp");

  auto p = start_params("/bin/echo", {"a", "b"});
  p["argc"] = "3";
  BOOST_TEST(error_for(p) == "missing param arg.2: argc is 3");
  p["argc"] = "1";
  BOOST_TEST(error_for(p) == "unexpected param arg.1: argc is 1");
  p["argc"] = "two";
  BOOST_TEST(error_for(p) == "argc must be a number from 0 to 64, got 'two'");
  p["argc"] = "65";
  BOOST_TEST(error_for(p).rfind("argc must be a number", 0) == 0u);
  p.erase("argc");
  BOOST_TEST(error_for(p) == "unexpected param arg.0: argc is 0");
  p = start_params("/bin/echo", {"a"});
  p["arg.01"] = "b";
  BOOST_TEST(error_for(p) == "unexpected param arg.01: argc is 1");
  p = start_params("/bin/echo", {std::string("a\0b", 3)});
  BOOST_TEST(error_for(p) == "arg.0 contains a NUL byte");
  p = start_params("/bin/echo", {std::string(20'000, 'a'), std::string(20'000, 'b')});
  BOOST_TEST(error_for(p) == "arguments are longer than 32 KiB");
  BOOST_TEST(ep.processes().size() == before);
  BOOST_TEST(ep.stats().blocked_starts == 0u);
}

BOOST_AUTO_TEST_CASE(process_table_stays_bounded_under_start_process) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  auto first = act("start_process", start_params("/bin/true", {}));
  BOOST_TEST_REQUIRE(first.ok);
  uint32_t first_pid = static_cast<uint32_t>(std::stoul(first.effect.at("pid")));
  for (int i = 0; i < 300; ++i)
    BOOST_TEST_REQUIRE(act("start_process", start_params("/bin/true", {})).ok);
  // The incident bound plus the agent itself.
  BOOST_TEST(ep.processes().size() <= sim_endpoint::max_incident_processes + 1);
  BOOST_TEST(ep.launched(first_pid) == nullptr);
}

BOOST_AUTO_TEST_CASE(hostile_commands_fail_cleanly) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  actor_helper act{ep};
  ep.next_incident(t0);
  // Every action type that needs an object fails with a reason when given none, or
  // garbage.
  std::map<std::string, std::string> junk{
      {"path", std::string(60'000, '\x01')},       {"sha256", std::string(60'000, 'f')},
      {"pid", std::string(60'000, '9')},           {"start_time", "\xff\xfe"},
      {"quarantine_id", std::string(60'000, 'q')}, {"argc", "-1"}};
  for (const char* type :
       {"prevent_run", "allow_run", "quarantine", "restore_from_quarantine",
        "delete_file", "terminate_process", "start_process"}) {
    for (const auto& params : {std::map<std::string, std::string>{}, junk}) {
      auto r = act(type, params);
      BOOST_TEST(!r.ok, type);
      BOOST_TEST(!r.error.empty(), type);
      BOOST_TEST(r.error.size() < 700u, type << ": " << r.error.size());
      BOOST_TEST(r.error.find('\n') == std::string::npos, type);
      BOOST_TEST(r.effect.empty(), type);
    }
  }
  auto weird = act(std::string(70'000, 'z') + "\nexecuted fake", {});
  BOOST_TEST(weird.error.size() < 120u);
  BOOST_TEST(weird.error.find('\n') == std::string::npos);
  // Quoted values stay valid UTF-8: broken sequences become '?', whole ones stay.
  auto bad_utf8 = act("terminate_process", {{"pid", "\xff\xc3"
                                                    "x7\xc3\xa9"}});
  BOOST_TEST(bad_utf8.error ==
             "pid must be a decimal number from 1 to 4294967295, got '??x7\xc3\xa9'");
  BOOST_TEST(ep.prevented().empty());
  BOOST_TEST(ep.quarantine().empty());
  BOOST_TEST(ep.has_file("/var/tmp/.cache/payload"));
}

BOOST_AUTO_TEST_CASE(journal_runs_new_action_types_at_most_once) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  auto first = ep.next_incident(t0);
  const auto payload = find_event(first, "run")->process;
  const std::string path = "/var/tmp/.cache/payload";
  std::vector<bus::command> cmds = {
      make_action("j-1", "start_process", start_params("/usr/bin/id", {})),
      make_action("j-2", "terminate_process",
                  {{"pid", std::to_string(payload.pid)},
                   {"start_time", std::to_string(payload.start_time)}}),
      make_action("j-3", "quarantine", {{"path", path}, {"sha256", dropper_hash}}),
      make_action("j-4", "prevent_run", {{"path", path}, {"sha256", dropper_hash}}),
  };
  std::vector<command_outcome> firsts;
  for (const auto& c : cmds) {
    firsts.push_back(ep.handle_command(c, t0));
    BOOST_TEST(firsts.back().executed);
    BOOST_TEST(firsts.back().result.ok, c.type << ": " << firsts.back().result.error);
  }
  std::size_t processes = ep.processes().size();
  for (std::size_t i = 0; i < cmds.size(); ++i) {
    auto again = ep.handle_command(cmds[i], t0 + 1'000'000);
    BOOST_TEST(!again.executed);
    BOOST_TEST(again.result.ok == firsts[i].result.ok);
    BOOST_TEST((again.result.effect == firsts[i].result.effect));
  }
  BOOST_TEST(ep.processes().size() == processes); // no second start
  BOOST_TEST(ep.quarantine().size() == 1u);       // no second quarantine
  BOOST_TEST(ep.stats().commands_executed == 4u);
  BOOST_TEST(ep.stats().duplicate_commands == 4u);

  // The reverse is its own action and runs once too.
  auto restore =
      make_action("j-5", "restore_from_quarantine",
                  {{"quarantine_id", firsts[2].result.effect.at("quarantine_id")},
                   {"path", path},
                   {"sha256", dropper_hash}});
  BOOST_TEST(ep.handle_command(restore, t0).result.ok);
  auto restore_again = ep.handle_command(restore, t0);
  BOOST_TEST(!restore_again.executed);
  BOOST_TEST(restore_again.result.ok);
  BOOST_TEST(ep.has_file(path));
}

BOOST_AUTO_TEST_CASE(each_execution_logs_one_stable_line) {
  auto scenarios = dropper_scenarios();
  sim_endpoint ep(0, test_config(), scenarios, t0);
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  sink->set_pattern("%v");
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  spdlog::set_level(spdlog::level::info);
  ep.handle_command(make_command("log-1", "isolate"), t0);
  ep.handle_command(make_command("log-1", "isolate"), t0); // answered from the journal
  ep.handle_command(make_action("log-2", "delete_file", {{"path", "/x"}}), t0);
  ep.handle_command(make_command("log-3", "bad\ntype"), t0);
  spdlog::set_default_logger(previous);
  spdlog::set_level(spdlog::level::warn);
  BOOST_TEST(log.str() == "executed log-1 isolate on sim-0000: ok\n"
                          "executed log-2 delete_file on sim-0000: missing param sha256\n"
                          "executed log-3 bad?type on sim-0000: unsupported action type: "
                          "bad?type\n");
}

// -- test hooks ---------------------------------------------------------------------

namespace {

sim_endpoint welcomed_endpoint(const std::vector<scenario>& scenarios, int64_t now) {
  endpoint_config cfg = test_config();
  cfg.max_incidents = 0;
  cfg.incident_interval_us = 3'600'000'000; // keep incidents out of the way
  sim_endpoint ep(0, cfg, scenarios, now);
  ep.start(now);
  ep.on_link_up(now);
  bus::welcome w;
  w.heartbeat_interval_ms = 3'600'000;
  ep.on_message(header_frame("welcome", ep.device_id()), bus::encode(w), now);
  return ep;
}

// (type, action id) of each ack and result in `out`.
std::vector<std::string> answers(const std::vector<outbound>& out) {
  std::vector<std::string> a;
  for (const auto& o : out) {
    if (o.head.type == "action_ack")
      a.push_back("ack " + body_of<bus::action_ack>(o).action_id);
    if (o.head.type == "action_result")
      a.push_back("result " + body_of<bus::action_result>(o).action_id);
  }
  return a;
}

} // namespace

BOOST_AUTO_TEST_CASE(held_commands_wait_and_then_run_once_in_order) {
  auto scenarios = dropper_scenarios();
  int64_t now = t0;
  sim_endpoint ep = welcomed_endpoint(scenarios, now);
  const std::string id = ep.device_id();
  auto deliver = [&](const bus::command& c) {
    return ep.on_message(header_frame("command", id), bus::encode(c), now);
  };
  ep.set_hold(true, false);
  BOOST_TEST(ep.holding_commands());
  auto steady = [] { // the agent's clock for agent_us
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  int64_t started_delivery = steady();
  BOOST_TEST(deliver(make_command("h-1", "isolate")).empty());
  BOOST_TEST(deliver(make_command("h-2", "release_isolation")).empty());
  int64_t delivered = steady();
  BOOST_TEST(deliver(make_command("h-1", "isolate")).empty()); // re-delivered
  BOOST_TEST((ep.pending_commands() == std::vector<std::string>{"h-1", "h-2"}));
  BOOST_TEST(ep.stats().held_commands == 2u);
  BOOST_TEST(ep.stats().commands_executed == 0u);
  BOOST_TEST(ep.unacked_results().empty()); // nothing journaled
  BOOST_TEST(!ep.isolated());
  BOOST_TEST(ep.next_due() > now);
  now += 1000;
  BOOST_TEST(answers(ep.tick(now)).empty());

  ep.set_hold(false, false);
  BOOST_TEST(ep.next_due() <= now);
  // agent_us counts from each command's arrival: at least the time held, at most the
  // time since the first delivery (the agent's clock; the test's `now` is not it).
  int64_t held_until = steady();
  auto sent = ep.tick(now);
  int64_t since_delivery = steady() - started_delivery;
  auto out = answers(sent);
  BOOST_TEST((
      out == std::vector<std::string>{"ack h-1", "result h-1", "ack h-2", "result h-2"}));
  uint64_t first_agent_us = 0;
  for (const auto& o : sent)
    if (o.head.type == "action_result") {
      auto r = body_of<bus::action_result>(o);
      BOOST_TEST(r.agent_us >= static_cast<uint64_t>(held_until - delivered));
      BOOST_TEST(r.agent_us <= static_cast<uint64_t>(since_delivery));
      if (r.action_id == "h-1") first_agent_us = r.agent_us;
    }
  BOOST_TEST(!ep.isolated()); // isolate, then release: in order
  BOOST_TEST(ep.stats().commands_executed == 2u);
  BOOST_TEST(ep.pending_commands().empty());
  // A late duplicate is answered from the journal, with the first agent_us.
  auto again = deliver(make_command("h-1", "isolate"));
  BOOST_TEST((answers(again) == std::vector<std::string>{"ack h-1", "result h-1"}));
  for (const auto& o : again)
    if (o.head.type == "action_result")
      BOOST_TEST(body_of<bus::action_result>(o).agent_us == first_agent_us);
  BOOST_TEST(ep.stats().commands_executed == 2u);
  BOOST_TEST(!ep.isolated());
}

BOOST_AUTO_TEST_CASE(held_commands_wait_for_a_welcome) {
  auto scenarios = dropper_scenarios();
  int64_t now = t0;
  sim_endpoint ep = welcomed_endpoint(scenarios, now);
  ep.set_hold(true, false);
  ep.on_message(header_frame("command", ep.device_id()),
                bus::encode(make_command("w-1", "isolate")), now);
  ep.on_link_down();
  ep.set_hold(false, false);
  BOOST_TEST(answers(ep.tick(now + 10)).empty());
  BOOST_TEST(ep.pending_commands().size() == 1u);
  ep.on_link_up(now);
  bus::welcome w;
  ep.on_message(header_frame("welcome", ep.device_id()), bus::encode(w), now);
  BOOST_TEST(
      (answers(ep.tick(now + 20)) == std::vector<std::string>{"ack w-1", "result w-1"}));
  BOOST_TEST(ep.isolated());
}

BOOST_AUTO_TEST_CASE(held_results_are_executed_but_sent_only_after_release) {
  auto scenarios = dropper_scenarios();
  int64_t now = t0;
  sim_endpoint ep = welcomed_endpoint(scenarios, now);
  const std::string id = ep.device_id();
  ep.set_hold(false, true);
  auto out = ep.on_message(header_frame("command", id),
                           bus::encode(make_command("r-1", "isolate")), now);
  BOOST_TEST((answers(out) == std::vector<std::string>{"ack r-1"}));
  BOOST_TEST(ep.isolated());
  BOOST_TEST((ep.unacked_results() == std::vector<std::string>{"r-1"}));
  // No re-sends while held, not even after a new welcome.
  for (int k = 1; k <= 5; ++k)
    BOOST_TEST(answers(ep.tick(now + k * sim_endpoint::result_resend_us)).empty());
  bus::welcome w;
  w.heartbeat_interval_ms = 3'600'000;
  BOOST_TEST(
      answers(ep.on_message(header_frame("welcome", id), bus::encode(w), now)).empty());
  BOOST_TEST(ep.next_due() > now + 5 * sim_endpoint::result_resend_us);

  ep.set_hold(false, false);
  now += 6 * sim_endpoint::result_resend_us;
  BOOST_TEST(ep.next_due() <= now);
  BOOST_TEST((answers(ep.tick(now)) == std::vector<std::string>{"result r-1"}));
  BOOST_TEST(ep.stats().commands_executed == 1u);
}

BOOST_AUTO_TEST_CASE(runner_maps_hold_files_to_endpoints) {
  namespace fs = std::filesystem;
  fs::path dir =
      fs::temp_directory_path() / ("parry-agent-sim-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::path hold = dir / "hold", hold_results = dir / "hold-results";
  std::ofstream(hold).put('\n');

  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  runner_config cfg;
  cfg.endpoints = 1;
  cfg.endpoint = test_config();
  cfg.endpoint.server = router.get(zmq::sockopt::last_endpoint);
  cfg.endpoint.max_incidents = 1;
  cfg.link.raise_fd_limit = false;
  cfg.link.hold_file = hold.string();
  cfg.link.hold_results_file = hold_results.string();
  sim_runner runner(cfg, shipped_scenarios());
  runner.start();

  std::vector<std::string> seen; // "type action_id" of acks and results
  bool hello = false;
  auto pump = [&](auto done) {
    for (int i = 0; i < 1000 && !done(); ++i) {
      runner.poll_once(5);
      std::vector<zmq::message_t> parts;
      while (zmq::recv_multipart(router, std::back_inserter(parts),
                                 zmq::recv_flags::dontwait)) {
        std::string why;
        auto h = bus::decode_header(parts[1].to_string_view(), bus::decode_limits{}, why);
        BOOST_TEST_REQUIRE(h.has_value(), why);
        hello |= h->type == "hello";
        std::string body = parts[2].to_string();
        if (h->type == "action_ack")
          seen.push_back("ack " + bus::decode<bus::action_ack>(body, {}, why)->action_id);
        if (h->type == "action_result")
          seen.push_back("result " +
                         bus::decode<bus::action_result>(body, {}, why)->action_id);
        parts.clear();
      }
    }
    return done();
  };
  auto send = [&](const std::string& type, const std::string& body) {
    std::string head = header_frame(type, "sim-0000");
    router.send(zmq::buffer(std::string("sim-0000")), zmq::send_flags::sndmore);
    router.send(zmq::buffer(head), zmq::send_flags::sndmore);
    router.send(zmq::buffer(body), zmq::send_flags::none);
  };
  auto count = [&](const std::string& what) {
    return std::count(seen.begin(), seen.end(), what);
  };

  BOOST_TEST_REQUIRE(pump([&] { return hello; }));
  BOOST_TEST(runner.endpoint(0).holding_commands());
  bus::welcome w;
  w.heartbeat_interval_ms = 1000;
  send("welcome", bus::encode(w));
  send("command", bus::encode(make_command("f-1", "isolate")));
  send("command", bus::encode(make_command("f-1", "isolate")));
  BOOST_TEST_REQUIRE(
      pump([&] { return runner.endpoint(0).pending_commands().size() == 1; }));
  BOOST_TEST(seen.empty());
  BOOST_TEST(!runner.endpoint(0).isolated());

  // Results held from now on; commands released.
  std::ofstream(hold_results).put('\n');
  fs::remove(hold);
  BOOST_TEST_REQUIRE(pump([&] { return count("ack f-1") == 1; }));
  BOOST_TEST(runner.endpoint(0).isolated());
  BOOST_TEST(runner.endpoint(0).holding_results());
  BOOST_TEST(count("result f-1") == 0);
  BOOST_TEST(runner.stats().totals.commands_executed == 1u);

  fs::remove(hold_results);
  BOOST_TEST_REQUIRE(pump([&] { return count("result f-1") >= 1; }));
  BOOST_TEST(count("ack f-1") == 1);
  BOOST_TEST(runner.stats().totals.commands_executed == 1u);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(cancel_in_time_never_runs_and_too_late_says_so) {
  auto scenarios = dropper_scenarios();
  int64_t now = t0;
  sim_endpoint ep = welcomed_endpoint(scenarios, now);
  const std::string id = ep.device_id();
  auto deliver = [&](const bus::command& c) {
    return ep.on_message(header_frame("command", id), bus::encode(c), now);
  };
  auto cancel = [&](const std::string& action_id) {
    auto out = ep.on_message(header_frame("cancel", id),
                             bus::encode(bus::cancel{action_id}), now);
    BOOST_TEST_REQUIRE(out.size() == 1u);
    BOOST_TEST(out[0].head.type == "cancel_result");
    return body_of<bus::cancel_result>(out[0]);
  };
  // Held (received, not started): withdrawn, and it never runs afterwards.
  ep.set_hold(true, false);
  BOOST_TEST(deliver(make_command("k-1", "isolate")).empty());
  auto r = cancel("k-1");
  BOOST_TEST(r.action_id == "k-1");
  BOOST_TEST(r.cancelled);
  BOOST_TEST(ep.pending_commands().empty());
  ep.set_hold(false, false);
  BOOST_TEST(answers(ep.tick(now + 10)).empty());
  // A re-delivery is answered with the cancel again, not run.
  auto again = deliver(make_command("k-1", "isolate"));
  BOOST_TEST_REQUIRE(again.size() == 1u);
  BOOST_TEST(again[0].head.type == "cancel_result");
  BOOST_TEST(body_of<bus::cancel_result>(again[0]).cancelled);
  BOOST_TEST(ep.stats().commands_executed == 0u);
  BOOST_TEST(!ep.isolated());
  // Never received: journaled as cancelled, so a late delivery does not run either.
  BOOST_TEST(cancel("k-2").cancelled);
  deliver(make_command("k-2", "isolate"));
  BOOST_TEST(!ep.isolated());
  // Already executed: too late, and the result stays on its way.
  deliver(make_command("k-3", "isolate"));
  BOOST_TEST(ep.isolated());
  auto late = cancel("k-3");
  BOOST_TEST(!late.cancelled);
  BOOST_TEST(late.detail == "already executed");
  BOOST_TEST((ep.unacked_results() == std::vector<std::string>{"k-3"}));
  BOOST_TEST(ep.stats().commands_executed == 1u);
  BOOST_TEST(ep.stats().cancelled_commands == 2u);
  BOOST_TEST(ep.stats().late_cancels == 1u);
}

// -- the executor seam ----------------------------------------------------------------

namespace {

// Records what the session asks of it; every action succeeds.
struct recording_executor final : executor {
  std::vector<std::string> calls;
  terminate_args terminated;
  start_args started;
  bool isolated_now = false;

  execution done(const std::string& what) {
    calls.push_back(what);
    execution e;
    e.ok = true;
    e.effect["did"] = what;
    return e;
  }
  execution isolate() override {
    isolated_now = true;
    return done("isolate");
  }
  execution release_isolation() override {
    isolated_now = false;
    return done("release_isolation");
  }
  execution terminate_process(const terminate_args& p) override {
    terminated = p;
    return done("terminate_process");
  }
  execution start_process(const start_args& p, int64_t) override {
    started = p;
    return done("start_process");
  }
  execution quarantine(const file_args& p) override {
    return done("quarantine " + p.path);
  }
  execution restore_from_quarantine(const restore_args& p) override {
    return done("restore " + p.quarantine_id);
  }
  execution delete_file(const file_args& p) override { return done("delete " + p.path); }
  execution prevent_run(const hash_args& p) override {
    return done("prevent " + p.sha256);
  }
  execution allow_run(const hash_args& p) override { return done("allow " + p.sha256); }
  void cancelled_before_start(const std::string& id) override {
    calls.push_back("cancelled " + id);
  }
  bool isolated() const override { return isolated_now; }
};

} // namespace

BOOST_AUTO_TEST_CASE(session_hands_only_checked_commands_to_its_executor_once) {
  recording_executor exec;
  session_config cfg;
  cfg.device_id = "real-0001";
  cfg.identity.hostname = "host";
  cfg.os = os_family::posix;
  cfg.started_at = t0;
  agent_session s(cfg, exec, nullptr);
  int64_t now = t0;
  s.start(now);
  s.on_link_up(now);
  bus::welcome w;
  w.heartbeat_interval_ms = 1000;
  s.on_message(header_frame("welcome", "real-0001"), bus::encode(w), now);
  BOOST_TEST(s.welcomed());

  // Checked values arrive typed: a decimal pid and start time, the hash lower-cased.
  auto r = s.handle_command(
      make_action("a-1", "terminate_process", {{"pid", "4242"}, {"start_time", "-7"}}),
      now);
  BOOST_TEST(r.result.ok);
  BOOST_TEST(exec.terminated.pid == 4242u);
  BOOST_TEST(exec.terminated.start_time == -7);
  r = s.handle_command(
      make_action("a-2", "prevent_run", {{"sha256", std::string(64, 'A')}}), now);
  BOOST_TEST(r.result.ok);
  BOOST_TEST(r.result.effect.at("did") == "prevent " + std::string(64, 'a'));
  r = s.handle_command(
      make_action("a-3", "start_process", start_params("/usr/bin/id", {"-u", "x y"})),
      now);
  BOOST_TEST(r.result.ok);
  BOOST_TEST(exec.started.path == "/usr/bin/id");
  BOOST_TEST(exec.started.working_directory.empty()); // the executor's default
  BOOST_TEST((exec.started.args == std::vector<std::string>{"-u", "x y"}));

  // Refused parameters never reach the executor, and the failure is journaled.
  std::size_t before = exec.calls.size();
  r = s.handle_command(
      make_action("a-4", "quarantine", {{"path", "../etc/passwd"}, {"sha256", "x"}}),
      now);
  BOOST_TEST(!r.result.ok);
  BOOST_TEST(r.result.error.find("not absolute") != std::string::npos);
  r = s.handle_command(make_action("a-5", "terminate_process", {{"pid", "0"}}), now);
  BOOST_TEST(!r.result.ok);
  r = s.handle_command(make_command("a-6", "isolate", now - 1), now); // expired
  BOOST_TEST(r.result.error == "expired");
  BOOST_TEST(exec.calls.size() == before);

  // A repeated action id is answered from the journal, not executed again.
  r = s.handle_command(make_command("a-7", "isolate"), now);
  BOOST_TEST(r.executed);
  r = s.handle_command(make_command("a-7", "isolate"), now);
  BOOST_TEST(!r.executed);
  BOOST_TEST(r.result.ok);
  BOOST_TEST(std::count(exec.calls.begin(), exec.calls.end(), "isolate") == 1);
  // Heartbeats report the executor's isolation state.
  bool saw_heartbeat = false;
  for (const auto& o : s.tick(now + 2'000'000))
    if (o.head.type == "heartbeat") {
      saw_heartbeat = true;
      BOOST_TEST(body_of<bus::heartbeat>(o).isolated);
    }
  BOOST_TEST(saw_heartbeat);

  // A cancel that comes before the command is the executor's to hear, and the
  // command never runs afterwards.
  bus::cancel c;
  c.action_id = "a-8";
  auto out = s.on_message(header_frame("cancel", "real-0001"), bus::encode(c), now);
  BOOST_TEST(types_of(out) == std::vector<std::string>{"cancel_result"});
  BOOST_TEST(exec.calls.back() == "cancelled a-8");
  before = exec.calls.size();
  r = s.handle_command(make_command("a-8", "isolate"), now);
  BOOST_TEST(!r.executed);
  BOOST_TEST(exec.calls.size() == before);
}

// With a pinned server key, only what the server signed for this device, in time and
// in sequence, runs; every refusal is reported as the action's failed result (re-sent
// until stored), and a re-delivery of an accepted command is answered, not refused.
BOOST_AUTO_TEST_CASE(only_signed_commands_run_and_each_refusal_is_reported) {
  auto server = signing_key::generate();
  auto stranger = signing_key::generate();
  recording_executor exec;
  session_config cfg;
  cfg.device_id = "real-0001";
  cfg.started_at = t0;
  cfg.server_signing_key = server.public_key();
  agent_session s(cfg, exec, nullptr);
  int64_t now = t0;
  s.start(now);
  s.on_link_up(now);
  bus::welcome w;
  s.on_message(header_frame("welcome", "real-0001"), bus::encode(w), now);
  uint64_t seq = 100;
  auto signed_cmd = [&](const std::string& id, const signing_key& key,
                        const std::string& device = "real-0001") {
    auto c = make_command(id, "isolate", now + 60'000'000);
    bus::sign_into(c, key, device, ++seq);
    return c;
  };
  // What the session answers to one command: the result it reports, if any.
  auto deliver = [&](const bus::command& c) -> std::optional<bus::action_result> {
    for (const auto& o :
         s.on_message(header_frame("command", "real-0001"), bus::encode(c), now))
      if (o.head.type == "action_result") return body_of<bus::action_result>(o);
    return std::nullopt;
  };
  auto refused = [&](const bus::command& c, const char* reason) {
    auto r = deliver(c);
    BOOST_REQUIRE(r);
    BOOST_TEST(!r->ok);
    BOOST_TEST(r->error.find(std::string{"refused by the agent ("} + reason + ")") !=
                   std::string::npos,
               r->error);
  };

  auto ok = signed_cmd("a-1", server);
  auto r = deliver(ok);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->ok);
  // Tampered after signing: a parameter added.
  auto tampered = signed_cmd("a-2", server);
  tampered.params["note"] = "x";
  refused(tampered, "bad_signature");
  // Delivered again, it is answered with the same refusal and never acknowledged.
  auto again =
      s.on_message(header_frame("command", "real-0001"), bus::encode(tampered), now);
  BOOST_TEST(std::none_of(again.begin(), again.end(),
                          [](const outbound& o) { return o.head.type == "action_ack"; }));
  refused(tampered, "bad_signature");
  // Unsigned, and signed by someone else.
  refused(make_command("a-3", "isolate", now + 60'000'000), "bad_signature");
  refused(signed_cmd("a-4", stranger), "bad_signature");
  // Signed for another device.
  refused(signed_cmd("a-5", server, "real-0002"), "wrong_device");
  // Expired.
  auto old = make_command("a-6", "isolate", now - 1);
  bus::sign_into(old, server, "real-0001", ++seq);
  refused(old, "expired");
  // A sequence number already seen (a captured command replayed under a new id is
  // impossible without the key; an old signed one replays its old seq).
  auto early = make_command("a-7", "isolate", now + 60'000'000);
  bus::sign_into(early, server, "real-0001", 50);
  refused(early, "seq_replayed");
  // The accepted command delivered again is answered from the journal, not refused
  // and not run again.
  r = deliver(ok);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->ok);
  BOOST_TEST(std::count(exec.calls.begin(), exec.calls.end(), "isolate") == 1);
  BOOST_TEST(s.stats().refused_commands == 6u);
  // Refusals are re-sent until the server stores them, like any result.
  auto unacked = s.unacked_results();
  BOOST_TEST(std::count(unacked.begin(), unacked.end(), "a-2") == 1);

  // Cancels are signed too: an unsigned one changes nothing.
  bus::cancel c{"a-9"};
  bool said_no = false;
  for (const auto& o :
       s.on_message(header_frame("cancel", "real-0001"), bus::encode(c), now))
    if (o.head.type == "cancel_result")
      said_no = !body_of<bus::cancel_result>(o).cancelled;
  BOOST_TEST(said_no);
  c.expires_at = now + 60'000'000;
  bus::sign_into(c, server, "real-0001", ++seq);
  bool cancelled = false;
  for (const auto& o :
       s.on_message(header_frame("cancel", "real-0001"), bus::encode(c), now))
    if (o.head.type == "cancel_result")
      cancelled = body_of<bus::cancel_result>(o).cancelled;
  BOOST_TEST(cancelled);
  // ... and the command it withdrew never runs, even when it arrives signed.
  auto late = signed_cmd("a-9", server);
  deliver(late);
  BOOST_TEST(std::count(exec.calls.begin(), exec.calls.end(), "isolate") == 1);
}
