#define BOOST_TEST_MODULE bus
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <zmq.hpp>

#include "bus/codec.hpp"
#include "bus/curve_keys.hpp"
#include "bus/gateway.hpp"
#include "bus/link.hpp"
#include "bus/reuse_port.hpp"
#include "bus/validate.hpp"
#include "common/log_limiter.hpp"
#include "common/process.hpp"
#include "tests/net_support.hpp"

using namespace parry::bus;

namespace {

header make_header(const char* type, const char* device = "dev-1") {
  header h;
  h.type = type;
  h.msg_id = 7;
  h.device_id = device;
  h.seq = 3;
  h.time = 1795000000000000;
  return h;
}

std::string hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

} // namespace

BOOST_AUTO_TEST_CASE(header_round_trip) {
  decode_limits lim;
  std::string why;
  auto h = decode_header(encode(make_header(type::hello)), lim, why);
  BOOST_REQUIRE_MESSAGE(h, why);
  BOOST_TEST(h->type == "hello");
  BOOST_TEST(h->device_id == "dev-1");
  BOOST_TEST(h->msg_id == 7u);
  BOOST_TEST(h->seq == 3u);
  BOOST_TEST(h->time == 1795000000000000);
}

BOOST_AUTO_TEST_CASE(header_golden_bytes) {
  // Named keys in declaration order: a change here breaks every deployed agent.
  header h;
  h.type = "heartbeat";
  h.msg_id = 1;
  h.device_id = "d";
  h.seq = 2;
  h.time = 3;
  BOOST_TEST(hex(encode(h)) ==
             "86a17601a474797065a9686561727462656174a66d73675f696401a9646576696365"
             "5f6964a164a373657102a474696d6503");
}

BOOST_AUTO_TEST_CASE(incident_round_trip) {
  incident_report r;
  r.report_id = "r-1";
  r.det = {"HEUR:Trojan.Win32.Generic", "high", "epp"};
  r.key_event_id = "e2";
  activity_event e1;
  e1.id = "e1";
  e1.type = "file_created";
  e1.file = {"C:\\Users\\a\\payload.exe", std::string(64, 'a'), 73216};
  activity_event e2;
  e2.id = "e2";
  e2.type = "process_started";
  e2.parent_id = "e1";
  e2.process = {
      4242, 17,  "C:\\Users\\a\\payload.exe", std::string(64, 'a'), "payload.exe -q",
      "a",  4100};
  r.events = {e1, e2};
  std::string why;
  auto back = decode<incident_report>(encode(r), decode_limits{}, why);
  BOOST_REQUIRE_MESSAGE(back, why);
  BOOST_TEST(back->events.size() == 2u);
  BOOST_TEST(back->events[0].file.size == 73216u);
  BOOST_TEST(back->events[1].process.pid == 4242u);
  BOOST_TEST(back->events[1].process.cmdline == "payload.exe -q");
  BOOST_TEST(back->det.name == "HEUR:Trojan.Win32.Generic");
}

BOOST_AUTO_TEST_CASE(unknown_keys_ignored_missing_defaulted) {
  // {"hostname": "h", "future_field": [1, 2]} from a newer agent.
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(2);
  pk.pack(std::string{"hostname"});
  pk.pack(std::string{"h"});
  pk.pack(std::string{"future_field"});
  pk.pack(std::vector<int>{1, 2});
  std::string why;
  auto h = decode<hello>(std::string(buf.data(), buf.size()), decode_limits{}, why);
  BOOST_REQUIRE_MESSAGE(h, why);
  BOOST_TEST(h->hostname == "h");
  BOOST_TEST(h->os.empty());
  BOOST_TEST(h->isolated == false);
}

// The single-pass decode (bus/map_decode.hpp) means what msgpack-cxx's map decode
// meant: the first of a repeated key counts, a key that is not a string fails, a
// field of the wrong kind fails, nested maps decode the same way.
BOOST_AUTO_TEST_CASE(map_decode_keeps_msgpack_cxx_meaning) {
  auto frame = [](auto&& fill) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    fill(pk);
    return std::string(buf.data(), buf.size());
  };
  std::string why;
  auto twice = frame([](auto& pk) {
    pk.pack_map(3);
    pk.pack(std::string{"hostname"});
    pk.pack(std::string{"first"});
    pk.pack(std::string{"os"});
    pk.pack(std::string{"linux"});
    pk.pack(std::string{"hostname"});
    pk.pack(std::string{"second"});
  });
  bool exact = true;
  auto h = decode<hello>(twice, decode_limits{}, why, &exact);
  BOOST_REQUIRE_MESSAGE(h, why);
  BOOST_TEST(h->hostname == "first");
  BOOST_TEST(!exact); // the bytes hold a value nobody checked
  BOOST_TEST(h->os == "linux");
  auto unknown = frame([](auto& pk) {
    pk.pack_map(1);
    pk.pack(std::string{"future_field"});
    pk.pack(1);
  });
  exact = true;
  BOOST_TEST(decode<hello>(unknown, decode_limits{}, why, &exact).has_value());
  BOOST_TEST(!exact);
  auto int_key = frame([](auto& pk) {
    pk.pack_map(2);
    pk.pack(std::string{"hostname"});
    pk.pack(std::string{"h"});
    pk.pack(7);
    pk.pack(std::string{"x"});
  });
  BOOST_TEST(!decode<hello>(int_key, decode_limits{}, why));
  auto wrong_kind = frame([](auto& pk) {
    pk.pack_map(1);
    pk.pack(std::string{"isolated"});
    pk.pack(std::string{"yes"});
  });
  BOOST_TEST(!decode<hello>(wrong_kind, decode_limits{}, why));
  // A whole report, nested maps and arrays: what encode() wrote comes back.
  incident_report r;
  r.report_id = "rep-1";
  r.det = {"HEUR:Trojan", "high", "epp"};
  r.key_event_id = "e2";
  r.events.resize(2);
  r.events[1].id = "e2";
  r.events[1].file = {"C:\\x.exe", std::string(64, 'a'), 12};
  r.events[1].process.pid = 42;
  exact = false;
  auto back = decode<incident_report>(encode(r), decode_limits{}, why, &exact);
  BOOST_REQUIRE_MESSAGE(back, why);
  BOOST_TEST(exact);
  BOOST_TEST(encode(*back) == encode(r));
  BOOST_TEST(back->events[1].file.size == 12u);
  BOOST_TEST(back->events[1].process.pid == 42u);
}

BOOST_AUTO_TEST_CASE(rejects_malformed_and_oversized) {
  decode_limits lim;
  lim.max_frame = 1024;
  lim.max_str = 100;
  lim.max_array = 10;
  lim.max_depth = 4;
  std::string why;
  BOOST_TEST(!decode_header("", lim, why));
  BOOST_TEST(why == "empty frame");
  BOOST_TEST(!decode_header(std::string(2000, 'x'), lim, why));
  BOOST_TEST(why == "frame too large");
  BOOST_TEST(!decode_header("\xc1", lim, why)); // never-used msgpack byte
  BOOST_TEST(!decode_header(std::string("\x92\x01\x02", 3), lim, why));
  BOOST_TEST(why == "not a map");
  // A string longer than the limit.
  hello big;
  big.hostname = std::string(500, 'h');
  BOOST_TEST(!decode<hello>(encode(big), lim, why));
  BOOST_TEST(why == "size limit exceeded");
  // An array longer than the limit.
  hello many;
  many.addresses.assign(50, "10.0.0.1");
  BOOST_TEST(!decode<hello>(encode(many), lim, why));
  // Nesting deeper than the limit: [[[[[[1]]]]]].
  std::string deep(6, '\x91');
  deep += '\x01';
  BOOST_TEST(!parse_frame(deep, lim, why));
  BOOST_TEST(why == "nesting too deep");
  // Trailing garbage after a valid map.
  BOOST_TEST(!decode_header(encode(make_header("hello")) + "x", lim, why));
  BOOST_TEST(why == "trailing bytes");
  // Wrong field type: seq as a string.
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(1);
  pk.pack(std::string{"seq"});
  pk.pack(std::string{"not a number"});
  BOOST_TEST(!decode_header(std::string(buf.data(), buf.size()), lim, why));
  BOOST_TEST(why == "field of wrong type");
  // Bad version and bad device id.
  auto h = make_header("hello");
  h.v = 99;
  BOOST_TEST(!decode_header(encode(h), lim, why));
  h = make_header("hello", "../../etc/passwd");
  BOOST_TEST(!decode_header(encode(h), lim, why));
  BOOST_TEST(why == "invalid device id");
}

