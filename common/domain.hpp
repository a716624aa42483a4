#pragma once

// The domain's words in one place (DESIGN.md §1, §2, §4): action types, action
// states, roles, target kinds, event types, and the rules that tie them together.
// Strings exist only at the edges (SQLite, JSON, msgpack, CLI); everything inside
// uses these enums. Every `switch` over them has no `default`, so adding a value is
// a compile error until each rule below (and each executor) says what it means.
//
// No CAF, no JSON: the server, the simulator and parryctl all link this.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace parry {

// -- the words ----------------------------------------------------------------------

/// A response action's type (DESIGN.md §2).
enum class action_type : uint8_t {
  isolate,
  release_isolation,
  start_process,
  prevent_run,
  allow_run,
  quarantine,
  restore_from_quarantine,
  delete_file,
  terminate_process,
};

/// Where a response action is in its life (DESIGN.md §4).
enum class action_state : uint8_t {
  registered,
  queued,
  sent,
  acknowledged,
  cancelling, ///< A cancel is on the wire; the agent has not answered yet.
  completed,
  failed,
  expired,
  cancelled,
  reverted,
};

/// What a user may do (DESIGN.md §2).
enum class user_role : uint8_t {
  administrator,    ///< Everything, users included.
  security_officer, ///< View, trigger, cancel, reverse.
  operator_,        ///< View only (spelled "operator" at the edges).
};

/// How a request names the event it acts on.
enum class target_kind : uint8_t {
  detection, ///< The key activity event (the threat detection object).
  event,     ///< Any event of the chain, by id.
};

/// An activity event's type. `other` stands for any type this build does not know
/// (agents may be newer): such events are shown, never acted on.
enum class event_type : uint8_t {
  file_created,
  process_started,
  file_modified,
  network_connection,
  module_loaded,
  other,
};

/// What an action acts on.
enum class action_object : uint8_t { device, file, process };

/// The rules of the endpoint's operating system that paths and command lines follow.
enum class os_family : uint8_t { posix, windows };

/// Every value, in declaration order (for tables, help texts and tests).
extern const action_type all_action_types[9];
extern const action_state all_action_states[10];
extern const user_role all_user_roles[3];
extern const target_kind all_target_kinds[2];
extern const event_type all_event_types[6];

const char* to_string(action_type x);
const char* to_string(action_state x);
const char* to_string(user_role x);
const char* to_string(target_kind x);
/// "other" for `event_type::other`; show the event's own type string instead.
const char* to_string(event_type x);
const char* to_string(action_object x);
const char* to_string(os_family x);

/// The value spelled `s` exactly (lower case, as in to_string), or nothing.
std::optional<action_type> action_type_from_string(std::string_view s);
std::optional<action_state> action_state_from_string(std::string_view s);
std::optional<user_role> user_role_from_string(std::string_view s);
std::optional<target_kind> target_kind_from_string(std::string_view s);
/// Never empty for a string: a type this build does not know is `other`. Only the
/// exact spelling "other" itself is also `other`.
event_type event_type_from_string(std::string_view s);

/// The legal spellings, comma-separated, for error messages ("isolate, ...").
std::string legal_action_types();
std::string legal_action_states();
std::string legal_user_roles();
std::string legal_target_kinds();

// -- the table (hold it against DESIGN.md §2) ---------------------------------------

/// What an action of type `t` acts on.
action_object object_of(action_type t);

/// True when `t` acts on the device as a whole (isolate, release, start_process).
bool acts_on_device(action_type t);

/// True when an action of type `t` may target an event of type `e`: device actions
/// apply to any incident; file actions to `file_created` and `process_started`;
/// `terminate_process` to `process_started` only. Never true for `other`.
bool applies_to(action_type t, event_type e);

/// The action that undoes `t` (isolate → release_isolation, prevent_run → allow_run,
/// quarantine → restore_from_quarantine), or nothing.
std::optional<action_type> reverse_of(action_type t);

/// The action `t` undoes, when `t` is a reverse; nothing otherwise.
std::optional<action_type> undoes(action_type t);

/// True for the reverse actions: they exist only through POST /actions/{id}/reverse
/// (release_isolation may also be requested directly on an isolated device).
bool is_reverse(action_type t);

/// True for types a person may name in POST /actions.
bool is_requestable(action_type t);

/// True when the action checks the file's SHA-256 before it acts.
bool checks_sha256(action_type t);

/// True for types that need the password whatever the configuration says.
bool password_always(action_type t);

/// True for types that need the password re-entered unless configured otherwise.
bool password_by_default(action_type t);

/// The default password-required set (password_always included).
std::vector<action_type> default_password_required();

/// True for states an action never leaves.
bool is_final(action_state s);

/// True when `r` may trigger, cancel and reverse actions.
bool may_trigger(user_role r);

/// True when `r` may manage users and read the audit trail.
bool may_administer(user_role r);

// -- paths, hashes, arguments -------------------------------------------------------

/// Longest path an action may carry, in bytes (PATH_MAX on Linux).
inline constexpr std::size_t max_path_bytes = 4096;
/// Most arguments a start_process may carry.
inline constexpr std::size_t max_arguments = 64;
/// Most bytes of all arguments together.
inline constexpr std::size_t max_arguments_bytes = 32 * 1024;

/// The OS family of a device from its reported `os` text: Windows when it names
/// Windows, POSIX otherwise.
os_family os_family_of(std::string_view os);

/// True for `/...` (POSIX) or `X:\...`, `X:/...`, `\\server\share...` (Windows).
bool absolute_path(std::string_view p, os_family os);

/// Why `p` cannot name a file an action acts on, empty when it can: empty, longer
/// than max_path_bytes, not valid UTF-8, a NUL or another control character, not
/// absolute (in `os` terms, or in either when `os` is not given), a `..` component.
std::string path_problem(std::string_view p, std::optional<os_family> os = std::nullopt);

/// True for 64 hexadecimal digits in either case.
bool is_sha256(std::string_view s);

/// `s` in lower case when it is a SHA-256, otherwise unchanged (it stays shown as
/// the agent sent it, and is_sha256 refuses it).
std::string normalized_sha256(std::string s);

/// Splits startup keys into argv without running anything. POSIX: shell words
/// (blanks are spaces and tabs; single quotes take everything literally; double
/// quotes let `\"` and `\\` escape; outside quotes a backslash escapes the next
/// character, a trailing one stays); fails on an unbalanced quote. Windows: the
/// rules of CommandLineToArgvW for arguments after the program name (blanks are
/// spaces and tabs; backslashes are literal unless they precede `"`; 2n backslashes
/// and `"` give n backslashes and toggle quoting; 2n+1 give n backslashes and a
/// literal `"`; inside quotes `""` gives a literal `"` and ends the quoting; an
/// unterminated quote runs to the end). Returns nothing and sets `why` on failure.
std::optional<std::vector<std::string>> split_arguments(std::string_view text,
                                                        os_family os, std::string& why);

/// Why `argv` cannot be carried by start_process (count, total size, UTF-8, NUL or
/// control characters other than tab), empty when it can.
std::string arguments_problem(const std::vector<std::string>& argv);

} // namespace parry
