#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace parry {

/// Wall clock, microseconds since the Unix epoch.
int64_t now_us();

/// RFC 3339 UTC with microseconds, e.g. 2026-11-27T21:15:00.123456Z.
std::string format_time(int64_t us);

/// Parses an RFC 3339 date-time (`2026-12-02T10:00:00Z`, `2026-12-02T10:00:00.5+01:00`;
/// `T`/`Z` in either case, up to 9 fraction digits, cut to microseconds) into
/// microseconds since the epoch; nullopt for anything else, or a year outside
/// 1970..9999.
std::optional<int64_t> parse_time(std::string_view text);

} // namespace parry
