#pragma once

// Gives memory back to the system after an ingest burst. glibc keeps the heap a burst
// of incident reports grew (decoded reports, mailboxes, store batches) long after
// the reports are stored; `malloc_trim(0)` returns its free pages. The trimmer looks
// at the ingest gauge once a period and trims when a burst has ended: at least
// `min_burst_bytes` of reports came in since the last trim, and for two looks in a
// row none was in flight and none came in. It runs on a thread of its own, never on
// an actor's.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "actors/ingest.hpp"

namespace parry {

struct memory_trim_stats {
  uint64_t trims = 0;          ///< malloc_trim calls made
  uint64_t returned_bytes = 0; ///< resident memory they gave back, summed (bytes)
};

class memory_trimmer {
public:
  /// Trims with `trim` (default: malloc_trim(0)); `resident` answers the process's
  /// resident bytes (default: from /proc/self/statm).
  memory_trimmer(std::shared_ptr<const ingest_gauge> gauge, uint64_t min_burst_bytes,
                 std::function<void()> trim = {},
                 std::function<uint64_t()> resident = {});
  ~memory_trimmer();

  memory_trimmer(const memory_trimmer&) = delete;
  memory_trimmer& operator=(const memory_trimmer&) = delete;

  /// One look; trims when a burst has ended. Answers whether it trimmed. The thread
  /// calls it every period; tests call it directly.
  bool step();

  /// Starts the thread that calls `step` every `period`.
  void start(std::chrono::milliseconds period);

  memory_trim_stats stats() const;

private:
  std::shared_ptr<const ingest_gauge> gauge_;
  uint64_t min_burst_bytes_;
  std::function<void()> trim_;
  std::function<uint64_t()> resident_;
  uint64_t trimmed_added_ = 0; ///< gauge->added at the last trim
  uint64_t looked_added_ = 0;  ///< gauge->added at the last look
  int quiet_looks_ = 0;        ///< looks in a row with nothing in flight or new
  std::atomic<uint64_t> trims_{0};
  std::atomic<uint64_t> returned_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

/// Resident bytes of this process (VmRSS), 0 when /proc cannot be read.
uint64_t resident_bytes();

/// How old the figure heap_bytes answers may be.
inline constexpr std::chrono::milliseconds heap_bytes_max_age{1000};

/// Bytes the heap has handed out and not taken back (glibc's mallinfo2: small blocks in
/// use plus mmapped ones), which falls when memory is freed even if VmRSS does not.
/// Taken at most once per heap_bytes_max_age; calls in between answer the last figure.
uint64_t heap_bytes();

} // namespace parry
