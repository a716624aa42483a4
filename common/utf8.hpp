#pragma once

// UTF-8 checks for bytes that arrive from outside (bus, HTTP, files, config).
// Strict: no overlong forms, no surrogates, nothing above U+10FFFF.

#include <cstddef>
#include <string>
#include <string_view>

namespace parry {

/// True when `s` is well-formed UTF-8.
bool valid_utf8(std::string_view s);

/// The longest prefix of `s` that has at most `max_bytes` bytes and does not end in the
/// middle of a character. `s` is assumed valid; an invalid tail is cut as well.
std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes);

/// `s` with every ill-formed sequence replaced by U+FFFD, for logs and displays of
/// text that failed validation.
std::string utf8_sanitized(std::string_view s);

/// Appends `s`, which must be valid UTF-8 (`utf8_sanitized` first when it may not
/// be), as a JSON string: quoted, with `"`, `\\` and control characters escaped.
void append_json_string(std::string& out, std::string_view s);

/// `s` for an error message: in single quotes, ill-formed UTF-8 and control
/// characters replaced, cut to 80 bytes (with "..." when cut).
std::string shown(const std::string& s);

} // namespace parry
