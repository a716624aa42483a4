#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <optional>

#include <caf/actor_clock.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/fwd.hpp"

namespace parry {

/// How an action retries a transition write the store refused (disk full, I/O error).
struct write_retry {
  /// Wait before the first retry; it doubles on each further attempt...
  caf::timespan first = std::chrono::milliseconds{100};
  /// ...up to this.
  caf::timespan max = std::chrono::seconds{30};
  /// Retries of the transition itself; after them the action ends `failed` with the
  /// store's error as the reason, retried at `max` intervals until the store takes it.
  int attempts = 8;
  /// How long one write may take before it counts as failed.
  caf::timespan timeout = std::chrono::seconds{30};
};

/// A transition on its way to the store (see `advance` in response_action.cpp).
struct pending_write {
  action_record rec; ///< The record with the new state, as it will be stored.
  transition t;
  std::function<void()> then;
  /// Runs if the move is given up (the action then ends `failed`).
  std::function<void(const caf::error&)> abandon;
  int failures = 0;
  bool giving_up = false; ///< Now storing `failed` instead of the refused move.
  /// The directory stores it (as registered, with other actions): its outcome comes
  /// as a message (`reg`), never by a write of the action's own.
  bool by_directory = false;
};

struct response_action_state {
  static inline constexpr const char* name = "response_action";

  /// The action as last stored.
  action_record rec;
  /// Where its command executes.
  device_actor device;
  action_store_actor store;
  /// Execution deadline after acknowledgement.
  caf::timespan exec_deadline = std::chrono::hours{1};
  write_retry retry;

  /// A write is in flight or waiting to be retried: later messages wait in `waiting`,
  /// so transitions are stored in the order they happen.
  std::optional<pending_write> writing;
  std::deque<std::function<void()>> waiting;
  /// Messages refused because `waiting` was full.
  uint64_t refused = 0;
  /// When the execution deadline passes (actor clock); unset when none runs.
  std::optional<caf::actor_clock::time_point> deadline;
  /// What a `cancelling` action becomes when the agent confirms the command never ran.
  action_state cancel_to = state::cancelled;
  std::string cancel_reason;
};

/// Messages that may wait behind one write.
inline constexpr std::size_t max_waiting = 64;

using response_action_stateful =
    response_action_actor::stateful_pointer<response_action_state>;

/// One response action. `rec.created_at` zero means new: `start` stores it as
/// registered. Otherwise it is stored, or being stored by the directory (`reg`), or
/// resumed from the store after a restart (a non-final state).
response_action_actor::behavior_type
response_action(response_action_stateful self, action_record rec, device_actor device,
                action_store_actor store,
                caf::timespan exec_deadline = std::chrono::hours{1},
                write_retry retry = {});

/// Why an action is `sent`, in its transition.
inline constexpr const char* sent_reason = "delivered to the agent";

/// Makes `rec`, a new action, registered at `now` (µs since the epoch): answers its
/// first transition.
transition make_registered(action_record& rec, int64_t now);

/// The bus command that carries `rec` to the agent.
bus::command to_command(const action_record& rec);

/// Why an action ends `failed` without the agent's result (DESIGN.md §4).
inline constexpr const char* no_result_reason = "no result from the agent";
inline constexpr const char* no_cancel_answer_reason =
    "no answer from the agent to the cancel";
inline constexpr const char* store_refused_prefix = "cannot store state ";

/// True for a final action that ended without a result from the agent (expired,
/// cancelled, or failed by a deadline or the store): a result arriving later is news.
bool ended_without_agent_result(const action_record& rec);

/// True when the lifecycle allows the move `from` -> `to` (the table in
/// response_action.cpp).
bool transition_allowed(action_state from, action_state to);

} // namespace parry
