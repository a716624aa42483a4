#include "agent-real/process_ops.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstring>
#include <ctime>
#include <string_view>
#include <vector>

#include "common/utf8.hpp"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace parry::real {

namespace {

using sim::execution;
using sim::printable;
using steady = std::chrono::steady_clock;

/// Closes the descriptor it holds, so every early return releases it.
class fd_guard {
public:
  explicit fd_guard(int fd = -1) : fd_(fd) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() { reset(); }
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

private:
  int fd_;
};

std::string errno_text(int err) {
  return std::strerror(err);
}

// Reads a whole (small) file relative to `dir`, at most `max` bytes. Returns false on
// any error; `err` then holds errno.
bool read_at(int dir, const char* name, std::string& out, std::size_t max, int& err) {
  int fd = ::openat(dir, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
    return false;
  }
  fd_guard guard(fd);
  out.clear();
  char buf[4096];
  while (out.size() < max) {
    ssize_t n = ::read(fd, buf, std::min(sizeof buf, max - out.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      return false;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return true;
}

// Decimal digits only; false on anything else or overflow.
bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

// The space-separated fields of /proc/<pid>/stat after the command name. The name is
// in parentheses and may itself hold spaces and ')', so the last ')' ends it.
std::vector<std::string_view> stat_fields(std::string_view stat) {
  std::vector<std::string_view> fields;
  std::size_t close = stat.rfind(')');
  if (close == std::string_view::npos) return fields;
  std::string_view rest = stat.substr(close + 1);
  std::size_t i = 0;
  while (i < rest.size()) {
    while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\n'))
      ++i;
    std::size_t j = i;
    while (j < rest.size() && rest[j] != ' ' && rest[j] != '\n')
      ++j;
    if (j > i) fields.push_back(rest.substr(i, j - i));
    i = j;
  }
  return fields;
}

std::string user_name(uid_t uid) {
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(hint > 0 ? static_cast<std::size_t>(hint) : 16384);
  // Large group or NSS entries need a bigger buffer; 1 MiB is beyond any sane one.
  while (buf.size() <= (1u << 20)) {
    passwd pw{};
    passwd* found = nullptr;
    int rc = ::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found);
    if (rc == ERANGE) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (rc == 0 && found && found->pw_name) return printable(found->pw_name);
    break;
  }
  return std::to_string(uid);
}

// Microseconds from clock ticks without overflowing for any realistic uptime.
int64_t ticks_to_us(uint64_t ticks) {
  static const long hz = [] {
    long v = ::sysconf(_SC_CLK_TCK);
    return v > 0 ? v : 100;
  }();
  uint64_t h = static_cast<uint64_t>(hz);
  return static_cast<int64_t>((ticks / h) * 1'000'000 + (ticks % h) * 1'000'000 / h);
}

// `s` as valid UTF-8 with newlines kept: each byte that starts no well-formed
// character becomes '?', which never makes the text longer. When `cut` the text was
// cut off after its end, so a character broken there is dropped instead.
std::string utf8_or_question(std::string_view s, bool cut) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80                 ? 1
                    : c >= 0xC2 && c <= 0xDF ? 2
                    : c >= 0xE0 && c <= 0xEF ? 3
                    : c >= 0xF0 && c <= 0xF4 ? 4
                                             : 0;
    if (n > 1 && i + n > s.size() && cut) break;
    if (n == 0 || i + n > s.size() || !valid_utf8(s.substr(i, n))) {
      out += '?';
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

// What was read before a timeout, for the error line.
std::string read_so_far(const char* name, const std::string& kept) {
  if (kept.empty()) return {};
  return std::string("; ") + name + ": '" + printable(kept) + "'";
}

// Stages the child reports through the close-on-exec pipe when it cannot exec.
enum child_stage : int {
  stage_setup = 0,
  stage_chdir = 1,
  stage_exec = 2,
  stage_descriptors = 3
};

// The most descriptors the last-resort loop of exec_child walks; a limit above it
// fails the start rather than take minutes (or leave descriptors open).
constexpr long max_fd_loop = 1L << 20;

[[noreturn]] void child_failed(int report, int stage) {
  int msg[2] = {stage, errno};
  ssize_t ignored = ::write(report, msg, sizeof msg);
  (void)ignored;
  ::_exit(127);
}

// Sets close-on-exec on `fd` when it is open and lacks it. Async-signal-safe.
void set_cloexec(int fd) {
  int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0 && !(flags & FD_CLOEXEC)) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

// Sets close-on-exec on every open descriptor above 2, listed from /proc/self/fd with
// raw getdents64 (opendir allocates: not async-signal-safe). False when the listing
// is not possible (no /proc, or a /proc of another pid namespace); a listing broken
// off midway also returns false, and the caller's loop then covers the rest.
bool cloexec_listed() {
  int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return false;
  alignas(8) char buf[4096];
  for (;;) {
    long n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(dir);
      return false;
    }
    if (n == 0) break;
    // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, d_name.
    for (long at = 0; at + 19 < n;) {
      unsigned short reclen = 0;
      std::memcpy(&reclen, buf + at + 16, sizeof reclen);
      if (reclen == 0) break;
      const char* name = buf + at + 19;
      long fd = 0;
      bool number = *name != '\0';
      for (const char* c = name; *c != '\0' && number; ++c) {
        number = *c >= '0' && *c <= '9' && fd <= INT_MAX / 10;
        fd = fd * 10 + (*c - '0');
      }
      if (number && fd > 2 && fd <= INT_MAX && fd != dir)
        set_cloexec(static_cast<int>(fd));
      at += reclen;
    }
  }
  ::close(dir);
  return true;
}

// The child between fork and execve. The agent may have other threads, so only
// async-signal-safe calls happen here: everything allocated was prepared before fork.
// `fd_limit` is the descriptor limit (sysconf(_SC_OPEN_MAX), read before fork).
[[noreturn]] void exec_child(const char* path, char* const* argv, char* const* envp,
                             const char* dir, int in, int out, int err, int report,
                             long fd_limit, detail::start_test_hooks hooks) {
  // Signals stay blocked (the parent blocked them around fork) until the agent's
  // handlers are gone; an ignored signal would otherwise stay ignored after exec.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s)
    ::sigaction(s, &dfl, nullptr);
  ::setpgid(0, 0);
  // Move every descriptor above 2 first: an agent started without 0-2 may have its
  // pipes there, and dup2 onto 0-2 would clobber them.
  int fds[4] = {in, out, err, report};
  for (int& fd : fds) {
    int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (moved < 0) child_failed(report, stage_setup);
    fd = moved;
  }
  report = fds[3];
  for (int target = 0; target < 3; ++target)
    if (::dup2(fds[target], target) < 0) child_failed(report, stage_setup);
  // Everything else the agent holds (sockets, keys, the journal) must not reach the
  // program; close-on-exec rather than close keeps the report pipe until execve.
  // CLOSE_RANGE_CLOEXEC needs Linux 5.11 (older kernels: ENOSYS or EINVAL); then each
  // listed descriptor, or as a last resort every number below the limit, gets it.
  if (hooks.skip_close_range ||
      ::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) != 0) {
    if (hooks.skip_fd_listing || !cloexec_listed()) {
      if (fd_limit < 0 || fd_limit > max_fd_loop) {
        errno = EMFILE;
        child_failed(report, stage_descriptors);
      }
      for (long fd = 3; fd < fd_limit; ++fd)
        set_cloexec(static_cast<int>(fd));
    }
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::chdir(dir) != 0) child_failed(report, stage_chdir);
  ::execve(path, argv, envp);
  child_failed(report, stage_exec);
}

/// One output pipe of the started process.
struct output {
  fd_guard fd;
  std::string kept;     ///< At most max_output bytes.
  uint64_t dropped = 0; ///< Bytes read and thrown away beyond that.
};

} // namespace

namespace detail {
start_test_hooks start_hooks;
} // namespace detail

int64_t boot_time_us() {
  // The wall clock minus the time since boot, both read now: /proc/stat's btime is
  // whole seconds, which would put every start time up to a second early. Start
  // times in /proc/<pid>/stat count on the same boot clock.
  static const int64_t boot = [] {
    timespec real{}, boot_clock{};
    ::clock_gettime(CLOCK_REALTIME, &real);
    ::clock_gettime(CLOCK_BOOTTIME, &boot_clock);
    auto us = [](const timespec& t) {
      return static_cast<int64_t>(t.tv_sec) * 1'000'000 + t.tv_nsec / 1000;
    };
    return us(real) - us(boot_clock);
  }();
  return boot;
}

std::optional<proc_entry> read_process(uint32_t pid) {
  if (pid == 0 || pid > static_cast<uint32_t>(INT_MAX)) return std::nullopt;
  // Every file is read through this directory's descriptor: it stays bound to the
  // process it was opened for, so reads fail rather than describe a successor that
  // got the same pid meanwhile.
  std::string dir_path = "/proc/" + std::to_string(pid);
  fd_guard dir(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return std::nullopt;

  std::string text;
  int err = 0;
  if (!read_at(dir.get(), "stat", text, 4096, err)) return std::nullopt;
  auto fields = stat_fields(text);
  // fields[0] is stat's field 3 (state): ppid is field 4, starttime field 22.
  uint64_t ppid = 0, ticks = 0;
  if (fields.size() < 20 || !parse_u64(fields[1], ppid) || !parse_u64(fields[19], ticks))
    return std::nullopt;
  proc_entry e;
  e.pid = pid;
  e.ppid = static_cast<uint32_t>(ppid);
  e.start_time = boot_time_us() + ticks_to_us(ticks);

  // Kernel threads and other users' processes (without privilege) have no readable
  // exe; a d_path never exceeds a page, so this buffer always suffices.
  char link[8192];
  ssize_t n = ::readlinkat(dir.get(), "exe", link, sizeof link);
  if (n > 0 && static_cast<std::size_t>(n) < sizeof link) {
    e.image.assign(link, static_cast<std::size_t>(n));
    constexpr std::string_view deleted = " (deleted)";
    if (e.image.size() > deleted.size() &&
        e.image.compare(e.image.size() - deleted.size(), deleted.size(), deleted) == 0)
      e.image.resize(e.image.size() - deleted.size());
  }

  constexpr std::size_t max_cmdline = 4096;
  if (read_at(dir.get(), "cmdline", text, 2 * max_cmdline, err)) {
    std::replace(text.begin(), text.end(), '\0', ' ');
    while (!text.empty() && text.back() == ' ')
      text.pop_back();
    // printable() appends "..." when it cuts: leave room for it.
    e.cmdline = printable(text, max_cmdline - 3);
  }

  if (!read_at(dir.get(), "status", text, 64 * 1024, err)) return std::nullopt;
  std::size_t at = text.rfind("\nUid:");
  if (at == std::string::npos) return std::nullopt;
  at += 5;
  while (at < text.size() && (text[at] == '\t' || text[at] == ' '))
    ++at;
  std::size_t end = text.find_first_of("\t \n", at);
  uint64_t uid = 0;
  if (!parse_u64(std::string_view(text).substr(at, end - at), uid) || uid > UINT32_MAX)
    return std::nullopt;
  e.uid = static_cast<uint32_t>(uid);
  e.user = user_name(static_cast<uid_t>(uid));
  return e;
}

execution terminate(const sim::terminate_args& p, int64_t wait_us) {
  std::string who = "process " + std::to_string(p.pid);
  if (p.pid == 0 || p.pid > static_cast<uint32_t>(INT_MAX))
    return execution::failed("no " + who);
  if (static_cast<pid_t>(p.pid) == ::getpid())
    return execution::failed(who + " is the agent itself");

  int raw = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(p.pid), 0));
  if (raw < 0) {
    int err = errno;
    if (err == ESRCH) return execution::failed("no " + who);
    return execution::failed("cannot open " + who + ": " + errno_text(err));
  }
  fd_guard pidfd(raw);
  auto exited = [&](int timeout_ms) {
    pollfd pfd{pidfd.get(), POLLIN, 0};
    int rc;
    do
      rc = ::poll(&pfd, 1, timeout_ms);
    while (rc < 0 && errno == EINTR);
    return rc > 0;
  };

