#define BOOST_TEST_MODULE client
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/crypto.hpp"
#include "ctl/client.hpp"
#include "ctl/format.hpp"

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

} // namespace

BOOST_AUTO_TEST_SUITE(url)

BOOST_AUTO_TEST_CASE(good_urls) {
  auto u = parry::parse_base_url("https://127.0.0.1:8443");
  BOOST_TEST(u.host == "127.0.0.1");
  BOOST_TEST(u.port == 8443);
  BOOST_TEST(u.prefix == "");
  BOOST_TEST(u.str() == "https://127.0.0.1:8443");

  auto d = parry::parse_base_url("HTTPS://parry.example.org/");
  BOOST_TEST(d.host == "parry.example.org");
  BOOST_TEST(d.port == 443);
  BOOST_TEST(d.prefix == "");

  auto v6 = parry::parse_base_url("https://[::1]:9000/parry/");
  BOOST_TEST(v6.host == "::1");
  BOOST_TEST(v6.port == 9000);
  BOOST_TEST(v6.prefix == "/parry");
  BOOST_TEST(v6.authority() == "[::1]:9000");
  BOOST_TEST(v6.str() == "https://[::1]:9000/parry");
}

BOOST_AUTO_TEST_CASE(bad_urls) {
  auto refused = [](const char* url, std::string_view why) {
    try {
      parry::parse_base_url(url);
    } catch (const std::invalid_argument& e) {
      BOOST_TEST_INFO(url << " -> " << e.what());
      BOOST_TEST(contains(e.what(), why));
      return;
    }
    BOOST_ERROR("accepted " << url);
  };
  refused("127.0.0.1:8443", "missing scheme");
  refused("http://127.0.0.1:8443", "plain http");
  refused("ftp://127.0.0.1", "unsupported scheme");
  refused("https://", "missing host");
  refused("https://:8443", "missing host");
  refused("https://127.0.0.1:", "bad port");
  refused("https://127.0.0.1:84x3", "bad port");
  refused("https://127.0.0.1:0", "out of range");
  refused("https://127.0.0.1:65536", "out of range");
  refused("https://127.0.0.1:123456", "bad port");
  refused("https://user@127.0.0.1", "user info");
  refused("https://127.0.0.1/?x=1", "query");
  refused("https://::1:8443", "brackets");
  refused("https://[::1", "unterminated");
  refused("https://[zz::1]:1", "IPv6");
  refused("https://bad host:1", "bad character");
}

