#define BOOST_TEST_MODULE real_guard
#include <boost/test/unit_test.hpp>

#include "agent-real/exec_guard.hpp"
#include "common/crypto.hpp"
#include "common/process.hpp"

#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace parry::real;

// Each scenario runs in a forked child that unshares its mount namespace (which must
// happen before the guard's thread exists) and mounts a private tmpfs, so the marks
// never reach the host. The child cannot use Boost.Test's macros (their results stay
// in the child), so it counts failures, prints them to stderr and exits with the count.

namespace {

int child_failures = 0;

#define EXPECT(cond)                                                                     \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
      ++child_failures;                                                                  \
    }                                                                                    \
  } while (0)

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out.flush()) throw std::runtime_error("cannot write " + path);
  out.close();
  chmod(path.c_str(), 0755);
}

/// Outcome of one exec attempt in a grandchild.
struct exec_result {
  int err = -1; ///< errno of a failed execv, 0 when it ran and exited 0.
  pid_t pid = -1;
};

/// Runs `path` with no arguments. A close-on-exec pipe carries execv's errno back; EOF
/// on it means the exec happened.
exec_result run(const std::string& path) {
  exec_result r;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return r;
  r.pid = fork();
  if (r.pid == 0) {
    close(fds[0]);
    char* argv[] = {const_cast<char*>(path.c_str()), nullptr};
    execv(path.c_str(), argv);
    int e = errno;
    [[maybe_unused]] ssize_t n = write(fds[1], &e, sizeof e);
    _exit(127);
  }
  close(fds[1]);
  int e = 0;
  ssize_t n = read(fds[0], &e, sizeof e);
  close(fds[0]);
  int status = 0;
  waitpid(r.pid, &status, 0);
  if (n == sizeof e)
    r.err = e;
  else
    r.err = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
  return r;
}

/// Writes `data` to `path` from another process: the guard ignores its own.
pid_t write_elsewhere(const std::string& path, const std::string& data) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    bool ok = fd >= 0 &&
              write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    ok = fd >= 0 && close(fd) == 0 && ok;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("writer failed for " + path);
  return pid;
}

/// Collects IOC hits from the guard's thread.
struct hit_log {
  std::mutex m;
  std::condition_variable cv;
  std::vector<ioc_hit> hits;

  void add(const ioc_hit& h) {
    std::lock_guard<std::mutex> lock(m);
    hits.push_back(h);
    cv.notify_all();
  }
  /// Waits up to 5 s for `n` hits; returns a copy of what arrived.
  std::vector<ioc_hit> wait_for(std::size_t n) {
    std::unique_lock<std::mutex> lock(m);
    cv.wait_for(lock, std::chrono::seconds(5), [&] { return hits.size() >= n; });
    return hits;
  }
};

/// Forks; the child gets a private mount namespace with a tmpfs on `<base>/mnt`, runs
/// `scenario(base)` and exits with its failure count. Returns that count (or -1 when
/// the child died otherwise).
template <class F> int in_private_mount(F scenario) {
  char tmpl[] = "/tmp/parry-guard-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  std::string base = tmpl;
  std::filesystem::create_directory(base + "/mnt");
  std::filesystem::create_directory(base + "/out");
  pid_t pid = fork();
  if (pid == 0) {
    // A hung exec (an unanswered permission event) must not hang the suite.
    signal(SIGALRM, SIG_DFL);
    alarm(10);
    try {
      if (unshare(CLONE_NEWNS) != 0) throw std::runtime_error("unshare");
      if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        throw std::runtime_error("make / private");
      if (mount("tmpfs", (base + "/mnt").c_str(), "tmpfs", 0, "size=16m") != 0)
        throw std::runtime_error("mount tmpfs");
      scenario(base);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "scenario threw: %s (errno %d)\n", e.what(), errno);
      ++child_failures;
    }
    _exit(child_failures > 100 ? 100 : child_failures);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  std::filesystem::remove_all(base);
  if (!WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

/// The guard caches a hash only once the coarse clock is 20 ms past the file's ctime
/// (so a later change cannot carry the same stamp). Polls until that holds, with 5 ms
/// of margin, for every one of PATHS; throws after 5 s.
void settle(const std::vector<std::string>& paths) {
  auto ns = [](const timespec& t) {
    return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
  };
  int64_t newest = 0;
  for (const auto& p : paths) {
    struct stat st {};
    if (stat(p.c_str(), &st) != 0) throw std::runtime_error("settle: stat " + p);
    newest = std::max(newest, ns(st.st_ctim));
  }
  auto passed = [&] {
    timespec now{};
    clock_gettime(CLOCK_REALTIME_COARSE, &now);
    return ns(now) - newest > 25'000'000;
  };
  if (!parry::poll_until(passed, std::chrono::seconds(5), std::chrono::milliseconds(1)))
    throw std::runtime_error("settle: the coarse clock did not pass the files' ctime");
}

/// Open fanotify groups in this process.
int fanotify_fds() {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (!ec && target == "anon_inode:[fanotify]") ++n;
  }
  return n;
}

/// Polls `cond` for up to 5 s.
template <class F> bool eventually(F cond) {
  return parry::poll_until(cond, std::chrono::seconds(5), std::chrono::milliseconds(10));
}

bool skip_unless_root() {
  if (geteuid() == 0) return false;
  BOOST_TEST_MESSAGE("skipped: fanotify and mount namespaces need root");
  return true;
}

} // namespace