BOOST_AUTO_TEST_CASE(valid_ids) {
  BOOST_TEST(valid_id("sim-0001"));
  BOOST_TEST(valid_id("act-0a1b:x.y_z"));
  BOOST_TEST(!valid_id(""));
  BOOST_TEST(!valid_id("a b"));
  BOOST_TEST(!valid_id(std::string("a\0b", 3)));
  BOOST_TEST(!valid_id(std::string(129, 'a')));
}

// A gateway on loopback: a bad peer's frames are dropped and counted while a good
// peer keeps being served, and sends to an unknown peer are reported.
BOOST_AUTO_TEST_CASE(gateway_drops_bad_frames_and_serves_others) {
  std::atomic<int> good{0};
  std::atomic<int> unreachable{0};
  gateway gw{
      "tcp://127.0.0.1:*", decode_limits{},
      [&](header&& h, std::string_view, std::string_view) -> std::optional<refusal> {
        if (h.type != "heartbeat") return refusal{};
        ++good;
        return std::nullopt;
      },
      [&](const std::string&) { ++unreachable; }};
  auto ep = gw.start();
  zmq::context_t ctx;
  auto dealer = [&](const char* id) {
    zmq::socket_t s{ctx, zmq::socket_type::dealer};
    s.set(zmq::sockopt::routing_id, id);
    s.set(zmq::sockopt::linger, 0);
    s.connect(ep);
    return s;
  };
  auto bad = dealer("bad-1");
  auto ok = dealer("dev-1");
  bad.send(zmq::str_buffer("garbage"), zmq::send_flags::sndmore);
  bad.send(zmq::str_buffer("\xc1"), zmq::send_flags::none);
  bad.send(zmq::str_buffer("one frame only"), zmq::send_flags::none);
  // A header claiming to be another device.
  bad.send(zmq::buffer(encode(make_header("heartbeat", "dev-1"))),
           zmq::send_flags::sndmore);
  bad.send(zmq::buffer(encode(heartbeat{})), zmq::send_flags::none);
  ok.send(zmq::buffer(encode(make_header("heartbeat", "dev-1"))),
          zmq::send_flags::sndmore);
  ok.send(zmq::buffer(encode(heartbeat{})), zmq::send_flags::none);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while ((good < 1 || gw.stats().bad_frames < 3) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  BOOST_TEST(good.load() == 1);
  BOOST_TEST(gw.stats().bad_frames.load() == 3u);
  // Outbound to the good peer arrives; to a stranger it is reported.
  gw.send("dev-1", encode(make_header("welcome", "dev-1")), encode(welcome{}));
  gw.send("nobody", encode(make_header("welcome", "nobody")), encode(welcome{}));
  zmq::pollitem_t items[] = {{ok.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, std::chrono::milliseconds{10000});
  zmq::message_t hdr;
  BOOST_REQUIRE(ok.recv(hdr, zmq::recv_flags::dontwait));
  std::string why;
  auto h = decode_header(hdr.to_string_view(), decode_limits{}, why);
  BOOST_REQUIRE(h);
  BOOST_TEST(h->type == "welcome");
  while (unreachable < 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  BOOST_TEST(unreachable.load() == 1);
  gw.stop();
}

// Messages for agents wait for the socket thread in a bounded queue: past the bound a
// message is counted and reported unreachable (its device gets it again when heard
// from), never queued without end. Shown on a gateway whose thread never ran.
BOOST_AUTO_TEST_CASE(messages_for_agents_wait_in_a_bounded_queue) {
  std::vector<std::string> unreachable;
  gateway gw{"tcp://127.0.0.1:*", decode_limits{},
             [](header&&, std::string_view, std::string_view) -> std::optional<refusal> {
               return std::nullopt;
             },
             [&](const std::string& id) { unreachable.push_back(id); }};
  for (std::size_t i = 0; i < outbox::max_queued_sends; ++i)
    gw.send("dev-a", "h", "b");
  BOOST_TEST(gw.stats().dropped_full.load() == 0u);
  BOOST_TEST(unreachable.empty());
  gw.send("dev-b", "h", "b");
  BOOST_TEST(gw.stats().dropped_full.load() == 1u);
  BOOST_TEST(gw.stats().unreachable.load() == 1u);
  BOOST_TEST(unreachable == std::vector<std::string>{"dev-b"});
}

namespace {

/// A plain DEALER as device `id` on `ep` that has queued one heartbeat.
zmq::socket_t heartbeat_dealer(zmq::context_t& ctx, const std::string& ep,
                               const std::string& id) {
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  s.set(zmq::sockopt::routing_id, id);
  s.set(zmq::sockopt::linger, 0);
  s.connect(ep);
  s.send(zmq::buffer(encode(make_header("heartbeat", id.c_str()))),
         zmq::send_flags::sndmore);
  s.send(zmq::buffer(encode(heartbeat{})), zmq::send_flags::none);
  return s;
}

} // namespace

BOOST_AUTO_TEST_CASE(connections_are_served_over_several_io_threads) {
  std::atomic<int> heard{0};
  gateway_options o;
  o.io_threads = 3;
  gateway gw{"tcp://127.0.0.1:*", decode_limits{},
             [&](header&&, std::string_view, std::string_view) -> std::optional<refusal> {
               ++heard;
               return std::nullopt;
             },
             [](const std::string&) {}, o};
  BOOST_TEST(gw.io_threads() == 3);
  auto ep = gw.start();
  zmq::context_t ctx;
  std::vector<zmq::socket_t> peers;
  for (int i = 0; i < 30; ++i)
    peers.push_back(heartbeat_dealer(ctx, ep, "dev-" + std::to_string(i)));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (heard < 30 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  BOOST_TEST(heard.load() == 30);
  // Each one gets its own answer back, whichever I/O thread holds its connection.
  for (int i = 0; i < 30; ++i) {
    auto id = "dev-" + std::to_string(i);
    gw.send(id, encode(make_header("welcome", id.c_str())), encode(welcome{}));
  }
  int answered = 0;
  for (auto& s : peers) {
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds{10000});
    zmq::message_t hdr;
    if (s.recv(hdr, zmq::recv_flags::dontwait)) ++answered;
  }
  BOOST_TEST(answered == 30);
  gw.stop();
}

// -- validation of decoded bodies ------------------------------------------------

BOOST_AUTO_TEST_CASE(hello_fields_are_bounded_and_utf8) {
  hello_limits lim;
  hello h;
  h.hostname = std::string(255, 'h');
  h.os = std::string(255, 'o');
  h.agent_version = std::string(255, 'v');
  h.addresses.assign(64, std::string(64, 'a'));
  BOOST_TEST(check_hello(h, lim) == "");
  std::string limit;
  uint64_t value = 0;
  auto bad = h;
  bad.hostname = "bad\xffhost";
  BOOST_TEST(check_hello(bad, lim) == "hostname is not valid UTF-8");
  bad = h;
  bad.hostname += 'h';
  BOOST_TEST(check_hello(bad, lim, &limit, &value) == "hostname is over 255 bytes");
  BOOST_TEST(limit == "max_hostname_bytes");
  BOOST_TEST(value == 255u);
  bad = h;
  bad.os += 'o';
  BOOST_TEST(!check_hello(bad, lim).empty());
  bad = h;
  bad.os = "\xc0\xaf"; // overlong '/'
  BOOST_TEST(check_hello(bad, lim) == "os is not valid UTF-8");
  bad = h;
  bad.agent_version += 'v';
  BOOST_TEST(check_hello(bad, lim, &limit, &value) == "agent_version is over 255 bytes");
  BOOST_TEST(limit == "max_agent_version_bytes");
  bad = h;
  bad.addresses.push_back("10.0.0.1");
  BOOST_TEST(check_hello(bad, lim, &limit, &value) == "more than 64 addresses");
  BOOST_TEST(limit == "max_addresses");
  BOOST_TEST(value == 64u);
  bad = h;
  bad.addresses[3] += 'a';
  BOOST_TEST(check_hello(bad, lim, &limit, &value) == "address is over 64 bytes");
  BOOST_TEST(limit == "max_address_bytes");
  bad = h;
  bad.addresses[3] = "10.0.0.\xed\xa0\x80"; // a surrogate
  BOOST_TEST(check_hello(bad, lim) == "address is not valid UTF-8");
  // Multi-byte characters are fine.
  bad = h;
  bad.hostname = "h\xc3\xa9te";
  BOOST_TEST(check_hello(bad, lim) == "");
}

BOOST_AUTO_TEST_CASE(every_string_of_a_report_and_result_must_be_utf8) {
  incident_report r;
  r.report_id = "r-1";
  r.det = {"Trojan \xc3\xa9", "high", "epp"};
  r.key_event_id = "e1";
  activity_event e;
  e.id = "e1";
  e.type = "process_started";
  e.file = {"C:\\x.exe", std::string(64, 'a'), 1};
  e.process.cmdline = "x.exe -q";
  r.events = {e};
  BOOST_TEST(check_utf8(r) == "");
  auto bad = r;
  bad.det.name = "\xff";
  BOOST_TEST(check_utf8(bad) == "detection is not valid UTF-8");
  bad = r;
  bad.events[0].type = "\xff";
  BOOST_TEST(check_utf8(bad) == "event field is not valid UTF-8");
  bad = r;
  bad.events[0].file.path = "C:\\\xff.exe";
  BOOST_TEST(check_utf8(bad) == "event file is not valid UTF-8");
  bad = r;
  bad.events[0].process.cmdline = "x.exe \xe2\x82";
  BOOST_TEST(check_utf8(bad) == "event process is not valid UTF-8");
  bad = r;
  bad.events[0].detail = "\x80";
  BOOST_TEST(!check_utf8(bad).empty());

  action_result res{"act-1", false, "denied", {{"note", "ok"}}};
  BOOST_TEST(check_utf8(res) == "");
  res.error = "no\xff";
  BOOST_TEST(check_utf8(res) == "error is not valid UTF-8");
  res.error = "";
  res.effect["x"] = "\xfe";
  BOOST_TEST(check_utf8(res) == "effect is not valid UTF-8");
}

BOOST_AUTO_TEST_CASE(rejected_golden_bytes) {
  // Named keys: the agent reads them by name.
  rejected r;
  r.msg_id = 9;
  r.type = "incident";
  r.limit = "max_frame_bytes";
  r.value = 4096;
  r.reason = "x";
  r.retry_after_ms = 0;
  std::string why;
  auto back = decode<rejected>(encode(r), decode_limits{}, why);
  BOOST_REQUIRE_MESSAGE(back, why);
  BOOST_TEST(back->msg_id == 9u);
  BOOST_TEST(back->limit == "max_frame_bytes");
  BOOST_TEST(back->value == 4096u);
  BOOST_TEST(hex(encode(r)).find(hex("retry_after_ms")) != std::string::npos);
}

BOOST_AUTO_TEST_CASE(log_limiter_holds_back_repeats_and_counts_them) {
  using namespace std::chrono_literals;
  parry::log_limiter lim{2, 10s, 3};
  auto t0 = parry::log_limiter::clock::time_point{} + 1h;
  uint64_t held = 99;
  BOOST_TEST(lim.pass("peer-a|invalid", t0, held));
  BOOST_TEST(held == 0u);
  BOOST_TEST(lim.pass("peer-a|invalid", t0, held));
  for (int i = 0; i < 10; ++i)
    BOOST_TEST(!lim.pass("peer-a|invalid", t0 + 1s, held));
  // Another peer or kind has its own budget.
  BOOST_TEST(lim.pass("peer-b|invalid", t0, held));
  BOOST_TEST(lim.pass("peer-a|spoofed", t0, held));
  // The next window reports what was held back.
  BOOST_TEST(lim.pass("peer-a|invalid", t0 + 11s, held));
  BOOST_TEST(held == 10u);
  BOOST_TEST(lim.total_suppressed() == 10u);
  // The key table is bounded: new keys share one overflow slot when it is full.
  for (int i = 0; i < 100; ++i)
    (void)lim.pass("many-" + std::to_string(i), t0 + 12s, held);
  BOOST_TEST(lim.keys() <= 4u);
}

// -- gateway on loopback ---------------------------------------------------------

namespace {

using namespace std::chrono_literals;

struct dealer_rig {
  zmq::context_t ctx;
  std::string ep;

  zmq::socket_t dealer(const char* id) {
    zmq::socket_t s{ctx, zmq::socket_type::dealer};
    s.set(zmq::sockopt::routing_id, id);
    s.set(zmq::sockopt::linger, 0);
    s.connect(ep);
    return s;
  }
};

void send_msg(zmq::socket_t& s, const std::string& h, const std::string& b) {
  s.send(zmq::buffer(h), zmq::send_flags::sndmore);
  s.send(zmq::buffer(b), zmq::send_flags::none);
}

/// Receives one [header][body] within `timeout`, or nothing.
std::optional<std::pair<header, std::string>>
recv_msg(zmq::socket_t& s, std::chrono::milliseconds timeout) {
  zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}};
  if (zmq::poll(items, 1, timeout) <= 0) return std::nullopt;
  zmq::message_t h, b;
  if (!s.recv(h, zmq::recv_flags::dontwait)) return std::nullopt;
  (void)s.recv(b, zmq::recv_flags::none);
  std::string why;
  auto hdr = decode_header(h.to_string_view(), decode_limits{}, why);
  BOOST_REQUIRE_MESSAGE(hdr, why);
  return std::make_pair(*hdr, b.to_string());
}

template <class Pred> bool wait_for(Pred p, std::chrono::milliseconds t = 10s) {
  return parry::poll_until(p, t, 1ms);
}

} // namespace

// A frame over max_frame_bytes (but under ZeroMQ's hard cap) is counted, logged and
// answered with `rejected` naming the limit; the connection stays usable.
BOOST_AUTO_TEST_CASE(oversized_frame_is_counted_and_answered) {
  decode_limits lim;
  lim.max_frame = 4096;
  std::atomic<int> good{0};
  std::vector<std::string> warnings;
  std::mutex wm;
  gateway gw{"tcp://127.0.0.1:*", lim,
             [&](header&&, std::string_view, std::string_view) -> std::optional<refusal> {
               ++good;
               return std::nullopt;
             },
             nullptr};
  gw.on_warning([&](const std::string& line) {
    std::lock_guard<std::mutex> g{wm};
    warnings.push_back(line);
  });
  dealer_rig rig;
  rig.ep = gw.start();
  auto d = rig.dealer("dev-1");
  auto h = make_header("incident", "dev-1");
  h.msg_id = 41;
  send_msg(d, encode(h), std::string(10000, 'x'));
  auto got = recv_msg(d, 10s);
  BOOST_REQUIRE(got);
  BOOST_TEST(got->first.type == "rejected");
  std::string why;
  auto rej = decode<rejected>(got->second, decode_limits{}, why);
  BOOST_REQUIRE_MESSAGE(rej, why);
  BOOST_TEST(rej->msg_id == 41u);
  BOOST_TEST(rej->type == "incident");
  BOOST_TEST(rej->limit == "max_frame_bytes");
  BOOST_TEST(rej->value == 4096u);
  BOOST_TEST(rej->retry_after_ms == 0u);
  BOOST_TEST(gw.stats().refused[static_cast<int>(refusal_kind::oversized)].load() == 1u);
  BOOST_TEST(gw.stats().bad_frames.load() == 1u);
  {
    std::lock_guard<std::mutex> g{wm};
    BOOST_REQUIRE_EQUAL(warnings.size(), 1u);
    BOOST_TEST(warnings[0].find("oversized") != std::string::npos);
  }
  // Still connected: the next normal message is delivered.
  send_msg(d, encode(make_header("heartbeat", "dev-1")), encode(heartbeat{}));
  BOOST_TEST(wait_for([&] { return good.load() == 1; }));
  gw.stop();
}

// A refusal from the handler reaches the agent with its limit; a flood of bad
// bodies is counted in full but logged only a few times, with the rest summed up.
BOOST_AUTO_TEST_CASE(refusals_are_answered_and_their_log_lines_limited) {
  std::atomic<int> seen{0};
  std::atomic<int> lines{0};
  gateway gw{"tcp://127.0.0.1:*", decode_limits{},
             [&](header&&, std::string_view, std::string_view) -> std::optional<refusal> {
               ++seen;
               return refusal{refusal_kind::rate, "too many", "max_incidents_per_minute",
                              60, 30000};
             },
             nullptr};
  gw.on_warning([&](const std::string&) { ++lines; });
  dealer_rig rig;
  rig.ep = gw.start();
  auto d = rig.dealer("dev-1");
  for (int i = 0; i < 200; ++i)
    send_msg(d, encode(make_header("incident", "dev-1")), encode(heartbeat{}));
  BOOST_REQUIRE(wait_for([&] { return seen.load() == 200; }));
  auto got = recv_msg(d, 10s);
  BOOST_REQUIRE(got);
  std::string why;
  auto rej = decode<rejected>(got->second, decode_limits{}, why);
  BOOST_REQUIRE(rej);
  BOOST_TEST(rej->limit == "max_incidents_per_minute");
  BOOST_TEST(rej->value == 60u);
  BOOST_TEST(rej->retry_after_ms == 30000u);
  BOOST_TEST(gw.stats().refused[static_cast<int>(refusal_kind::rate)].load() == 200u);
  BOOST_TEST(gw.stats().bad_frames.load() == 0u); // shed, not bad
  BOOST_TEST(lines.load() <= 5);
  BOOST_TEST(gw.stats().log_suppressed.load() >= 195u);
  gw.stop();
}

// Refusals of one kind from many devices at once (a cold start refused as busy) are
// logged a bounded number of times in all, not a few times per device.
BOOST_AUTO_TEST_CASE(one_kind_of_refusal_from_many_devices_is_logged_a_few_times) {
  std::atomic<int> seen{0};
  std::atomic<int> lines{0};
  gateway gw{"tcp://127.0.0.1:*", decode_limits{},
             [&](header&&, std::string_view, std::string_view) -> std::optional<refusal> {
               ++seen;
               return refusal{refusal_kind::busy, "server busy", "max_hellos_in_flight",
                              2000, 1000};
             },
             nullptr};
  gw.on_warning([&](const std::string&) { ++lines; });
  dealer_rig rig;
  rig.ep = gw.start();
  constexpr int devices = 40;
  std::vector<zmq::socket_t> dealers;
  for (int i = 0; i < devices; ++i) {
    auto id = "dev-" + std::to_string(i);
    dealers.push_back(rig.dealer(id.c_str()));
    send_msg(dealers.back(), encode(make_header("hello", id.c_str())), encode(hello{}));
  }
  BOOST_REQUIRE(wait_for([&] { return seen.load() == devices; }));
  BOOST_TEST(gw.stats().refused[static_cast<int>(refusal_kind::busy)].load() ==
             uint64_t{devices});
  BOOST_TEST(lines.load() <= 20);
  BOOST_TEST(gw.stats().log_suppressed.load() >= uint64_t{devices - 20});
  // Every device still hears why, with when to come back.
  auto got = recv_msg(dealers.back(), 10s);
  BOOST_REQUIRE(got);
  std::string why;
  auto rej = decode<rejected>(got->second, decode_limits{}, why);
  BOOST_REQUIRE(rej);
  BOOST_TEST(rej->retry_after_ms == 1000u);
  gw.stop();
}

// A header naming another device is refused and reported for the audit trail.
BOOST_AUTO_TEST_CASE(spoofed_header_is_reported_for_audit) {
  std::vector<std::pair<std::string, std::string>> audited;
  std::mutex am;
  gateway gw{"tcp://127.0.0.1:*", decode_limits{},
             [&](header&&, std::string_view, std::string_view) -> std::optional<refusal> {
               return std::nullopt;
             },
             nullptr};
  gw.on_suspicious([&](const std::string& peer, const std::string& what) {
    std::lock_guard<std::mutex> g{am};
    audited.emplace_back(peer, what);
  });
  dealer_rig rig;
  rig.ep = gw.start();
  auto d = rig.dealer("evil-1");
  for (int i = 0; i < 3; ++i)
    send_msg(d, encode(make_header("heartbeat", "dev-1")), encode(heartbeat{}));
  BOOST_REQUIRE(wait_for([&] {
    return gw.stats().refused[static_cast<int>(refusal_kind::spoofed)].load() == 3u;
  }));
  std::lock_guard<std::mutex> g{am};
  BOOST_REQUIRE_EQUAL(audited.size(), 1u); // rate-limited per peer
  BOOST_TEST(audited[0].first == "evil-1");
  BOOST_TEST(audited[0].second.find("dev-1") != std::string::npos);
}

// A second connection claiming a live device id never receives that device's
// commands, and its frames never reach the server; once the first connection is
// gone, a new connection of the device takes the id.
BOOST_AUTO_TEST_CASE(second_connection_cannot_take_a_live_device_id) {
  std::mutex m;
  std::vector<std::string> types;
  gateway gw{
      "tcp://127.0.0.1:*", decode_limits{},
      [&](header&& h, std::string_view, std::string_view) -> std::optional<refusal> {
        std::lock_guard<std::mutex> g{m};
        types.push_back(h.type);
        return std::nullopt;
      },
      nullptr};
  auto count = [&] {
    std::lock_guard<std::mutex> g{m};
    return types.size();
  };
  dealer_rig rig;
  rig.ep = gw.start();
  auto victim = rig.dealer("dev-1");
  send_msg(victim, encode(make_header("hello", "dev-1")), encode(hello{}));
  BOOST_REQUIRE(wait_for([&] { return count() == 1; }));
  auto thief = rig.dealer("dev-1");
  send_msg(thief, encode(make_header("hello", "dev-1")), encode(hello{}));
  send_msg(victim, encode(make_header("heartbeat", "dev-1")), encode(heartbeat{}));
  BOOST_REQUIRE(wait_for([&] { return count() >= 2; }));
  command c;
  c.action_id = "act-1";
  c.type = "isolate";
  gw.send("dev-1", encode(make_header("command", "dev-1")), encode(c));
  auto got = recv_msg(victim, 10s);
  BOOST_REQUIRE(got);
  BOOST_TEST(got->first.type == "command");
  BOOST_TEST(!recv_msg(thief, 300ms));
  {
    std::lock_guard<std::mutex> g{m};
    BOOST_TEST(types.size() == 2u);
  }
  // The device's own process restarts: its old connection closes, the new one works.
  victim.close();
  BOOST_REQUIRE(wait_for([&] {
    gw.send("dev-1", encode(make_header("command", "dev-1")), encode(c));
    return gw.stats().unreachable.load() > 0;
  }));
  auto again = rig.dealer("dev-1");
  send_msg(again, encode(make_header("hello", "dev-1")), encode(hello{}));
  BOOST_REQUIRE(wait_for([&] { return count() == 3; }));
  gw.send("dev-1", encode(make_header("command", "dev-1")), encode(c));
  BOOST_TEST(recv_msg(again, 10s).has_value());
  BOOST_TEST(!recv_msg(thief, 300ms));
  gw.stop();
}

// send() after stop() must not write to the wake-up descriptor after it was closed
// (the number may already belong to another file).
BOOST_AUTO_TEST_CASE(send_after_stop_writes_to_no_foreign_descriptor) {
  auto gw = std::make_unique<gateway>(
      "tcp://127.0.0.1:*", decode_limits{},
      [](header&&, std::string_view, std::string_view) -> std::optional<refusal> {
        return std::nullopt;
      },
      nullptr);
  gw->start();
  gw->stop();
  // Take every descriptor number that stop() may have freed.
  std::vector<int> fds;
  for (int i = 0; i < 64; ++i)
    fds.push_back(::eventfd(0, EFD_NONBLOCK));
  gw->send("dev-1", "h", "b");
  int written_to = 0;
  for (int fd : fds) {
    uint64_t n = 0;
    if (::read(fd, &n, sizeof n) == static_cast<ssize_t>(sizeof n)) ++written_to;
    ::close(fd);
  }
  BOOST_TEST(written_to == 0);
  BOOST_TEST(gw->stats().dropped_stopped.load() == 1u);
}

// -- CURVE and ZAP: only enrolled keys, each speaking only as its own device --------

namespace {

std::string raw_key(const std::string& z85) {
  std::string out(32, '\0');
  BOOST_REQUIRE(zmq_z85_decode(reinterpret_cast<uint8_t*>(out.data()), z85.c_str()));
  return out;
}

/// A DEALER connected to `ep` with key pair `kp`, pinning `server_key`, claiming
/// routing id `id`.
zmq::socket_t curve_dealer(zmq::context_t& ctx, const std::string& server_key,
                           const curve_key_pair& kp, const char* id,
                           const std::string& ep) {
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  s.set(zmq::sockopt::routing_id, id);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_serverkey, server_key);
  s.set(zmq::sockopt::curve_publickey, kp.public_z85);
  s.set(zmq::sockopt::curve_secretkey, kp.secret_z85);
  s.connect(ep);
  return s;
}

struct curve_bed {
  curve_key_pair server = generate_curve_key_pair();
  std::shared_ptr<key_registry> keys = std::make_shared<key_registry>();
  std::atomic<int> heartbeats{0};
  std::mutex seen_mtx;
  std::vector<std::string> seen; // device ids whose heartbeat got through
  std::unique_ptr<gateway> gw;
  std::string ep;
  zmq::context_t ctx;

  explicit curve_bed(std::size_t max_connections = 0) {
    gateway_options o;
    o.curve = curve_server_options{server.public_z85, server.secret_z85, keys};
    o.max_connections = max_connections;
    o.heartbeat_ivl = std::chrono::milliseconds{0};
    gw = std::make_unique<gateway>(
        "tcp://127.0.0.1:*", decode_limits{},
        [this](header&& h, std::string_view, std::string_view) -> std::optional<refusal> {
          std::lock_guard<std::mutex> g{seen_mtx};
          seen.push_back(h.device_id);
          ++heartbeats;
          return std::nullopt;
        },
        [](const std::string&) {}, o);
    ep = gw->start();
  }
  ~curve_bed() { gw->stop(); }

  /// A DEALER with key pair `kp` claiming routing id `id`.
  zmq::socket_t agent(const curve_key_pair& kp, const char* id) {
    return curve_dealer(ctx, server.public_z85, kp, id, ep);
  }

  static void heartbeat_from(zmq::socket_t& s, const char* id) {
    s.send(zmq::buffer(encode(make_header("heartbeat", id))),
           zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    s.send(zmq::buffer(encode(heartbeat{})), zmq::send_flags::dontwait);
  }

  int seen_from(const std::string& id) {
    std::lock_guard<std::mutex> g{seen_mtx};
    return static_cast<int>(std::count(seen.begin(), seen.end(), id));
  }

  template <class Pred> bool within(Pred p, int seconds = 10) {
    return parry::poll_until(p, std::chrono::seconds{seconds},
                             std::chrono::milliseconds{5});
  }
};

} // namespace

BOOST_AUTO_TEST_CASE(curve_admits_only_enrolled_keys_each_as_its_own_device) {
  curve_bed bed;
  auto alice = generate_curve_key_pair(), bob = generate_curve_key_pair(),
       mallory = generate_curve_key_pair();
  bed.keys->admit(raw_key(alice.public_z85), {key_identity::kind_t::agent, "dev-a", ""});
  bed.keys->admit(raw_key(bob.public_z85), {key_identity::kind_t::agent, "dev-b", ""});
  // An enrolled key, speaking as its own device, is heard.
  auto a = bed.agent(alice, "dev-a");
  curve_bed::heartbeat_from(a, "dev-a");
  BOOST_REQUIRE(bed.within([&] { return bed.seen_from("dev-a") == 1; }));
  // A key nobody enrolled completes no handshake: nothing of it arrives.
  auto m = bed.agent(mallory, "dev-m");
  curve_bed::heartbeat_from(m, "dev-m");
  BOOST_REQUIRE(
      bed.within([&] { return bed.gw->stats().zap_refused_unknown.load() >= 1; }));
  // Bob's enrolled key under another device's routing id: its connection is
  // authenticated as dev-b, so what it says as dev-x is refused as spoofed.
  auto b_as_a = bed.agent(bob, "dev-x");
  curve_bed::heartbeat_from(b_as_a, "dev-x");
  BOOST_REQUIRE(bed.within([&] {
    return bed.gw->stats()
               .refused[static_cast<std::size_t>(refusal_kind::spoofed)]
               .load() >= 1;
  }));
  BOOST_TEST(bed.seen_from("dev-x") == 0);
  BOOST_TEST(bed.seen_from("dev-m") == 0);
  BOOST_TEST(bed.gw->stats().zap_admitted.load() >= 2u);
  // A second connection for dev-a while the first is live is refused at the
  // handshake; dev-a's own connection still works.
  auto a2 = bed.agent(alice, "dev-a");
  BOOST_REQUIRE(bed.within([&] { return bed.gw->stats().zap_refused_live.load() >= 1; }));
  curve_bed::heartbeat_from(a, "dev-a");
  BOOST_REQUIRE(bed.within([&] { return bed.seen_from("dev-a") == 2; }));
}

BOOST_AUTO_TEST_CASE(connections_past_the_cap_are_refused_busy_and_counted) {
  curve_bed bed{2};
  std::vector<curve_key_pair> kp;
  for (int i = 0; i < 3; ++i) {
    kp.push_back(generate_curve_key_pair());
    bed.keys->admit(raw_key(kp.back().public_z85),
                    {key_identity::kind_t::agent, "dev-" + std::to_string(i), ""});
  }
  auto a0 = bed.agent(kp[0], "dev-0");
  auto a1 = bed.agent(kp[1], "dev-1");
  curve_bed::heartbeat_from(a0, "dev-0");
  curve_bed::heartbeat_from(a1, "dev-1");
  BOOST_REQUIRE(bed.within(
      [&] { return bed.seen_from("dev-0") == 1 && bed.seen_from("dev-1") == 1; }));
  BOOST_TEST(bed.gw->stats().connections_open.load() == 2u);
  // A third enrolled device finds the cap full: refused at the handshake, counted.
  auto a2 = bed.agent(kp[2], "dev-2");
  curve_bed::heartbeat_from(a2, "dev-2");
  BOOST_REQUIRE(bed.within([&] { return bed.gw->stats().zap_refused_busy.load() >= 1; }));
  BOOST_TEST(bed.seen_from("dev-2") == 0);
  // Once one connection ends, the device's next socket is admitted.
  a2.close();
  a0.close();
  BOOST_REQUIRE(bed.within([&] { return bed.gw->stats().connections_open.load() == 1; }));
  auto again = bed.agent(kp[2], "dev-2");
  curve_bed::heartbeat_from(again, "dev-2");
  BOOST_REQUIRE(bed.within([&] { return bed.seen_from("dev-2") == 1; }));
  BOOST_TEST(bed.gw->stats().connections_open.load() == 2u);
}

namespace {

/// A TCP connection to `endpoint` (tcp://127.0.0.1:port) that never says a word.
int silent_connection(const std::string& endpoint) {
  int fd = parry::test::loopback_connection(parry::test::port_of(endpoint));
  BOOST_REQUIRE(fd >= 0);
  return fd;
}

/// True once the peer has closed `fd` (a read sees the end), within 10 s.
bool closed_by_peer(int fd) {
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[256];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n < 0) return false; // timed out: still open
  }
}

} // namespace

