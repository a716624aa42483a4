#include "common/time.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace parry {

int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

std::string format_time(int64_t us) {
  if (us <= 0) return {};
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(us % 1000000));
  return buf;
}

namespace {

/// Reads exactly `n` digits at `pos` (advancing it); -1 when they are not there.
int digits(std::string_view s, std::size_t& pos, int n) {
  if (pos + n > s.size()) return -1;
  int v = 0;
  for (int i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  pos += n;
  return v;
}

bool expect(std::string_view s, std::size_t& pos, char a, char b = 0) {
  if (pos >= s.size() || (s[pos] != a && (b == 0 || s[pos] != b))) return false;
  ++pos;
  return true;
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
int64_t days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

} // namespace

std::optional<int64_t> parse_time(std::string_view s) {
  std::size_t pos = 0;
  int year = digits(s, pos, 4);
  if (year < 1970 || !expect(s, pos, '-')) return std::nullopt;
  int month = digits(s, pos, 2);
  if (month < 1 || month > 12 || !expect(s, pos, '-')) return std::nullopt;
  int day = digits(s, pos, 2);
  static const int month_days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (day < 1 || day > month_days[month - 1] || (month == 2 && day == 29 && !leap) ||
      !expect(s, pos, 'T', 't'))
    return std::nullopt;
  int hour = digits(s, pos, 2);
  if (hour < 0 || hour > 23 || !expect(s, pos, ':')) return std::nullopt;
  int minute = digits(s, pos, 2);
  if (minute < 0 || minute > 59 || !expect(s, pos, ':')) return std::nullopt;
  int second = digits(s, pos, 2);
  if (second < 0 || second > 60) return std::nullopt;
  int64_t micros = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int n = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9' && n < 9) {
      if (n < 6) micros = micros * 10 + (s[pos] - '0');
      ++pos;
      ++n;
    }
    if (n == 0) return std::nullopt;
    for (int i = n; i < 6; ++i)
      micros *= 10;
  }
  int64_t offset_s = 0;
  if (expect(s, pos, 'Z', 'z')) {
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int sign = s[pos++] == '-' ? -1 : 1;
    int oh = digits(s, pos, 2);
    if (oh < 0 || oh > 23 || !expect(s, pos, ':')) return std::nullopt;
    int om = digits(s, pos, 2);
    if (om < 0 || om > 59) return std::nullopt;
    offset_s = sign * (oh * 3600 + om * 60);
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  int64_t secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 +
                 std::min(second, 59) - offset_s;
  // A leap second (:60) exists only at 23:59:60 UTC; it counts as :59.
  if (secs < 0 || (second == 60 && secs % 86400 != 86399)) return std::nullopt;
  return secs * 1000000 + micros;
}

} // namespace parry