BOOST_AUTO_TEST_CASE(ip_literals) {
  BOOST_TEST(parry::is_ip_literal("127.0.0.1"));
  BOOST_TEST(parry::is_ip_literal("::1"));
  BOOST_TEST(!parry::is_ip_literal("localhost"));
  BOOST_TEST(!parry::is_ip_literal("127.0.0.1.example"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(format)

BOOST_AUTO_TEST_CASE(table_aligns_columns) {
  auto out = parry::ctl::format_table(
      {"ID", "NAME", "STATE"},
      {{"sim-0001", "ws-1", "online"}, {"x", "host-with-long-name", ""}, {"é", "a"}});
  auto lines = lines_of(out);
  BOOST_REQUIRE_EQUAL(lines.size(), 4u);
  BOOST_TEST(lines[0] == "ID        NAME                 STATE");
  BOOST_TEST(lines[1] == "sim-0001  ws-1                 online");
  BOOST_TEST(lines[2] == "x         host-with-long-name");
  // Alignment counts characters, not bytes.
  BOOST_TEST(lines[3] == "é         a");
  BOOST_TEST(out.back() == '\n');
}

BOOST_AUTO_TEST_CASE(table_cells_cannot_drive_the_terminal) {
  auto out = parry::ctl::format_table({"CMD"}, {{"evil\x1b[2J\nnext"}});
  BOOST_TEST(!contains(out, "\x1b"));
  BOOST_TEST(lines_of(out).size() == 2u);
  BOOST_TEST(contains(out, "evil\\x1b[2J\\nnext"));
}

BOOST_AUTO_TEST_CASE(printable_escapes) {
  using parry::ctl::printable;
  BOOST_TEST(printable("plain C:\\x.exe") == "plain C:\\x.exe");
  BOOST_TEST(printable("a\tb\r") == "a\\tb\\r");
  BOOST_TEST(printable("\x7f") == "\\x7f");
  BOOST_TEST(printable("\xff") == "\\xff");       // invalid UTF-8
  BOOST_TEST(printable("\xc2\x9b") == "\\u009b"); // C1 CSI
  BOOST_TEST(printable("inv\u202e"
                       "fdp.exe") == "inv\\u202efdp.exe");
  BOOST_TEST(printable("Grüße") == "Grüße");
}

BOOST_AUTO_TEST_CASE(fields_and_cells) {
  json d{{"id", "sim-1"}, {"online", true},  {"addrs", {"10.0.0.1", "10.0.0.2"}},
         {"n", 6},        {"none", nullptr}, {"empty", ""}};
  using parry::ctl::cell;
  BOOST_TEST(cell(d, "id") == "sim-1");
  BOOST_TEST(cell(d, "online") == "yes");
  BOOST_TEST(cell(d, "addrs") == "10.0.0.1, 10.0.0.2");
  BOOST_TEST(cell(d, "n") == "6");
  BOOST_TEST(cell(d, "none") == "-");
  BOOST_TEST(cell(d, "empty") == "-");
  BOOST_TEST(cell(d, "missing") == "-");
  BOOST_TEST(cell(json::array(), "id") == "-");

  auto out = parry::ctl::format_fields({{"device", "sim-1"}, {"first seen", "t"}});
  BOOST_TEST(out == "device      sim-1\nfirst seen  t\n");
  // Labels can be keys the server chose (effect keys), so they are escaped too.
  auto hostile = parry::ctl::format_fields({{"effect \x1b[2J", "v"}, {"a", "b"}});
  BOOST_TEST(hostile == "effect \\x1b[2J  v\na               b\n");
}

BOOST_AUTO_TEST_CASE(query_and_encoding) {
  BOOST_TEST(parry::ctl::percent_encode("inc-7f/a b?") == "inc-7f%2Fa%20b%3F");
  BOOST_TEST(
      parry::ctl::query_string({{"device_id", "sim 1"}, {"state", ""}, {"limit", "5"}}) ==
      "?device_id=sim%201&limit=5");
  BOOST_TEST(parry::ctl::query_string({{"state", ""}}) == "");
}

BOOST_AUTO_TEST_CASE(pretty_json_keeps_server_order) {
  auto out = parry::ctl::pretty_json(R"({"zeta":1,"alpha":{"b":2,"a":3}})");
  BOOST_TEST(out.find("zeta") < out.find("alpha"));
  BOOST_TEST(out.find("\"b\"") < out.find("\"a\""));
  BOOST_TEST(contains(out, "\n  \"alpha\": {"));
  BOOST_TEST(parry::ctl::pretty_json("not json") == "not json");
}

BOOST_AUTO_TEST_CASE(error_lines) {
  parry::response r;
  r.status = 404;
  r.body = json{{"error", {{"code", "not_found"}, {"message", "no incident inc-42"}}}};
  BOOST_TEST(parry::ctl::error_line(r) == "error: not_found: no incident inc-42");
  parry::response bare;
  bare.status = 502;
  bare.raw = "Bad Gateway";
  BOOST_TEST(parry::ctl::error_line(bare) == "error: http_502: Bad Gateway");
}

BOOST_AUTO_TEST_CASE(exit_codes) {
  using parry::ctl::exit_code;
  using parry::ctl::outcome;
  BOOST_TEST(exit_code(outcome::ok) == 0);
  BOOST_TEST(exit_code(outcome::server_error) == 1);
  BOOST_TEST(exit_code(outcome::usage) == 2);
  BOOST_TEST(exit_code(outcome::timeout) == 2);
  BOOST_TEST(exit_code(outcome::connection) == 3);
  BOOST_TEST(exit_code(outcome::declined) == 1);

  using parry::ctl::outcome_for_status;
  BOOST_TEST((outcome_for_status(200) == outcome::ok));
  BOOST_TEST((outcome_for_status(202) == outcome::ok));
  BOOST_TEST((outcome_for_status(401) == outcome::server_error));
  BOOST_TEST((outcome_for_status(409) == outcome::server_error));
  BOOST_TEST((outcome_for_status(500) == outcome::server_error));

  using parry::ctl::outcome_for_action;
  BOOST_TEST(!outcome_for_action(json{{"state", "sent"}, {"final", false}}));
  BOOST_TEST(!outcome_for_action(json{{"state", "queued"}}));
  BOOST_TEST(!outcome_for_action(json()));
  auto done = outcome_for_action(json{{"state", "completed"}, {"final", true}});
  BOOST_TEST((done && *done == outcome::ok));
  auto failed = outcome_for_action(json{{"state", "failed"}});
  BOOST_TEST((failed && *failed == outcome::server_error));
  auto other = outcome_for_action(json{{"state", "cancelled"}, {"final", true}});
  BOOST_TEST((other && *other == outcome::server_error));
  // Final by state alone, even when the server leaves out "final".
  for (const char* state : {"expired", "cancelled", "reverted"}) {
    BOOST_TEST_INFO(state);
    auto o = outcome_for_action(json{{"state", state}});
    BOOST_TEST((o && *o == outcome::server_error));
  }
  BOOST_TEST(!outcome_for_action(json{{"state", "acknowledged"}}));
  BOOST_TEST(!outcome_for_action(json{{"state", 7}})); // not a string: not final
  BOOST_TEST(parry::ctl::is_final_state("reverted"));
  BOOST_TEST(!parry::ctl::is_final_state("sent"));
}

BOOST_AUTO_TEST_CASE(chain_tree) {
  auto t = [](int s) { return "2026-11-27T21:15:0" + std::to_string(s) + ".000000Z"; };
  json proc_explorer{{"pid", 4100},
                     {"image", "C:\\Windows\\explorer.exe"},
                     {"cmdline", "C:\\Windows\\explorer.exe"}};
  // Deliberately not in time order, one orphan, one cycle.
  json events = json::array({
      {{"id", "e3"},
       {"type", "process_started"},
       {"time", t(3)},
       {"parent_id", "e2"},
       {"key", true},
       {"file", {{"path", "C:\\Users\\a\\invoice.exe"}}},
       {"process",
        {{"pid", 4242},
         {"image", "C:\\Users\\a\\invoice.exe"},
         {"cmdline", "invoice.exe /q"}}}},
      {{"id", "e5"},
       {"type", "network_connection"},
       {"time", t(5)},
       {"parent_id", "e1"},
       {"process", proc_explorer},
       {"detail", "10.0.0.9:443"}},
      {{"id", "e1"},
       {"type", "process_started"},
       {"time", t(1)},
       {"parent_id", ""},
       {"process", proc_explorer}},
      {{"id", "e4"},
       {"type", "file_modified"},
       {"time", t(4)},
       {"parent_id", "e3"},
       {"file", {{"path", "C:\\tmp\\\x1b[31mred.txt"}}}},
      {{"id", "e2"},
       {"type", "file_created"},
       {"time", t(2)},
       {"parent_id", "e1"},
       {"file", {{"path", "C:\\Users\\a\\invoice.exe"}}},
       {"process", proc_explorer}},
      {{"id", "e6"},
       {"type", "registry_set"},
       {"time", t(6)},
       {"parent_id", "gone"},
       {"detail", "Run key"}},
      {{"id", "e8"}, {"type", "loop_b"}, {"time", t(8)}, {"parent_id", "e7"}},
      {{"id", "e7"}, {"type", "loop_a"}, {"time", t(7)}, {"parent_id", "e8"}},
  });
  json incident{{"incident_id", "inc-1"}, {"key_event_id", "e3"}, {"events", events}};
  auto lines = lines_of(parry::ctl::render_chain(incident));
  std::vector<std::string> want{
      t(1) + "  process_started  C:\\Windows\\explorer.exe (pid 4100)",
      t(2) + "  |- file_created  C:\\Users\\a\\invoice.exe  by C:\\Windows\\explorer.exe "
             "(pid 4100)",
      t(3) + "  |  `- [DETECTION] process_started  C:\\Users\\a\\invoice.exe (pid 4242) "
             "invoice.exe /q",
      t(4) + "  |     `- file_modified  C:\\tmp\\\\x1b[31mred.txt",
      t(5) + "  `- network_connection  C:\\Windows\\explorer.exe (pid 4100)  "
             "(10.0.0.9:443)",
      t(6) + "  registry_set  (Run key)",
      t(7) + "  loop_a",
      t(8) + "  `- loop_b",
  };
  BOOST_TEST(lines == want, boost::test_tools::per_element());

  // Without "key": true the key_event_id still marks the detection.
  incident["events"][0].erase("key");
  auto again = parry::ctl::render_chain(incident);
  BOOST_TEST(contains(again, "[DETECTION] process_started"));
  BOOST_TEST(parry::ctl::render_chain(json{{"events", json::array()}}) ==
             "(no events)\n");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(actions_view)

namespace {

// The answer of GET /incidents/inc-1/available-actions, as in docs/rest-api.md.
json available_answer() {
  return json::parse(R"({
    "incident_id": "inc-1", "device_id": "sim-0003", "device_isolated": false,
    "device_actions": ["isolate", "start_process"],
    "targets": [
      {"kind": "event", "event_id": "e2", "event_type": "file_created",
       "actions": ["prevent_run", "quarantine", "delete_file"]},
      {"kind": "detection", "event_id": "e4", "event_type": "process_started",
       "actions": ["prevent_run", "quarantine", "delete_file", "terminate_process"]},
      {"kind": "event", "event_id": "e5", "event_type": "network_connection",
       "actions": []}],
    "password_required": ["delete_file", "prevent_run", "quarantine", "start_process",
                          "terminate_process"]})");
}

json incident_answer() {
  json explorer{{"pid", 4100}, {"image", "C:\\Windows\\explorer.exe"}};
  return json{
      {"incident_id", "inc-1"},
      {"device_id", "sim-0003"},
      {"key_event_id", "e4"},
      {"detection", {{"name", "HEUR:Trojan.Win32.Generic"}, {"severity", "high"}}},
      {"events",
       json::array(
           {{{"id", "e2"},
             {"type", "file_created"},
             {"file", {{"path", "C:\\Users\\bob\\invoice.exe"}, {"sha256", "aa11"}}},
             {"process", explorer}},
            {{"id", "e4"},
             {"type", "process_started"},
             {"parent_id", "e2"},
             {"file", {{"path", "C:\\Users\\bob\\invoice.exe"}, {"sha256", "aa11"}}},
             {"process",
              {{"pid", 4242},
               {"start_time", "2026-11-27T21:15:03.000000Z"},
               {"image", "C:\\Users\\bob\\invoice.exe"},
               {"cmdline", "invoice.exe /q"}}}},
            {{"id", "e5"},
             {"type", "network_connection"},
             {"process", explorer},
             {"detail", "10.0.0.9:443"}}})}};
}

} // namespace

BOOST_AUTO_TEST_CASE(command_names_and_reverses) {
  using namespace parry::ctl;
  BOOST_TEST(action_type_for_command("delete-file") == "delete_file");
  BOOST_TEST(action_type_for_command("release") == "release_isolation");
  BOOST_TEST(action_type_for_command("terminate") == "terminate_process");
  BOOST_TEST(action_type_for_command("rm") == "");
  BOOST_TEST(command_for_action_type("start_process") == "start-process");
  BOOST_TEST(command_for_action_type("allow_run") == "allow_run");
  BOOST_TEST(reverse_type("isolate") == "release_isolation");
  BOOST_TEST(reverse_type("prevent_run") == "allow_run");
  BOOST_TEST(reverse_type("quarantine") == "restore_from_quarantine");
  BOOST_TEST(reverse_type("delete_file") == "");
  BOOST_TEST(reverse_type("release_isolation") == "");
}

BOOST_AUTO_TEST_CASE(password_follows_the_servers_list) {
  using parry::ctl::needs_password;
  json av = available_answer();
  BOOST_TEST(needs_password("quarantine", av));
  BOOST_TEST(!needs_password("isolate", av));
  BOOST_TEST(!needs_password("restore_from_quarantine", av));
  // An administrator may require it for more types, or fewer; start_process always.
  av["password_required"] = json::array({"restore_from_quarantine"});
  BOOST_TEST(needs_password("restore_from_quarantine", av));
  BOOST_TEST(!needs_password("quarantine", av));
  BOOST_TEST(needs_password("start_process", av));
  // No list at all: the documented default.
  BOOST_TEST(needs_password("delete_file", json::object()));
  BOOST_TEST(!needs_password("allow_run", json::object()));
}

BOOST_AUTO_TEST_CASE(applicability_from_the_answer) {
  using parry::ctl::applicability_problem;
  json av = available_answer();
  BOOST_TEST(applicability_problem("quarantine", "", av) == "");
  BOOST_TEST(applicability_problem("terminate_process", "", av) == "");
  BOOST_TEST(applicability_problem("quarantine", "e2", av) == "");
  BOOST_TEST(applicability_problem("isolate", "e5", av) == ""); // device action
  BOOST_TEST(applicability_problem("terminate_process", "e2", av) ==
             "terminate_process does not apply to event e2 (file_created); it allows "
             "prevent-run, quarantine, delete-file");
  BOOST_TEST(
      applicability_problem("quarantine", "e5", av) ==
      "quarantine does not apply to event e5 (network_connection); no action does");
  BOOST_TEST(applicability_problem("quarantine", "e9", av) ==
             "incident inc-1 has no event e9");
  BOOST_TEST(applicability_problem("release_isolation", "", av) ==
             "device sim-0003 is not isolated, there is nothing to release");
  // When the answer says nothing, the server decides.
  BOOST_TEST(applicability_problem("quarantine", "e2", json::object()) == "");
}

BOOST_AUTO_TEST_CASE(available_actions_table) {
  auto out = parry::ctl::render_available_actions(available_answer(), incident_answer());
  std::vector<std::string> want{
      "incident inc-1 on device sim-0003 (not isolated)",
      "",
      "TARGET     EVENT  EVENT TYPE          ACTIONS                                     "
      " "
      "        OBJECT",
      "device     -      -                   isolate, start-process*                     "
      " "
      "        sim-0003",
      "detection  e4     process_started     prevent-run*, quarantine*, delete-file*, "
      "terminate*  C:\\Users\\bob\\invoice.exe (pid 4242) invoice.exe /q",
      "event      e2     file_created        prevent-run*, quarantine*, delete-file*     "
      " "
      "        C:\\Users\\bob\\invoice.exe  by C:\\Windows\\explorer.exe (pid 4100)",
      "event      e5     network_connection  -                                           "
      " "
      "        C:\\Windows\\explorer.exe (pid 4100)  (10.0.0.9:443)",
      "",
      "* asks for your password",
  };
  BOOST_TEST(lines_of(out) == want, boost::test_tools::per_element());

  // Without the incident the objects are unknown, not wrong; without any password
  // requirement there is no footnote.
  json av = available_answer();
  av["password_required"] = json::array();
  av["device_actions"] = json::array({"isolate", "release_isolation"});
  av["device_isolated"] = true;
  auto plain = lines_of(parry::ctl::render_available_actions(av, json()));
  BOOST_REQUIRE_EQUAL(plain.size(), 7u);
  BOOST_TEST(plain[0] == "incident inc-1 on device sim-0003 (isolated)");
  // The widest ACTIONS cell (the detection's, 47 characters) puts OBJECT at column 87.
  BOOST_TEST(plain[2] ==
             "TARGET     EVENT  EVENT TYPE          ACTIONS                   "
             "                       OBJECT");
  BOOST_TEST(plain[3] ==
             "device     -      -                   isolate, release          "
             "                       sim-0003");
  BOOST_TEST(plain[5] ==
             "event      e2     file_created        prevent-run, quarantine, d"
             "elete-file             -");
  BOOST_TEST(!contains(plain.back(), "password"));
}

BOOST_AUTO_TEST_CASE(available_actions_table_escapes_server_text) {
  json av = available_answer();
  av["targets"][2]["event_type"] = "net\x1b]0;owned\x07";
  av["targets"][2]["actions"] = json::array({"wipe\ndisk"});
  json inc = incident_answer();
  inc["events"][2]["detail"] = "\u202etxt.exe";
  auto out = parry::ctl::render_available_actions(av, inc);
  BOOST_TEST(!contains(out, "\x1b"));
  BOOST_TEST(!contains(out, "\x07"));
  BOOST_TEST(!contains(out, "\u202e"));
  BOOST_TEST(lines_of(out).size() == 9u); // the newline did not add a line
  BOOST_TEST(contains(out, "net\\x1b]0;owned\\x07"));
  BOOST_TEST(contains(out, "wipe\\ndisk"));
  BOOST_TEST(contains(out, "(\\u202etxt.exe)"));
}

BOOST_AUTO_TEST_CASE(confirmation_of_a_file_action) {
  json device{{"device_id", "sim-0003"}, {"hostname", "ws-0003"}};
  auto out = parry::ctl::describe_pending_action("quarantine", incident_answer(), "e2",
                                                 json::object(), device);
  std::vector<std::string> want{
      "about to quarantine:",
      "  device    sim-0003 (ws-0003)",
      "  incident  inc-1  HEUR:Trojan.Win32.Generic",
      "  target    event e2 (file_created)",
      "  file      C:\\Users\\bob\\invoice.exe",
      "  sha256    aa11",
  };
  BOOST_TEST(lines_of(out) == want, boost::test_tools::per_element());

  // No --event: the detection's key event; terminate shows the process.
  auto term = parry::ctl::describe_pending_action("terminate_process", incident_answer(),
                                                  "", json::object(), json());
  std::vector<std::string> want_term{
      "about to terminate_process:",
      "  device        sim-0003",
      "  incident      inc-1  HEUR:Trojan.Win32.Generic",
      "  target        the detection, event e4 (process_started)",
      "  process       pid 4242  C:\\Users\\bob\\invoice.exe",
      "  started       2026-11-27T21:15:03.000000Z",
      "  command line  invoice.exe /q",
  };
  BOOST_TEST(lines_of(term) == want_term, boost::test_tools::per_element());

  auto iso = parry::ctl::describe_pending_action("isolate", incident_answer(), "e5",
                                                 json::object(), device);
  BOOST_TEST(contains(iso, "  target    the device\n"));
  BOOST_TEST(!contains(iso, "e5"));

  auto missing = parry::ctl::describe_pending_action("delete_file", incident_answer(),
                                                     "e9", json::object(), device);
  BOOST_TEST(contains(missing, "event e9 (not in this incident)"));
  BOOST_TEST(!contains(missing, "sha256"));
}

// The confirmation shows the argv the agent will run, one argument a line, so what the
// operator approves is what runs (issue 6: it showed the raw string).
BOOST_AUTO_TEST_CASE(start_process_confirmation_shows_the_argv) {
  json params{{"path", "C:\\Tools\\collect.exe"},
              {"arguments", json::array({"\\\\fileserver\\share\\x", "two words", ""})}};
  auto out = parry::ctl::describe_pending_action("start_process", incident_answer(), "",
                                                 params, json::object());
  BOOST_TEST(contains(out, "executable"));
  BOOST_TEST(contains(out, "[\\\\fileserver\\share\\x]"));
  BOOST_TEST(contains(out, "[two words]"));
  BOOST_TEST(contains(out, "arg 2"));
  BOOST_TEST(contains(out, "[]"));
  params["arguments"] = json::array();
  BOOST_TEST(contains(parry::ctl::describe_pending_action(
                          "start_process", incident_answer(), "", params, json::object()),
                      "(none)"));
}

BOOST_AUTO_TEST_CASE(confirmation_escapes_hostile_names) {
  json inc = incident_answer();
  // A file name that reorders itself, a command line that clears the screen and
  // fakes a prompt answer on a new line, a host name with a title escape.
  inc["events"][0]["file"]["path"] = "C:\\Users\\bob\\invoice\u202Efdp.exe";
  inc["events"][0]["file"]["sha256"] = "aa\r\nProceed? [y/N] y";
  inc["events"][1]["process"]["cmdline"] = "x\x1b[2J\x1b[H\nProceed? [y/N] y";
  inc["detection"]["name"] = "Trojan\xc2\x9b"
                             "31m";
  json device{{"device_id", "sim-0003"}, {"hostname", "ws\x1b]0;pwned\x07"}};

  auto out = parry::ctl::describe_pending_action("quarantine", inc, "e2", json::object(),
                                                 device);
  std::vector<std::string> want{
      "about to quarantine:",
      "  device    sim-0003 (ws\\x1b]0;pwned\\x07)",
      "  incident  inc-1  Trojan\\u009b31m",
      "  target    event e2 (file_created)",
      "  file      C:\\Users\\bob\\invoice\\u202efdp.exe",
      "  sha256    aa\\r\\nProceed? [y/N] y",
  };
  BOOST_TEST(lines_of(out) == want, boost::test_tools::per_element());

  auto term = parry::ctl::describe_pending_action("terminate_process", inc, "",
                                                  json::object(), {});
  BOOST_TEST(!contains(term, "\x1b"));
  BOOST_TEST(lines_of(term).size() == 7u);
  BOOST_TEST(contains(term, "  command line  x\\x1b[2J\\x1b[H\\nProceed? [y/N] y\n"));
}

BOOST_AUTO_TEST_CASE(start_process_arguments_are_shown_escaped) {
  json params{{"path", "C:\\Tools\\collect.exe"},
              {"working_directory", "C:\\Temp\\\x1b[8m"},
              {"arguments", "/out \"C:\\Temp\\x y.zip\"\n\x1b[1A\u2067 /quiet"}};
  auto out = parry::ctl::describe_pending_action("start_process", incident_answer(), "",
                                                 params, json());
  std::vector<std::string> want{
      "about to start_process:",
      "  device      sim-0003",
      "  incident    inc-1  HEUR:Trojan.Win32.Generic",
      "  target      the device",
      "  executable  C:\\Tools\\collect.exe",
      "  directory   C:\\Temp\\\\x1b[8m",
      "  arguments   /out \"C:\\Temp\\x y.zip\"\\n\\x1b[1A\\u2067 /quiet",
  };
  BOOST_TEST(lines_of(out) == want, boost::test_tools::per_element());

  auto bare = parry::ctl::describe_pending_action("start_process", incident_answer(), "",
                                                  json{{"path", "/usr/bin/id"}}, json());
  BOOST_TEST(contains(bare, "  directory   (the agent's default)\n"));
  BOOST_TEST(contains(bare, "  arguments   (none)\n"));

  // After registration the server shows its split argv; `action` lists it in order
  // (arg.2 before arg.10) and escaped.
  json action{
      {"action_id", "act-9"},
      {"type", "start_process"},
      {"state", "completed"},
      {"params", {{"path", "C:\\Tools\\collect.exe"}, {"argc", 11}, {"arg.10", "last"}}},
      {"result",
       {{"ok", true},
        {"error", ""},
        {"effect",
         {{"pid", 77},
          {"exit_code", 0},
          {"stdout", "done\r\n\x1b[31mred"},
          {"stderr", ""}}}}}};
  for (int i = 0; i < 10; ++i)
    action["params"]["arg." + std::to_string(i)] = "a" + std::to_string(i);
  action["params"]["arg.1"] = "\x1b[2J";
  auto fields = parry::ctl::action_fields(action);
  std::vector<std::string> labels;
  for (const auto& f : fields)
    if (f.first.rfind("param ", 0) == 0 || f.first.rfind("effect ", 0) == 0)
      labels.push_back(f.first);
  std::vector<std::string> want_labels{
      "param arg.0",   "param arg.1",  "param arg.2", "param arg.3",      "param arg.4",
      "param arg.5",   "param arg.6",  "param arg.7", "param arg.8",      "param arg.9",
      "param arg.10",  "param argc",   "param path",  "effect exit_code", "effect pid",
      "effect stderr", "effect stdout"};
  BOOST_TEST(labels == want_labels, boost::test_tools::per_element());
  auto text = parry::ctl::format_fields(fields);
  BOOST_TEST(!contains(text, "\x1b"));
  BOOST_TEST(contains(text, "param arg.1         \\x1b[2J\n"));
  BOOST_TEST(contains(text, "effect stdout       done\\r\\n\\x1b[31mred\n"));
  BOOST_TEST(contains(text, "effect stderr       -\n"));
}

BOOST_AUTO_TEST_CASE(action_view_shows_reverse_links_and_effect) {
  json action = json::parse(R"({
    "action_id": "act-1", "type": "quarantine", "device_id": "sim-0003",
    "incident_id": "inc-1", "target": {"kind": "event", "event_id": "e2"},
    "params": {"path": "C:\\x\\payload.exe", "sha256": "ab12"},
    "state": "reverted", "final": true, "requested_by": "alice", "comment": "",
    "password_confirmed": true, "created_at": "t1", "updated_at": "t2",
    "expires_at": "t3", "reverses": "", "reversed_by": "act-2",
    "result": {"ok": true, "error": "", "effect": {"quarantine_id": "q-7"}}})");
  auto text = parry::ctl::format_fields(parry::ctl::action_fields(action));
  std::vector<std::string> want{
      "action                act-1",
      "type                  quarantine",
      "device                sim-0003",
      "incident              inc-1",
      "target                event e2",
      "state                 reverted (final)",
      "requested by          alice",
      "password confirmed    yes",
      "comment               -",
      "created               t1",
      "updated               t2",
      "expires               t3",
      "reverses              -",
      "reversed by           act-2",
      "param path            C:\\x\\payload.exe",
      "param sha256          ab12",
      "result                ok",
      "effect quarantine_id  q-7",
  };
  BOOST_TEST(lines_of(text) == want, boost::test_tools::per_element());

  json failed{{"state", "failed"}, {"result", {{"ok", false}, {"error", "file in use"}}}};
  BOOST_TEST(parry::ctl::result_text(failed) == "failed: file in use");
  BOOST_TEST(parry::ctl::result_text(json{{"state", "sent"}}) == "-");
}

BOOST_AUTO_TEST_CASE(reverse_confirmation) {
  json original{{"action_id", "act-1"},
                {"type", "quarantine"},
                {"state", "completed"},
                {"device_id", "sim-0003"},
                {"incident_id", "inc-1"},
                {"target", {{"kind", "detection"}}},
                {"params", {{"path", "C:\\x\\pay\x1b[0mload.exe"}, {"sha256", "ab12"}}}};
  auto out = parry::ctl::describe_reverse(original, "restore_from_quarantine");
  std::vector<std::string> want{
      "about to reverse act-1 (quarantine, completed) with restore_from_quarantine:",
      "  device    sim-0003",
      "  incident  inc-1",
      "  target    detection",
      "  path      C:\\x\\pay\\x1b[0mload.exe",
      "  sha256    ab12",
  };
  BOOST_TEST(lines_of(out) == want, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(natural_order) {
  using parry::ctl::natural_less;
  BOOST_TEST(natural_less("arg.2", "arg.10"));
  BOOST_TEST(!natural_less("arg.10", "arg.2"));
  BOOST_TEST(natural_less("arg.9", "argc"));
  BOOST_TEST(natural_less("a", "ab"));
  BOOST_TEST(!natural_less("x", "x"));
  BOOST_TEST(natural_less("v01", "v1") != natural_less("v1", "v01")); // strict
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

const std::string zero_hash(64, '0');

// The chain as docs/rest-api.md defines it, written out again here rather than taken
// from the code under test.
void seal(json& r) {
  r["hash"] = parry::sha256_hex(
      std::to_string(r["seq"].get<std::int64_t>()) + "\n" +
      std::to_string(r["time_us"].get<std::int64_t>()) + "\n" +
      r["actor"].get<std::string>() + "\n" + r["kind"].get<std::string>() + "\n" +
      r["target"].get<std::string>() + "\n" + r["detail"].get<std::string>() + "\n" +
      r["prev_hash"].get<std::string>());
}

json make_trail(int n) {
  const char* kinds[] = {"login", "trigger", "transition", "transition", "reverse"};
  json trail = json::array();
  std::string prev = zero_hash;
  for (int seq = 1; seq <= n; ++seq) {
    json r{{"seq", seq},
           {"time", "2026-11-27T21:15:00.000000Z"},
           {"time_us", 1795900000000000LL + seq * 1000},
           {"actor", seq == 1 ? "admin" : "alice"},
           {"kind", kinds[seq % 5]},
           {"target", "act-" + std::to_string(seq)},
           // Newlines and non-ASCII inside a field are hashed as they are.
           {"detail", seq == 2 ? "queued: device\noffline, Grüße" : "ok"},
           {"prev_hash", prev}};
    seal(r);
    prev = r["hash"].get<std::string>();
    trail.push_back(r);
  }
  return trail;
}

json head_of(const json& trail) {
  if (trail.empty()) return json{{"seq", 0}, {"hash", zero_hash}};
  return json{{"seq", trail.back()["seq"]}, {"hash", trail.back()["hash"]}};
}

std::string verdict_of(const json& trail, const json& head) {
  auto v = parry::ctl::verify_audit_trail(trail, head);
  BOOST_TEST(v.intact == v.problem.empty());
  return v.intact ? "intact" : v.problem;
}

} // namespace

BOOST_AUTO_TEST_SUITE(audit)

BOOST_AUTO_TEST_CASE(intact_chain) {
  json trail = make_trail(6);
  auto v = parry::ctl::verify_audit_trail(trail, head_of(trail));
  BOOST_TEST(v.intact);
  BOOST_TEST(v.records == 6u);
  BOOST_TEST(v.head_seq == 6);
  BOOST_TEST(v.head_hash == trail[5]["hash"].get<std::string>());
  BOOST_TEST(parry::ctl::audit_summary(v) ==
             "audit trail intact: 6 records, head " +
                 trail[5]["hash"].get<std::string>().substr(0, 16));

  auto empty = parry::ctl::verify_audit_trail(json::array(), head_of(json::array()));
  BOOST_TEST(empty.intact);
  BOOST_TEST(parry::ctl::audit_summary(empty) == "audit trail intact: 0 records");
}

BOOST_AUTO_TEST_CASE(changed_detail) {
  json trail = make_trail(6);
  trail[2]["detail"] = "nothing to see";
  BOOST_TEST(verdict_of(trail, head_of(trail)) == "record 3 was changed (hash mismatch)");
  auto v = parry::ctl::verify_audit_trail(trail, head_of(trail));
  BOOST_TEST(parry::ctl::audit_summary(v) ==
             "audit trail broken: record 3 was changed (hash mismatch)");

  // Rewritten with its hash recomputed: the next record's link gives it away.
  seal(trail[2]);
  BOOST_TEST(verdict_of(trail, head_of(make_trail(6))) ==
             "record 4 does not follow record 3 (prev_hash mismatch: one of them was "
             "rewritten)");

  // The time is hashed as the decimal time_us.
  json later = make_trail(3);
  later[1]["time_us"] = later[1]["time_us"].get<std::int64_t>() + 1;
  BOOST_TEST(verdict_of(later, head_of(later)) == "record 2 was changed (hash mismatch)");
}

BOOST_AUTO_TEST_CASE(removed_middle_records) {
  json trail = make_trail(6);
  json head = head_of(trail);
  trail.erase(2);
  BOOST_TEST(verdict_of(trail, head) == "record 3 is missing (seq jumps from 2 to 4)");
  trail.erase(2);
  BOOST_TEST(verdict_of(trail, head) ==
             "records 3 to 4 are missing (seq jumps from 2 to 5)");

  json start = make_trail(6);
  start.erase(0);
  start.erase(0);
  BOOST_TEST(verdict_of(start, head) ==
             "records 1 to 2 are missing (the trail starts at 3)");
}

BOOST_AUTO_TEST_CASE(removed_tail) {
  json trail = make_trail(6);
  json head = head_of(trail);
  trail.erase(5);
  trail.erase(4);
  BOOST_TEST(verdict_of(trail, head) ==
             "the trail ends at 4 but the server's head is 6 (records removed from the "
             "end)");
  BOOST_TEST(verdict_of(json::array(), head) ==
             "the trail is empty but the server's head is 6 (records removed)");
  // The last record replaced by a self-consistent one: only the head knows.
  json swapped = make_trail(6);
  swapped[5]["detail"] = "harmless";
  seal(swapped[5]);
  BOOST_TEST(verdict_of(swapped, head) ==
             "record 6 does not match the server's head (hash mismatch)");
  BOOST_TEST(verdict_of(make_trail(6), json{{"seq", 5}, {"hash", zero_hash}}) ==
             "the trail ends at 6 but the server's head is 5 (the head is behind)");
  BOOST_TEST(verdict_of(make_trail(6), json()) ==
             "the server's head is missing or malformed");
}

BOOST_AUTO_TEST_CASE(reordered_pair) {
  json trail = make_trail(6);
  json head = head_of(trail);
  // Listed out of order, each record untouched.
  std::swap(trail[2], trail[3]);
  BOOST_TEST(verdict_of(trail, head) == "records out of order: 4 comes before 3");

  // Contents swapped, seq numbers kept in place: the seq is part of the hash.
  json renumbered = make_trail(6);
  std::swap(renumbered[2], renumbered[3]);
  renumbered[2]["seq"] = 3;
  renumbered[3]["seq"] = 4;
  BOOST_TEST(verdict_of(renumbered, head) == "record 3 was changed (hash mismatch)");

  // A record given twice.
  json twice = make_trail(4);
  twice.insert(twice.begin() + 3, twice[2]);
  BOOST_TEST(verdict_of(twice, head_of(make_trail(4))) == "record 3 appears twice");
}

BOOST_AUTO_TEST_CASE(first_record_must_start_the_chain) {
  json trail = make_trail(3);
  trail[0]["prev_hash"] = std::string(63, '0') + "1";
  BOOST_TEST(verdict_of(trail, head_of(trail)) == "record 1 was changed (hash mismatch)");
  seal(trail[0]); // and consistent in itself
  BOOST_TEST(verdict_of(trail, head_of(trail)) ==
             "record 1 does not start the chain (prev_hash is not 64 zeros)");
}

BOOST_AUTO_TEST_CASE(malformed_records) {
  json trail = make_trail(3);
  trail[1]["time_us"] = "1795900000002000";
  BOOST_TEST(verdict_of(trail, head_of(trail)) ==
             "record 2 is malformed (time_us is not an integer)");
  json no_seq = make_trail(3);
  no_seq[1].erase("seq");
  BOOST_TEST(verdict_of(no_seq, head_of(no_seq)) ==
             "record at position 2 is malformed (seq is not a positive integer)");
  json no_actor = make_trail(3);
  no_actor[2]["actor"] = nullptr;
  BOOST_TEST(verdict_of(no_actor, head_of(no_actor)) ==
             "record 3 is malformed (actor is not a string)");
}

BOOST_AUTO_TEST_CASE(pages_are_fetched_until_empty) {
  json trail = make_trail(5);
  std::vector<std::int64_t> asked;
  auto fetch = [&](std::int64_t after) {
    asked.push_back(after);
    json page = json::array();
    for (const auto& r : trail)
      if (r["seq"].get<std::int64_t>() > after && page.size() < 2) page.push_back(r);
    return json{{"records", page}, {"head", head_of(trail)}};
  };
  auto v = parry::ctl::verify_audit_pages(fetch);
  BOOST_TEST(v.intact);
  BOOST_TEST(v.records == 5u);
  BOOST_TEST(asked == (std::vector<std::int64_t>{0, 2, 4, 5}),
             boost::test_tools::per_element());

  // A broken record ends the fetching: the verdict cannot change any more.
  trail[1]["detail"] = "edited";
  asked.clear();
  auto broken = parry::ctl::verify_audit_pages(fetch);
  BOOST_TEST(broken.problem == "record 2 was changed (hash mismatch)");
  BOOST_TEST(asked == (std::vector<std::int64_t>{0}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_server_that_does_not_advance_cannot_loop) {
  // Always the same page, whatever "after" says. With a gap pending every record of
  // the repeated page is accepted, so only the paging guard stops the loop.
  json trail = make_trail(3);
  trail.erase(1);
  int calls = 0;
  auto v = parry::ctl::verify_audit_pages([&](std::int64_t) {
    ++calls;
    return json{{"records", trail}, {"head", head_of(make_trail(3))}};
  });
  BOOST_TEST(calls == 2);
  BOOST_TEST(v.problem == "record 2 is missing (seq jumps from 1 to 3)");

  calls = 0;
  json whole = make_trail(2);
  auto again = parry::ctl::verify_audit_pages([&](std::int64_t) {
    ++calls;
    return json{{"records", whole}, {"head", head_of(whole)}};
  });
  BOOST_TEST(calls == 2);
  BOOST_TEST(again.problem == "records out of order: 2 comes before 1");

  auto no_list = parry::ctl::verify_audit_pages([](std::int64_t) {
    return json{{"error", {{"code", "x"}}}};
  });
  BOOST_TEST(!no_list.intact);
  BOOST_TEST(no_list.problem ==
             "the server's answer after record 0 has no list of records");
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

/// A self-signed certificate for 127.0.0.1 in a temporary directory.
struct test_pki {
  std::filesystem::path dir;
  std::string cert_file;
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;

  test_pki() {
    char tmpl[] = "/tmp/parry-client-test-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    cert_file = (dir / "cert.pem").string();

    key = EVP_EC_gen("P-256");
    BOOST_REQUIRE(key != nullptr);
    cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 4242);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("parry-test"), -1,
                               -1, 0);
    X509_set_issuer_name(cert, name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"},
                              std::pair{NID_basic_constraints, "critical,CA:FALSE"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
      BOOST_REQUIRE(ext != nullptr);
      X509_add_ext(cert, ext, -1);
      X509_EXTENSION_free(ext);
    }
    BOOST_REQUIRE(X509_sign(cert, key, EVP_sha256()) > 0);
    FILE* f = std::fopen(cert_file.c_str(), "w");
    BOOST_REQUIRE(f != nullptr);
    PEM_write_X509(f, cert);
    std::fclose(f);
  }

  ~test_pki() {
    X509_free(cert);
    EVP_PKEY_free(key);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

/// One request as the test server saw it.
struct seen_request {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers; // lower-case names
  std::string body;
};

/// What the test server does with one request.
struct reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body = R"({"ok":true})";
  std::vector<std::pair<std::string, std::string>> headers;
  bool close_after = false; // close the connection without saying so first
  bool silent = false;      // never answer
};

/// A tiny HTTPS/1.1 server on 127.0.0.1, one connection at a time, in its own thread.
class tls_server {
public:
  using handler = std::function<reply(const seen_request&)>;

  tls_server(const test_pki& pki, handler h) : handler_(std::move(h)) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    BOOST_REQUIRE(SSL_CTX_use_certificate(ctx_, pki.cert) == 1);
    BOOST_REQUIRE(SSL_CTX_use_PrivateKey(ctx_, pki.key) == 1);
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    BOOST_REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) ==
                  0);
    BOOST_REQUIRE(::listen(listen_fd_, 8) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    BOOST_REQUIRE(::pipe(wake_) == 0);
    thread_ = std::thread([this] { serve(); });
  }

  ~tls_server() {
    (void)!::write(wake_[1], "x", 1);
    thread_.join();
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
    SSL_CTX_free(ctx_);
  }

  std::string url(const std::string& host = "127.0.0.1") const {
    return "https://" + host + ":" + std::to_string(port_);
  }

  std::vector<seen_request> requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

  int connections() const { return connections_; }

private:
  void serve() {
    while (true) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      // Bounded: a test that forgets to stop the server still ends.
      if (::poll(fds, 2, 20000) <= 0 || fds[1].revents) return;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      timeval tv{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) == 1) {
        ++connections_;
        serve_connection(ssl);
      }
      SSL_free(ssl);
      ::close(fd);
    }
  }

  void serve_connection(SSL* ssl) {
    std::string in;
    char buf[4096];
    while (true) {
      std::size_t end;
      while ((end = in.find("\r\n\r\n")) == std::string::npos) {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) return SSL_shutdown(ssl), void();
        in.append(buf, static_cast<std::size_t>(n));
      }
      seen_request req;
      std::istringstream head(in.substr(0, end));
      std::string line;
      std::getline(head, line);
      std::istringstream first(line);
      first >> req.method >> req.target;
      while (std::getline(head, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string name = line.substr(0, colon);
        for (auto& c : name)
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        req.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
      }
      in.erase(0, end + 4);
      std::size_t length = 0;
      if (auto it = req.headers.find("content-length"); it != req.headers.end())
        length = std::stoul(it->second);
      while (in.size() < length) {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) return;
        in.append(buf, static_cast<std::size_t>(n));
      }
      req.body = in.substr(0, length);
      in.erase(0, length);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        requests_.push_back(req);
      }
      reply r = handler_(req);
      if (r.silent) continue; // the next read returns when the client gives up and closes
      std::string out = "HTTP/1.1 " + std::to_string(r.status) +
                        " X\r\nContent-Type: " + r.content_type +
                        "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n";
      for (const auto& [name, value] : r.headers)
        out += name + ": " + value + "\r\n";
      out += "\r\n" + r.body;
      if (SSL_write(ssl, out.data(), static_cast<int>(out.size())) <= 0 || r.close_after)
        return;
    }
  }

  handler handler_;
  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<seen_request> requests_;
  std::atomic<int> connections_{0};
};

reply route(const seen_request& req) {
  reply r;
  if (req.target == "/api/v1/login") {
    r.body =
        R"({"csrf_token":"csrf-1","user":{"username":"admin","role":"administrator"}})";
    r.headers.emplace_back(
        "Set-Cookie", "parry_session=s-123; Path=/; HttpOnly; Secure; SameSite=Strict");
  } else if (req.target == "/api/v1/logout") {
    r.body = "{}";
    r.headers.emplace_back("Set-Cookie", "parry_session=; Max-Age=0");
  } else if (req.target == "/text") {
    r.content_type = "text/plain";
    r.body = "hello";
  } else if (req.target == "/missing") {
    r.status = 404;
    r.body = R"({"error":{"code":"not_found","message":"no such thing"}})";
  } else if (req.target == "/close-me") {
    r.close_after = true;
  } else if (req.target == "/hang") {
    r.silent = true;
  } else {
    r.body = json{{"ok", true}, {"target", req.target}, {"echo", req.body}}.dump();
  }
  return r;
}

struct tls_fixture {
  tls_fixture() { std::signal(SIGPIPE, SIG_IGN); }
  test_pki pki;
  tls_server server{pki, route};

  parry::tls_options trusted() const { return {pki.cert_file, false}; }
};

std::string header(const seen_request& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? "<none>" : it->second;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(tls, tls_fixture)

BOOST_AUTO_TEST_CASE(verifies_with_ca_and_sends_bearer) {
  parry::client c(server.url(), trusted());
  c.set_bearer("tok-abc");
  auto r = c.get("/api/v1/devices");
  BOOST_TEST(r.status == 200);
  BOOST_TEST(r.ok());
  BOOST_TEST(r.body.value("ok", false));
  BOOST_TEST(r.body.value("target", "") == "/api/v1/devices");
  BOOST_TEST(r.headers["content-type"] == "application/json");
  auto seen = server.requests();
  BOOST_REQUIRE_EQUAL(seen.size(), 1u);
  BOOST_TEST(seen[0].method == "GET");
  BOOST_TEST(header(seen[0], "authorization") == "Bearer tok-abc");
  BOOST_TEST(header(seen[0], "host") == "127.0.0.1:" + server.url().substr(18));
  BOOST_TEST(header(seen[0], "x-csrf-token") == "<none>");
}

BOOST_AUTO_TEST_CASE(keeps_alive_and_handles_session_cookie_and_csrf) {
  parry::client c(server.url(), trusted());
  json creds{{"username", "admin"}, {"password", "pw"}};
  auto login = c.post("/api/v1/login", creds);
  BOOST_TEST(login.status == 200);
  BOOST_TEST(c.cookie("parry_session") == "s-123");
  c.set_csrf(login.body.value("csrf_token", ""));

  json name{{"name", "ci"}};
  auto tok = c.post("/api/v1/tokens", name);
  BOOST_TEST(tok.status == 200);
  c.get("/api/v1/devices");
  c.post("/api/v1/logout", json::object());
  BOOST_TEST(c.cookie("parry_session") == "");

  auto seen = server.requests();
  BOOST_REQUIRE_EQUAL(seen.size(), 4u);
  BOOST_TEST(json::parse(seen[0].body) == creds);
  BOOST_TEST(header(seen[0], "content-type") == "application/json");
  BOOST_TEST(header(seen[0], "cookie") == "<none>");
  BOOST_TEST(header(seen[1], "cookie") == "parry_session=s-123");
  BOOST_TEST(header(seen[1], "x-csrf-token") == "csrf-1");
  BOOST_TEST(json::parse(seen[1].body) == name);
  BOOST_TEST(header(seen[2], "x-csrf-token") == "<none>"); // not on GET
  BOOST_TEST(header(seen[2], "cookie") == "parry_session=s-123");
  // Four requests, one TLS handshake.
  BOOST_TEST(c.connections() == 1u);
  BOOST_TEST(server.connections() == 1);
}

BOOST_AUTO_TEST_CASE(extra_headers_and_non_json_bodies) {
  parry::client c(server.url(), trusted());
  json body{{"type", "isolate"}};
  auto r = c.request("POST", "/api/v1/actions", &body, {{"Idempotency-Key", "k-1"}});
  BOOST_TEST(json::parse(r.body.value("echo", "")) == body);
  BOOST_TEST(header(server.requests().at(0), "idempotency-key") == "k-1");

  auto text = c.get("/text");
  BOOST_TEST(text.status == 200);
  BOOST_TEST(text.body.is_null());
  BOOST_TEST(text.raw == "hello");

  auto missing = c.get("/missing");
  BOOST_TEST(missing.status == 404);
  BOOST_TEST(!missing.ok());
  BOOST_TEST(missing.error_code() == "not_found");
  BOOST_TEST(missing.error_message() == "no such thing");

  BOOST_CHECK_THROW(c.request("GET", "/x", nullptr, {{"X-Evil", "a\r\nInjected: 1"}}),
                    std::invalid_argument);
  BOOST_CHECK_THROW(c.get("no-slash"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(fails_verification_without_the_ca) {
  parry::client c(server.url()); // system trust store does not know our cert
  try {
    c.get("/api/v1/devices");
    BOOST_ERROR("connected to an untrusted server");
  } catch (const parry::client_error& e) {
    BOOST_TEST_INFO(e.what());
    BOOST_TEST(contains(e.what(), "certificate verify failed"));
  }
  BOOST_TEST(!c.connected());
  BOOST_TEST(server.requests().empty());
}

BOOST_AUTO_TEST_CASE(checks_the_host_name) {
  // Same certificate, but "localhost" is not in its SAN (only IP:127.0.0.1).
  parry::client c(server.url("localhost"), trusted());
  try {
    c.get("/api/v1/devices");
    BOOST_ERROR("accepted a certificate for another name");
  } catch (const parry::client_error& e) {
    BOOST_TEST_INFO(e.what());
    BOOST_TEST(contains(e.what(), "mismatch"));
  }
  BOOST_TEST(server.requests().empty());
}

BOOST_AUTO_TEST_CASE(insecure_skips_verification) {
  parry::client c(server.url(), parry::tls_options{"", true});
  BOOST_TEST(c.get("/api/v1/devices").status == 200);
}

BOOST_AUTO_TEST_CASE(missing_ca_file_is_reported) {
  BOOST_CHECK_EXCEPTION(
      parry::client(server.url(), parry::tls_options{(pki.dir / "nope.pem").string()}),
      parry::client_error,
      [](const parry::client_error& e) { return contains(e.what(), "nope.pem"); });
}

BOOST_AUTO_TEST_CASE(reconnects_when_the_server_closed_the_connection) {
  parry::client c(server.url(), trusted());
  BOOST_TEST(c.get("/close-me").status == 200);
  // The server dropped the connection silently; the next request must still work.
  auto r = c.get("/api/v1/devices");
  BOOST_TEST(r.status == 200);
  BOOST_TEST(c.connections() == 2u);
  BOOST_TEST(server.requests().size() == 2u);
}

BOOST_AUTO_TEST_CASE(times_out_and_recovers) {
  parry::client c(server.url(), trusted());
  try {
    c.request("GET", "/hang", nullptr, {}, 300ms);
    BOOST_ERROR("no timeout");
  } catch (const parry::client_error& e) {
    BOOST_TEST_INFO(e.what());
    BOOST_TEST(contains(e.what(), "timed out after 300 ms"));
  }
  BOOST_TEST(!c.connected());
  BOOST_TEST(c.get("/api/v1/devices").status == 200);
}

BOOST_AUTO_TEST_CASE(connection_refused_is_a_client_error) {
  // A port that was just free: bind, read the port, close.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  parry::client c("https://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), trusted());
  BOOST_CHECK_EXCEPTION(
      c.get("/"), parry::client_error,
      [](const parry::client_error& e) { return contains(e.what(), "cannot connect"); });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(audit_verify_over_https) {
  std::signal(SIGPIPE, SIG_IGN);
  test_pki pki;
  json trail = make_trail(5);
  json head = head_of(trail);
  // The records as the server writes them, paged by "after" and "limit".
  tls_server server(pki, [&](const seen_request& req) {
    reply r;
    auto query = req.target.substr(req.target.find('?') + 1);
    std::int64_t after = 0;
    std::size_t limit = 1000;
    std::istringstream in(query);
    for (std::string kv; std::getline(in, kv, '&');) {
      auto eq = kv.find('=');
      if (kv.substr(0, eq) == "after") after = std::stoll(kv.substr(eq + 1));
      if (kv.substr(0, eq) == "limit") limit = std::stoul(kv.substr(eq + 1));
    }
    json page = json::array();
    for (const auto& rec : trail)
      if (rec["seq"].get<std::int64_t>() > after && page.size() < limit)
        page.push_back(rec);
    r.body = json{{"records", page}, {"head", head}}.dump();
    return r;
  });
  parry::client c(server.url(), parry::tls_options{pki.cert_file, false});
  auto fetch = [&](std::int64_t after) {
    auto r =
        c.get("/api/v1/audit" + parry::ctl::query_string(
                                    {{"after", std::to_string(after)}, {"limit", "2"}}));
    BOOST_REQUIRE(r.ok());
    return r.body;
  };
  auto v = parry::ctl::verify_audit_pages(fetch);
  BOOST_TEST(v.intact);
  BOOST_TEST(v.records == 5u);
  std::vector<std::string> targets;
  for (const auto& r : server.requests())
    targets.push_back(r.target);
  std::vector<std::string> want{
      "/api/v1/audit?after=0&limit=2", "/api/v1/audit?after=2&limit=2",
      "/api/v1/audit?after=4&limit=2", "/api/v1/audit?after=5&limit=2"};
  BOOST_TEST(targets == want, boost::test_tools::per_element());

  // The same trail with record 4 gone on the server.
  trail.erase(3);
  auto gone = parry::ctl::verify_audit_pages(fetch);
  BOOST_TEST(gone.problem == "record 4 is missing (seq jumps from 3 to 5)");
}
