#pragma once

// Processes on the real endpoint, read from /proc and acted on with pidfds: what a
// process is (for terminate's identity check and for incident chains), terminating
// exactly the detected process, and starting one without a shell.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "agent-sim/action_params.hpp"
#include "agent-sim/executor.hpp"

namespace parry::real {

/// One process as /proc shows it.
struct proc_entry {
  uint32_t pid = 0;
  uint32_t ppid = 0;
  int64_t start_time = 0; ///< Microseconds since the epoch (boot time + stat field 22).
  /// readlink /proc/<pid>/exe without a trailing " (deleted)"; "" for kernel threads
  /// and where not permitted. The path's raw bytes, possibly not UTF-8: send it as
  /// utf8_sanitized(image), which is what terminate compares with.
  std::string image;
  std::string cmdline; ///< argv joined by spaces, printable, at most 4 KiB.
  uint32_t uid = 0;    ///< Real uid.
  std::string user;    ///< User name of `uid`, or its number.
};

/// Microseconds since the epoch of the boot (wall clock minus CLOCK_BOOTTIME), read
/// once per process, so every start time this process reports is computed the same
/// way; another process's reading differs by the clock's adjustments since, well
/// under the tolerance below.
int64_t boot_time_us();

/// The process `pid`, or nothing when it does not exist (or vanished while read).
std::optional<proc_entry> read_process(uint32_t pid);

/// How close a reported start time must be to the one read now: /proc counts in
/// clock ticks (10 ms), and a restarted agent reads the boot time again. A wall clock
/// stepped by more than this between detection and a restarted agent's terminate
/// makes it refuse (safe: it never hits the wrong process).
constexpr int64_t start_time_tolerance_us = 100'000;

/// terminate_process: opens a pidfd, checks that the process behind it still has
/// `start_time` (within the tolerance) and, when `image` is given, that image (compared
/// with utf8_sanitized() of the current one, as detection reports it: paths differing
/// only in ill-formed bytes compare equal; the start time still tells processes apart),
/// then SIGKILLs it through the pidfd (so a pid reused meanwhile is never hit) and waits
/// up to `wait_us` for it to be gone. Effect: `pid`. Failures: `no process <pid>`
/// (already gone, or exited and not yet reaped), `process <pid> is not the detected one
/// (start time differs)` / `(image differs)`, `process <pid> is the agent itself`,
/// `process <pid> did not exit within <n> ms`, or the errno. Never reaps the process:
/// that is its parent's business.
sim::execution terminate(const sim::terminate_args& p, int64_t wait_us = 5'000'000);

/// Limits of start_process.
struct start_limits {
  int64_t timeout_us = 10'000'000; ///< After it the process group is killed: failed.
  std::size_t max_output = 4096;   ///< Bytes kept of each of stdout and stderr.
  std::string default_cwd = "/";   ///< When the command names no working directory.
};

/// start_process: fork + execve of `p.path` with argv `path, args...`, in
/// `p.working_directory` (or the default), in a new process group, stdin from
/// /dev/null, the agent's environment reduced to PATH=/usr/sbin:/usr/bin:/sbin:/bin,
/// descriptors other than 0-2 closed (close-on-exec through close_range, or on kernels
/// before 5.11 each one listed in /proc/self/fd, or else every number below the limit),
/// signal dispositions and mask at their defaults.
/// Waits for it to exit and for its stdout and stderr to end (a background process
/// that keeps them open counts as still running), reading both (each cut to `max_output`,
/// the rest drained and counted). Effect: `pid`, `exit_code` (128 + the signal when a
/// signal ended it, then also `signal`), `stdout`, `stderr` (newlines kept; a byte of
/// ill-formed UTF-8 becomes '?', a character broken by the cut is dropped), and
/// `stdout_dropped` / `stderr_dropped` (bytes beyond `max_output`) when there were any.
/// Failures: the working directory or executable is missing or not executable (`cannot
/// start <path>: <errno text>`, or `cannot start <path>: working directory <dir>: <errno
/// text>`, or `cannot start <path>: cannot set close-on-exec on the agent's descriptors:
/// <errno text>`, told by the child through a close-on-exec pipe), or the timeout
/// (`timed out after <n> ms; process group killed`), with what was read so far in the
/// error. The process is reaped only at the end, so the timeout's kills never reach a
/// reused pid or group, provided nothing else reaps the agent's children (SIGCHLD must
/// not be ignored, no thread may wait for any child).
sim::execution start(const sim::start_args& p, const start_limits& limits);

namespace detail {
/// For tests only: take the fallbacks of start that this kernel would not need.
struct start_test_hooks {
  bool skip_close_range = false; ///< As if close_range(CLOSE_RANGE_CLOEXEC) failed.
  bool skip_fd_listing = false;  ///< As if /proc/self/fd could not be listed.
  bool no_pidfd = false;         ///< As if pidfd_open failed.
};
extern start_test_hooks start_hooks;
} // namespace detail

} // namespace parry::real