BOOST_AUTO_TEST_CASE(plain_tcp_connections_past_the_cap_are_closed_and_counted) {
  std::atomic<int> heard{0};
  std::mutex seen_mtx;
  std::vector<std::string> seen;
  gateway_options o;
  o.max_connections = 2;
  o.heartbeat_ivl = std::chrono::milliseconds{0};
  gateway gw{
      "tcp://127.0.0.1:*", decode_limits{},
      [&](header&& h, std::string_view, std::string_view) -> std::optional<refusal> {
        std::lock_guard<std::mutex> g{seen_mtx};
        seen.push_back(h.device_id);
        ++heard;
        return std::nullopt;
      },
      [](const std::string&) {}, o};
  auto ep = gw.start();
  auto heard_from = [&](const std::string& id) {
    std::lock_guard<std::mutex> g{seen_mtx};
    return std::count(seen.begin(), seen.end(), id) > 0;
  };
  auto within = [](auto p) {
    return parry::poll_until(p, std::chrono::seconds{10}, std::chrono::milliseconds{5});
  };
  zmq::context_t ctx;
  auto dealer = [&](const std::string& id) { return heartbeat_dealer(ctx, ep, id); };
  auto a0 = dealer("dev-0");
  auto a1 = dealer("dev-1");
  BOOST_REQUIRE(within([&] { return heard_from("dev-0") && heard_from("dev-1"); }));
  BOOST_TEST(gw.stats().connections_open.load() == 2u);
  // A third is closed as it is accepted, and counted; nothing of it arrives.
  auto a2 = dealer("dev-2");
  BOOST_REQUIRE(within([&] { return gw.stats().accept_refused_busy.load() >= 1; }));
  BOOST_TEST(!heard_from("dev-2"));
  // So is a connection that never speaks: the cap holds whatever the peer does.
  int raw = silent_connection(ep);
  BOOST_TEST(closed_by_peer(raw));
  ::close(raw);
  // Once a slot is free, the third's own reconnect gets in with what it queued.
  a0.close();
  BOOST_REQUIRE(within([&] { return heard_from("dev-2"); }));
  BOOST_TEST(gw.stats().connections_open.load() <= 2u);
  gw.stop();
}

