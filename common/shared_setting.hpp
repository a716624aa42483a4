#pragma once

// Settings that a reload (SIGHUP) replaces while the server runs. A shared_setting is
// a handle: its copies (in actor states, in a supervisor's factory, in a gateway's
// filter) share one value, and set() on any of them is seen by all at their next
// get(). Readers get an immutable snapshot, so one request works with one version.

#include <memory>
#include <mutex>
#include <utility>

namespace parry {

template <class T> class shared_setting {
public:
  /// A new setting holding `initial` (implicit: a plain value is a setting that
  /// nothing reloads, as in tests).
  shared_setting(T initial = T{}) // NOLINT(google-explicit-constructor)
      : cell_(std::make_shared<cell>(std::move(initial))) {}

  /// The value now; keep the pointer for as long as one version must hold.
  std::shared_ptr<const T> get() const {
    std::lock_guard<std::mutex> lock{cell_->m};
    return cell_->value;
  }

  /// Replaces the value for every copy of this handle.
  void set(T next) const {
    auto fresh = std::make_shared<const T>(std::move(next));
    std::lock_guard<std::mutex> lock{cell_->m};
    cell_->value.swap(fresh);
  }

private:
  struct cell {
    explicit cell(T x) : value(std::make_shared<const T>(std::move(x))) {}
    std::mutex m;
    std::shared_ptr<const T> value;
  };
  std::shared_ptr<cell> cell_;
};

} // namespace parry
