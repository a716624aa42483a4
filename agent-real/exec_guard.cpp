#include "agent-real/exec_guard.hpp"

#include "common/time.hpp"

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

namespace parry::real {

namespace {

constexpr uint64_t guarded_events = FAN_OPEN_EXEC_PERM | FAN_CLOSE_WRITE | FAN_OPEN_EXEC;
// Enough for a busy build tree; clearing when full is simpler than LRU and a miss
// costs one hash.
constexpr std::size_t cache_limit = 4096;
constexpr std::size_t hash_chunk = 64 * 1024;

std::string errno_text(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

/// What makes a file's content the same as last time we hashed it.
struct file_key {
  dev_t dev = 0;
  ino_t ino = 0;
  int64_t mtime_sec = 0;
  int64_t mtime_nsec = 0;
  off_t size = 0;
  bool operator==(const file_key& o) const {
    return dev == o.dev && ino == o.ino && mtime_sec == o.mtime_sec &&
           mtime_nsec == o.mtime_nsec && size == o.size;
  }
};

struct file_key_hash {
  std::size_t operator()(const file_key& k) const {
    std::size_t h = std::hash<uint64_t>{}(k.ino);
    for (uint64_t v :
         {static_cast<uint64_t>(k.dev), static_cast<uint64_t>(k.mtime_sec),
          static_cast<uint64_t>(k.mtime_nsec), static_cast<uint64_t>(k.size)})
      h ^= std::hash<uint64_t>{}(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
  }
};

struct md_ctx_deleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::string to_hex(const unsigned char* p, unsigned n) {
  static const char digits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (unsigned i = 0; i < n; ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 0xf];
  }
  return out;
}

} // namespace

struct exec_guard::impl {
  std::set<std::string> iocs;
  std::function<void(const ioc_hit&)> on_ioc;
  pid_t self = getpid();
  int fan_fd = -1;
  int stop_fd = -1;
  std::thread worker;

  std::mutex prevented_mutex;
  std::set<std::string> prevented;

  // Touched by the worker thread only.
  std::unordered_map<file_key, std::string, file_key_hash> cache;
  std::vector<unsigned char> buffer = std::vector<unsigned char>(hash_chunk);

  std::atomic<uint64_t> exec_checked{0};
  std::atomic<uint64_t> exec_denied{0};
  std::atomic<uint64_t> cache_hits{0};
  std::atomic<uint64_t> ioc_hits{0};
  std::atomic<uint64_t> errors{0};

  ~impl() {
    if (fan_fd >= 0) close(fan_fd);
    if (stop_fd >= 0) close(stop_fd);
  }

  /// Streams the file behind `fd` through SHA-256 with pread, leaving its offset alone.
  /// Empty on failure.
  std::string hash_fd(int fd, off_t size) {
    std::unique_ptr<EVP_MD_CTX, md_ctx_deleter> ctx(EVP_MD_CTX_new());
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return {};
    off_t offset = 0;
    for (;;) {
      ssize_t n = pread(fd, buffer.data(), buffer.size(), offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        return {};
      }
      if (n == 0) break;
      if (EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<std::size_t>(n)) != 1)
        return {};
      offset += n;
    }
    // A file that changed size under us hashed something between two versions: give
    // up rather than cache a hash that matches neither.
    if (offset != size) return {};
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) return {};
    return to_hex(md, len);
  }

  /// The file's hash, from the cache when its identity and mtime are unchanged. Empty
  /// (and counted as an error) when it cannot be read.
  std::string hash_of(int fd, off_t* size_out) {
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      errors++;
      return {};
    }
    *size_out = st.st_size;
    file_key key{st.st_dev, st.st_ino, st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_size};
    if (auto it = cache.find(key); it != cache.end()) {
      cache_hits++;
      return it->second;
    }
    std::string hex = hash_fd(fd, st.st_size);
    if (hex.empty()) {
      errors++;
      return {};
    }
    if (cache.size() >= cache_limit) cache.clear();
    cache.emplace(key, hex);
    return hex;
  }

  uint32_t decide_exec(int fd) {
    off_t size = 0;
    std::string hex = hash_of(fd, &size);
    if (hex.empty()) return FAN_ALLOW;
    std::lock_guard<std::mutex> lock(prevented_mutex);
    return prevented.count(hex) ? FAN_DENY : FAN_ALLOW;
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
      n = write(fan_fd, &r, sizeof r);
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(sizeof r)) errors++;
  }

  void check_ioc(int fd, uint64_t mask, pid_t pid) {
    off_t size = 0;
    std::string hex = hash_of(fd, &size);
    if (hex.empty() || !iocs.count(hex)) return;
    ioc_hit hit;
    hit.sha256 = hex;
    hit.size = static_cast<uint64_t>(size);
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

  void handle(const fanotify_event_metadata& ev) {
    bool permission = ev.mask & FAN_OPEN_EXEC_PERM;
    if (ev.fd < 0) {
      // FAN_Q_OVERFLOW: events were lost; nothing to answer.
      errors++;
      return;
    }
    uint32_t verdict = FAN_ALLOW;
    if (ev.vers != FANOTIFY_METADATA_VERSION) {
      errors++;
    } else if (ev.pid != self) {
      try {
        if (permission) verdict = decide_exec(ev.fd);
        if ((ev.mask & (FAN_CLOSE_WRITE | FAN_OPEN_EXEC)) && !iocs.empty())
          check_ioc(ev.fd, ev.mask, ev.pid);
      } catch (...) {
        errors++;
        verdict = FAN_ALLOW;
      }
    }
    // An unanswered permission event hangs the exec until the group closes.
    if (permission) respond(ev.fd, verdict);
    close(ev.fd);
  }

  void run() {
    // Aligned for the metadata records the kernel packs into it.
    alignas(fanotify_event_metadata) char events[16 * 1024];
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
          handle(*ev);
        } catch (...) {
          errors++;
        }
      }
    }
  }
};

exec_guard::exec_guard(std::vector<std::string> mounts, std::set<std::string> iocs,
                       std::function<void(const ioc_hit&)> on_ioc)
    : impl_(std::make_unique<impl>()) {
  impl_->iocs = std::move(iocs);
  impl_->on_ioc = std::move(on_ioc);
  impl_->fan_fd = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK,
                                O_RDONLY | O_LARGEFILE | O_CLOEXEC);
  if (impl_->fan_fd < 0) throw std::runtime_error("fanotify_init: " + errno_text(errno));
  impl_->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (impl_->stop_fd < 0) throw std::runtime_error("eventfd: " + errno_text(errno));
  for (const auto& mount : mounts) {
    // On failure impl's destructor closes the group, which drops the marks made so far.
    if (fanotify_mark(impl_->fan_fd, FAN_MARK_ADD | FAN_MARK_MOUNT, guarded_events,
                      AT_FDCWD, mount.c_str()) != 0)
      throw std::runtime_error("fanotify_mark on mount " + mount + ": " +
                               errno_text(errno));
  }
  impl_->worker = std::thread([p = impl_.get()] { p->run(); });
}

exec_guard::~exec_guard() {
  // One increment cannot overflow the eventfd's counter, so this write cannot fail.
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(impl_->stop_fd, &one, sizeof one);
  if (impl_->worker.joinable()) impl_->worker.join();
}

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
  return s;
}

} // namespace parry::real
