#define BOOST_TEST_MODULE real_process
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "agent-real/process_ops.hpp"
#include "common/process.hpp"
#include "common/utf8.hpp"

using namespace std::chrono_literals;

using namespace parry;

namespace {

/// A forked `/bin/sleep 100`, killed and reaped at the end of the test whatever
/// happened to it.
struct sleeper {
  pid_t pid = -1;
  bool reaped = false;

  sleeper() {
    pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sleep", "sleep", "100", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    BOOST_REQUIRE(pid > 0);
  }
  ~sleeper() {
    if (reaped) return;
    ::kill(pid, SIGKILL);
    int st;
    ::waitpid(pid, &st, 0);
  }
  sleeper(const sleeper&) = delete;
  sleeper& operator=(const sleeper&) = delete;

  /// Its entry once it runs sleep (right after fork it is still a copy of us; in
  /// the middle of execve /proc already shows the new image but an empty cmdline).
  real::proc_entry after_exec() const {
    std::optional<real::proc_entry> e;
    auto exec_done = [&] {
      e = real::read_process(static_cast<uint32_t>(pid));
      if (!e) return true; // gone: the check below says so
      auto slash = e->image.rfind('/');
      return slash != std::string::npos && e->image.substr(slash) == "/sleep" &&
             !e->cmdline.empty();
    };
    BOOST_REQUIRE(parry::poll_until(exec_done, std::chrono::seconds(3), 1ms));
    BOOST_REQUIRE(e);
    return *e;
  }

  /// Still running: not exited (we have not reaped it, so exited means a zombie).
  bool alive() const {
    siginfo_t info{};
    int rc = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    return rc == 0 && info.si_pid == 0;
  }
};

/// The pid of a process that existed and has been reaped.
uint32_t gone_pid() {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  BOOST_REQUIRE(pid > 0);
  int st;
  BOOST_REQUIRE_EQUAL(::waitpid(pid, &st, 0), pid);
  return static_cast<uint32_t>(pid);
}

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf);
  BOOST_REQUIRE(n > 0);
  return std::string(buf, static_cast<std::size_t>(n));
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

/// A temporary directory, removed (empty) at the end.
struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/parry-proc-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl));
    char real[PATH_MAX];
    BOOST_REQUIRE(::realpath(tmpl, real));
    path = real;
  }
  ~temp_dir() { ::rmdir(path.c_str()); }
};

sim::start_args sh(const std::string& script, std::vector<std::string> more = {}) {
  sim::start_args a;
  a.path = "/bin/sh";
  a.args = {"-c", script};
  a.args.insert(a.args.end(), more.begin(), more.end());
  return a;
}

/// Sets start's test hooks for one test and restores them after.
struct with_hooks {
  explicit with_hooks(real::detail::start_test_hooks h) { real::detail::start_hooks = h; }
  ~with_hooks() { real::detail::start_hooks = {}; }
  with_hooks(const with_hooks&) = delete;
  with_hooks& operator=(const with_hooks&) = delete;
};

// Whether `pid` is gone or only a zombie left for its (new) parent to reap.
bool dead(uint32_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  if (stat.empty()) return true;
  auto close = stat.rfind(')');
  return close != std::string::npos && stat.compare(close, 3, ") Z") == 0;
}

} // namespace

BOOST_AUTO_TEST_SUITE(read_process)

BOOST_AUTO_TEST_CASE(finds_this_process) {
  auto me = real::read_process(static_cast<uint32_t>(::getpid()));
  BOOST_REQUIRE(me);
  BOOST_TEST(me->pid == static_cast<uint32_t>(::getpid()));
  BOOST_TEST(me->ppid == static_cast<uint32_t>(::getppid()));
  BOOST_TEST(me->image == self_exe());
  BOOST_TEST(me->uid == ::getuid());
  BOOST_TEST(!me->user.empty());
  BOOST_TEST(me->cmdline.rfind(boost::unit_test::framework::master_test_suite().argv[0],
                               0) == 0);
  // After boot and not in the future.
  auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  BOOST_TEST(me->start_time > real::boot_time_us());
  BOOST_TEST(me->start_time <= now_us + real::start_time_tolerance_us);
  auto again = real::read_process(static_cast<uint32_t>(::getpid()));
  BOOST_REQUIRE(again);
  BOOST_TEST(again->start_time == me->start_time);
  BOOST_TEST(real::boot_time_us() > 0);
}