BOOST_AUTO_TEST_CASE(the_handshake_margin_stays_inside_the_descriptor_reserve) {
  // A sixteenth of the cap and 16 more, at most a quarter of what is left beyond it.
  BOOST_TEST(gateway::margin_within(512, 1024) == 48u);
  BOOST_TEST(gateway::margin_within(2, 1024) == 16u);
  BOOST_TEST(gateway::margin_within(14'336, 16'384) == 512u);
  BOOST_TEST(gateway::margin_within(63'488, 65'536) == 512u);
  BOOST_TEST(gateway::margin_within(1'000, 1'000) == 0u);
  BOOST_TEST(gateway::margin_within(2'000, 1'000) == 0u);
}

BOOST_AUTO_TEST_CASE(silent_connections_past_the_handshake_margin_are_closed) {
  // With CURVE, ZAP refuses a handshake past the cap; connections that never start
  // one are closed as accepted once the cap plus its margin are open.
  curve_bed bed{2};
  auto hard = 2 + gateway_options{}.handshake_margin;
  std::vector<int> fds;
  for (std::size_t i = 0; i < hard + 10; ++i)
    fds.push_back(silent_connection(bed.ep));
  BOOST_REQUIRE(
      bed.within([&] { return bed.gw->stats().accept_refused_busy.load() >= 10; }));
  BOOST_TEST(closed_by_peer(fds.back()));
  BOOST_TEST(bed.gw->stats().accept_refused_busy.load() == 10u);
  for (int fd : fds)
    ::close(fd);
  BOOST_REQUIRE(bed.within([&] { return bed.gw->stats().connections_open.load() == 0; }));
  // The margin is free again: an enrolled device gets in.
  auto kp = generate_curve_key_pair();
  bed.keys->admit(raw_key(kp.public_z85), {key_identity::kind_t::agent, "dev-0", ""});
  auto a = bed.agent(kp, "dev-0");
  curve_bed::heartbeat_from(a, "dev-0");
  BOOST_REQUIRE(bed.within([&] { return bed.seen_from("dev-0") == 1; }));
}