  // The pidfd holds the process; /proc is read by pid. If the process has not exited
  // after the read, the pid was still its own while we read it.
  auto now = read_process(p.pid);
  if (!now || exited(0)) return execution::failed("no " + who);
  int64_t diff = now->start_time - p.start_time;
  if (diff > start_time_tolerance_us || diff < -start_time_tolerance_us)
    return execution::failed(who + " is not the detected one (start time differs)");
  // Detection reported the image sanitized (it travels as UTF-8): compare the same.
  if (!p.image.empty() && p.image != utf8_sanitized(now->image))
    return execution::failed(who + " is not the detected one (image differs)");

  // Through the pidfd: had the process died since, this fails with ESRCH instead of
  // reaching whatever reused the pid.
  if (::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0) < 0) {
    int err = errno;
    if (err == ESRCH) return execution::failed("no " + who);
    return execution::failed("cannot kill " + who + ": " + errno_text(err));
  }

  // Only the parent may reap it: the pidfd turns readable once it has exited.
  auto deadline =
      steady::now() + std::chrono::microseconds(std::max<int64_t>(wait_us, 0));
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady::now());
    if (exited(static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT_MAX)))) break;
    if (left.count() <= 0)
      return execution::failed(who + " did not exit within " +
                               std::to_string(wait_us / 1000) + " ms");
  }
  execution e;
  e.ok = true;
  e.effect["pid"] = std::to_string(p.pid);
  return e;
}

