#pragma once

// The pure parts of parryctl: how answers become text and outcomes become exit
// codes. No I/O here, so all of it is unit-tested without a server.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctl/client.hpp"

namespace parry::ctl {

/// How a parryctl run ended; each maps to one exit status.
enum class outcome {
  ok,           ///< 0: done.
  server_error, ///< 1: the server answered with an error, or an action failed.
  usage,        ///< 2: bad command line or local configuration.
  timeout,      ///< 2: gave up waiting for an action to end.
  connection,   ///< 3: cannot reach the server, TLS failure, no answer.
  declined,     ///< 1: the operator did not confirm; nothing was done.
};

/// The process exit status for `o`.
int exit_code(outcome o);

/// ok for a 2xx status, server_error for anything else.
outcome outcome_for_status(int http_status);

/// True for the states an action never leaves: completed, failed, expired, cancelled,
/// reverted.
bool is_final_state(std::string_view state);

/// For an action object: nothing while it is not final, ok when it ended
/// `completed`, server_error when it ended any other way (`failed`, `expired`,
/// `cancelled`, `reverted`). Final means `"final": true` or a final state.
std::optional<outcome> outcome_for_action(const nlohmann::json& action);

/// `s` made safe for a terminal: control characters, invalid UTF-8 and bidi
/// overrides are escaped (`\n`, `\x1b`, `\u202e`). Server data carries command lines
/// and file names an attacker chose, and those must not drive the operator's terminal.
std::string printable(std::string_view s);

/// Width of UTF-8 text in code points (enough for the names and paths we show).
std::size_t display_width(std::string_view s);

/// An aligned table: header row, then rows; two spaces between columns, no trailing
/// blanks, one line per row. Cells are passed through printable(); short rows are
/// padded with empty cells.
std::string format_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows);

/// `label  value` lines with the labels padded to the widest; labels and values made
/// printable (labels may be keys the server chose).
std::string format_fields(const std::vector<std::pair<std::string, std::string>>& fields);

/// A JSON member as display text: strings as they are, numbers, `yes`/`no` for
/// booleans, arrays joined with ", ", `-` when missing, null or empty.
std::string cell(const nlohmann::json& object, std::string_view key);

/// One event's subject: the file path, then the process image, pid and command line
/// (as "by ..." after a file), then the detail text if any.
std::string describe_event(const nlohmann::json& event);

/// An incident's events as a tree by `parent_id`: roots and siblings in time order,
/// children indented under their parent, one line per event (time, type, subject),
/// the key event marked `[DETECTION]`. Events whose parent is missing become roots;
/// a parent cycle cannot loop. Each line ends with '\n'.
std::string render_chain(const nlohmann::json& incident);

/// Percent-encodes everything but RFC 3986 unreserved characters, for use as a path
/// segment or query value.
std::string percent_encode(std::string_view s);

/// `?k=v&...` from the pairs with a non-empty value (encoded); empty if none.
std::string query_string(const std::vector<std::pair<std::string, std::string>>& params);

/// `error: <code>: <message>` for an answer that is not 2xx; falls back to the HTTP
/// status and the start of the raw body when the body is not a Parry error.
std::string error_line(const response& r);

/// Pretty JSON with the server's key order kept; `raw` unchanged if it is not JSON.
std::string pretty_json(std::string_view raw);

/// Orders strings with digit runs compared as numbers, so `arg.2` < `arg.10`.
bool natural_less(std::string_view a, std::string_view b);

/// The API action type a parryctl command triggers (`delete-file` -> `delete_file`,
/// `release` -> `release_isolation`), or empty for an unknown command.
std::string action_type_for_command(std::string_view command);

/// The parryctl command for an API action type (`terminate_process` -> `terminate`);
/// the type itself when no command triggers it (`allow_run`).
std::string command_for_action_type(std::string_view type);

/// The type of the action that undoes a completed action of `type`
/// (`quarantine` -> `restore_from_quarantine`), or empty if it cannot be reversed.
std::string reverse_type(std::string_view type);

