#pragma once

// fanotify on the guarded mounts: FAN_OPEN_EXEC_PERM events are answered by a thread
// of their own, denying exec of any file whose SHA-256 is on the prevent list
// (hashes cached by device, inode, modification time and size), and FAN_CLOSE_WRITE /
// FAN_OPEN_EXEC notifications are checked against the IOC list, reported to the
// detection callback. Marks are placed on the configured mounts only
// (FAN_MARK_MOUNT), never on the host's whole file system.

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace parry::real {

/// A file event on a guarded mount whose hash is on the IOC list.
struct ioc_hit {
  std::string kind;   ///< `written` (close after write) or `executed`.
  std::string path;   ///< Resolved from the event's descriptor.
  std::string sha256; ///< Lower-case hex.
  uint64_t size = 0;
  uint32_t pid = 0; ///< The process that wrote or executed it.
  int64_t time = 0; ///< Microseconds since the epoch.
};

/// Counters, readable from any thread.
struct guard_stats {
  uint64_t exec_checked = 0; ///< Permission events answered.
  uint64_t exec_denied = 0;  ///< Of those, denied.
  uint64_t cache_hits = 0;
  uint64_t ioc_hits = 0;
  uint64_t errors = 0; ///< Events that could not be hashed (allowed, counted).
};

class exec_guard {
public:
  /// Marks `mounts` (each a path; the mount that holds it is marked). `on_ioc`
  /// runs on the guard's thread for each IOC hit (must be quick and thread-safe).
  /// Throws std::runtime_error naming the mount or call that failed.
  exec_guard(std::vector<std::string> mounts, std::set<std::string> iocs,
             std::function<void(const ioc_hit&)> on_ioc);
  /// Stops the thread and closes the fanotify group: every mark goes with it.
  ~exec_guard();

  /// Replaces the prevent list (lower-case hex). The hash cache is kept: it maps a
  /// file's identity (device, inode, mtime, size) to its hash, which the list does not
  /// change, so the next exec is decided against the new list without rehashing.
  void set_prevented(std::set<std::string> hashes);
  /// Counters so far.
  guard_stats stats() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace parry::real
