// The agent's protocol session (see agent_session.hpp): message handling, the
// journal, held commands, cancel and result re-sending; effects go to the executor.

#include "agent-sim/agent_session.hpp"

#include <algorithm>
#include <chrono>
#include <utility>

#include <spdlog/spdlog.h>

namespace parry::sim {

namespace {

/// A monotonic clock in µs for durations (agent_us): a step of the wall clock
/// (NTP) must not bend them.
int64_t steady_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

} // namespace

agent_session::agent_session(session_config cfg, executor& exec,
                             incident_source* incidents)
    : cfg_(std::move(cfg)), exec_(&exec), incidents_(incidents),
      msg_base_(static_cast<uint64_t>(cfg_.started_at)),
      jitter_state_(std::hash<std::string>{}(cfg_.device_id)) {
  if (!cfg_.server_signing_key.empty())
    guard_.emplace(cfg_.server_signing_key, cfg_.device_id);
}

bool agent_session::is_held(const std::string& action_id) const {
  return std::any_of(pending_.begin(), pending_.end(),
                     [&](const held_command& p) { return p.cmd.action_id == action_id; });
}

void agent_session::refuse(const bus::command& cmd, const bus::guard_verdict& v,
                           int64_t received_us, int64_t now, std::vector<outbound>& out) {
  ++stats_.refused_commands;
  spdlog::warn("{}: refused command {} {}: {}", cfg_.device_id,
               printable(cmd.action_id, 128), printable(cmd.type, 64), v.text);
  // Reported (and re-sent until stored) like any failure, so the action ends failed
  // with the reason; journaled, so the same id is never run later.
  bus::action_result r{cmd.action_id,
                       false,
                       std::string{"refused by the agent ("} + bus::to_string(v.reason) +
                           "): " + v.text,
                       {},
                       0};
  r.agent_us = static_cast<uint64_t>(std::max<int64_t>(0, steady_us() - received_us));
  bool was_idle = unacked_ == 0;
  journal_entry e;
  e.result = r;
  e.refused = true;
  journal(cmd.action_id, std::move(e));
  if (!hold_results_) out.push_back(make(bus::type::action_result, r, now));
  if (was_idle) next_resend_ = now + result_resend_us;
}

// -- commands -----------------------------------------------------------------------

// Checks the parameters for the action type and hands them to the executor; a
// parameter that fails its check never reaches it.
bus::action_result agent_session::execute(const bus::command& cmd, int64_t now) {
  bus::action_result r;
  r.action_id = cmd.action_id;
  if (cmd.expires_at != 0 && cmd.expires_at < now) {
    r.error = "expired";
    return r;
  }
  auto type = parry::action_type_from_string(cmd.type);
  if (!type) {
    r.error = "unsupported action type: " + printable(cmd.type, 64);
    return r;
  }
  std::string why;
  // Runs `act` on the checked parameters, or fails with why they were refused.
  auto with = [&](auto params, auto act) {
    return params ? act(*params) : execution::failed(why);
  };
  execution e;
  switch (*type) {
  case parry::action_type::isolate:
    e = exec_->isolate();
    break;
  case parry::action_type::release_isolation:
    e = exec_->release_isolation();
    break;
  case parry::action_type::prevent_run:
    e = with(parse_hash_args(cmd, cfg_.os, why),
             [&](const hash_args& p) { return exec_->prevent_run(p); });
    break;
  case parry::action_type::allow_run:
    e = with(parse_hash_args(cmd, cfg_.os, why),
             [&](const hash_args& p) { return exec_->allow_run(p); });
    break;
  case parry::action_type::quarantine:
    e = with(parse_file_args(cmd, cfg_.os, why),
             [&](const file_args& p) { return exec_->quarantine(p); });
    break;
  case parry::action_type::restore_from_quarantine:
    e = with(parse_restore_args(cmd, why),
             [&](const restore_args& p) { return exec_->restore_from_quarantine(p); });
    break;
  case parry::action_type::delete_file:
    e = with(parse_file_args(cmd, cfg_.os, why),
             [&](const file_args& p) { return exec_->delete_file(p); });
    break;
  case parry::action_type::terminate_process:
    e = with(parse_terminate_args(cmd, why),
             [&](const terminate_args& p) { return exec_->terminate_process(p); });
    break;
  case parry::action_type::start_process:
    e = with(parse_start_args(cmd, cfg_.os, why),
             [&](const start_args& p) { return exec_->start_process(p, now); });
    break;
  }
  r.ok = e.ok;
  r.error = std::move(e.error);
  if (r.ok) r.effect = std::move(e.effect);
  return r;
}

command_outcome agent_session::handle_command(const bus::command& cmd, int64_t now,
                                              int64_t received_us) {
  if (received_us == 0) received_us = steady_us();
  command_outcome out;
  out.ack.action_id = cmd.action_id;
  auto it = journal_.find(cmd.action_id);
  if (it != journal_.end()) {
    // Delivery is at least once: answer again, never act again. The server asked
    // again, so it may have lost the result: keep re-sending until it acknowledges.
    ++stats_.duplicate_commands;
    if (it->second.cancelled) { // withdrawn before it ran: it never runs
      out.result =
          bus::action_result{cmd.action_id, false, "cancelled before it ran", {}, 0};
      return out;
    }
    if (it->second.result_acked) {
      it->second.result_acked = false;
      ++unacked_;
    }
    out.result = it->second.result;
    return out;
  }
  std::string unrecorded = cfg_.before_execute ? cfg_.before_execute(cmd.action_id) : "";
  if (unrecorded.empty()) {
    out.result = execute(cmd, now);
  } else {
    // Running it unrecorded could run it twice after a crash: it does not run.
    out.result = bus::action_result{cmd.action_id,
                                    false,
                                    "not run: the agent cannot record it: " + unrecorded,
                                    {},
                                    0};
  }
  out.result.agent_us =
      static_cast<uint64_t>(std::max<int64_t>(0, steady_us() - received_us));
  out.executed = true;
  ++stats_.commands_executed;
  // One line per execution, in this exact form: tests count them to prove that an
  // action ran at most once.
  spdlog::info("executed {} {} on {}: {}", printable(cmd.action_id, 128),
               printable(cmd.type, 64), cfg_.device_id,
               out.result.ok ? "ok" : out.result.error);
  journal(cmd.action_id, journal_entry{out.result, false});
  return out;
}

void agent_session::journal(const std::string& action_id, journal_entry e) {
  ++journal_version_;
  if (!e.result_acked) ++unacked_;
  journal_.emplace(action_id, std::move(e));
  journal_order_.push_back(action_id);
  while (journal_order_.size() > max_journal) {
    auto old = journal_.find(journal_order_.front());
    if (!old->second.result_acked) --unacked_;
    journal_.erase(old);
    journal_order_.pop_front();
  }
}

bus::cancel_result agent_session::cancel(const std::string& action_id) {
  bus::cancel_result r{action_id, true, ""};
  if (auto it = journal_.find(action_id); it != journal_.end()) {
    r.cancelled = it->second.cancelled;
    r.detail = r.cancelled ? "already cancelled" : "already executed";
    if (!r.cancelled) ++stats_.late_cancels;
    return r;
  }
  // Not started: held, or never received. Journaled, so it never runs later.
  auto held = std::find_if(pending_.begin(), pending_.end(), [&](const held_command& c) {
    return c.cmd.action_id == action_id;
  });
  r.detail = held != pending_.end() ? "withdrawn before it started" : "never received";
  if (held != pending_.end()) pending_.erase(held);
  journal_entry e;
  e.result.action_id = action_id;
  e.result_acked = true; // no result will ever be sent
  e.cancelled = true;
  journal(action_id, std::move(e));
  ++stats_.cancelled_commands;
  exec_->cancelled_before_start(action_id);
  spdlog::info("cancelled {} on {}: {}", printable(action_id, 128), cfg_.device_id,
               r.detail);
  return r;
}

void agent_session::set_hold(bool commands, bool results) {
  hold_commands_ = commands;
  hold_results_ = results;
}

std::vector<std::string> agent_session::pending_commands() const {
  std::vector<std::string> ids;
  for (const auto& c : pending_)
    ids.push_back(c.cmd.action_id);
  return ids;
}

void agent_session::answer(const bus::command& cmd, int64_t received_us, int64_t now,
                           std::vector<outbound>& out) {
  if (auto it = journal_.find(cmd.action_id);
      it != journal_.end() && it->second.cancelled) {
    // Cancelled before it ran: it never runs; say so again.
    out.push_back(make(bus::type::cancel_result,
                       bus::cancel_result{cmd.action_id, true, "already cancelled"},
                       now));
    return;
  }
  bool was_idle = unacked_ == 0;
  command_outcome oc = handle_command(cmd, now, received_us);
  // A refused command was never accepted: it is answered with its refusal only.
  if (auto it = journal_.find(cmd.action_id); it == journal_.end() || !it->second.refused)
    out.push_back(make(bus::type::action_ack, oc.ack, now));
  if (!hold_results_) out.push_back(make(bus::type::action_result, oc.result, now));
  if (was_idle) next_resend_ = now + result_resend_us;
}

std::vector<std::string> agent_session::unacked_results() const {
  std::vector<std::string> out;
  for (const auto& id : journal_order_)
    if (!journal_.at(id).result_acked) out.push_back(id);
  return out;
}

bool agent_session::acknowledge_result(const std::string& action_id) {
  auto it = journal_.find(action_id);
  if (it == journal_.end()) return false;
  if (!it->second.result_acked) {
    it->second.result_acked = true;
    --unacked_;
    ++journal_version_;
  }
  return true;
}

std::vector<journal_record> agent_session::journal_records() const {
  std::vector<journal_record> out;
  out.reserve(journal_order_.size());
  for (const auto& id : journal_order_) {
    const journal_entry& e = journal_.at(id);
    out.push_back({id, e.result, e.result_acked, e.cancelled, e.refused});
  }
  return out;
}

void agent_session::restore_journal(const std::vector<journal_record>& records,
                                    uint64_t last_seq) {
  for (const auto& r : records)
    if (!journal_.count(r.action_id))
      journal(r.action_id,
              journal_entry{r.result, r.result_acked, r.cancelled, r.refused});
  // Commands signed before the restart must not be accepted again as new ones.
  if (guard_ && last_seq > guard_->last_seq())
    guard_.emplace(cfg_.server_signing_key, cfg_.device_id, last_seq);
}

uint64_t agent_session::last_seq() const {
  return guard_ ? guard_->last_seq() : 0;
}

// -- protocol -----------------------------------------------------------------------

template <class T>
outbound agent_session::make(const char* type, const T& body, int64_t now) {
  outbound o;
  o.head.type = type;
  o.head.seq = ++seq_;
  // Started from the start time so ids stay unique across agent restarts.
  o.head.msg_id = msg_base_ + seq_;
  o.head.device_id = cfg_.device_id;
  o.head.time = now;
  o.body = bus::encode(body);
  ++stats_.messages_out;
  return o;
}

int64_t agent_session::uniform(int64_t n) {
  uint64_t z = (jitter_state_ += 0x9e3779b97f4a7c15ull); // splitmix64
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return n > 0 ? static_cast<int64_t>(z % static_cast<uint64_t>(n)) : 0;
}

int64_t agent_session::jittered(int64_t delay_us) {
  int64_t quarter = std::max<int64_t>(delay_us / 4, 1);
  return delay_us - quarter + uniform(2 * quarter);
}

outbound agent_session::make_hello(int64_t now) {
  bus::hello h = cfg_.identity;
  h.isolated = exec_->isolated();
  next_hello_ = now + jittered(hello_retry_);
  hello_retry_ = std::min(hello_retry_ * 2, max_hello_retry_us);
  return make(bus::type::hello, h, now);
}

std::vector<outbound> agent_session::start(int64_t now) {
  return {make_hello(now)};
}

std::vector<outbound> agent_session::on_link_up(int64_t now) {
  link_up_ = true;
  std::vector<outbound> out;
  if (ever_linked_) {
    welcomed_ = false;
    out.push_back(make_hello(now));
  } else {
    next_hello_ = now + jittered(hello_retry_us); // the queued first hello leaves now
  }
  ever_linked_ = true;
  return out;
}

void agent_session::on_link_down() {
  link_up_ = false;
  welcomed_ = false;
}

std::vector<outbound> agent_session::on_message(std::string_view header_frame,
                                                std::string_view body_frame,
                                                int64_t now) {
  ++stats_.frames_in;
  std::vector<outbound> out;
  std::string why;
  auto drop = [&](const std::string& reason) {
    ++stats_.bad_frames;
    spdlog::debug("{}: dropped a message from the server: {}", cfg_.device_id, reason);
    return std::vector<outbound>{};
  };
  auto h = bus::decode_header(header_frame, limits_, why);
  if (!h) return drop("header: " + why);
  if (h->device_id != cfg_.device_id) return drop("addressed to " + h->device_id);

  if (h->type == bus::type::welcome) {
    auto w = bus::decode<bus::welcome>(body_frame, limits_, why);
    if (!w) return drop("welcome: " + why);
    ++stats_.welcomes;
    welcomed_ = true;
    hello_retry_ = hello_retry_us;
    uint32_t ms = cfg_.heartbeat_ms ? cfg_.heartbeat_ms : w->heartbeat_interval_ms;
    if (ms == 0) ms = 5000;
    heartbeat_us_ = std::clamp<int64_t>(ms, 100, 3'600'000) * 1000;
    next_heartbeat_ = now + heartbeat_us_;
    if (stats_.welcomes == 1 && incidents_) incidents_->start_reporting(now);
    // A new welcome may mean a new server: hand it every result it has not stored.
    if (!hold_results_)
      for (const auto& id : unacked_results())
        out.push_back(make(bus::type::action_result, journal_.at(id).result, now));
    next_resend_ = now + result_resend_us;
    return out;
  }
  if (h->type == bus::type::command) {
    int64_t received = steady_us(); // agent_us counts from here
    auto c = bus::decode<bus::command>(body_frame, limits_, why);
    if (!c) return drop("command: " + why);
    if (!bus::valid_id(c->action_id)) return drop("command with an invalid action id");
    // A command the journal or the hold already has is a re-delivery: answered as
    // before, never checked as a replay. Anything new must pass the guard.
    if (guard_ && journal_.count(c->action_id) == 0 && !is_held(c->action_id)) {
      auto v = guard_->check(bus::fields_of(*c), bus::signature_bytes(c->sig), now);
      if (!v) {
        refuse(*c, v, received, now, out);
        return out;
      }
    }
    if (!hold_commands_) {
      answer(*c, received, now, out);
      return out;
    }
    // Held: the server sees the command as sent, not acknowledged. A re-delivery
    // joins nothing, so releasing runs each action once.
    if (is_held(c->action_id)) {
      spdlog::debug("{}: command {} is already held", cfg_.device_id, c->action_id);
    } else if (pending_.size() >= max_pending) {
      spdlog::warn("{}: {} commands held, dropped {}", cfg_.device_id, pending_.size(),
                   c->action_id);
    } else {
      pending_.push_back({std::move(*c), received});
      ++stats_.held_commands;
    }
    return out;
  }
  if (h->type == bus::type::cancel) {
    auto c = bus::decode<bus::cancel>(body_frame, limits_, why);
    if (!c) return drop("cancel: " + why);
    if (!bus::valid_id(c->action_id)) return drop("cancel with an invalid action id");
    if (guard_) {
      auto v = guard_->check(bus::fields_of(*c), bus::signature_bytes(c->sig), now);
      if (!v) {
        ++stats_.refused_commands;
        spdlog::warn("{}: refused cancel of {}: {}", cfg_.device_id,
                     printable(c->action_id, 128), v.text);
        out.push_back(make(bus::type::cancel_result,
                           bus::cancel_result{c->action_id, false,
                                              "cancel refused by the agent: " + v.text},
                           now));
        return out;
      }
    }
    out.push_back(make(bus::type::cancel_result, cancel(c->action_id), now));
    return out;
  }
  if (h->type == bus::type::result_ack) {
    auto a = bus::decode<bus::result_ack>(body_frame, limits_, why);
    if (!a) return drop("result_ack: " + why);
    if (!acknowledge_result(a->action_id))
      spdlog::debug("{}: result_ack for unknown action {}", cfg_.device_id, a->action_id);
    return out;
  }
  if (h->type == bus::type::rejected) {
    auto r = bus::decode<bus::rejected>(body_frame, limits_, why);
    if (!r) return drop("rejected: " + why);
    ++stats_.rejected;
    spdlog::debug("{}: the server refused a '{}': {}", cfg_.device_id, r->type,
                  r->reason);
    // The server does not know us (its database was replaced): say hello again.
    if (r->limit == "hello" && welcomed_) {
      welcomed_ = false;
      out.push_back(make_hello(now));
    }
    // The server is busy bringing other devices up: hello again once the time it
    // named has passed, spread over as long again, so that the devices it refused
    // together do not all come back together.
    if (r->type == bus::type::hello && r->retry_after_ms > 0 && !welcomed_) {
      int64_t wait = int64_t{r->retry_after_ms} * 1000;
      next_hello_ = std::max(next_hello_, now + wait + uniform(wait));
    }
    return out;
  }
  ++stats_.unknown_frames;
  spdlog::debug("{}: ignored a message of type '{}'", cfg_.device_id, h->type);
  return out;
}

std::vector<outbound> agent_session::tick(int64_t now) {
  std::vector<outbound> out;
  if (!welcomed_) {
    if (link_up_ && now >= next_hello_) out.push_back(make_hello(now));
    return out;
  }
  // Held commands, in the order they came, once the hold is lifted.
  while (!hold_commands_ && !pending_.empty()) {
    answer(pending_.front().cmd, pending_.front().received_us, now, out);
    pending_.pop_front();
  }
  if (now >= next_heartbeat_) {
    out.push_back(make(bus::type::heartbeat, bus::heartbeat{exec_->isolated()}, now));
    next_heartbeat_ = now + heartbeat_us_; // no catching up after a stall
  }
  if (incidents_ && now >= incidents_->next_report_due()) {
    if (auto rep = incidents_->take_report(now))
      out.push_back(make(bus::type::incident, *rep, now));
  }
  if (unacked_ > 0 && !hold_results_ && now >= next_resend_) {
    for (const auto& id : unacked_results())
      out.push_back(make(bus::type::action_result, journal_.at(id).result, now));
    next_resend_ = now + result_resend_us;
  }
  return out;
}

int64_t agent_session::next_due() const {
  if (!welcomed_) return link_up_ ? next_hello_ : std::numeric_limits<int64_t>::max();
  if (!hold_commands_ && !pending_.empty()) return 0;
  int64_t due = next_heartbeat_;
  if (incidents_) due = std::min(due, incidents_->next_report_due());
  if (unacked_ > 0 && !hold_results_) due = std::min(due, next_resend_);
  return due;
}

} // namespace parry::sim
