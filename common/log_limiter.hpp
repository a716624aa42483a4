#pragma once

// Rate limit for repeated log lines (and other cheap-to-skip side effects such as
// an audit record or a refusal notice). Per key, at most `burst` lines per
// `window`; what is held back is counted and reported with the next line that
// passes. The number of keys is bounded: when the table is full, keys that are not
// in it share one overflow slot. Not thread-safe: one owner thread.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace parry {

class log_limiter {
public:
  using clock = std::chrono::steady_clock;

  log_limiter(std::size_t burst = 5, clock::duration window = std::chrono::seconds{10},
              std::size_t max_keys = 4096)
      : burst_(burst), window_(window), max_keys_(max_keys) {}

  /// True when a line for `key` may be written at `now`. When it may, `suppressed`
  /// is set to the number of lines held back for this key since the last one written.
  bool pass(std::string_view key, clock::time_point now, uint64_t& suppressed) {
    auto i = slots_.find(std::string{key});
    if (i == slots_.end()) {
      if (slots_.size() >= max_keys_) {
        prune(now);
        if (slots_.size() >= max_keys_) i = slots_.try_emplace(overflow_key).first;
      }
      if (i == slots_.end()) i = slots_.try_emplace(std::string{key}).first;
    }
    auto& s = i->second;
    if (now - s.start >= window_) {
      s.start = now;
      s.lines = 0;
    }
    if (s.lines >= burst_) {
      ++s.held;
      ++total_suppressed_;
      return false;
    }
    ++s.lines;
    suppressed = s.held;
    s.held = 0;
    return true;
  }

  bool pass(std::string_view key, uint64_t& suppressed) {
    return pass(key, clock::now(), suppressed);
  }

  /// Lines held back since construction, all keys together.
  uint64_t total_suppressed() const { return total_suppressed_; }

  std::size_t keys() const { return slots_.size(); }

private:
  struct slot {
    clock::time_point start{};
    std::size_t lines = 0;
    uint64_t held = 0;
  };

  // Drops keys whose window is over and that hold nothing back.
  void prune(clock::time_point now) {
    for (auto i = slots_.begin(); i != slots_.end();)
      if (now - i->second.start >= window_ && i->second.held == 0)
        i = slots_.erase(i);
      else
        ++i;
  }

  static inline const std::string overflow_key = "\x01overflow";
  std::size_t burst_;
  clock::duration window_;
  std::size_t max_keys_;
  std::unordered_map<std::string, slot> slots_;
  uint64_t total_suppressed_ = 0;
};

} // namespace parry
