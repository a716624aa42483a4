#pragma once

// The parameters of each action type, checked and typed. An agent checks a command
// again before it executes, whatever the server checked: this file turns the
// `params` map of a bus::command into one of the structs below or into the reason it
// was refused. It touches no endpoint state, so the simulated and a real executor
// receive the same checked values (agent-sim/executor.hpp).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bus/messages.hpp"
#include "common/domain.hpp"

namespace parry::sim {

/// Longest piece of a parameter quoted back in an error or log line.
constexpr std::size_t max_quoted = 512;

/// A parameter as it may appear in an error or log line: one line, at most `max`
/// bytes (then "..."), valid UTF-8 so the server can store and show it as text;
/// anything else becomes '?'.
std::string printable(std::string_view s, std::size_t max = max_quoted);

/// prevent_run, allow_run: the hash. A `path` is informational, checked if given.
struct hash_args {
  std::string sha256; ///< 64 lower-case hex digits.
};

/// quarantine, delete_file: the file and the hash it must still have.
struct file_args {
  std::string path;   ///< Absolute, no '..' component, within the path limit.
  std::string sha256; ///< 64 lower-case hex digits.
};

/// restore_from_quarantine. The server repeats the quarantined file's path and hash;
/// when given they must match the entry.
struct restore_args {
  std::string quarantine_id; ///< Not empty; otherwise as the server sent it.
  std::string path;          ///< Unchecked text to compare with the entry; "" if absent.
  std::string sha256;        ///< 64 lower-case hex digits; "" if absent.
};

/// terminate_process: the process as it was detected.
struct terminate_args {
  uint32_t pid = 0;       ///< 1 .. 4294967295.
  int64_t start_time = 0; ///< Microseconds since the epoch, as reported.
  std::string image;      ///< Unchecked text to compare with the image; "" if absent.
};

/// start_process: what to run, where, with which arguments (no shell).
struct start_args {
  std::string path;              ///< Absolute path of the executable.
  std::string working_directory; ///< Absolute; "" means the agent's default.
  std::vector<std::string> args; ///< argv[1..]; at most 64, 32 KiB together, no NUL.
};

/// The checked parameters of each action type, or nothing with `why` set to the error
/// the result carries. `os` selects the path rules (common/domain.hpp). Checks run in
/// a fixed order and the first failure is reported.
std::optional<hash_args> parse_hash_args(const bus::command& cmd, os_family os,
                                         std::string& why);
std::optional<file_args> parse_file_args(const bus::command& cmd, os_family os,
                                         std::string& why);
std::optional<restore_args> parse_restore_args(const bus::command& cmd, std::string& why);
std::optional<terminate_args> parse_terminate_args(const bus::command& cmd,
                                                   std::string& why);
std::optional<start_args> parse_start_args(const bus::command& cmd, os_family os,
                                           std::string& why);

} // namespace parry::sim
