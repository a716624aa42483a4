// Checks and types the parameters of each action type (see action_params.hpp): the
// one place an agent decides whether a command's values may reach an executor.

#include "agent-sim/action_params.hpp"

#include <algorithm>
#include <limits>

namespace parry::sim {

namespace {

// Bounds on what a command may carry, the server's own limits (rest-api.md).
constexpr std::size_t max_args = parry::max_arguments;
constexpr std::size_t max_args_bytes = parry::max_arguments_bytes;

// Length of the valid UTF-8 sequence starting at `s[i]`, 0 when there is none.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b = byte(i);
  std::size_t n = b < 0x80           ? 1
                  : (b >> 5) == 0x6  ? 2
                  : (b >> 4) == 0xe  ? 3
                  : (b >> 3) == 0x1e ? 4
                                     : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  return n;
}

} // namespace

std::string printable(std::string_view s, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_length(s, i);
    if (out.size() + std::max<std::size_t>(n, 1) > max) return out + "...";
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (n == 0 || c < 0x20 || c == 0x7f) {
      out += '?';
      i += 1;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

namespace {

// Why `p` cannot name a file or directory here, in the endpoint's own terms (the
// rules of common/domain.hpp); empty when it can.
std::string path_problem(const std::string& p, os_family os, const std::string& what) {
  std::string why = parry::path_problem(p, os);
  if (why.empty()) return {};
  constexpr std::string_view prefix = "the path";
  if (why.rfind(prefix, 0) == 0) why = what + why.substr(prefix.size());
  if (why.find("not absolute") != std::string::npos ||
      why.find("'..' component") != std::string::npos)
    why += ": " + printable(p);
  return why;
}

// Strict decimal: digits only, no sign, no spaces, no overflow.
bool parse_decimal(const std::string& s, uint64_t max, uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (d > max || v > (max - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

bool parse_time(const std::string& s, int64_t& out) {
  bool negative = !s.empty() && s[0] == '-';
  uint64_t v = 0;
  if (!parse_decimal(negative ? s.substr(1) : s,
                     static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), v))
    return false;
  out = negative ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
  return true;
}

// 64 hex digits in either case, returned lower-case as incidents report them.
bool parse_sha256(const std::string& s, std::string& out) {
  if (!parry::is_sha256(s)) return false;
  out = parry::normalized_sha256(s);
  return true;
}

const std::string* param(const bus::command& c, const std::string& key) {
  auto it = c.params.find(key);
  return it == c.params.end() ? nullptr : &it->second;
}

// The `sha256` param, checked; false with `why` set if missing or malformed.
bool sha256_param(const bus::command& cmd, std::string& why, std::string& sha256) {
  const std::string* h = param(cmd, "sha256");
  if (!h || h->empty()) {
    why = "missing param sha256";
    return false;
  }
  if (!parse_sha256(*h, sha256)) {
    why = "sha256 must be 64 hex digits, got '" + printable(*h, 80) + "'";
    return false;
  }
  return true;
}

} // namespace

std::optional<hash_args> parse_hash_args(const bus::command& cmd, os_family os,
                                         std::string& why) {
  const std::string* p = param(cmd, "path");
  if (p && !p->empty()) {
    why = path_problem(*p, os, "path");
    if (!why.empty()) return std::nullopt;
  }
  hash_args out;
  if (!sha256_param(cmd, why, out.sha256)) return std::nullopt;
  return out;
}

std::optional<file_args> parse_file_args(const bus::command& cmd, os_family os,
                                         std::string& why) {
  const std::string* p = param(cmd, "path");
  if (!p || p->empty()) {
    why = "missing param path";
    return std::nullopt;
  }
  why = path_problem(*p, os, "path");
  if (!why.empty()) return std::nullopt;
  file_args out;
  if (!sha256_param(cmd, why, out.sha256)) return std::nullopt;
  out.path = *p;
  return out;
}

std::optional<restore_args> parse_restore_args(const bus::command& cmd,
                                               std::string& why) {
  restore_args out;
  const std::string* qid = param(cmd, "quarantine_id");
  if (!qid || qid->empty()) {
    why = "missing param quarantine_id";
    return std::nullopt;
  }
  out.quarantine_id = *qid;
  if (const std::string* p = param(cmd, "path")) out.path = *p;
  const std::string* h = param(cmd, "sha256");
  if (h && !h->empty() && !parse_sha256(*h, out.sha256)) {
    why = "sha256 must be 64 hex digits, got '" + printable(*h, 80) + "'";
    return std::nullopt;
  }
  return out;
}

std::optional<terminate_args> parse_terminate_args(const bus::command& cmd,
                                                   std::string& why) {
  const std::string* pid_text = param(cmd, "pid");
  const std::string* start_text = param(cmd, "start_time");
  if (!pid_text || pid_text->empty()) {
    why = "missing param pid";
    return std::nullopt;
  }
  uint64_t pid = 0;
  if (!parse_decimal(*pid_text, std::numeric_limits<uint32_t>::max(), pid) || pid == 0) {
    why = "pid must be a decimal number from 1 to 4294967295, got '" +
          printable(*pid_text, 40) + "'";
    return std::nullopt;
  }
  if (!start_text || start_text->empty()) {
    why = "missing param start_time";
    return std::nullopt;
  }
  terminate_args out;
  if (!parse_time(*start_text, out.start_time)) {
    why = "start_time must be a decimal number of microseconds, got '" +
          printable(*start_text, 40) + "'";
    return std::nullopt;
  }
  out.pid = static_cast<uint32_t>(pid);
  if (const std::string* image = param(cmd, "image")) out.image = *image;
  return out;
}

std::optional<start_args> parse_start_args(const bus::command& cmd, os_family os,
                                           std::string& why) {
  auto refuse = [&](std::string reason) {
    why = std::move(reason);
    return std::nullopt;
  };
  start_args out;
  const std::string* path = param(cmd, "path");
  if (!path || path->empty()) return refuse("missing param path");
  if (std::string bad = path_problem(*path, os, "path"); !bad.empty()) return refuse(bad);
  out.path = *path;
  const std::string* wd = param(cmd, "working_directory");
  if (wd && !wd->empty()) {
    if (std::string bad = path_problem(*wd, os, "working_directory"); !bad.empty())
      return refuse(bad);
    out.working_directory = *wd;
  }

  uint64_t argc = 0;
  const std::string* argc_text = param(cmd, "argc");
  if (argc_text && !parse_decimal(*argc_text, max_args, argc))
    return refuse("argc must be a number from 0 to " + std::to_string(max_args) +
                  ", got '" + printable(*argc_text, 40) + "'");
  for (const auto& [key, value] : cmd.params) {
    if (key.rfind("arg.", 0) != 0) continue;
    uint64_t i = 0;
    if (!parse_decimal(key.substr(4), max_args, i) || key != "arg." + std::to_string(i) ||
        i >= argc)
      return refuse("unexpected param " + printable(key, 40) + ": argc is " +
                    std::to_string(argc));
  }
  std::size_t arg_bytes = 0;
  for (uint64_t i = 0; i < argc; ++i) {
    std::string key = "arg." + std::to_string(i);
    const std::string* a = param(cmd, key);
    if (!a) return refuse("missing param " + key + ": argc is " + std::to_string(argc));
    if (a->find('\0') != std::string::npos) return refuse(key + " contains a NUL byte");
    arg_bytes += a->size();
    if (arg_bytes > max_args_bytes) return refuse("arguments are longer than 32 KiB");
    out.args.push_back(*a);
  }
  return out;
}

} // namespace parry::sim