BOOST_AUTO_TEST_CASE(a_revoked_key_is_cut_off_and_cannot_come_back) {
  curve_bed bed;
  auto alice = generate_curve_key_pair();
  bed.keys->admit(raw_key(alice.public_z85), {key_identity::kind_t::agent, "dev-a", ""});
  auto a = bed.agent(alice, "dev-a");
  curve_bed::heartbeat_from(a, "dev-a");
  BOOST_REQUIRE(bed.within([&] { return bed.seen_from("dev-a") == 1; }));
  // Revoked: out of the registry first, then the open connection is cut.
  BOOST_REQUIRE(bed.keys->revoke(key_identity::kind_t::agent, "dev-a"));
  bed.gw->cut("dev-a");
  BOOST_REQUIRE(bed.within([&] { return bed.gw->stats().revoked_cut.load() == 1; }));
  // The DEALER reconnects by itself; the handshake is refused now, so nothing more
  // arrives however often it tries.
  BOOST_REQUIRE(
      bed.within([&] { return bed.gw->stats().zap_refused_unknown.load() >= 1; }));
  for (int i = 0; i < 5; ++i)
    curve_bed::heartbeat_from(a, "dev-a");
  BOOST_TEST(!bed.within([&] { return bed.seen_from("dev-a") > 1; }, 1));
}

