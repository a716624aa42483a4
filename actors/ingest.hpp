#pragma once

// Incidents between the bus and the store: the gateway thread adds each report it
// accepts, the store takes it off once it has the report in hand (written into the
// open group, or failed), or the device actor does when it refuses the report. A
// bound on the bytes in flight keeps a flood from growing memory.
//
// Hellos the same way, counted by a ticket that travels with each one (below): a
// storm of devices coming up at once (a cold start, every agent reconnecting after a
// restart) is let in as fast as the device actors and the store take it, and the
// rest are told to come back later, instead of queueing without bound.

#include <atomic>
#include <cstdint>
#include <memory>

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

  std::atomic<uint64_t> hellos{0};         ///< Hellos in flight now (hello_ticket).
  std::atomic<uint64_t> hellos_refused{0}; ///< Refused as busy, ever.
};

/// One hello on its way from the bus to its device's stored record, counted in
/// `ingest_gauge::hellos` for as long as any copy of it exists: the copies in the
/// messages that carry the hello, and the one its device actor keeps until the store
/// answers its write. However the hello ends (handled, dropped on the way, its actor
/// gone) the count goes down, so a lost message cannot leak it.
class hello_ticket {
public:
  hello_ticket() = default;
  explicit hello_ticket(std::shared_ptr<ingest_gauge> gauge) {
    gauge->hellos.fetch_add(1, std::memory_order_relaxed);
    held_ = std::make_shared<held>(std::move(gauge));
  }

  // Never leaves the process: nothing to serialize.
  template <class Inspector> friend auto inspect(Inspector& f, hello_ticket&) {
    return f();
  }

private:
  struct held {
    explicit held(std::shared_ptr<ingest_gauge> g) : gauge(std::move(g)) {}
    held(const held&) = delete;
    held& operator=(const held&) = delete;
    ~held() { gauge->hellos.fetch_sub(1, std::memory_order_relaxed); }
    std::shared_ptr<ingest_gauge> gauge;
  };
  std::shared_ptr<held> held_;
};

} // namespace parry
