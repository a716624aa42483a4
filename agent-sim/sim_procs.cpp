#include "agent-sim/sim_procs.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <stdexcept>
#include <string>

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <zmq.h>

namespace parry::sim {

namespace {

constexpr std::size_t spare_fds = 64;

/// `base` has no CURVE keys: the child's share of `keys` (by index of the whole run)
/// is copied, not the whole set.
int run_child(const runner_config& base, const std::vector<bus::curve_key_pair>& keys,
              const std::vector<scenario>& scenarios, share sh,
              const std::atomic<bool>& stop, pid_t parent) {
  // A child whose parent died (kill -9) must not go on alone; a parent that died
  // before the mark was set is seen here.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) return 1;
  runner_config cfg = base;
  cfg.first = base.first + sh.first;
  cfg.endpoints = sh.count;
  if (!keys.empty()) {
    auto from = keys.begin() + static_cast<std::ptrdiff_t>(sh.first);
    cfg.link.curve_keys.assign(from, from + static_cast<std::ptrdiff_t>(sh.count));
  }
  try {
    // Never destroyed: the child ends with _Exit right after, and the kernel closes
    // its thousands of sockets at once, where closing them one by one through
    // ZeroMQ's reaper took more than 10 s at 3,300 connected endpoints.
    auto* runner = new sim_runner(std::move(cfg), scenarios);
    runner->run(stop);
  } catch (const std::exception& e) {
    spdlog::error("endpoints {} .. {}: {}", base.first + sh.first,
                  base.first + sh.first + sh.count - 1, e.what());
    return 1;
  }
  return 0;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

} // namespace

std::size_t endpoints_per_process_limit() {
  rlimit rl{};
  std::size_t by_fds = 4096;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rlim_t hard = rl.rlim_max == RLIM_INFINITY ? rlim_t{1} << 20 : rl.rlim_max;
    by_fds = hard > spare_fds
                 ? static_cast<std::size_t>(hard - spare_fds) / fds_per_session
                 : 1;
  }
  void* ctx = zmq_ctx_new();
  int sockets = ctx ? zmq_ctx_get(ctx, ZMQ_SOCKET_LIMIT) : 1024;
  if (ctx) zmq_ctx_term(ctx);
  std::size_t by_zmq =
      sockets > 16 ? static_cast<std::size_t>(sockets - 16) / zmq_sockets_per_session : 1;
  return std::max<std::size_t>(1, std::min(by_fds, by_zmq));
}

std::size_t processes_needed(std::size_t endpoints) {
  std::size_t per = endpoints_per_process_limit();
  return std::max<std::size_t>(1, (endpoints + per - 1) / per);
}

share share_of(std::size_t total, std::size_t procs, std::size_t k) {
  std::size_t base = total / procs, extra = total % procs;
  return {k * base + std::min(k, extra), base + (k < extra ? 1 : 0)};
}

int run_processes(runner_config cfg, const std::vector<scenario>& scenarios,
                  std::size_t procs, const std::atomic<bool>& stop) {
  if (procs == 0 || procs > cfg.endpoints)
    throw std::invalid_argument("--procs must be between 1 and the number of endpoints");
  std::vector<bus::curve_key_pair> keys;
  keys.swap(cfg.link.curve_keys); // each child copies its share only
  if (!keys.empty() && keys.size() != cfg.endpoints)
    throw std::invalid_argument("a CURVE key pair is needed for every endpoint");
  // Signals are taken with sigtimedwait: none is lost between a look and a wait.
  sigset_t wanted, old;
  sigemptyset(&wanted);
  for (int s : {SIGCHLD, SIGTERM, SIGINT})
    sigaddset(&wanted, s);
  if (sigprocmask(SIG_BLOCK, &wanted, &old) != 0)
    throw std::runtime_error(std::string("sigprocmask: ") + std::strerror(errno));

  std::vector<pid_t> kids(procs, -1);
  std::size_t alive = 0;
  bool stopping = false;
  int result = 0;
  // Children that do not end within this of SIGTERM get SIGKILL.
  constexpr auto stop_grace = std::chrono::seconds{10};
  std::chrono::steady_clock::time_point kill_at{};
  auto stop_all = [&] {
    stopping = true;
    kill_at = std::chrono::steady_clock::now() + stop_grace;
    for (pid_t p : kids)
      if (p > 0) ::kill(p, SIGTERM);
  };
  std::fflush(nullptr); // nothing buffered is written twice
  std::cout.flush();
  const pid_t self = ::getpid();
  for (std::size_t k = 0; k < procs && !stop.load(); ++k) {
    pid_t pid = ::fork();
    if (pid == 0) {
      sigprocmask(SIG_SETMASK, &old, nullptr);
      int rc =
          run_child(cfg, keys, scenarios, share_of(cfg.endpoints, procs, k), stop, self);
      std::fflush(nullptr);
      std::_Exit(rc);
    }
    if (pid < 0) {
      spdlog::error("cannot start process {} of {}: {}", k + 1, procs,
                    std::strerror(errno));
      result = 1;
      stop_all();
      break;
    }
    kids[k] = pid;
    ++alive;
  }
  if (stop.load() && !stopping) stop_all();

  while (alive > 0) {
    timespec second{1, 0};
    siginfo_t info{};
    int sig = sigtimedwait(&wanted, &info, &second);
    if ((sig == SIGTERM || sig == SIGINT || stop.load()) && !stopping) stop_all();
    if (stopping && std::chrono::steady_clock::now() >= kill_at) {
      for (pid_t p : kids)
        if (p > 0) {
          spdlog::error("process {} did not end {} s after SIGTERM: SIGKILL", p,
                        stop_grace.count());
          ::kill(p, SIGKILL);
        }
      result = 1;
      kill_at = std::chrono::steady_clock::time_point::max();
    }
    // Reap whoever ended (SIGCHLD, or a timeout that raced one).
    for (;;) {
      int status = 0;
      pid_t p = ::waitpid(-1, &status, WNOHANG);
      if (p <= 0) break;
      auto it = std::find(kids.begin(), kids.end(), p);
      if (it == kids.end()) continue;
      std::size_t k = static_cast<std::size_t>(it - kids.begin());
      *it = -1;
      --alive;
      share sh = share_of(cfg.endpoints, procs, k);
      bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!stopping) {
        spdlog::error("the process of endpoints {} .. {} ended by itself ({}): stopping "
                      "the others",
                      cfg.first + sh.first, cfg.first + sh.first + sh.count - 1,
                      describe(status));
        result = 1;
        stop_all();
      } else if (!clean) {
        spdlog::error("the process of endpoints {} .. {} ended with {}",
                      cfg.first + sh.first, cfg.first + sh.first + sh.count - 1,
                      describe(status));
        result = 1;
      }
    }
  }
  sigprocmask(SIG_SETMASK, &old, nullptr);
  return result;
}

} // namespace parry::sim