BOOST_AUTO_TEST_CASE(zap_decisions_follow_the_registry) {
  key_registry keys;
  std::string k1(32, '\1'), k2(32, '\2');
  keys.admit(k1, {key_identity::kind_t::agent, "dev-1", ""});
  keys.admit(k2, {key_identity::kind_t::integrator, "soar", "security_officer"});
  zap_stats st;
  auto request = [](const char* domain, const std::string& key) {
    return std::vector<std::string>{"1.0", "r1", domain, "127.0.0.1", "", "CURVE", key};
  };
  auto never = [](const std::string&) { return false; };
  auto d = decide_zap(request(zap_domain::agents, k1), keys, st, never);
  BOOST_TEST(d.admitted);
  BOOST_TEST(d.reply[2] == "200");
  BOOST_TEST(d.reply[4] == "agent:dev-1");
  BOOST_TEST(d.reply[1] == "r1");
  // An integrator key on the agents' socket, an agent key on the integrators'.
  BOOST_TEST(!decide_zap(request(zap_domain::agents, k2), keys, st, never).admitted);
  BOOST_TEST(!decide_zap(request(zap_domain::integrators, k1), keys, st, never).admitted);
  BOOST_TEST(decide_zap(request(zap_domain::integrators, k2), keys, st, never).reply[4] ==
             "integrator:soar");
  BOOST_TEST(st.refused_domain == 2u);
  // Malformed: wrong version, wrong mechanism, short key.
  BOOST_TEST(decide_zap({"0.9", "r"}, keys, st, never).reply.empty());
  auto plain = request(zap_domain::agents, k1);
  plain[5] = "PLAIN";
  BOOST_TEST(decide_zap(plain, keys, st, never).reply[2] == "400");
  BOOST_TEST(decide_zap(request(zap_domain::agents, "short"), keys, st, never).reply[2] ==
             "400");
  BOOST_TEST(st.refused_malformed == 3u);
  // Enrolling a device again replaces its key; the old one is refused.
  std::string k3(32, '\3');
  BOOST_TEST(keys.admit(k3, {key_identity::kind_t::agent, "dev-1", ""}) == k1);
  BOOST_TEST(!decide_zap(request(zap_domain::agents, k1), keys, st, never).admitted);
  BOOST_TEST(decide_zap(request(zap_domain::agents, k3), keys, st, never).admitted);
  // A live device's second connection is refused.
  auto live = [](const std::string& id) { return id == "dev-1"; };
  auto again = decide_zap(request(zap_domain::agents, k3), keys, st, live);
  BOOST_TEST(!again.admitted);
  BOOST_TEST(st.refused_live == 1u);
}

namespace {
/// Resident set of this process, in KiB.
long rss_kib() {
  std::ifstream statm{"/proc/self/statm"};
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}
} // namespace

// A subscriber that stops reading loses events at its high-water mark; the server
// keeps none of them: 200 MiB published past a stalled subscriber leave this
// process's memory within a few MiB of the bound (pub_hwm messages).
BOOST_AUTO_TEST_CASE(a_stalled_subscriber_never_grows_the_publishers_memory) {
  gateway_options o;
  o.pub_endpoint = "tcp://127.0.0.1:*";
  o.pub_hwm = 1000;
  gateway gw{"tcp://127.0.0.1:*", decode_limits{},
             [](header&&, std::string_view, std::string_view) -> std::optional<refusal> {
               return std::nullopt;
             },
             nullptr, o};
  gw.start();
  zmq::context_t ctx;
  zmq::socket_t sub{ctx, zmq::socket_type::sub};
  sub.set(zmq::sockopt::rcvhwm, 10);
  sub.set(zmq::sockopt::rcvbuf, 4096);
  sub.set(zmq::sockopt::subscribe, "");
  sub.connect(gw.pub_endpoint());
  // The subscription reaches the publisher before the flood.
  BOOST_REQUIRE(parry::poll_until(
      [&] {
        gw.publish("action.sent", "h", "b");
        zmq::message_t m;
        return sub.recv(m, zmq::recv_flags::dontwait).has_value();
      },
      std::chrono::seconds{10}, std::chrono::milliseconds{5}));
  const std::string body(1024, 'x');
  constexpr uint64_t events = 200'000;
  auto before = rss_kib();
  uint64_t published_before = gw.stats().events_published.load();
  for (uint64_t i = 0; i < events; ++i) {
    gw.publish("action.sent", "h", body);
    if (i % 10000 == 0) // let the socket thread keep up: its queue has a bound too
      parry::poll_until(
          [&] {
            return gw.stats().events_published.load() + 20000 > published_before + i;
          },
          std::chrono::seconds{10}, std::chrono::milliseconds{1});
  }
  BOOST_REQUIRE(parry::poll_until(
      [&] { return gw.stats().events_published.load() >= published_before + events; },
      std::chrono::seconds{30}, std::chrono::milliseconds{5}));
  auto grown = rss_kib() - before;
  BOOST_TEST_MESSAGE("RSS grew by " << grown << " KiB for " << events << " events");
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer keeps freed memory in quarantine (256 MiB by default): resident
  // memory says nothing about what the publisher kept. The plain build asserts it.
  BOOST_TEST(gw.stats().events_dropped.load() == 0u);
#else
  BOOST_TEST(grown < 64 * 1024); // 200 MiB went by; a few MiB may stay
#endif
  gw.stop();
}

