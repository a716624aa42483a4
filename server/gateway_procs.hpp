#pragma once

// parryd's gateway processes (bus_gateways > 0): started with parryd, restarted
// when one ends (after 0.1 s, doubling to 5 s while it keeps ending within 30 s),
// stopped with parryd. Each is told parryd's pid and ends with it.

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace parry {

class gateway_procs {
public:
  /// `argv[i]` starts gateway i; `ended(i)` is called on the supervising thread
  /// each time gateway i has ended.
  gateway_procs(std::vector<std::vector<std::string>> argv,
                std::function<void(int)> ended);
  ~gateway_procs();
  gateway_procs(const gateway_procs&) = delete;
  gateway_procs& operator=(const gateway_procs&) = delete;

  /// Starts every gateway; throws when one cannot be started at all.
  void start();
  /// SIGTERM to each, SIGKILL to any still running after `grace`; idempotent.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds{5});

  uint64_t restarts() const { return restarts_.load(); }
  /// The pid of each gateway now (-1 while it is being restarted).
  std::vector<pid_t> pids() const;

private:
  struct proc {
    pid_t pid = -1;
    std::chrono::steady_clock::time_point started{};
    std::chrono::steady_clock::time_point restart_at{};
    std::chrono::milliseconds backoff{100};
  };
  pid_t spawn(std::size_t i);
  void supervise();

  std::vector<std::vector<std::string>> argv_;
  std::function<void(int)> ended_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<proc> procs_; // guarded by mtx_
  bool stopping_ = false;   // guarded by mtx_
  std::atomic<uint64_t> restarts_{0};
  std::thread thread_;
};

} // namespace parry
