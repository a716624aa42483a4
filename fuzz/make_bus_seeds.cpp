// Writes the seed corpus of fuzz_bus: one frame of every message type, as in
// tests/test_bus.cpp (the golden header, the incident of incident_round_trip).
// Run once after a change to bus/messages.hpp: make_bus_seeds fuzz/corpus/bus

#include <fstream>
#include <iostream>
#include <string>

#include "bus/codec.hpp"

using namespace parry::bus;

namespace {

std::string dir;

template <class T> void put(const char* name, const T& x) {
  std::ofstream(dir + "/" + name, std::ios::binary) << encode(x);
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_bus_seeds DIR\n";
    return 2;
  }
  dir = argv[1];
  header h;
  h.type = "heartbeat";
  h.msg_id = 1;
  h.device_id = "d";
  h.seq = 2;
  h.time = 3;
  put("header", h);
  put("hello", hello{"host-1", "windows", "0.1.0", {"10.0.0.5", "fe80::1"}, true});
  put("heartbeat", heartbeat{true});
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
  e2.detail = "10.1.2.3:443";
  r.events = {e1, e2};
  put("incident", r);
  put("action_ack", action_ack{"a-1"});
  put("action_result", action_result{"a-1", true, "", {{"quarantine_id", "q-1"}}, 1200});
  put("action_result_failed", action_result{"a-2", false, "no file at /x", {}, 0});
  put("welcome", welcome{1795000000000000, 5000});
  put("command", command{"a-1",
                         "start_process",
                         {{"path", "/bin/sh"}, {"argc", "1"}, {"arg.0", "-c"}},
                         1,
                         2});
  put("result_ack", result_ack{"a-1"});
  return 0;
}
