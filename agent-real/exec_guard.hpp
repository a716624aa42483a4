#pragma once

// fanotify on the guarded mounts, in two groups with a thread each:
//
// - a permission group (FAN_CLASS_CONTENT, unlimited queue) marked with
//   FAN_OPEN_EXEC_PERM only: its thread denies exec of any file whose SHA-256 is on
//   the prevent list. Nothing else runs on it, so notifications can neither delay an
//   exec nor overflow the queue its permission events wait in.
// - a notification group (FAN_CLASS_NOTIF, bounded queue) marked with
//   FAN_CLOSE_WRITE | FAN_OPEN_EXEC, created only when the IOC list is non-empty: its
//   thread checks files against the IOC list and reports hits to the detection
//   callback. An overflow loses notifications (counted), never exec verdicts.
//
// Hashes are cached per thread by device, inode, size, mtime and ctime (mtime can be
// set by the file's owner, ctime cannot), and only once the coarse clock has moved
// past the file's ctime, so a later change cannot reuse the same stamp.
//
// Scope limits, by design:
// - A file larger than `max_hash_bytes` is not hashed: its exec is allowed (counted
//   in `too_large`) and it is not checked against the IOC list (`ioc_skipped`). The
//   prevent list cannot stop such a file.
// - A file that could not be read is allowed (counted in `errors`): a broken guard
//   must not stop every exec on the host.
// - A file that changes while it is hashed is hashed once more; if it changes again
//   the exec is denied (counted in `unstable`).
// - The verdict covers the content at hash time. A writer that keeps the file open
//   can still change it between the verdict and the moment exec takes write access
//   away; fanotify offers no way to close that window.
//
// Marks are placed on the configured mounts only (FAN_MARK_MOUNT), never on the
// host's whole file system.

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
  uint64_t exec_denied = 0;  ///< Of those, denied (prevented hash or `unstable`).
  uint64_t cache_hits = 0;
  uint64_t ioc_hits = 0;
  uint64_t errors = 0;      ///< Events that could not be hashed (allowed, counted).
  uint64_t too_large = 0;   ///< Execs allowed unchecked: file above `max_hash_bytes`.
  uint64_t unstable = 0;    ///< Execs denied: file changed twice while being hashed.
  uint64_t ioc_skipped = 0; ///< Notifications not checked: too large or changing.
  uint64_t ioc_lost = 0;    ///< Notification queue overflows (notifications lost).
};

class exec_guard {
public:
  /// Default for `max_hash_bytes`: 256 MiB.
  static constexpr uint64_t default_max_hash_bytes = uint64_t{256} << 20;

  /// Marks `mounts` (each a path; the mount that holds it is marked). `on_ioc`
  /// runs on the notification thread for each IOC hit (must be quick and
  /// thread-safe). Files above `max_hash_bytes` are never hashed (see the scope
  /// limits above). Throws std::runtime_error naming the mount or call that failed.
  exec_guard(std::vector<std::string> mounts, std::set<std::string> iocs,
             std::function<void(const ioc_hit&)> on_ioc,
             uint64_t max_hash_bytes = default_max_hash_bytes);
  /// Stops both threads and closes both fanotify groups: every mark goes with them,
  /// and pending permission events are allowed by the kernel.
  ~exec_guard();

  /// Replaces the prevent list (lower-case hex). The hash cache is kept: it maps a
  /// file's identity (device, inode, size, mtime, ctime) to its hash, which the list
  /// does not change, so the next exec is decided against the new list without
  /// rehashing.
  void set_prevented(std::set<std::string> hashes);
  /// Counters so far.
  guard_stats stats() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace parry::real