// -- the link between parryd and its gateway processes (issue 11, item 3) -----------

BOOST_AUTO_TEST_CASE(link_codecs_round_trip_and_refuse_garbage) {
  using namespace parry::bus::link;
  bool up = false;
  BOOST_TEST(index_of("up-3", &up).value_or(-1) == 3);
  BOOST_TEST(up);
  BOOST_TEST(index_of("gw-12", &up).value_or(-1) == 12);
  BOOST_TEST(!up);
  for (const char* bad : {"up-", "up-x", "gw-99999", "xx-1", "gw--1", "up-1 "})
    BOOST_TEST(!index_of(bad), bad);

  refusal r{refusal_kind::rate, "too many", "max_incidents_per_minute", 600, 1234};
  auto back = decode_refusal(encode_refusal(r));
  BOOST_REQUIRE(back);
  BOOST_TEST((back->kind == r.kind && back->reason == r.reason &&
              back->limit == r.limit && back->value == r.value &&
              back->retry_after_ms == r.retry_after_ms));
  BOOST_TEST(!decode_refusal("\x95\x63\xa0\xa0\x00\x00")); // kind 99 does not exist
  BOOST_TEST(!decode_refusal("junk"));

  // 2,500 changes travel in three frames; a revocation has no owner.
  std::vector<key_change> changes;
  for (int i = 0; i < 2500; ++i)
    changes.emplace_back(
        std::string(32, static_cast<char>(i % 250)),
        key_identity{key_identity::kind_t::agent, "dev-" + std::to_string(i), ""});
  changes.emplace_back(std::string(32, 'r'), std::nullopt);
  auto frames = encode_keys(changes);
  BOOST_REQUIRE_EQUAL(frames.size(), 3u);
  std::vector<key_change> got;
  for (const auto& f : frames) {
    auto part = decode_keys(f);
    BOOST_REQUIRE(part);
    got.insert(got.end(), part->begin(), part->end());
  }
  BOOST_REQUIRE_EQUAL(got.size(), changes.size());
  BOOST_TEST(
      (got[1234].second->name == "dev-1234" && got[1234].first == changes[1234].first));
  BOOST_TEST(!got.back().second);
  BOOST_TEST(encode_keys({}).size() == 1u);
  // A short key or a device id that is not one spoils the whole message.
  BOOST_TEST(!decode_keys(encode_keys({{"short", std::nullopt}}).front()));
  BOOST_TEST(!decode_keys(
      encode_keys({{std::string(32, 'k'),
                    key_identity{key_identity::kind_t::agent, "bad id\n", ""}}})
          .front()));

  gateway_stats s, sum;
  s.frames_in = 5;
  s.connections_open = 7;
  s.refused[2] = 3;
  gateway_stats copy;
  BOOST_REQUIRE(decode_stats(encode_stats(s), copy));
  BOOST_TEST(copy.frames_in.load() == 5u);
  BOOST_TEST(copy.refused[2].load() == 3u);
  add_stats(sum, copy);
  add_stats(sum, s);
  BOOST_TEST(sum.connections_open.load() == 14u);
  BOOST_TEST(!decode_stats("\xc1", copy));
}