BOOST_AUTO_TEST_CASE(prevented_hash_is_denied_on_the_guarded_mount_only) {
  if (skip_unless_root()) return;
  int failures = in_private_mount([](const std::string& base) {
    std::string mnt = base + "/mnt";
    std::string bin = read_all("/bin/true");
    std::string hash = parry::sha256_hex(bin);
    write_all(mnt + "/true", bin);
    write_all(mnt + "/other", bin + '\0');
    write_all(base + "/out/true", bin);
    settle({mnt + "/true", mnt + "/other", base + "/out/true"});

    try {
      exec_guard bad({base + "/missing"}, {}, nullptr);
      EXPECT(!"a missing mount must throw");
    } catch (const std::runtime_error& e) {
      EXPECT(std::string(e.what()).find(base + "/missing") != std::string::npos);
    }

    exec_guard guard({mnt}, {}, nullptr);
    guard.set_prevented({hash});
    EXPECT(run(mnt + "/true").err == EPERM);
    EXPECT(run(base + "/out/true").err == 0);
    EXPECT(run(mnt + "/other").err == 0);
    guard.set_prevented({});
    EXPECT(run(mnt + "/true").err == 0);

    guard_stats s = guard.stats();
    EXPECT(s.exec_checked == 3);
    EXPECT(s.exec_denied == 1);
    EXPECT(s.cache_hits >= 1); // the second look at mnt/true, after the list changed
    EXPECT(s.errors == 0);
  });
  BOOST_TEST(failures == 0);
}

BOOST_AUTO_TEST_CASE(ioc_file_is_reported_when_written_and_executed) {
  if (skip_unless_root()) return;
  int failures = in_private_mount([](const std::string& base) {
    std::string mnt = base + "/mnt";
    std::string script = "#!/bin/sh\nexit 0\n";
    std::string hash = parry::sha256_hex(script);
    hit_log log;
    exec_guard guard({mnt}, {hash}, [&](const ioc_hit& h) { log.add(h); });

    // Written first, so once the IOC hit arrives this one has been looked at too.
    write_elsewhere(mnt + "/benign.sh", "#!/bin/sh\nexit 3\n");
    pid_t writer = write_elsewhere(mnt + "/ioc.sh", script);
    auto hits = log.wait_for(1);
    EXPECT(hits.size() == 1);
    if (hits.size() >= 1) {
      EXPECT(hits[0].kind == "written");
      EXPECT(hits[0].path == mnt + "/ioc.sh");
      EXPECT(hits[0].sha256 == hash);
      EXPECT(hits[0].size == script.size());
      EXPECT(hits[0].pid == static_cast<uint32_t>(writer));
      EXPECT(hits[0].time > 0);
    }

    exec_result r = run(mnt + "/ioc.sh");
    EXPECT(r.err == 0);
    hits = log.wait_for(2);
    EXPECT(hits.size() == 2);
    if (hits.size() >= 2) {
      EXPECT(hits[1].kind == "executed");
      EXPECT(hits[1].path == mnt + "/ioc.sh");
      EXPECT(hits[1].sha256 == hash);
      EXPECT(hits[1].pid == static_cast<uint32_t>(r.pid));
    }
    EXPECT(guard.stats().ioc_hits == 2);

    // A script is opened for exec too, so the prevent list stops it as well.
    guard.set_prevented({hash});
    EXPECT(run(mnt + "/ioc.sh").err == EPERM);
    EXPECT(guard.stats().errors == 0);
  });
  BOOST_TEST(failures == 0);
}

