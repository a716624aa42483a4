#pragma once

// Incidents between the bus and the store: the gateway thread adds each report it
// accepts, the device actor takes it off once the store answered (or the report was
// refused there). A bound on the bytes in flight keeps a flood from growing memory.

#include <atomic>
#include <cstdint>

namespace parry {

struct ingest_gauge {
  std::atomic<uint64_t> reports{0}; ///< Reports in flight now.
  std::atomic<uint64_t> bytes{0};   ///< Their size on the wire (msgpack body bytes).
  std::atomic<uint64_t> added{0};   ///< Bytes ever added (only grows): bursts show here.

  void add(uint64_t b) {
    reports.fetch_add(1, std::memory_order_relaxed);
    bytes.fetch_add(b, std::memory_order_relaxed);
    added.fetch_add(b, std::memory_order_relaxed);
  }
  void done(uint64_t b) {
    reports.fetch_sub(1, std::memory_order_relaxed);
    bytes.fetch_sub(b, std::memory_order_relaxed);
  }
};

} // namespace parry
