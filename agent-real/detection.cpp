#include "agent-real/detection.hpp"

#include <algorithm>
#include <limits>
#include <vector>

#include <sys/eventfd.h>
#include <unistd.h>

#include "agent-real/process_ops.hpp"
#include "common/utf8.hpp"

namespace parry::real {

namespace {

constexpr std::size_t max_written = 1024;

bus::process_info process_of(const proc_entry& p) {
  bus::process_info i;
  i.pid = p.pid;
  i.start_time = p.start_time;
  // /proc gives bytes; the server takes only UTF-8 text.
  i.image = utf8_sanitized(p.image);
  i.cmdline = utf8_sanitized(p.cmdline);
  i.user = utf8_sanitized(p.user);
  i.parent_pid = p.ppid;
  return i;
}

} // namespace

detection::detection(std::string run_tag) : run_tag_(std::move(run_tag)) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

detection::~detection() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void detection::push(const ioc_hit& hit) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pending_.size() >= max_pending) {
      ++dropped_;
      return;
    }
    pending_.push_back(hit);
  }
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void detection::drain_wake() {
  uint64_t n;
  while (::read(wake_fd_, &n, sizeof n) == sizeof n) {
  }
}

uint64_t detection::dropped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dropped_;
}

void detection::start_reporting(int64_t) {
  reporting_ = true;
}

int64_t detection::next_report_due() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!reporting_ || pending_.empty()) return std::numeric_limits<int64_t>::max();
  return pending_.front().time + settle_us;
}

std::optional<bus::incident_report> detection::take_report(int64_t now) {
  ioc_hit hit;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pending_.empty() || pending_.front().time + settle_us > now) return std::nullopt;
    hit = pending_.front();
    pending_.pop_front();
  }
  return build(hit);
}

bus::incident_report detection::build(const ioc_hit& hit) {
  bus::incident_report r;
  r.report_id = "ioc-" + run_tag_ + "-" + std::to_string(++reports_);
  r.det.name = "IOC:SHA256." + hit.sha256.substr(0, 16);
  r.det.severity = "high";
  r.det.engine = "parry-agent ioc";

  // The ancestry of the process that wrote or ran the file, root first. /proc is
  // read a while after the hit: a pid that now belongs to a process started after
  // the hit (or after its child) is a reused pid, and the chain stops there, so a
  // report never names an innocent process a terminate could then hit.
  std::vector<proc_entry> chain;
  int64_t not_after = hit.time + start_time_tolerance_us;
  for (uint32_t pid = hit.pid; pid != 0 && chain.size() < max_ancestry;) {
    auto p = read_process(pid);
    if (!p || p->start_time > not_after) break;
    chain.push_back(*p);
    if (p->ppid == pid) break;
    not_after = p->start_time + start_time_tolerance_us;
    pid = p->ppid;
  }
  std::reverse(chain.begin(), chain.end());

  bus::file_info file{utf8_sanitized(hit.path), hit.sha256, hit.size};
  std::string parent;
  int n = 0;
  auto next_id = [&] { return "e" + std::to_string(++n); };
  // For an exec, the last process of the chain is the one now running the file:
  // it is the key event, the others lead to it.
  std::size_t ancestors = chain.size();
  if (hit.kind == "executed" && ancestors > 0) --ancestors;
  std::map<uint32_t, std::string> event_of_pid;
  for (std::size_t i = 0; i < ancestors; ++i) {
    bus::activity_event e;
    e.id = next_id();
    e.type = "process_started";
    e.time = chain[i].start_time;
    e.parent_id = parent;
    e.process = process_of(chain[i]);
    e.file = {e.process.image, "", 0};
    parent = e.id;
    event_of_pid[chain[i].pid] = e.id;
    r.events.push_back(std::move(e));
  }

  auto seen = written_.find(hit.path);
  if (hit.kind == "written" ||
      (seen != written_.end() && seen->second.sha256 == hit.sha256)) {
    const ioc_hit& w = hit.kind == "written" ? hit : seen->second;
    bus::activity_event e;
    e.id = next_id();
    e.type = "file_created";
    e.time = w.time;
    auto writer = event_of_pid.find(w.pid);
    e.parent_id = writer != event_of_pid.end() ? writer->second : parent;
    e.file = file;
    auto p = read_process(w.pid);
    if (p && p->start_time <= w.time + start_time_tolerance_us)
      e.process = process_of(*p);
    else
      e.process.pid = w.pid; // gone, or the pid is someone else's now
    r.key_event_id = e.id;
    r.events.push_back(std::move(e));
  }
  if (hit.kind == "written") {
    if (written_.size() >= max_written) written_.clear();
    written_[hit.path] = hit;
  } else {
    bus::activity_event e;
    e.id = next_id();
    e.type = "process_started";
    e.time = hit.time;
    e.parent_id = parent;
    e.file = file;
    if (chain.size() > ancestors) {
      e.process = process_of(chain.back());
      e.time = chain.back().start_time;
    } else {
      e.process.pid = hit.pid;
    }
    e.process.image = file.path;
    e.process.sha256 = hit.sha256;
    r.key_event_id = e.id;
    r.events.push_back(std::move(e));
  }
  return r;
}

} // namespace parry::real
