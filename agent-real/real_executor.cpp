#include "agent-real/real_executor.hpp"

#include "common/keys.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace parry::real {

namespace {

isolation_config isolation_for(const real_config& cfg) {
  isolation_config iso;
  auto [server, port] = endpoint_address(cfg.server, "server");
  iso.server_address = server;
  iso.server_port = port;
  iso.exceptions = cfg.exceptions;
  auto [enroll, enroll_port] = endpoint_address(cfg.enroll_server, "enroll_server");
  if (enroll == server)
    iso.enroll_port = enroll_port;
  else
    iso.exceptions.push_back({enroll, enroll_port, "out"});
  if (std::string why = check_config(iso); !why.empty())
    throw std::runtime_error("isolation settings: " + why);
  return iso;
}

file_config files_for(const real_config& cfg) {
  file_config f;
  f.roots = cfg.file_roots;
  f.quarantine_dir = cfg.state_dir + "/quarantine";
  f.protected_dirs = {cfg.state_dir}; // keys, journal, desired state, quarantine
  return f;
}

} // namespace

real_executor::real_executor(const real_config& cfg, std::unique_ptr<exec_guard> guard,
                             int64_t now)
    : cfg_(cfg), state_file_(cfg.state_dir + "/desired-state.json"),
      isolation_(isolation_for(cfg)), files_(files_for(cfg)), guard_(std::move(guard)),
      last_contact_(now), next_enforce_(now), clock_(now) {
  start_limits_.timeout_us = int64_t{cfg.start_timeout_ms} * 1000;
  for (const auto& m : cfg.guard_mounts)
    mounts_ += (mounts_.empty() ? "" : " ") + m;
  struct stat st {};
  if (::lstat(state_file_.c_str(), &st) == 0) {
    try {
      auto j = nlohmann::json::parse(read_private_file(state_file_, 1 << 20));
      isolated_ = j.at("isolated").get<bool>();
      isolated_at_ = j.value("isolated_at", int64_t{0});
      for (const auto& h : j.at("prevented"))
        prevented_.insert(h.get<std::string>());
    } catch (const std::exception& e) {
      throw std::runtime_error("desired state " + state_file_ +
                               " is unreadable: " + e.what());
    }
  }
  // The journaled desired state is applied again: a restart must not lift isolation
  // nor a prevention. The lease counts from the isolation (a crash loop must not
  // extend it); the dead-man switch from now, as the server was not asked yet.
  if (isolated_) {
    if (isolated_at_ <= 0 || isolated_at_ > now) isolated_at_ = now;
    auto e = isolation_.apply();
    if (e.ok)
      spdlog::warn("isolation re-applied from the desired state");
    else
      spdlog::error("cannot re-apply isolation from the desired state: {}", e.error);
  }
  if (!prevented_.empty()) {
    if (guard_)
      guard_->set_prevented(prevented_);
    else
      spdlog::error("{} prevented hashes in the desired state, but no guard_mounts",
                    prevented_.size());
  }
}

void real_executor::save(sim::execution& e) const {
  try {
    save();
  } catch (const std::exception& ex) {
    spdlog::error("{}", ex.what());
    e.effect["warning"] = "desired state not saved";
  }
}

void real_executor::save() const {
  nlohmann::json j;
  j["isolated"] = isolated_;
  j["isolated_at"] = isolated_at_;
  j["prevented"] = prevented_;
  write_private_file(state_file_, j.dump(2) + "\n");
}

sim::execution real_executor::isolate() {
  bool was = isolated_;
  auto e = isolation_.apply();
  if (!e.ok) return e;
  isolated_ = true;
  isolated_at_ = clock_;
  save(e); // isolated now even if not saved: a restart would lose it
  // nftables says what it replaced; the flag adds what it knew.
  if (was) e.effect["note"] = "already isolated";
  if (!e.effect.count("previous"))
    e.effect["previous"] = was ? "isolated" : "not isolated";
  return e;
}

sim::execution real_executor::release(const char* why) {
  bool was = isolated_ || isolation_.active();
  auto e = isolation_.release();
  if (!e.ok) return e;
  isolated_ = false;
  save(e);
  if (!was) e.effect["note"] = "not isolated";
  if (why) spdlog::warn("isolation released: {}", why);
  return e;
}

sim::execution real_executor::release_isolation() {
  return release(nullptr);
}

sim::execution real_executor::terminate_process(const sim::terminate_args& p) {
  return terminate(p);
}

sim::execution real_executor::start_process(const sim::start_args& p, int64_t now) {
  clock_ = now;
  return start(p, start_limits_);
}

sim::execution real_executor::quarantine(const sim::file_args& p) {
  return files_.quarantine(p);
}

sim::execution real_executor::restore_from_quarantine(const sim::restore_args& p) {
  return files_.restore(p);
}

sim::execution real_executor::delete_file(const sim::file_args& p) {
  return files_.remove(p);
}

sim::execution real_executor::prevent_run(const sim::hash_args& p) {
  if (!guard_)
    return sim::execution::failed(
        "prevent run needs guard_mounts in the agent's configuration");
  sim::execution e;
  e.ok = true;
  e.effect["sha256"] = p.sha256;
  if (prevented_.count(p.sha256)) {
    e.effect["note"] = "already prevented";
    return e;
  }
  if (prevented_.size() >= max_prevented)
    return sim::execution::failed("the prevent list is full (" +
                                  std::to_string(max_prevented) + " hashes)");
  prevented_.insert(p.sha256);
  guard_->set_prevented(prevented_);
  e.effect["mounts"] = mounts_;
  save(e);
  return e;
}

sim::execution real_executor::allow_run(const sim::hash_args& p) {
  sim::execution e;
  e.ok = true;
  e.effect["sha256"] = p.sha256;
  if (prevented_.erase(p.sha256) == 0) {
    e.effect["note"] = "not prevented";
    return e;
  }
  if (guard_) guard_->set_prevented(prevented_);
  save(e);
  return e;
}

int64_t real_executor::tick(int64_t now, bool server_reachable) {
  clock_ = now;
  if (server_reachable) last_contact_ = now;
  int64_t due = std::numeric_limits<int64_t>::max();
  if (!isolated_) return due;

  if (cfg_.lease_seconds > 0) {
    int64_t end = isolated_at_ + int64_t{cfg_.lease_seconds} * 1'000'000;
    if (now >= end) {
      release("the isolation lease ended");
      return due;
    }
    due = std::min(due, end);
  }
  if (cfg_.dead_man) {
    // Counted from the later of isolation and the last contact: an isolation applied
    // while the server was away still gets the whole time.
    int64_t since = std::max(isolated_at_, last_contact_);
    int64_t end = since + int64_t{cfg_.dead_man_seconds} * 1'000'000;
    if (!server_reachable && now >= end) {
      release("dead-man switch: the server stayed unreachable");
      return std::numeric_limits<int64_t>::max();
    }
    if (!server_reachable) due = std::min(due, end);
  }
  if (now >= next_enforce_) {
    next_enforce_ = now + enforce_interval_us;
    if (!isolation_.active()) {
      spdlog::warn("the isolation table was removed by someone else: applying it again");
      auto e = isolation_.apply();
      if (!e.ok) spdlog::error("cannot re-apply isolation: {}", e.error);
    }
  }
  return std::min(due, next_enforce_);
}

} // namespace parry::real