BOOST_AUTO_TEST_CASE(cmdline_joins_arguments) {
  sleeper s;
  auto e = s.after_exec();
  BOOST_TEST(e.cmdline == "sleep 100");
  BOOST_TEST(e.ppid == static_cast<uint32_t>(::getpid()));
}

BOOST_AUTO_TEST_CASE(nothing_for_a_missing_process) {
  BOOST_TEST(!real::read_process(gone_pid()));
  BOOST_TEST(!real::read_process(0));
  BOOST_TEST(!real::read_process(4'000'000'000u));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(terminate_process)

BOOST_AUTO_TEST_CASE(kills_the_detected_process) {
  sleeper s;
  auto e = s.after_exec();
  sim::terminate_args a{e.pid, e.start_time, e.image};
  auto r = real::terminate(a);
  BOOST_TEST(r.ok, r.error);
  BOOST_TEST(r.effect["pid"] == std::to_string(s.pid));
  int st = 0;
  BOOST_REQUIRE_EQUAL(::waitpid(s.pid, &st, 0), s.pid);
  s.reaped = true;
  BOOST_TEST(WIFSIGNALED(st));
  BOOST_TEST(WTERMSIG(st) == SIGKILL);
}

BOOST_AUTO_TEST_CASE(refuses_another_start_time) {
  sleeper s;
  auto e = s.after_exec();
  sim::terminate_args a{e.pid, e.start_time + 5'000'000, ""};
  auto r = real::terminate(a);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error == "process " + std::to_string(s.pid) +
                            " is not the detected one (start time differs)");
  BOOST_TEST(s.alive());
  // Within the tolerance is the same process.
  a.start_time = e.start_time + real::start_time_tolerance_us / 2;
  BOOST_TEST(real::terminate(a).ok);
}

BOOST_AUTO_TEST_CASE(refuses_another_image) {
  sleeper s;
  auto e = s.after_exec();
  sim::terminate_args a{e.pid, e.start_time, "/usr/bin/false"};
  auto r = real::terminate(a);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error == "process " + std::to_string(s.pid) +
                            " is not the detected one (image differs)");
  BOOST_TEST(s.alive());
}

BOOST_AUTO_TEST_CASE(image_with_ill_formed_utf8) {
  // Detection sends the image sanitized; terminate compares it the same way.
  temp_dir dir;
  std::string path = dir.path + "/sl\xff"
                                "eep";
  std::filesystem::copy_file("/bin/sleep", path);
  ::chmod(path.c_str(), 0755);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(path.c_str(), "sleep", "100", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  BOOST_REQUIRE(pid > 0);
  std::optional<real::proc_entry> e;
  parry::poll_until(
      [&] {
        e = real::read_process(static_cast<uint32_t>(pid));
        return e && e->image == path;
      },
      std::chrono::seconds(3), 1ms);
  ::unlink(path.c_str());
  BOOST_REQUIRE(e);
  BOOST_TEST(e->image == path); // raw bytes
  std::string sent = utf8_sanitized(e->image);
  BOOST_TEST(sent != e->image);
  auto r = real::terminate({e->pid, e->start_time, sent});
  BOOST_TEST(r.ok, r.error);
  int st = 0;
  if (!r.ok) ::kill(pid, SIGKILL);
  BOOST_REQUIRE_EQUAL(::waitpid(pid, &st, 0), pid);
  BOOST_TEST(WIFSIGNALED(st));
  BOOST_TEST(WTERMSIG(st) == SIGKILL);
}

BOOST_AUTO_TEST_CASE(no_process) {
  uint32_t pid = gone_pid();
  auto r = real::terminate({pid, 0, ""});
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error == "no process " + std::to_string(pid));
  BOOST_TEST(real::terminate({4'000'000'000u, 0, ""}).error == "no process 4000000000");
}

BOOST_AUTO_TEST_CASE(an_exited_unreaped_process_is_gone) {
  sleeper s;
  auto e = s.after_exec();
  ::kill(s.pid, SIGKILL);
  parry::poll_until([&] { return !s.alive(); }, std::chrono::seconds(3), 1ms);
  auto r = real::terminate({e.pid, e.start_time, ""});
  BOOST_TEST(r.error == "no process " + std::to_string(s.pid));
}

BOOST_AUTO_TEST_CASE(not_itself) {
  auto me = real::read_process(static_cast<uint32_t>(::getpid()));
  BOOST_REQUIRE(me);
  auto r = real::terminate({me->pid, me->start_time, ""});
  BOOST_TEST(contains(r.error, "is the agent itself"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(start_process)

BOOST_AUTO_TEST_CASE(runs_with_arguments_in_the_directory) {
  temp_dir dir;
  auto a = sh("pwd; echo \"$1 $2\"; echo err >&2; exit 3", {"sh", "a", "b c"});
  a.working_directory = dir.path;
  auto r = real::start(a, {});
  BOOST_REQUIRE_MESSAGE(r.ok, r.error);
  BOOST_TEST(r.effect["exit_code"] == "3");
  BOOST_TEST(r.effect.count("signal") == 0);
  BOOST_TEST(r.effect["stdout"] == dir.path + "\na b c\n");
  BOOST_TEST(r.effect["stderr"] == "err\n");
  BOOST_TEST(std::stoi(r.effect["pid"]) > 0);
  BOOST_TEST(r.effect.count("stdout_dropped") == 0);
}

BOOST_AUTO_TEST_CASE(default_directory) {
  real::start_limits l;
  l.default_cwd = "/usr";
  auto r = real::start(sh("pwd"), l);
  BOOST_REQUIRE_MESSAGE(r.ok, r.error);
  BOOST_TEST(r.effect["stdout"] == "/usr\n");
  BOOST_TEST(r.effect["exit_code"] == "0");
}

BOOST_AUTO_TEST_CASE(clean_environment_descriptors_and_group) {
  // A descriptor of ours without close-on-exec must not reach the program.
  int leak = ::open("/dev/null", O_RDONLY);
  BOOST_REQUIRE(leak > 2);
  auto r = real::start(sh("echo $$; cut -d' ' -f5 /proc/$$/stat; readlink /proc/$$/fd/0; "
                          "ls /proc/$$/fd; env"),
                       {});
  ::close(leak);
  BOOST_REQUIRE_MESSAGE(r.ok, r.error);
  std::istringstream out(r.effect["stdout"]);
  std::string self, group, in, line;
  std::getline(out, self);
  std::getline(out, group);
  std::getline(out, in);
  BOOST_TEST(self == group); // its own process group
  BOOST_TEST(in == "/dev/null");
  bool path = false;
  while (std::getline(out, line)) {
    BOOST_TEST(line != std::to_string(leak));
    BOOST_TEST(line.rfind("HOME=", 0) != 0);
    if (line == "PATH=/usr/sbin:/usr/bin:/sbin:/bin") path = true;
  }
  BOOST_TEST(path);
}

// The same without close_range(CLOSE_RANGE_CLOEXEC) (Linux before 5.11): through the
// /proc/self/fd listing, and through the loop over every descriptor number.
BOOST_AUTO_TEST_CASE(descriptors_closed_without_close_range) {
  int leak = ::open("/dev/null", O_RDONLY);
  BOOST_REQUIRE(leak > 2);
  // Well above the others, as the listing's own descriptor may be next.
  int high = ::fcntl(leak, F_DUPFD, 100);
  BOOST_REQUIRE(high >= 100);
  for (bool listing : {true, false}) {
    with_hooks h({.skip_close_range = true, .skip_fd_listing = !listing});
    auto r = real::start(sh("ls /proc/$$/fd"), {});
    BOOST_REQUIRE_MESSAGE(r.ok, r.error);
    BOOST_TEST(r.effect["stdout"] == "0\n1\n2\n", "listing " << listing);
  }
  ::close(leak);
  ::close(high);
}

BOOST_AUTO_TEST_CASE(killed_by_a_signal) {
  auto r = real::start(sh("kill -9 $$"), {});
  BOOST_REQUIRE_MESSAGE(r.ok, r.error);
  BOOST_TEST(r.effect["signal"] == "9");
  BOOST_TEST(r.effect["exit_code"] == "137");
}

BOOST_AUTO_TEST_CASE(missing_executable) {
  sim::start_args a;
  a.path = "/nonexistent/parry-no-such-program";
  auto r = real::start(a, {});
  BOOST_TEST(!r.ok);
  BOOST_TEST(
      r.error ==
      "cannot start /nonexistent/parry-no-such-program: No such file or directory");
  BOOST_TEST(r.effect.empty());
}

BOOST_AUTO_TEST_CASE(not_executable) {
  temp_dir dir;
  sim::start_args a;
  a.path = dir.path + "/plain";
  std::ofstream(a.path) << "#!/bin/sh\n";
  ::chmod(a.path.c_str(), 0644);
  auto r = real::start(a, {});
  ::unlink(a.path.c_str());
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error == "cannot start " + a.path + ": Permission denied");
}

BOOST_AUTO_TEST_CASE(missing_working_directory) {
  auto a = sh("true");
  a.working_directory = "/nonexistent/parry-dir";
  auto r = real::start(a, {});
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error == "cannot start /bin/sh: working directory /nonexistent/parry-dir: "
                        "No such file or directory");
}

BOOST_AUTO_TEST_CASE(timeout_kills_the_group) {
  // Also without a pidfd, where the loop polls the child.
  for (bool pidfd : {true, false}) {
    BOOST_TEST_CONTEXT("pidfd " << pidfd) {
      with_hooks h({.no_pidfd = !pidfd});
      real::start_limits l;
      l.timeout_us = 200'000;
      // A grandchild in the same group must die too.
      auto r = real::start(sh("/bin/sleep 10 & echo $! $$; wait"), l);
      BOOST_TEST(!r.ok);
      BOOST_TEST(
          contains(r.error, "timed out after 200 ms; process group killed; stdout: '"),
          r.error);
      unsigned grandchild = 0, child = 0;
      auto at = r.error.find("stdout: '");
      BOOST_REQUIRE(at != std::string::npos);
      BOOST_REQUIRE(std::sscanf(r.error.c_str() + at + 9, "%u %u", &grandchild, &child) ==
                    2);
      // Ours is reaped; the grandchild's new parent reaps it when it gets to it.
      BOOST_TEST(::kill(static_cast<pid_t>(child), 0) == -1);
      parry::poll_until([&] { return dead(grandchild); }, std::chrono::seconds(3), 1ms);
      BOOST_TEST(dead(grandchild));
    }
  }
}

BOOST_AUTO_TEST_CASE(timeout_after_the_child_exited) {
  // The child exits at once; a grandchild keeps its stdout. The child stays unreaped
  // until the end, so its pid and group still name what was started when the timeout
  // kills them, and the grandchild dies with the group.
  for (bool pidfd : {true, false}) {
    BOOST_TEST_CONTEXT("pidfd " << pidfd) {
      with_hooks h({.no_pidfd = !pidfd});
      real::start_limits l;
      l.timeout_us = 300'000;
      auto r = real::start(sh("/bin/sleep 10 & echo $!"), l);
      BOOST_TEST(!r.ok);
      auto at = r.error.find("stdout: '");
      BOOST_REQUIRE_MESSAGE(at != std::string::npos, r.error);
      unsigned grandchild = 0;
      BOOST_REQUIRE(std::sscanf(r.error.c_str() + at + 9, "%u", &grandchild) == 1);
      parry::poll_until([&] { return dead(grandchild); }, std::chrono::seconds(3), 1ms);
      BOOST_TEST(dead(grandchild));
    }
  }
}

BOOST_AUTO_TEST_CASE(exit_status_without_pidfd) {
  with_hooks h({.no_pidfd = true});
  auto r = real::start(sh("echo hi; exit 5"), {});
  BOOST_REQUIRE_MESSAGE(r.ok, r.error);
  BOOST_TEST(r.effect["exit_code"] == "5");
  BOOST_TEST(r.effect["stdout"] == "hi\n");
  r = real::start(sh("kill -9 $$"), {});
  BOOST_REQUIRE_MESSAGE(r.ok, r.error);
  BOOST_TEST(r.effect["signal"] == "9");
}

BOOST_AUTO_TEST_CASE(output_is_bounded) {
  auto r = real::start(sh("head -c 100000 /dev/zero | tr '\\0' x; echo done >&2"), {});
  BOOST_REQUIRE_MESSAGE(r.ok, r.error);
  BOOST_TEST(r.effect["stdout"] == std::string(4096, 'x'));
  BOOST_TEST(r.effect["stdout_dropped"] == std::to_string(100000 - 4096));
  BOOST_TEST(r.effect["stderr"] == "done\n");
  BOOST_TEST(r.effect["exit_code"] == "0");
}

BOOST_AUTO_TEST_CASE(output_is_valid_utf8) {
  // \377 is never UTF-8; \303\251 is é, cut in half by max_output 6.
  real::start_limits l;
  l.max_output = 6;
  auto r = real::start(sh("printf 'a\\377b\\nc\\303\\251'"), l);
  BOOST_REQUIRE_MESSAGE(r.ok, r.error);
  BOOST_TEST(r.effect["stdout"] == "a?b\nc");
  BOOST_TEST(r.effect["stdout_dropped"] == "1");
  l.max_output = 4096;
  r = real::start(sh("printf 'caf\\303\\251 \\303'"), l);
  BOOST_TEST(r.effect["stdout"] == "caf\xc3\xa9 ?");
}

BOOST_AUTO_TEST_SUITE_END()
