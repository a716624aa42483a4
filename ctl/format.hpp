#pragma once

// The pure parts of parryctl: how answers become text and outcomes become exit
// codes. No I/O here, so all of it is unit-tested without a server.

#include <cstddef>
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
};

/// The process exit status for `o`.
int exit_code(outcome o);

/// ok for a 2xx status, server_error for anything else.
outcome outcome_for_status(int http_status);

/// For an action object: nothing while it is not final, ok when it ended
/// `completed`, server_error when it ended any other way (`failed`, ...).
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

/// `label  value` lines with the labels padded to the widest; values made printable.
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

} // namespace parry::ctl
