#include "server/logging.hpp"

#include <array>
#include <chrono>
#include <ctime>

#include <nlohmann/json.hpp>
#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

namespace parry {
namespace {

constexpr std::array<std::string_view, 4> tag_names{"action", "device", "incident",
                                                    "user"};
constexpr std::size_t max_tag_value = 128;

bool is_tag_name(std::string_view name) {
  for (auto n : tag_names)
    if (n == name) return true;
  return false;
}

/// "2026-12-02T04:35:00.123456Z".
std::string rfc3339_micros(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  auto us = duration_cast<microseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  auto n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ",
                static_cast<long long>(us % 1000000));
  return buf;
}

class json_formatter final : public spdlog::formatter {
public:
  void format(const spdlog::details::log_msg& m, spdlog::memory_buf_t& dest) override {
    std::string_view text{m.payload.data(), m.payload.size()};
    nlohmann::ordered_json line;
    line["time"] = rfc3339_micros(m.time);
    auto level = spdlog::level::to_string_view(m.level);
    line["level"] = std::string{level.data(), level.size()};
    take_tags(text, line);
    line["msg"] = std::string{text};
    auto out = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    out += '\n';
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<json_formatter>();
  }

private:
  /// Moves a leading "[name=value ...] " of known names into `line`; leaves `text`
  /// as it is when the prefix is not exactly that shape.
  static void take_tags(std::string_view& text, nlohmann::ordered_json& line) {
    if (text.empty() || text.front() != '[') return;
    auto close = text.find("] ");
    if (close == std::string_view::npos) return;
    nlohmann::ordered_json fields = nlohmann::ordered_json::object();
    for (auto rest = text.substr(1, close - 1); !rest.empty();) {
      auto space = rest.find(' ');
      auto pair = rest.substr(0, space);
      rest = space == std::string_view::npos ? "" : rest.substr(space + 1);
      auto eq = pair.find('=');
      if (eq == std::string_view::npos || !is_tag_name(pair.substr(0, eq))) return;
      fields[std::string{pair.substr(0, eq)}] = std::string{pair.substr(eq + 1)};
    }
    line.update(fields);
    text.remove_prefix(close + 2);
  }
};

} // namespace

std::string
log_tags(std::initializer_list<std::pair<const char*, std::string_view>> tags) {
  std::string out;
  for (const auto& [name, value] : tags) {
    if (value.empty()) continue;
    out += out.empty() ? "[" : " ";
    out += name;
    out += '=';
    for (char c : value.substr(0, max_tag_value)) {
      auto u = static_cast<unsigned char>(c);
      out += (u <= 0x20 || u == 0x7f || c == ']' || c == '=') ? '_' : c;
    }
  }
  return out.empty() ? out : out + "] ";
}

std::unique_ptr<spdlog::formatter> json_log_formatter() {
  return std::make_unique<json_formatter>();
}

void configure_logging(const std::string& level, const std::string& format) {
  spdlog::set_level(spdlog::level::from_str(level));
  // Both ways: a reload may turn JSON lines back into text.
  if (format == "json")
    spdlog::set_formatter(json_log_formatter());
  else
    spdlog::set_formatter(std::make_unique<spdlog::pattern_formatter>());
}

} // namespace parry
