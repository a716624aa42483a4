#include "agent-real/exec_guard.hpp"

#include "common/crypto.hpp"
#include "common/time.hpp"

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

namespace parry::real {

namespace {

constexpr uint64_t permission_events = FAN_OPEN_EXEC_PERM;
constexpr uint64_t notification_events = FAN_CLOSE_WRITE | FAN_OPEN_EXEC;
// Enough for a busy build tree; clearing when full is simpler than LRU and a miss
// costs one hash.
constexpr std::size_t cache_limit = 4096;
constexpr std::size_t hash_chunk = 64 * 1024;
// The kernel opens a descriptor for every event it copies out: a small buffer keeps
// that to about 170 per read (24-byte records), far below the process's limit.
constexpr std::size_t event_buffer_size = 4 * 1024;
// A hash is cached only once the coarse clock (which stamps ctime) is this far past
// the file's ctime: any later change then gets a different ctime. One clock tick is
// at most 10 ms; the rest is margin for fine-grained (multigrain) stamps.
constexpr int64_t settle_ns = 20'000'000;

std::string errno_text(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

/// What makes a file's content the same as last time we hashed it. mtime can be set
/// back by the file's owner (utimensat); ctime cannot, and every write moves it.
struct file_key {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_sec = 0;
  int64_t mtime_nsec = 0;
  int64_t ctime_sec = 0;
  int64_t ctime_nsec = 0;
  bool operator==(const file_key& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime_sec == o.mtime_sec &&
           mtime_nsec == o.mtime_nsec && ctime_sec == o.ctime_sec &&
           ctime_nsec == o.ctime_nsec;
  }
};

file_key key_of(const struct stat& st) {
  return {st.st_dev,          st.st_ino,         st.st_size,        st.st_mtim.tv_sec,
          st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec};
}

struct file_key_hash {
  std::size_t operator()(const file_key& k) const {
    std::size_t h = std::hash<uint64_t>{}(k.ino);
    for (uint64_t v :
         {static_cast<uint64_t>(k.dev), static_cast<uint64_t>(k.size),
          static_cast<uint64_t>(k.mtime_sec), static_cast<uint64_t>(k.mtime_nsec),
          static_cast<uint64_t>(k.ctime_sec), static_cast<uint64_t>(k.ctime_nsec)})
      h ^= std::hash<uint64_t>{}(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
  }
};

/// True when the coarse clock is far enough past the file's ctime that a change from
/// now on cannot carry the same ctime.
bool settled(const struct stat& st) {
  timespec now{};
  if (clock_gettime(CLOCK_REALTIME_COARSE, &now) != 0) return false;
  int64_t now_ns = int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
  int64_t ctime_ns = int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec;
  return now_ns - ctime_ns > settle_ns;
}

/// How looking up a file's hash went.
enum class outcome {
  ok,        ///< `hex` holds the content's hash.
  too_large, ///< Above `max_hash_bytes`: not read.
  unstable,  ///< Changed while hashed, twice in a row.
  failed,    ///< Could not be read (counted in `errors`).
};

struct hash_result {
  outcome what = outcome::failed;
  std::string hex;
  uint64_t size = 0;
};

/// One thread's hashing state; touched by that thread only.
struct hasher {
  std::unordered_map<file_key, std::string, file_key_hash> cache;
  std::vector<unsigned char> buffer = std::vector<unsigned char>(hash_chunk);
};

} // namespace

struct exec_guard::impl {
  std::set<std::string> iocs;
  std::function<void(const ioc_hit&)> on_ioc;
  uint64_t max_hash_bytes = default_max_hash_bytes;
  pid_t self = getpid();
  int stop_fd = -1;
  int permission_fd = -1;   ///< FAN_CLASS_CONTENT: FAN_OPEN_EXEC_PERM only.
  int notification_fd = -1; ///< FAN_CLASS_NOTIF: IOC checks; -1 without IOCs.
  std::thread permission_thread;
  std::thread notification_thread;
  hasher permission_hasher;
  hasher notification_hasher;

  std::mutex prevented_mutex;
  std::set<std::string> prevented;

  std::atomic<uint64_t> exec_checked{0};
  std::atomic<uint64_t> exec_denied{0};
  std::atomic<uint64_t> cache_hits{0};
  std::atomic<uint64_t> ioc_hits{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> too_large{0};
  std::atomic<uint64_t> unstable{0};
  std::atomic<uint64_t> ioc_skipped{0};
  std::atomic<uint64_t> ioc_lost{0};

  /// Stops and joins the threads, then closes the groups: the marks go with them and
  /// the kernel allows whatever permission event is still pending.
  ~impl() {
    if (stop_fd >= 0) {
      // One increment cannot overflow the eventfd's counter, so this write cannot
      // fail; the counter is never read, so both threads see it.
      uint64_t one = 1;
      [[maybe_unused]] ssize_t n = write(stop_fd, &one, sizeof one);
    }
    if (permission_thread.joinable()) permission_thread.join();
    if (notification_thread.joinable()) notification_thread.join();
    if (permission_fd >= 0) close(permission_fd);
    if (notification_fd >= 0) close(notification_fd);
    if (stop_fd >= 0) close(stop_fd);
  }

  /// Streams the first `size` bytes of the file behind `fd` through SHA-256 with
  /// pread, leaving its offset alone. `complete` tells whether all `size` bytes were
  /// there. Nothing on a read or digest failure.
  std::optional<std::string> hash_fd(hasher& h, int fd, off_t size, bool* complete) {
    try {
      sha256_stream digest;
      off_t offset = 0;
      while (offset < size) {
        std::size_t want =
            std::min(h.buffer.size(), static_cast<std::size_t>(size - offset));
        ssize_t n = pread(fd, h.buffer.data(), want, offset);
        if (n < 0) {
          if (errno == EINTR) continue;
          return {};
        }
        if (n == 0) break;
        digest.update(h.buffer.data(), static_cast<std::size_t>(n));
        offset += n;
      }
      *complete = offset == size;
      return digest.hex();
    } catch (const std::runtime_error&) { // OpenSSL failed: not hashed
      return {};
    }
  }

  /// The file's hash, from `h`'s cache when its stamp is unchanged. The file is
  /// stat'ed before and after hashing; a file whose stamp moved in between is hashed
  /// once more, and reported `unstable` if it moved again. (Without fine-grained
  /// timestamps a change within the same clock tick as the last one goes unseen:
  /// the same kind of window as the one between verdict and exec, see the header.)
  hash_result hash_of(hasher& h, int fd) {
    struct stat before {};
    if (fstat(fd, &before) != 0) {
      errors++;
      return {};
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      uint64_t size = static_cast<uint64_t>(before.st_size);
      if (before.st_size < 0 || size > max_hash_bytes)
        return {outcome::too_large, {}, size};
      file_key key = key_of(before);
      if (auto it = h.cache.find(key); it != h.cache.end()) {
        cache_hits++;
        return {outcome::ok, it->second, size};
      }
      bool complete = false;
      std::optional<std::string> hex = hash_fd(h, fd, before.st_size, &complete);
      struct stat after {};
      if (!hex || fstat(fd, &after) != 0) {
        errors++;
        return {};
      }
      if (complete && key_of(after) == key) {
        if (settled(after)) {
          if (h.cache.size() >= cache_limit) h.cache.clear();
          h.cache.emplace(key, *hex);
        }
        return {outcome::ok, std::move(*hex), size};
      }
      before = after;
    }
    return {outcome::unstable, {}, static_cast<uint64_t>(before.st_size)};
  }

  uint32_t decide_exec(int fd) {
    hash_result r = hash_of(permission_hasher, fd);
    switch (r.what) {
    case outcome::ok: {
      std::lock_guard<std::mutex> lock(prevented_mutex);
      return prevented.count(r.hex) ? FAN_DENY : FAN_ALLOW;
    }
    case outcome::too_large:
      too_large++;
      return FAN_ALLOW;
    case outcome::unstable:
      unstable++;
      return FAN_DENY;
    case outcome::failed:
      break;
    }
    return FAN_ALLOW;
  }

  void respond(int fd, uint32_t verdict) {
    // Counted before the answer so that whoever sees the exec return sees the count.
    exec_checked++;
    if (verdict == FAN_DENY) exec_denied++;
    struct fanotify_response r {};
    r.fd = fd;
    r.response = verdict;
    ssize_t n;
    do {
      n = write(permission_fd, &r, sizeof r);
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(sizeof r)) errors++;
  }

  /// One event of the permission group: always answered, always closed.
  void handle_permission(const fanotify_event_metadata& ev) {
    if (ev.fd < 0) {
      // FAN_NOFD: nothing to answer (the queue is unlimited, so not an overflow).
      errors++;
      return;
    }
    uint32_t verdict = FAN_ALLOW;
    if (ev.vers != FANOTIFY_METADATA_VERSION) {
      errors++;
    } else if (ev.pid != self) {
      try {
        verdict = decide_exec(ev.fd);
      } catch (...) {
        // Same as a file that cannot be read: allowed and counted.
        errors++;
        verdict = FAN_ALLOW;
      }
    }
    // An unanswered permission event hangs the exec until the group closes.
    respond(ev.fd, verdict);
    close(ev.fd);
  }

  void check_ioc(int fd, uint64_t mask, pid_t pid) {
    hash_result r = hash_of(notification_hasher, fd);
    if (r.what == outcome::too_large || r.what == outcome::unstable) ioc_skipped++;
    if (r.what != outcome::ok || !iocs.count(r.hex)) return;
    ioc_hit hit;
    hit.sha256 = r.hex;
    hit.size = r.size;
    hit.pid = static_cast<uint32_t>(pid);
    hit.time = now_us();
    char link[64];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    char target[PATH_MAX];
    ssize_t n = readlink(link, target, sizeof target);
    if (n > 0) hit.path.assign(target, static_cast<std::size_t>(n));
    // Notifications for one file can be merged in the queue: report each kind.
    for (auto [bit, kind] :
         {std::pair{FAN_CLOSE_WRITE, "written"}, std::pair{FAN_OPEN_EXEC, "executed"}}) {
      if (!(mask & bit)) continue;
      hit.kind = kind;
      ioc_hits++;
      try {
        if (on_ioc) on_ioc(hit);
      } catch (...) {
        errors++;
      }
    }
  }

  /// One event of the notification group: checked against the IOC list, closed.
  void handle_notification(const fanotify_event_metadata& ev) {
    if (ev.mask & FAN_Q_OVERFLOW) ioc_lost++;
    if (ev.fd < 0) return;
    if (ev.vers != FANOTIFY_METADATA_VERSION) {
      errors++;
    } else if (ev.pid != self && (ev.mask & notification_events)) {
      try {
        check_ioc(ev.fd, ev.mask, ev.pid);
      } catch (...) {
        errors++;
      }
    }
    close(ev.fd);
  }

  /// A thread's loop: reads `fan_fd` until `stop_fd` fires.
  void run(int fan_fd, void (impl::*handle)(const fanotify_event_metadata&)) {
    // Aligned for the metadata records the kernel packs into it.
    alignas(fanotify_event_metadata) char events[event_buffer_size];
    pollfd fds[2] = {{stop_fd, POLLIN, 0}, {fan_fd, POLLIN, 0}};
    for (;;) {
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        errors++;
        continue;
      }
      if (fds[0].revents) return;
      if (!(fds[1].revents & POLLIN)) continue;
      ssize_t len = read(fan_fd, events, sizeof events);
      if (len < 0) {
        if (errno != EAGAIN && errno != EINTR) errors++;
        continue;
      }
      auto* ev = reinterpret_cast<const fanotify_event_metadata*>(events);
      for (; FAN_EVENT_OK(ev, len); ev = FAN_EVENT_NEXT(ev, len)) {
        try {
          (this->*handle)(*ev);
        } catch (...) {
          errors++;
        }
      }
    }
  }
};

exec_guard::exec_guard(std::vector<std::string> mounts, std::set<std::string> iocs,
                       std::function<void(const ioc_hit&)> on_ioc,
                       uint64_t max_hash_bytes)
    : impl_(std::make_unique<impl>()) {
  impl& d = *impl_;
  d.iocs = std::move(iocs);
  d.on_ioc = std::move(on_ioc);
  d.max_hash_bytes = max_hash_bytes;
  d.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (d.stop_fd < 0) throw std::runtime_error("eventfd: " + errno_text(errno));
  // Unlimited queue: an overflow would drop (and so allow) permission events. Each
  // queued one holds an exec'ing process, which bounds the queue anyway.
  d.permission_fd =
      fanotify_init(FAN_CLASS_CONTENT | FAN_UNLIMITED_QUEUE | FAN_CLOEXEC | FAN_NONBLOCK,
                    O_RDONLY | O_LARGEFILE | O_CLOEXEC);
  if (d.permission_fd < 0)
    throw std::runtime_error("fanotify_init (permission): " + errno_text(errno));
  if (!d.iocs.empty()) {
    // Bounded queue: a write storm overflows it (counted) instead of eating memory.
    d.notification_fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK,
                                      O_RDONLY | O_LARGEFILE | O_CLOEXEC);
    if (d.notification_fd < 0)
      throw std::runtime_error("fanotify_init (notification): " + errno_text(errno));
  }
  // On failure impl's destructor closes the groups, which drops the marks made so far
  // (and stops a thread already started).
  for (const auto& mount : mounts) {
    if (fanotify_mark(d.permission_fd, FAN_MARK_ADD | FAN_MARK_MOUNT, permission_events,
                      AT_FDCWD, mount.c_str()) != 0)
      throw std::runtime_error("fanotify_mark on mount " + mount + ": " +
                               errno_text(errno));
    if (d.notification_fd >= 0 &&
        fanotify_mark(d.notification_fd, FAN_MARK_ADD | FAN_MARK_MOUNT,
                      notification_events, AT_FDCWD, mount.c_str()) != 0)
      throw std::runtime_error("fanotify_mark on mount " + mount + ": " +
                               errno_text(errno));
  }
  d.permission_thread =
      std::thread([p = &d] { p->run(p->permission_fd, &impl::handle_permission); });
  if (d.notification_fd >= 0)
    d.notification_thread =
        std::thread([p = &d] { p->run(p->notification_fd, &impl::handle_notification); });
}

exec_guard::~exec_guard() = default;

void exec_guard::set_prevented(std::set<std::string> hashes) {
  std::lock_guard<std::mutex> lock(impl_->prevented_mutex);
  impl_->prevented.swap(hashes);
}

guard_stats exec_guard::stats() const {
  guard_stats s;
  s.exec_checked = impl_->exec_checked.load();
  s.exec_denied = impl_->exec_denied.load();
  s.cache_hits = impl_->cache_hits.load();
  s.ioc_hits = impl_->ioc_hits.load();
  s.errors = impl_->errors.load();
  s.too_large = impl_->too_large.load();
  s.unstable = impl_->unstable.load();
  s.ioc_skipped = impl_->ioc_skipped.load();
  s.ioc_lost = impl_->ioc_lost.load();
  return s;
}

} // namespace parry::real