execution start(const sim::start_args& p, const start_limits& limits) {
  const std::string& cwd =
      p.working_directory.empty() ? limits.default_cwd : p.working_directory;
  std::string what = "cannot start " + printable(p.path);

  // Everything the child uses is built before fork (see exec_child).
  std::vector<std::string> argv_text;
  argv_text.reserve(p.args.size() + 1);
  argv_text.push_back(p.path);
  argv_text.insert(argv_text.end(), p.args.begin(), p.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  static char path_env[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  char* envp[] = {path_env, nullptr};

  int fds[2];
  auto make_pipe = [&](fd_guard& r, fd_guard& w) {
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    r.reset(fds[0]);
    w.reset(fds[1]);
    return true;
  };
  output out, err;
  fd_guard out_w, err_w, report_r, report_w;
  if (!make_pipe(out.fd, out_w) || !make_pipe(err.fd, err_w) ||
      !make_pipe(report_r, report_w))
    return execution::failed(what + ": pipe: " + errno_text(errno));
  fd_guard devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (devnull.get() < 0)
    return execution::failed(what + ": /dev/null: " + errno_text(errno));

  long fd_limit = ::sysconf(_SC_OPEN_MAX);
  detail::start_test_hooks hooks = detail::start_hooks;

  // No handler of the agent may run in the child before exec_child resets them.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ::fork();
  if (pid == 0)
    exec_child(p.path.c_str(), argv.data(), envp, cwd.c_str(), devnull.get(), out_w.get(),
               err_w.get(), report_w.get(), fd_limit, hooks);
  int fork_err = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return execution::failed(what + ": fork: " + errno_text(fork_err));
  // Also here, so the group exists for a timeout's kill whoever runs first.
  ::setpgid(pid, pid);
  out_w.reset();
  err_w.reset();
  report_w.reset();
  devnull.reset();

  // The child is not reaped before the end (waitid with WNOWAIT only looks): while it
  // is an unreaped zombie its pid, and so the id of its group, cannot be reused, which
  // keeps the kills on a timeout on what we started. That holds while nothing else
  // reaps our children: no other thread waits for any child, and SIGCHLD is not
  // ignored (the kernel would reap it at exit). Without a pidfd the loop polls.
  fd_guard child(hooks.no_pidfd ? -1
                                : static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  // Whether the child is not reaped yet (running or a zombie).
  auto unreaped = [&]() {
    siginfo_t info{};
    int r;
    do
      r = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    while (r < 0 && errno == EINTR);
    return r == 0;
  };
  bool exited = false, reaped = false;
  int status = 0;
  std::string report;
  auto deadline =
      steady::now() + std::chrono::microseconds(std::max<int64_t>(limits.timeout_us, 0));
  char buf[65536];
  // Reads what is there; false at EOF or on an error.
  auto drain = [&](int fd, auto&& keep) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) return errno == EINTR || errno == EAGAIN;
    if (n == 0) return false;
    keep(static_cast<std::size_t>(n));
    return true;
  };
  auto keep_into = [&](output& o) {
    return [&](std::size_t n) {
      std::size_t room = limits.max_output - std::min(limits.max_output, o.kept.size());
      std::size_t take = std::min(room, n);
      o.kept.append(buf, take);
      o.dropped += n - take;
    };
  };

  bool timed_out = false;
  int poll_err = 0;
  while (out.fd.get() >= 0 || err.fd.get() >= 0 || report_r.get() >= 0 || !exited) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfds[4];
    fd_guard* owners[4];
    nfds_t n = 0;
    for (fd_guard* g : {&out.fd, &err.fd, &report_r, &child}) {
      if (g->get() < 0 || (g == &child && exited)) continue;
      pfds[n] = {g->get(), POLLIN, 0};
      owners[n++] = g;
    }
    int timeout = static_cast<int>(std::min<int64_t>(left.count(), INT_MAX));
    if (child.get() < 0 && !exited) timeout = std::min(timeout, 10);
    int rc = ::poll(pfds, n, timeout);
    if (rc < 0 && errno != EINTR) {
      poll_err = errno;
      break;
    }
    for (nfds_t i = 0; rc > 0 && i < n; ++i) {
      if (pfds[i].revents == 0) continue;
      fd_guard* g = owners[i];
      if (g == &child) {
        exited = true;
      } else if (g == &report_r) {
        if (!drain(g->get(), [&](std::size_t k) {
              report.append(buf, std::min<std::size_t>(k, 64));
            }))
          g->reset();
      } else {
        output& o = g == &out.fd ? out : err;
        if (!drain(g->get(), keep_into(o))) g->reset();
      }
    }
    if (child.get() < 0 && !exited) {
      // Observes the exit without reaping (see above). ECHILD: something else reaped
      // it (SIGCHLD ignored); nothing to wait for.
      siginfo_t info{};
      int r = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
      if (r == 0 && info.si_pid == pid) exited = true;
      if (r < 0 && errno != EINTR) exited = true;
    }
  }

  if (timed_out || poll_err) {
    // Only while the child is unreaped are its pid and group id surely still ours;
    // once something else reaped it, either may name another process by now, and the
    // group (if any member is left) is not killed.
    if (child.get() >= 0)
      ::syscall(SYS_pidfd_send_signal, child.get(), SIGKILL, nullptr, 0);
    if (unreaped()) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL); // in case the group was never made
    }
  }
  int wait_err = 0;
  if (!reaped) {
    pid_t r;
    do
      r = ::waitpid(pid, &status, 0);
    while (r < 0 && errno == EINTR);
    if (r == pid)
      reaped = true;
    else
      wait_err = errno;
  }
  if (timed_out)
    return execution::failed(
        "timed out after " + std::to_string(limits.timeout_us / 1000) +
        " ms; process group killed" + read_so_far("stdout", out.kept) +
        read_so_far("stderr", err.kept));
  if (poll_err)
    return execution::failed("poll: " + errno_text(poll_err) + "; process group killed");
  if (report.size() >= 2 * sizeof(int)) {
    int msg[2];
    std::memcpy(msg, report.data(), sizeof msg);
    if (msg[0] == stage_chdir)
      return execution::failed(what + ": working directory " + printable(cwd) + ": " +
                               errno_text(msg[1]));
    if (msg[0] == stage_descriptors)
      return execution::failed(what +
                               ": cannot set close-on-exec on the agent's "
                               "descriptors: " +
                               errno_text(msg[1]));
    return execution::failed(what + ": " + errno_text(msg[1]));
  }
  if (!reaped)
    return execution::failed("lost the exit status of process " + std::to_string(pid) +
                             ": " + errno_text(wait_err));

  execution e;
  e.ok = true;
  e.effect["pid"] = std::to_string(pid);
  if (WIFSIGNALED(status)) {
    e.effect["signal"] = std::to_string(WTERMSIG(status));
    e.effect["exit_code"] = std::to_string(128 + WTERMSIG(status));
  } else {
    e.effect["exit_code"] = std::to_string(WEXITSTATUS(status));
  }
  e.effect["stdout"] = utf8_or_question(out.kept, out.dropped > 0);
  e.effect["stderr"] = utf8_or_question(err.kept, err.dropped > 0);
  if (out.dropped > 0) e.effect["stdout_dropped"] = std::to_string(out.dropped);
  if (err.dropped > 0) e.effect["stderr_dropped"] = std::to_string(err.dropped);
  return e;
}

} // namespace parry::real
