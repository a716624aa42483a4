// parry-decode-bench: what decoding each bus message costs on the gateway thread
// (bus::decode: parse with limits, then convert into the struct), next to its floor
// in the same run: msgpack::unpack of the same bytes into an object tree alone.
// Issue 11, item 2 wants decode close to that floor; this measures the distance.

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "bus/codec.hpp"
#include "bus/messages.hpp"

namespace {

using namespace parry::bus;
using steady = std::chrono::steady_clock;

/// Nanoseconds per call of `f`, over at least `budget` of calls.
template <class F> double ns_per_call(F&& f, std::chrono::milliseconds budget) {
  std::size_t calls = 0;
  auto t0 = steady::now();
  auto until = t0 + budget;
  do {
    for (int i = 0; i < 64; ++i)
      f();
    calls += 64;
  } while (steady::now() < until);
  return std::chrono::duration<double, std::nano>(steady::now() - t0).count() /
         double(calls);
}

/// A report the size of the scenarios': a detection and eight events.
incident_report sample_report() {
  incident_report r;
  r.report_id = "rep-0f3a9c01d2e4b5a6";
  r.det = {"HEUR:Trojan.Win32.Generic", "critical", "epp-heuristic"};
  r.key_event_id = "e8";
  for (int i = 1; i <= 8; ++i) {
    activity_event e;
    e.id = "e" + std::to_string(i);
    e.type = i % 2 ? "process_started" : "file_created";
    e.time = 1795814160000000 + i;
    e.parent_id = i > 1 ? "e" + std::to_string(i - 1) : "";
    e.file = {"C:\\Users\\bob\\AppData\\Local\\Temp\\stage" + std::to_string(i) + ".exe",
              std::string(64, 'a'), 48128};
    e.process = {uint32_t(4000 + i),
                 1795814150000000,
                 "C:\\Windows\\System32\\cmd.exe",
                 std::string(64, 'b'),
                 "cmd.exe /c start stage" + std::to_string(i) + ".exe",
                 "CORP\\bob",
                 uint32_t(3999 + i)};
    r.events.push_back(e);
  }
  return r;
}

template <class T> void row(const char* name, const T& value, decode_limits lim) {
  auto bytes = encode(value);
  volatile std::size_t sink = 0;
  auto floor = ns_per_call(
      [&] {
        auto oh = msgpack::unpack(bytes.data(), bytes.size());
        sink = sink + oh.get().via.map.size;
      },
      std::chrono::milliseconds{300});
  auto full = ns_per_call(
      [&] {
        std::string why;
        auto m = decode<T>(bytes, lim, why);
        sink = sink + (m ? 1 : 0);
      },
      std::chrono::milliseconds{300});
  std::printf("  %-16s %7zu %14.0f %14.0f %8.2f\n", name, bytes.size(), full, floor,
              full / floor);
}

} // namespace

int main() {
  decode_limits lim; // the gateway's defaults
  lim.max_frame = 1 << 20;
  std::printf("bus message decode (ns per message; floor: msgpack::unpack alone, same "
              "run)\n");
  std::printf("  %-16s %7s %14s %14s %8s\n", "message", "bytes", "bus::decode",
              "unpack floor", "ratio");
  hello h;
  h.hostname = "ws-0003.corp.example";
  h.os = "Windows 10 Enterprise 22H2";
  h.agent_version = "0.1.0";
  h.addresses = {"10.0.3.17", "fe80::1c2d:3e4f:5a6b:7c8d"};
  row("hello", h, lim);
  row("heartbeat", heartbeat{}, lim);
  row("incident_report", sample_report(), lim);
  action_result res;
  res.action_id = "act-5e0c7b1a9d2f3e4c6b8a0d1f";
  res.ok = true;
  res.effect = {{"rules", "3"}, {"table", "parry_isolation"}};
  row("action_result", res, lim);
  row("action_ack", action_ack{"act-5e0c7b1a9d2f3e4c6b8a0d1f"}, lim);
  cancel_result cr;
  cr.action_id = "act-5e0c7b1a9d2f3e4c6b8a0d1f";
  cr.cancelled = false;
  cr.detail = "already executed";
  row("cancel_result", cr, lim);
  header hd;
  hd.type = "incident";
  hd.device_id = "sim-0003";
  hd.msg_id = 42;
  hd.time = 1795814160000000;
  row("header", hd, lim);
  return 0;
}