/// True if triggering `type` needs the caller's password according to the
/// `password_required` list of an available-actions answer; `start_process` always does.
bool needs_password(std::string_view type, const nlohmann::json& available);

/// Why `type` does not apply to the target (`event_id`, empty for the detection)
/// according to an available-actions answer, or empty when it applies or the answer
/// does not say (then the server decides).
std::string applicability_problem(std::string_view type, std::string_view event_id,
                                  const nlohmann::json& available);

/// The `available` view of an available-actions answer: a heading line, then a table
/// of targets (the device, the detection, each event) with their actions as parryctl
/// commands, `*` marking those that ask for a password. `incident` (may be null) adds
/// each event's object (file, process) from GET /incidents/{id}.
std::string render_available_actions(const nlohmann::json& available,
                                     const nlohmann::json& incident);

/// What triggering `type` will do, for the operator to confirm: the device (`device`
/// may be null), the incident, the target (`event_id`, empty for the detection) and
/// the object taken from that event (file path and SHA-256, or process pid, image and
/// start time), or the `start_process` parameters in `params`. Every line escaped.
std::string describe_pending_action(std::string_view type, const nlohmann::json& incident,
                                    std::string_view event_id,
                                    const nlohmann::json& params,
                                    const nlohmann::json& device);

/// What reversing `original` (an action object) with `reverse` will do, escaped.
std::string describe_reverse(const nlohmann::json& original, std::string_view reverse);

/// An action's target as text: `event e2`, `detection` or `-`.
std::string action_target_text(const nlohmann::json& action);

/// `ok`, `failed: <error>` or `-` for an action's `result`.
std::string result_text(const nlohmann::json& action);

/// The fields `parryctl action ID` shows, in order: identity, state, who and when,
/// reverse links, each parameter (natural key order) and each effect key.
std::vector<std::pair<std::string, std::string>>
action_fields(const nlohmann::json& action);

/// The verdict on an audit trail.
struct audit_verdict {
  bool intact = false;
  std::size_t records = 0; ///< Records checked.
  std::int64_t head_seq = 0;
  std::string head_hash;
  std::string problem; ///< The first problem found; empty when intact.
};

/// Checks an audit trail record by record (docs/rest-api.md, Audit trail): each
/// `hash` is the SHA-256 of `seq\ntime_us\nactor\nkind\ntarget\ndetail\nprev_hash`,
/// each `prev_hash` the hash before it (64 zeros for record 1), seq counts 1, 2, 3...
/// Feed records in the server's order; memory stays constant however long the trail.
class audit_chain {
public:
  /// Checks the next record. False once a problem is certain and later records can
  /// no longer change the verdict.
  bool add(const nlohmann::json& record);
  /// The verdict, with the end of the trail checked against the server's `head`
  /// ({seq, hash}).
  audit_verdict finish(const nlohmann::json& head) const;
  /// Records fed so far.
  std::size_t size() const { return count_; }

private:
  std::size_t count_ = 0;
  std::int64_t last_seq_ = 0;
  std::string last_hash_ = std::string(64, '0');
  std::string problem_;
  // A jump in seq, kept open until we know whether the missing record comes later
  // (a reordering) or never (a removal): {expected, found}.
  std::optional<std::pair<std::int64_t, std::int64_t>> gap_;
};

/// audit_chain over a whole `records` array.
audit_verdict verify_audit_trail(const nlohmann::json& records,
                                 const nlohmann::json& head);

/// Fetches a whole trail with `fetch(after)` (one GET /audit answer: the records after
/// seq `after`, and the head) page by page until a page comes back empty, and checks it
/// as it comes. Stops early once the verdict is certain, and when a page does not move
/// past `after` (which would otherwise loop forever).
audit_verdict
verify_audit_pages(const std::function<nlohmann::json(std::int64_t after)>& fetch);

/// `audit trail intact: N records, head <hash prefix>` or
/// `audit trail broken: <problem>`, escaped.
std::string audit_summary(const audit_verdict& v);

} // namespace parry::ctl
