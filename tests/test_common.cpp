#define BOOST_TEST_MODULE common
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "common/domain.hpp"
#include "common/service_notify.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"

using namespace parry;

BOOST_AUTO_TEST_SUITE(utf8)

BOOST_AUTO_TEST_CASE(accepts_well_formed_text) {
  BOOST_TEST(valid_utf8(""));
  BOOST_TEST(valid_utf8("plain ascii"));
  BOOST_TEST(valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x94\x92")); // é € 🔒
  BOOST_TEST(valid_utf8("\xF4\x8F\xBF\xBF"));                          // U+10FFFF
}

BOOST_AUTO_TEST_CASE(refuses_ill_formed_text) {
  BOOST_TEST(!valid_utf8("bad\xFFhost"));
  BOOST_TEST(!valid_utf8("\xC0\xAF"));         // overlong '/'
  BOOST_TEST(!valid_utf8("\xE0\x80\xAF"));     // overlong, three bytes
  BOOST_TEST(!valid_utf8("\xED\xA0\x80"));     // surrogate
  BOOST_TEST(!valid_utf8("\xF4\x90\x80\x80")); // above U+10FFFF
  BOOST_TEST(!valid_utf8("\xC3"));             // cut short
  BOOST_TEST(!valid_utf8("\x80"));             // lone continuation byte
}

BOOST_AUTO_TEST_CASE(prefix_never_splits_a_character) {
  std::string s(4095, 'a');
  s += "\xC3\xA9"; // 4097 bytes, the last character straddles 4096
  auto p = utf8_prefix(s, 4096);
  BOOST_TEST(p.size() == 4095u);
  BOOST_TEST(valid_utf8(p));
  BOOST_TEST(utf8_prefix(s, 5000).size() == s.size());
  BOOST_TEST(utf8_prefix("\xE2\x82\xAC", 2).empty());
}

BOOST_AUTO_TEST_CASE(sanitized_replaces_each_bad_byte) {
  BOOST_TEST(utf8_sanitized("bad\xFFhost") == "bad\xEF\xBF\xBDhost");
  BOOST_TEST(utf8_sanitized("ok \xC3\xA9") == "ok \xC3\xA9");
  BOOST_TEST(valid_utf8(utf8_sanitized("\xC3\x28\xA0\xA1")));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(domain)

BOOST_AUTO_TEST_CASE(every_word_round_trips) {
  for (auto x : all_action_types)
    BOOST_TEST((action_type_from_string(to_string(x)) == x));
  for (auto x : all_action_states)
    BOOST_TEST((action_state_from_string(to_string(x)) == x));
  for (auto x : all_user_roles)
    BOOST_TEST((user_role_from_string(to_string(x)) == x));
  for (auto x : all_target_kinds)
    BOOST_TEST((target_kind_from_string(to_string(x)) == x));
  for (auto x : all_event_types)
    BOOST_TEST((event_type_from_string(to_string(x)) == x));
  BOOST_TEST(std::string(to_string(user_role::operator_)) == "operator");
  BOOST_TEST(!action_type_from_string("Isolate"));
  BOOST_TEST(!action_type_from_string(""));
  BOOST_TEST(!action_state_from_string("done"));
  BOOST_TEST(!user_role_from_string("root"));
  BOOST_TEST(!target_kind_from_string("process"));
  // An event type this build does not know stays an event, never an actionable one.
  BOOST_TEST((event_type_from_string("registry_changed") == event_type::other));
  BOOST_TEST((event_type_from_string("\xff") == event_type::other));
  BOOST_TEST(legal_target_kinds() == "detection, event");
  BOOST_TEST(legal_user_roles() == "administrator, security_officer, operator");
}

BOOST_AUTO_TEST_CASE(applicability_matrix_is_design_section_2) {
  using A = action_type;
  using E = event_type;
  // Rows: action types in declaration order; columns: file_created, process_started,
  // file_modified, network_connection, module_loaded, other.
  const bool expected[9][6] = {
      {1, 1, 1, 1, 1, 1}, // isolate: any incident
      {1, 1, 1, 1, 1, 1}, // release_isolation
      {1, 1, 1, 1, 1, 1}, // start_process
      {1, 1, 0, 0, 0, 0}, // prevent_run
      {1, 1, 0, 0, 0, 0}, // allow_run
      {1, 1, 0, 0, 0, 0}, // quarantine
      {1, 1, 0, 0, 0, 0}, // restore_from_quarantine
      {1, 1, 0, 0, 0, 0}, // delete_file
      {0, 1, 0, 0, 0, 0}, // terminate_process
  };
  for (int a = 0; a < 9; ++a)
    for (int e = 0; e < 6; ++e)
      BOOST_TEST(applies_to(all_action_types[a], all_event_types[e]) == expected[a][e],
                 to_string(all_action_types[a])
                     << " on " << to_string(all_event_types[e]));
  BOOST_TEST(acts_on_device(A::isolate));
  BOOST_TEST(acts_on_device(A::start_process));
  BOOST_TEST(!acts_on_device(A::quarantine));
  BOOST_TEST((object_of(A::terminate_process) == action_object::process));
  BOOST_TEST((object_of(A::allow_run) == action_object::file));
  (void)E::other;
}

BOOST_AUTO_TEST_CASE(reverses_finals_passwords_roles) {
  using A = action_type;
  BOOST_TEST((reverse_of(A::isolate) == A::release_isolation));
  BOOST_TEST((reverse_of(A::prevent_run) == A::allow_run));
  BOOST_TEST((reverse_of(A::quarantine) == A::restore_from_quarantine));
  for (auto t : {A::release_isolation, A::start_process, A::allow_run,
                 A::restore_from_quarantine, A::delete_file, A::terminate_process})
    BOOST_TEST(!reverse_of(t));
  BOOST_TEST((undoes(A::allow_run) == A::prevent_run));
  BOOST_TEST(is_reverse(A::release_isolation));
  BOOST_TEST(!is_reverse(A::isolate));
  BOOST_TEST(is_requestable(A::release_isolation));
  BOOST_TEST(!is_requestable(A::allow_run));
  BOOST_TEST(!is_requestable(A::restore_from_quarantine));

  std::vector<std::string> finals, open;
  for (auto s : all_action_states)
    (is_final(s) ? finals : open).push_back(to_string(s));
  BOOST_TEST((open == std::vector<std::string>{"registered", "queued", "sent",
                                               "acknowledged", "cancelling"}));
  BOOST_TEST((finals == std::vector<std::string>{"completed", "failed", "expired",
                                                 "cancelled", "reverted"}));

  std::vector<std::string> pw;
  for (auto t : default_password_required())
    pw.push_back(to_string(t));
  BOOST_TEST((pw == std::vector<std::string>{"start_process", "prevent_run", "quarantine",
                                             "delete_file", "terminate_process"}));
  BOOST_TEST(password_always(A::start_process));
  BOOST_TEST(!password_always(A::quarantine));

  BOOST_TEST(may_trigger(user_role::administrator));
  BOOST_TEST(may_trigger(user_role::security_officer));
  BOOST_TEST(!may_trigger(user_role::operator_));
  BOOST_TEST(may_administer(user_role::administrator));
  BOOST_TEST(!may_administer(user_role::security_officer));
}

BOOST_AUTO_TEST_CASE(paths_accepted) {
  BOOST_TEST(path_problem("/usr/bin/id").empty());
  BOOST_TEST(path_problem("C:\\Temp\\plain.txt").empty());
  BOOST_TEST(path_problem("c:/temp/x").empty());
  BOOST_TEST(path_problem("\\\\fileserver\\share\\x").empty());
  BOOST_TEST(path_problem("/srv/caf\xC3\xA9/..x/x..").empty()); // `..x` is a name
  BOOST_TEST(path_problem(std::string(1, '/') + std::string(4095, 'a')).empty());
  BOOST_TEST(path_problem("/tmp/a b\tc").size() > 0u); // tab is a control character
  BOOST_TEST(path_problem("C:\\x", os_family::windows).empty());
  BOOST_TEST(!path_problem("C:\\x", os_family::posix).empty());
  BOOST_TEST(!path_problem("/x", os_family::windows).empty());
}

BOOST_AUTO_TEST_CASE(hostile_paths_refused) {
  BOOST_TEST(path_problem("") == "the path is empty");
  BOOST_TEST(path_problem("System") ==
             "the path is not absolute"); // Sysmon's pseudo-process
  BOOST_TEST(path_problem("../../etc/passwd") == "the path is not absolute");
  BOOST_TEST(path_problem("/var/www/../../etc/shadow") ==
             "the path has a '..' component");
  BOOST_TEST(path_problem("C:\\a\\..\\b") == "the path has a '..' component");
  BOOST_TEST(path_problem("/a/..") == "the path has a '..' component");
  BOOST_TEST(path_problem(std::string(1, '/') + std::string(4096, 'a')) ==
             "the path is longer than 4096 bytes");
  BOOST_TEST(path_problem(std::string("/a\0b", 4)) == "the path contains a NUL byte");
  BOOST_TEST(path_problem("/a\nb") == "the path contains control characters");
  BOOST_TEST(path_problem("/bad\xFFpath") == "the path is not valid UTF-8");
  BOOST_TEST(path_problem("/a\xC0\xAF..") ==
             "the path is not valid UTF-8"); // overlong '/'
  BOOST_TEST(path_problem("C:relative") == "the path is not absolute");
  BOOST_TEST(path_problem("\\\\\\x") == "the path is not absolute");
  BOOST_TEST(path_problem("1:\\x") == "the path is not absolute");
}

BOOST_AUTO_TEST_CASE(sha256_normalised) {
  std::string up(64, 'A');
  BOOST_TEST(is_sha256(up));
  BOOST_TEST(normalized_sha256(up) == std::string(64, 'a'));
  BOOST_TEST(!is_sha256(std::string(63, 'a')));
  BOOST_TEST(!is_sha256(std::string(64, 'g')));
  BOOST_TEST(normalized_sha256("XYZ") == "XYZ"); // not a hash: kept as sent
}

std::vector<std::string> split(const std::string& s, os_family os) {
  std::string why;
  auto v = split_arguments(s, os, why);
  BOOST_REQUIRE_MESSAGE(v, why);
  return *v;
}

using words = std::vector<std::string>;

BOOST_AUTO_TEST_CASE(posix_split_is_shell_words) {
  auto p = os_family::posix;
  BOOST_TEST((split("a\tb  c", p) == words{"a", "b", "c"})); // a tab splits
  BOOST_TEST((split("'a b' \"c\\\"d\" e\\ f", p) == words{"a b", "c\"d", "e f"}));
  BOOST_TEST((split("'' x", p) == words{"", "x"}));
  BOOST_TEST((split("C:\\Temp\\plain.txt", p) == words{"C:Tempplain.txt"}));
  BOOST_TEST(split("", p).empty());
  std::string why;
  BOOST_TEST(!split_arguments("'open", p, why));
  BOOST_TEST(why == "unbalanced quote in 'arguments'");
}

BOOST_AUTO_TEST_CASE(windows_split_is_command_line_to_argv) {
  auto w = os_family::windows;
  BOOST_TEST((split("\\\\fileserver\\share\\x C:\\Temp\\plain.txt", w) ==
              words{"\\\\fileserver\\share\\x", "C:\\Temp\\plain.txt"}));
  BOOST_TEST((split("a\tb", w) == words{"a", "b"}));
  BOOST_TEST((split("\"C:\\Program Files\\x.exe\" /q", w) ==
              words{"C:\\Program Files\\x.exe", "/q"}));
  // The examples of Microsoft's "Parsing C++ command-line arguments".
  BOOST_TEST((split("\"abc\" d e", w) == words{"abc", "d", "e"}));
  BOOST_TEST((split("a\\\\b d\"e f\"g h", w) == words{"a\\\\b", "de fg", "h"}));
  BOOST_TEST((split("a\\\\\\\"b c d", w) == words{"a\\\"b", "c", "d"}));
  BOOST_TEST((split("a\\\\\\\\\"b c\" d e", w) == words{"a\\\\b c", "d", "e"}));
  BOOST_TEST((split("a\"b\"\" c d", w) == words{"ab\"", "c", "d"}));
  BOOST_TEST((split("\"\" x", w) == words{"", "x"}));
  BOOST_TEST((split("\"unterminated arg", w) == words{"unterminated arg"}));
  BOOST_TEST((split("trailing\\", w) == words{"trailing\\"}));
}

BOOST_AUTO_TEST_CASE(argument_limits) {
  BOOST_TEST(arguments_problem({"a\tb", "caf\xC3\xA9"}).empty());
  BOOST_TEST(arguments_problem(words(65, "x")) == "more than 64 arguments");
  BOOST_TEST(arguments_problem({"a\nb"}) == "argument 0 contains control characters");
  BOOST_TEST(arguments_problem({"ok", "\xFF"}) == "argument 1 is not valid UTF-8");
  BOOST_TEST(arguments_problem({std::string(33 * 1024, 'a')}) ==
             "the arguments are longer than 32 KiB");
  BOOST_TEST(
      (os_family_of("Windows Server 2022 Standard (build 20348)") == os_family::windows));
  BOOST_TEST((os_family_of("Debian GNU/Linux 12 (bookworm)") == os_family::posix));
  BOOST_TEST((os_family_of("") == os_family::posix));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(times)

BOOST_AUTO_TEST_CASE(rfc3339_times_parse_and_round_trip) {
  BOOST_TEST(parse_time("1970-01-01T00:00:00Z").value() == 0);
  BOOST_TEST(parse_time("2026-11-27T21:15:00.123456Z").value() == 1795814100123456);
  BOOST_TEST(format_time(*parse_time("2026-11-27T21:15:00.123456Z")) ==
             "2026-11-27T21:15:00.123456Z");
  // Offsets, lower case, fractions shorter and longer than microseconds.
  BOOST_TEST(parse_time("2026-11-27T22:15:00+01:00").value() ==
             parse_time("2026-11-27T21:15:00Z").value());
  BOOST_TEST(parse_time("2026-11-27t21:15:00.5z").value() == 1795814100500000);
  BOOST_TEST(parse_time("2026-11-27T21:15:00.123456789Z").value() == 1795814100123456);
  BOOST_TEST(parse_time("2024-02-29T00:00:00Z").has_value()); // leap year
  BOOST_TEST(parse_time("9999-12-31T23:59:59Z").has_value());
  BOOST_TEST(parse_time("2016-12-31T23:59:60Z").value() ==
             parse_time("2016-12-31T23:59:59Z").value());
  BOOST_TEST(parse_time("2017-01-01T00:59:60+01:00").has_value());
}

BOOST_AUTO_TEST_CASE(anything_else_is_refused) {
  for (const char* bad :
       {"", "yesterday", "2026-11-27", "2026-11-27 21:15:00Z", "2026-11-27T21:15:00",
        "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
        "2026-11-27T24:00:00Z", "2026-11-27T21:60:00Z", "2026-11-27T21:15:00.Z",
        "2026-11-27T21:15:00+1:00", "2026-11-27T21:15:00Z ", "1969-12-31T23:59:59Z",
        "1970-01-01T00:30:00+01:00", "2026-11-27T10:17:60Z", "+2026-11-27T21:15:00Z",
        "2026-11-27T21:15:00.1234567890Z"})
    BOOST_TEST(!parse_time(bad).has_value(), bad);
}

BOOST_AUTO_TEST_SUITE_END()

// A service manager that does not read its socket must never stop the server: the
// datagrams that do not fit are dropped, and the call returns at once. (sd_notify
// blocked here: parryd's shutdown hung on STOPPING=1 behind an unread socket.)
BOOST_AUTO_TEST_CASE(service_notifications_never_wait_for_a_full_socket) {
  unsetenv("NOTIFY_SOCKET");
  BOOST_TEST(!parry::notify_service("READY=1"));
  for (bool abstract : {false, true}) {
    std::string name = "/tmp/parry-notify-test-" + std::to_string(::getpid());
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name.data(), name.size());
    if (abstract) a.sun_path[0] = '\0';
    ::unlink(name.c_str());
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), len) == 0);
    std::string env = abstract ? "@" + name.substr(1) : name;
    setenv("NOTIFY_SOCKET", env.c_str(), 1);
    BOOST_TEST(parry::notify_service("READY=1\nSTATUS=up"));
    char buf[64] = {};
    auto n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    BOOST_TEST(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0) ==
               "READY=1\nSTATUS=up");
    // Nobody reads now: the queue fills and the rest is refused, not waited on.
    int taken = 0;
    for (int i = 0; i < 5000; ++i)
      taken += parry::notify_service("WATCHDOG=1");
    BOOST_TEST(taken > 0);
    BOOST_TEST(taken < 5000);
    ::close(fd);
    ::unlink(name.c_str());
  }
  unsetenv("NOTIFY_SOCKET");
}
