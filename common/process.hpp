#pragma once

// Child processes for integration tests and the benchmark: start a program with its
// output in a file, wait (bounded) for a line in that output, stop it.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace parry {

/// Calls `pred` every `interval` until it holds or `timeout` passes; returns whether it
/// held. For waits on other processes, where nothing can be waited on directly.
template <class Pred>
bool poll_until(Pred pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval = std::chrono::milliseconds{50}) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(interval);
  }
  return pred();
}

/// Raises this process's soft open-files limit to its hard limit (an unlimited hard
/// limit counts as 2^20) and answers the soft limit then in force (1024 if unknown).
std::size_t raise_open_files_limit();

/// The pids /proc lists as `pid`'s children (of its main thread); empty when it has
/// none or is gone.
std::vector<pid_t> children_of(pid_t pid);

class child_process {
public:
  /// Starts `argv[0]` with `argv`, the current environment plus `env`, and stdout and
  /// stderr appended to `log_file`. Throws std::runtime_error if it cannot start.
  child_process(std::vector<std::string> argv,
                const std::map<std::string, std::string>& env, std::string log_file);
  ~child_process();

  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  /// Polls the log until a line contains `needle`; returns that line, or nothing when
  /// `timeout` passes or the process exits first.
  std::optional<std::string> wait_for_line(const std::string& needle,
                                           std::chrono::milliseconds timeout);

  /// Sends `sig` and waits (bounded) for the exit; SIGKILL if it does not exit in time.
  /// Returns the exit status as waitpid reports it, or -1 if already reaped.
  int stop(int sig, std::chrono::milliseconds grace = std::chrono::seconds{10});

  /// Waits (bounded) for the process to exit by itself; returns its exit code, or -1
  /// if it had to be killed after `timeout` or died from a signal.
  int wait(std::chrono::milliseconds timeout);

  /// True while the process runs.
  bool running();

  pid_t pid() const { return pid_; }
  const std::string& log_file() const { return log_; }

private:
  pid_t pid_ = -1;
  std::string log_;
};

} // namespace parry