BOOST_AUTO_TEST_CASE(forged_mtime_does_not_bring_back_a_cached_verdict) {
  if (skip_unless_root()) return;
  int failures = in_private_mount([](const std::string& base) {
    std::string path = base + "/mnt/tool.sh";
    // Same size, both exit 0; only the second is prevented.
    std::string benign = "#!/bin/sh\n:;exit 0\n";
    std::string bad = "#!/bin/sh\nexit  0;\n";
    if (benign.size() != bad.size()) throw std::logic_error("sizes differ");
    write_all(path, benign);
    struct stat old {};
    if (stat(path.c_str(), &old) != 0) throw std::runtime_error("stat");
    settle({path});

    exec_guard guard({base + "/mnt"}, {}, nullptr);
    guard.set_prevented({parry::sha256_hex(bad)});
    EXPECT(run(path).err == 0);
    EXPECT(run(path).err == 0);
    EXPECT(guard.stats().cache_hits == 1); // the benign content is cached

    // Overwrite in place, then set mtime back: device, inode, size and mtime now all
    // match the cached entry; only ctime tells them apart.
    write_all(path, bad);
    timespec times[2] = {old.st_atim, old.st_mtim};
    EXPECT(utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
    struct stat now {};
    EXPECT(stat(path.c_str(), &now) == 0);
    EXPECT(now.st_ino == old.st_ino && now.st_size == old.st_size);
    EXPECT(now.st_mtim.tv_sec == old.st_mtim.tv_sec &&
           now.st_mtim.tv_nsec == old.st_mtim.tv_nsec);
    EXPECT(run(path).err == EPERM);

    guard_stats s = guard.stats();
    EXPECT(s.cache_hits == 1);
    EXPECT(s.exec_denied == 1);
    EXPECT(s.errors == 0 && s.unstable == 0);
  });
  BOOST_TEST(failures == 0);
}

BOOST_AUTO_TEST_CASE(file_above_the_hash_cap_is_allowed_and_counted) {
  if (skip_unless_root()) return;
  int failures = in_private_mount([](const std::string& base) {
    std::string mnt = base + "/mnt";
    std::string bin = read_all("/bin/true");
    std::string script = "#!/bin/sh\nexit 0\n";
    constexpr uint64_t cap = 1024;
    if (bin.size() <= cap) throw std::logic_error("/bin/true is too small");
    write_all(mnt + "/true", bin);
    write_all(mnt + "/small.sh", script);

    hit_log log;
    exec_guard guard(
        {mnt}, {parry::sha256_hex(bin)}, [&](const ioc_hit& h) { log.add(h); }, cap);
    guard.set_prevented({parry::sha256_hex(bin), parry::sha256_hex(script)});
    EXPECT(run(mnt + "/true").err == 0); // scope limit: cannot be checked
    EXPECT(run(mnt + "/small.sh").err == EPERM);
    guard_stats s = guard.stats();
    EXPECT(s.exec_checked == 2);
    EXPECT(s.exec_denied == 1);
    EXPECT(s.too_large == 1);

    // Not hashed for the IOC list either: skipped and counted, no hit.
    write_elsewhere(mnt + "/copy", bin);
    EXPECT(eventually([&] { return guard.stats().ioc_skipped >= 2; })); // exec + write
    EXPECT(guard.stats().ioc_hits == 0);
    EXPECT(guard.stats().errors == 0);
  });
  BOOST_TEST(failures == 0);
}

BOOST_AUTO_TEST_CASE(exec_verdicts_do_not_wait_for_ioc_checks) {
  if (skip_unless_root()) return;
  int failures = in_private_mount([](const std::string& base) {
    std::string mnt = base + "/mnt";
    std::string bin = read_all("/bin/true");
    std::string script = "#!/bin/sh\nexit 0\n";
    write_all(mnt + "/true", bin);

    // The IOC callback blocks the notification thread until released.
    std::mutex m;
    std::condition_variable cv;
    bool entered = false, released = false;
    exec_guard guard({mnt}, {parry::sha256_hex(script)}, [&](const ioc_hit&) {
      std::unique_lock<std::mutex> lock(m);
      entered = true;
      cv.notify_all();
      cv.wait(lock, [&] { return released; });
    });
    guard.set_prevented({parry::sha256_hex(bin)});
    write_elsewhere(mnt + "/ioc.sh", script);
    {
      std::unique_lock<std::mutex> lock(m);
      EXPECT(cv.wait_for(lock, std::chrono::seconds(5), [&] { return entered; }));
    }
    // The notification thread is stuck; exec verdicts still come.
    EXPECT(run(mnt + "/true").err == EPERM);
    EXPECT(run(mnt + "/true").err == EPERM);
    {
      std::lock_guard<std::mutex> lock(m);
      released = true;
    }
    cv.notify_all();
    EXPECT(guard.stats().exec_denied == 2);
  });
  BOOST_TEST(failures == 0);
}

BOOST_AUTO_TEST_CASE(destroying_the_guard_closes_both_groups) {
  if (skip_unless_root()) return;
  int failures = in_private_mount([](const std::string& base) {
    std::string mnt = base + "/mnt";
    std::string bin = read_all("/bin/true");
    std::string hash = parry::sha256_hex(bin);
    write_all(mnt + "/true", bin);
    EXPECT(fanotify_fds() == 0);
    {
      hit_log log;
      exec_guard guard({mnt}, {hash}, [&](const ioc_hit& h) { log.add(h); });
      guard.set_prevented({hash});
      EXPECT(fanotify_fds() == 2); // permission and notification groups
      EXPECT(run(mnt + "/true").err == EPERM);
    }
    EXPECT(fanotify_fds() == 0);
    EXPECT(run(mnt + "/true").err == 0);

    // Without IOCs there is no notification group.
    exec_guard guard({mnt}, {}, nullptr);
    EXPECT(fanotify_fds() == 1);
  });
  BOOST_TEST(failures == 0);
}
