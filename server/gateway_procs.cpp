#include "server/gateway_procs.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstring>
#include <stdexcept>

#include <spdlog/spdlog.h>

extern char** environ;

namespace parry {

namespace {

constexpr std::chrono::milliseconds max_backoff{5000};
// A gateway that ran this long before it ended is restarted at once.
constexpr std::chrono::seconds healthy_run{30};

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string{"killed by "} + strsignal(WTERMSIG(status));
  return "ended";
}

} // namespace

gateway_procs::gateway_procs(std::vector<std::vector<std::string>> argv,
                             std::function<void(int)> ended)
    : argv_(std::move(argv)), ended_(std::move(ended)), procs_(argv_.size()) {}

gateway_procs::~gateway_procs() {
  stop();
}

pid_t gateway_procs::spawn(std::size_t i) {
  std::vector<char*> args;
  for (auto& a : argv_[i])
    args.push_back(a.data());
  args.push_back(nullptr);
  // parryd blocks SIGTERM, SIGINT and SIGHUP in every thread (a signal thread takes
  // them); a child would inherit that mask through exec and never hear the SIGTERM
  // of PR_SET_PDEATHSIG, outliving a parryd killed -9 on the port it holds. The
  // child starts with nothing blocked and default dispositions.
  posix_spawnattr_t attr;
  ::posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE})
    sigaddset(&defaults, sig);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, args[0], nullptr, &attr, args.data(), environ);
  ::posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    spdlog::error("bus: cannot start gateway {} ({}): {}", i, argv_[i][0],
                  std::strerror(rc));
    return -1;
  }
  return pid;
}

void gateway_procs::start() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    for (std::size_t i = 0; i < procs_.size(); ++i) {
      procs_[i].pid = spawn(i);
      if (procs_[i].pid < 0)
        throw std::runtime_error("cannot start the gateway program " + argv_[i][0]);
      procs_[i].started = std::chrono::steady_clock::now();
    }
  }
  thread_ = std::thread([this] { supervise(); });
}

std::vector<pid_t> gateway_procs::pids() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<pid_t> out;
  for (const auto& p : procs_)
    out.push_back(p.pid);
  return out;
}

void gateway_procs::supervise() {
  std::unique_lock<std::mutex> lock{mtx_};
  while (!stopping_) {
    // Children are reaped by pid: parryd has no other children to steal from.
    auto now = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < procs_.size(); ++i) {
      auto& p = procs_[i];
      if (p.pid > 0) {
        int status = 0;
        if (::waitpid(p.pid, &status, WNOHANG) != p.pid) continue;
        p.backoff = now - p.started >= healthy_run ? std::chrono::milliseconds{100}
                                                   : std::min(p.backoff * 2, max_backoff);
        spdlog::warn("bus: gateway {} (pid {}) {}; restarting it in {} ms", i, p.pid,
                     describe(status), p.backoff.count());
        p.pid = -1;
        p.restart_at = now + p.backoff;
        lock.unlock();
        ended_(static_cast<int>(i));
        lock.lock();
        if (stopping_) break;
      } else if (now >= p.restart_at) {
        p.pid = spawn(i);
        p.started = now;
        if (p.pid > 0)
          ++restarts_;
        else
          p.restart_at = now + max_backoff;
      }
    }
    cv_.wait_for(lock, std::chrono::milliseconds{100});
  }
}

void gateway_procs::stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& p : procs_)
    if (p.pid > 0) ::kill(p.pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + grace;
  for (auto& p : procs_) {
    while (p.pid > 0) {
      int status = 0;
      if (::waitpid(p.pid, &status, WNOHANG) == p.pid) {
        p.pid = -1;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        ::kill(p.pid, SIGKILL);
        ::waitpid(p.pid, &status, 0);
        p.pid = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
  }
}

} // namespace parry
