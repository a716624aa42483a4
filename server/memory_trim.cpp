#include "server/memory_trim.hpp"

#include <chrono>
#include <fstream>
#include <mutex>

#include <malloc.h>
#include <unistd.h>

namespace parry {

uint64_t resident_bytes() {
  std::ifstream statm{"/proc/self/statm"};
  uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

uint64_t heap_bytes() {
  // mallinfo2 walks every arena under its lock, stalling every thread's malloc
  // meanwhile: with a large heap and /stats polled often, it showed in profiles.
  using clock = std::chrono::steady_clock;
  static std::mutex m;
  static clock::time_point taken;
  static uint64_t bytes = 0;
  std::lock_guard<std::mutex> lock{m};
  auto now = clock::now();
  if (bytes == 0 || now - taken >= heap_bytes_max_age) {
    auto info = ::mallinfo2();
    bytes = static_cast<uint64_t>(info.uordblks) + static_cast<uint64_t>(info.hblkhd);
    taken = now;
  }
  return bytes;
}

memory_trimmer::memory_trimmer(std::shared_ptr<const ingest_gauge> gauge,
                               uint64_t min_burst_bytes, std::function<void()> trim,
                               std::function<uint64_t()> resident)
    : gauge_(std::move(gauge)), min_burst_bytes_(min_burst_bytes), trim_(std::move(trim)),
      resident_(std::move(resident)) {
  if (!trim_) trim_ = [] { ::malloc_trim(0); };
  if (!resident_) resident_ = resident_bytes;
  trimmed_added_ = looked_added_ = gauge_->added.load(std::memory_order_relaxed);
}

memory_trimmer::~memory_trimmer() {
  {
    std::lock_guard<std::mutex> lock{mutex_};
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool memory_trimmer::step() {
  uint64_t added = gauge_->added.load(std::memory_order_relaxed);
  bool new_bytes = added != looked_added_;
  looked_added_ = added;
  if (new_bytes || gauge_->reports.load(std::memory_order_relaxed) != 0) {
    quiet_looks_ = 0;
    return false;
  }
  // Two quiet looks: a burst that pauses for less than a period is not over.
  if (++quiet_looks_ < 2) return false;
  if (added - trimmed_added_ < min_burst_bytes_) return false;
  trimmed_added_ = added;
  uint64_t before = resident_();
  trim_();
  uint64_t after = resident_();
  trims_.fetch_add(1, std::memory_order_relaxed);
  if (before > after) returned_.fetch_add(before - after, std::memory_order_relaxed);
  return true;
}

void memory_trimmer::start(std::chrono::milliseconds period) {
  if (thread_.joinable()) return;
  thread_ = std::thread{[this, period] {
    std::unique_lock<std::mutex> lock{mutex_};
    while (!wake_.wait_for(lock, period, [this] { return stop_; })) {
      lock.unlock();
      step();
      lock.lock();
    }
  }};
}

memory_trim_stats memory_trimmer::stats() const {
  return {trims_.load(std::memory_order_relaxed),
          returned_.load(std::memory_order_relaxed)};
}

} // namespace parry
