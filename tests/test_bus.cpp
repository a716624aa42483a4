#define BOOST_TEST_MODULE bus
#include <boost/test/unit_test.hpp>

#include <chrono>

#include <zmq.hpp>

#include "bus/codec.hpp"
#include "bus/gateway.hpp"

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
  gateway gw{"tcp://127.0.0.1:*", decode_limits{},
             [&](header&& h, std::string_view body) {
               if (h.type != "heartbeat") return false;
               ++good;
               return true;
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
