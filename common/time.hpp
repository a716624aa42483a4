#pragma once

#include <cstdint>
#include <string>

namespace parry {

/// Wall clock, microseconds since the Unix epoch.
int64_t now_us();

/// RFC 3339 UTC with microseconds, e.g. 2026-11-27T21:15:00.123456Z.
std::string format_time(int64_t us);

} // namespace parry