BOOST_AUTO_TEST_CASE(reuse_port_sockets_share_a_port_and_endpoints_parse) {
  auto e = parse_tcp_endpoint("tcp://[::1]:7400");
  BOOST_REQUIRE(e);
  BOOST_TEST(e->host == "[::1]");
  BOOST_TEST(e->port == "7400");
  for (const char* bad : {"ipc:///tmp/x", "tcp://", "tcp://host", "tcp://:1", "tcp://h:"})
    BOOST_TEST(!parse_tcp_endpoint(bad), bad);
  uint16_t port = 0;
  int held = reuse_port_socket({"127.0.0.1", "*"}, 0, &port);
  BOOST_REQUIRE(port > 0);
  // Two listeners on the reserved port: the kernel spreads connections over them.
  tcp_endpoint same{"127.0.0.1", std::to_string(port)};
  int a = reuse_port_socket(same, 16), b = reuse_port_socket(same, 16);
  BOOST_TEST(a >= 0);
  BOOST_TEST(b >= 0);
  // A socket without SO_REUSEPORT cannot take it.
  int plain = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_TEST(::bind(plain, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0);
  // An address this machine does not have (TEST-NET-1): refused, nothing sent.
  BOOST_CHECK_THROW(reuse_port_socket({"192.0.2.1", "1"}, 1), std::runtime_error);
  for (int fd : {held, a, b, plain})
    ::close(fd);
}

namespace {

/// The link's socket in a directory of this test's own.
std::string link_path(const char* name) {
  return "ipc:///tmp/parry-test-" + std::to_string(::getpid()) + "-" + name + ".sock";
}

/// [kind][frames...] from a raw DEALER standing in for a gateway.
void send_link(zmq::socket_t& s, std::vector<std::string> frames) {
  for (std::size_t i = 0; i < frames.size(); ++i)
    s.send(zmq::buffer(frames[i]),
           i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

std::vector<std::string> recv_link(zmq::socket_t& s, std::chrono::milliseconds t) {
  std::vector<std::string> out;
  zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}};
  if (zmq::poll(items, 1, t) <= 0) return out;
  for (bool more = true; more;) {
    zmq::message_t m;
    (void)s.recv(m, zmq::recv_flags::none);
    out.push_back(m.to_string());
    more = m.more();
  }
  return out;
}

} // namespace

// The bound of messages_for_agents_wait_in_a_bounded_queue on the link to gateway
// processes.
BOOST_AUTO_TEST_CASE(commands_for_gateway_processes_wait_in_a_bounded_queue) {
  std::vector<std::string> unreachable;
  link::hub hub{link_path("full"),
                1,
                decode_limits{},
                [](header&&, std::string_view,
                   std::string_view) -> std::optional<refusal> { return std::nullopt; },
                [&](const std::string& id) { unreachable.push_back(id); },
                false};
  for (std::size_t i = 0; i < outbox::max_queued_sends; ++i)
    hub.send("dev-a", "h", "b");
  BOOST_TEST(hub.stats().dropped_full.load() == 0u);
  hub.send("dev-b", "h", "b");
  BOOST_TEST(hub.stats().dropped_full.load() == 1u);
  BOOST_TEST(unreachable == std::vector<std::string>{"dev-b"});
}

// With CURVE a device whose connection is live on one gateway is refused on another
// (as one gateway's ZAP refuses a second live connection) until the first says it is
// gone; whatever is not a link message is counted and the link goes on.
BOOST_AUTO_TEST_CASE(the_hub_refuses_a_device_on_a_second_gateway_and_counts_junk) {
  std::mutex mtx;
  std::vector<std::string> heard;
  link::hub hub{
      link_path("hub"),
      2,
      decode_limits{},
      [&](header&& h, std::string_view, std::string_view) -> std::optional<refusal> {
        std::lock_guard<std::mutex> g{mtx};
        heard.push_back(h.device_id);
        return std::nullopt;
      },
      [](const std::string&) {},
      true};
  hub.start();
  dealer_rig rig;
  rig.ep = link_path("hub");
  auto up0 = rig.dealer("up-0"), up1 = rig.dealer("up-1"), down1 = rig.dealer("gw-1");
  auto evil = rig.dealer("evil");
  auto count = [&] {
    std::lock_guard<std::mutex> g{mtx};
    return heard.size();
  };
  auto hb = [](const char* device) {
    return std::vector<std::string>{"m", encode(make_header("heartbeat", device)),
                                    encode(heartbeat{})};
  };
  send_link(down1, {"h"}); // gateway 1 is up: it gets the (empty) keys
  auto keys = recv_link(down1, 5s);
  BOOST_REQUIRE(keys.size() == 2u && keys[0] == "k");
  BOOST_TEST(recv_link(down1, 5s) == std::vector<std::string>{"K"});
  send_link(up0, hb("dev-x"));
  BOOST_REQUIRE(wait_for([&] { return count() == 1; }));
  send_link(up1, hb("dev-x"));
  auto r = recv_link(down1, 5s);
  BOOST_REQUIRE_EQUAL(r.size(), 3u);
  BOOST_TEST(r[0] == "r");
  auto why = link::decode_refusal(r[2]);
  BOOST_REQUIRE(why);
  BOOST_TEST((why->kind == refusal_kind::spoofed));
  BOOST_TEST(hub.stats().refused_elsewhere.load() == 1u);
  BOOST_TEST(count() == 1u);
  // Gone from gateway 0: gateway 1 may carry it now, and commands follow it there.
  send_link(up0, {"g", "dev-x"});
  send_link(up1, hb("dev-x"));
  BOOST_REQUIRE(wait_for([&] { return count() == 2; }));
  hub.send("dev-x", "H", "B");
  BOOST_TEST(recv_link(down1, 5s) == (std::vector<std::string>{"o", "dev-x", "H", "B"}));
  BOOST_TEST(hub.routed() == 1u);
  // A command the gateway could not deliver: the device has no route there any more
  // (on plain TCP, where no `gone` comes, this keeps the routes bounded).
  send_link(up1, {"u", "dev-x"});
  BOOST_TEST(wait_for([&] { return hub.routed() == 0; }));
  // Junk: an unknown peer, an unknown kind, a message whose header does not decode.
  send_link(evil, {"m", "x", "y"});
  send_link(up0, {"zz"});
  send_link(up0, {"m", "not a header", "body"});
  BOOST_TEST(wait_for([&] { return hub.stats().bad_link_messages.load() == 3; }));
  send_link(up1, hb("dev-x"));
  BOOST_TEST(wait_for([&] { return count() == 3; }));
  hub.stop();
}

// Two gateway sides on one port behind a hub, with CURVE: keys admitted before and
// after they start reach both; a device is heard, gets its commands and refusals
// back through its gateway; a command for nobody is reported unreachable; a revoked
// device is cut.
BOOST_AUTO_TEST_CASE(gateway_sides_share_a_port_and_the_hub_routes_through_them) {
  auto server = generate_curve_key_pair();
  auto keys = std::make_shared<key_registry>();
  auto alice = generate_curve_key_pair(), bob = generate_curve_key_pair();
  keys->admit(raw_key(alice.public_z85), {key_identity::kind_t::agent, "dev-a", ""});
  std::mutex mtx;
  std::vector<std::string> heard, unreachable;
  link::hub hub{
      link_path("sides"),
      2,
      decode_limits{},
      [&](header&& h, std::string_view, std::string_view) -> std::optional<refusal> {
        std::lock_guard<std::mutex> g{mtx};
        heard.push_back(h.device_id);
        if (h.type == type::incident)
          return refusal{refusal_kind::invalid, "no incidents here", "", 0, 0};
        return std::nullopt;
      },
      [&](const std::string& d) {
        std::lock_guard<std::mutex> g{mtx};
        unreachable.push_back(d);
      },
      true};
  hub.serve_keys(keys);
  hub.start();
  // A port for both: bound with SO_REUSEPORT and held, never listening.
  uint16_t port = 0;
  int hold = reuse_port_socket({"127.0.0.1", "*"}, 0, &port);
  auto ep = "tcp://127.0.0.1:" + std::to_string(port);
  std::atomic<bool> stop{false};
  std::vector<std::thread> sides;
  std::atomic<int> failed{0};
  for (int i = 0; i < 2; ++i)
    sides.emplace_back([&, i] {
      link::gateway_side_options o;
      o.link = link_path("sides");
      o.index = i;
      o.endpoint = ep;
      o.stats_every = 20ms;
      o.gateway.heartbeat_ivl = 0ms;
      o.gateway.curve = curve_server_options{server.public_z85, server.secret_z85, {}};
      failed += link::run_gateway_side(o, stop);
    });
  BOOST_REQUIRE(wait_for([&] { return hub.stats().gateways_up.load() == 2; }));
  keys->admit(raw_key(bob.public_z85), {key_identity::kind_t::agent, "dev-b", ""});
  zmq::context_t agents_ctx;
  auto agent = [&](const curve_key_pair& kp, const char* id) {
    return curve_dealer(agents_ctx, server.public_z85, kp, id, ep);
  };
  auto heard_from = [&](const std::string& d) {
    std::lock_guard<std::mutex> g{mtx};
    return std::count(heard.begin(), heard.end(), d);
  };
  auto sa = agent(alice, "dev-a"), sb = agent(bob, "dev-b");
  curve_bed::heartbeat_from(sa, "dev-a");
  curve_bed::heartbeat_from(sb, "dev-b");
  BOOST_REQUIRE(
      wait_for([&] { return heard_from("dev-a") == 1 && heard_from("dev-b") == 1; }));
  BOOST_TEST(hub.routed() == 2u);
  hub.send("dev-b", encode(make_header("command", "dev-b")), "body-b");
  auto cmd = recv_msg(sb, 5s);
  BOOST_REQUIRE(cmd);
  BOOST_TEST(cmd->first.type == "command");
  BOOST_TEST(cmd->second == "body-b");
  // Refused by the core: answered by the gateway, as its own refusals are.
  send_msg(sa, encode(make_header("incident", "dev-a")), encode(heartbeat{}));
  auto rej = recv_msg(sa, 5s);
  BOOST_REQUIRE(rej);
  BOOST_TEST(rej->first.type == type::rejected);
  hub.send("nobody", "h", "b");
  BOOST_TEST(wait_for([&] {
    std::lock_guard<std::mutex> g{mtx};
    return unreachable == std::vector<std::string>{"nobody"};
  }));
  BOOST_TEST(hub.stats().no_route.load() == 1u);
  // Revoked, then cut: whichever gateway holds it closes it, and it cannot return.
  BOOST_REQUIRE(keys->revoke(key_identity::kind_t::agent, "dev-a"));
  hub.cut("dev-a");
  auto totals = [&] {
    gateway_stats s;
    hub.gateway_totals(s);
    return std::make_pair(s.revoked_cut.load(), s.zap_refused_unknown.load());
  };
  BOOST_TEST(wait_for([&] { return totals().first == 1 && totals().second >= 1; }));
  BOOST_TEST(hub.stats().bad_link_messages.load() == 0u);
  stop = true;
  for (auto& t : sides)
    t.join();
  BOOST_TEST(failed.load() == 0);
  ::close(hold);
  hub.stop();
}

// The kernel finds dead agent connections: an accepted connection carries TCP
// keepalive (idle and interval of one heartbeat, whole seconds) and a user timeout of
// the heartbeat timeout, and the gateway sets no ZMTP heartbeat of its own.
BOOST_AUTO_TEST_CASE(kernel_keepalive_is_set_on_accepted_connections) {
  gateway_options o;
  o.heartbeat_ivl = 1500ms;
  o.heartbeat_timeout = 6000ms;
  o.kernel_keepalive = true;
  std::atomic<int> heard{0};
  gateway gw{"tcp://127.0.0.1:*", decode_limits{},
             [&](header&&, std::string_view, std::string_view) -> std::optional<refusal> {
               ++heard;
               return std::nullopt;
             },
             nullptr, o};
  dealer_rig rig;
  rig.ep = gw.start();
  auto d = rig.dealer("dev-1");
  send_msg(d, encode(make_header("heartbeat", "dev-1")), encode(heartbeat{}));
  BOOST_REQUIRE(wait_for([&] { return heard.load() == 1; }));
  // This process holds both ends; only the accepted one has keepalive on.
  int accepted = 0;
  for (const auto& e : std::filesystem::directory_iterator{"/proc/self/fd"}) {
    int fd = std::stoi(e.path().filename().string());
    int on = 0, idle = 0, intvl = 0, cnt = 0;
    unsigned user_timeout = 0;
    socklen_t len = sizeof on;
    if (::getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len) != 0 || on == 0) continue;
    len = sizeof idle;
    ::getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &len);
    ::getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, &len);
    ::getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, &len);
    len = sizeof user_timeout;
    ::getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, &len);
    BOOST_TEST(idle == 2);
    BOOST_TEST(intvl == 2);
    BOOST_TEST(cnt == 2); // 2 s idle + 2 probes of 2 s: the 6 s timeout
    BOOST_TEST(user_timeout == 6000u);
    ++accepted;
  }
  BOOST_TEST(accepted == 1);
  gw.stop();
}
