#include "common/domain.hpp"

#include <algorithm>

#include "common/utf8.hpp"

namespace parry {

const action_type all_action_types[9] = {action_type::isolate,
                                         action_type::release_isolation,
                                         action_type::start_process,
                                         action_type::prevent_run,
                                         action_type::allow_run,
                                         action_type::quarantine,
                                         action_type::restore_from_quarantine,
                                         action_type::delete_file,
                                         action_type::terminate_process};
const action_state all_action_states[10] = {
    action_state::registered,   action_state::queued,     action_state::sent,
    action_state::acknowledged, action_state::cancelling, action_state::completed,
    action_state::failed,       action_state::expired,    action_state::cancelled,
    action_state::reverted};
const user_role all_user_roles[3] = {user_role::administrator,
                                     user_role::security_officer, user_role::operator_};
const target_kind all_target_kinds[2] = {target_kind::detection, target_kind::event};
const event_type all_event_types[6] = {
    event_type::file_created,  event_type::process_started,
    event_type::file_modified, event_type::network_connection,
    event_type::module_loaded, event_type::other};

// -- spelling -------------------------------------------------------------------------

const char* to_string(action_type x) {
  switch (x) {
  case action_type::isolate:
    return "isolate";
  case action_type::release_isolation:
    return "release_isolation";
  case action_type::start_process:
    return "start_process";
  case action_type::prevent_run:
    return "prevent_run";
  case action_type::allow_run:
    return "allow_run";
  case action_type::quarantine:
    return "quarantine";
  case action_type::restore_from_quarantine:
    return "restore_from_quarantine";
  case action_type::delete_file:
    return "delete_file";
  case action_type::terminate_process:
    return "terminate_process";
  }
  return "?";
}

const char* to_string(action_state x) {
  switch (x) {
  case action_state::registered:
    return "registered";
  case action_state::queued:
    return "queued";
  case action_state::sent:
    return "sent";
  case action_state::acknowledged:
    return "acknowledged";
  case action_state::cancelling:
    return "cancelling";
  case action_state::completed:
    return "completed";
  case action_state::failed:
    return "failed";
  case action_state::expired:
    return "expired";
  case action_state::cancelled:
    return "cancelled";
  case action_state::reverted:
    return "reverted";
  }
  return "?";
}

const char* to_string(user_role x) {
  switch (x) {
  case user_role::administrator:
    return "administrator";
  case user_role::security_officer:
    return "security_officer";
  case user_role::operator_:
    return "operator";
  }
  return "?";
}

const char* to_string(target_kind x) {
  switch (x) {
  case target_kind::detection:
    return "detection";
  case target_kind::event:
    return "event";
  }
  return "?";
}

const char* to_string(event_type x) {
  switch (x) {
  case event_type::file_created:
    return "file_created";
  case event_type::process_started:
    return "process_started";
  case event_type::file_modified:
    return "file_modified";
  case event_type::network_connection:
    return "network_connection";
  case event_type::module_loaded:
    return "module_loaded";
  case event_type::other:
    return "other";
  }
  return "?";
}

const char* to_string(action_object x) {
  switch (x) {
  case action_object::device:
    return "device";
  case action_object::file:
    return "file";
  case action_object::process:
    return "process";
  }
  return "?";
}

const char* to_string(os_family x) {
  switch (x) {
  case os_family::posix:
    return "posix";
  case os_family::windows:
    return "windows";
  }
  return "?";
}

namespace {

template <class E, std::size_t N>
std::optional<E> lookup(const E (&all)[N], std::string_view s) {
  for (E x : all)
    if (s == to_string(x)) return x;
  return std::nullopt;
}

template <class E, std::size_t N> std::string legal(const E (&all)[N]) {
  std::string out;
  for (E x : all) {
    if (!out.empty()) out += ", ";
    out += to_string(x);
  }
  return out;
}

} // namespace

std::optional<action_type> action_type_from_string(std::string_view s) {
  return lookup(all_action_types, s);
}
std::optional<action_state> action_state_from_string(std::string_view s) {
  return lookup(all_action_states, s);
}
std::optional<user_role> user_role_from_string(std::string_view s) {
  return lookup(all_user_roles, s);
}
std::optional<target_kind> target_kind_from_string(std::string_view s) {
  return lookup(all_target_kinds, s);
}
event_type event_type_from_string(std::string_view s) {
  return lookup(all_event_types, s).value_or(event_type::other);
}

std::string legal_action_types() {
  return legal(all_action_types);
}
std::string legal_action_states() {
  return legal(all_action_states);
}
std::string legal_user_roles() {
  return legal(all_user_roles);
}
std::string legal_target_kinds() {
  return legal(all_target_kinds);
}

// -- the table --------------------------------------------------------------------------

action_object object_of(action_type t) {
  switch (t) {
  case action_type::isolate:
  case action_type::release_isolation:
  case action_type::start_process:
    return action_object::device;
  case action_type::prevent_run:
  case action_type::allow_run:
  case action_type::quarantine:
  case action_type::restore_from_quarantine:
  case action_type::delete_file:
    return action_object::file;
  case action_type::terminate_process:
    return action_object::process;
  }
  return action_object::device;
}

bool acts_on_device(action_type t) {
  return object_of(t) == action_object::device;
}

bool applies_to(action_type t, event_type e) {
  switch (object_of(t)) {
  case action_object::device:
    return true;
  case action_object::file:
    switch (e) {
    case event_type::file_created:
    case event_type::process_started:
      return true;
    case event_type::file_modified:
    case event_type::network_connection:
    case event_type::module_loaded:
    case event_type::other:
      return false;
    }
    return false;
  case action_object::process:
    return e == event_type::process_started;
  }
  return false;
}

std::optional<action_type> reverse_of(action_type t) {
  switch (t) {
  case action_type::isolate:
    return action_type::release_isolation;
  case action_type::prevent_run:
    return action_type::allow_run;
  case action_type::quarantine:
    return action_type::restore_from_quarantine;
  case action_type::release_isolation:
  case action_type::start_process:
  case action_type::allow_run:
  case action_type::restore_from_quarantine:
  case action_type::delete_file:
  case action_type::terminate_process:
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<action_type> undoes(action_type t) {
  for (action_type x : all_action_types)
    if (reverse_of(x) == t) return x;
  return std::nullopt;
}

bool is_reverse(action_type t) {
  return undoes(t).has_value();
}

bool is_requestable(action_type t) {
  switch (t) {
  case action_type::isolate:
  case action_type::release_isolation: // also directly, when the device is isolated
  case action_type::start_process:
  case action_type::prevent_run:
  case action_type::quarantine:
  case action_type::delete_file:
  case action_type::terminate_process:
    return true;
  case action_type::allow_run:
  case action_type::restore_from_quarantine:
    return false;
  }
  return false;
}

bool checks_sha256(action_type t) {
  switch (t) {
  case action_type::prevent_run:
  case action_type::allow_run:
  case action_type::quarantine:
  case action_type::restore_from_quarantine:
  case action_type::delete_file:
    return true;
  case action_type::isolate:
  case action_type::release_isolation:
  case action_type::start_process:
  case action_type::terminate_process:
    return false;
  }
  return false;
}

bool password_always(action_type t) {
  return t == action_type::start_process;
}

bool password_by_default(action_type t) {
  switch (t) {
  case action_type::start_process:
  case action_type::prevent_run:
  case action_type::quarantine:
  case action_type::delete_file:
  case action_type::terminate_process:
    return true;
  case action_type::isolate:
  case action_type::release_isolation:
  case action_type::allow_run:
  case action_type::restore_from_quarantine:
    return false;
  }
  return false;
}

std::vector<action_type> default_password_required() {
  std::vector<action_type> out;
  for (action_type t : all_action_types)
    if (password_by_default(t)) out.push_back(t);
  return out;
}

bool is_final(action_state s) {
  switch (s) {
  case action_state::registered:
  case action_state::queued:
  case action_state::sent:
  case action_state::acknowledged:
  case action_state::cancelling:
    return false;
  case action_state::completed:
  case action_state::failed:
  case action_state::expired:
  case action_state::cancelled:
  case action_state::reverted:
    return true;
  }
  return false;
}

bool may_trigger(user_role r) {
  switch (r) {
  case user_role::administrator:
  case user_role::security_officer:
    return true;
  case user_role::operator_:
    return false;
  }
  return false;
}

bool may_administer(user_role r) {
  return r == user_role::administrator;
}

// -- paths, hashes, arguments ---------------------------------------------------------

namespace {

bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Control characters other than tab.
bool has_control(std::string_view s, bool allow_tab) {
  for (unsigned char c : s)
    if ((c < 0x20 && !(allow_tab && c == '\t')) || c == 0x7f) return true;
  return false;
}

bool has_dot_dot(std::string_view p) {
  for (std::size_t start = 0; start <= p.size();) {
    std::size_t end = p.find_first_of("/\\", start);
    if (end == std::string_view::npos) end = p.size();
    if (end - start == 2 && p.substr(start, 2) == "..") return true;
    start = end + 1;
  }
  return false;
}

} // namespace

os_family os_family_of(std::string_view os) {
  std::string l;
  l.reserve(os.size());
  for (char c : os)
    l += lower(c);
  return l.find("windows") != std::string::npos ? os_family::windows : os_family::posix;
}

bool absolute_path(std::string_view p, os_family os) {
  switch (os) {
  case os_family::posix:
    return !p.empty() && p[0] == '/';
  case os_family::windows: {
    bool drive =
        p.size() >= 3 && is_alpha(p[0]) && p[1] == ':' && (p[2] == '\\' || p[2] == '/');
    // \\server\share: a server name must follow the two backslashes.
    bool unc = p.size() >= 3 && p[0] == '\\' && p[1] == '\\' && p[2] != '\\';
    return drive || unc;
  }
  }
  return false;
}

std::string path_problem(std::string_view p, std::optional<os_family> os) {
  if (p.empty()) return "the path is empty";
  if (p.size() > max_path_bytes)
    return "the path is longer than " + std::to_string(max_path_bytes) + " bytes";
  if (!valid_utf8(p)) return "the path is not valid UTF-8";
  if (p.find('\0') != std::string_view::npos) return "the path contains a NUL byte";
  if (has_control(p, false)) return "the path contains control characters";
  bool absolute =
      os ? absolute_path(p, *os)
         : absolute_path(p, os_family::posix) || absolute_path(p, os_family::windows);
  if (!absolute) return "the path is not absolute";
  if (has_dot_dot(p)) return "the path has a '..' component";
  return {};
}

bool is_sha256(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), is_hex);
}

std::string normalized_sha256(std::string s) {
  if (is_sha256(s))
    for (char& c : s)
      c = lower(c);
  return s;
}

namespace {

std::optional<std::vector<std::string>> split_posix(std::string_view text,
                                                    std::string& why) {
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quote == '\'') {
      if (c == '\'')
        quote = 0;
      else
        word += c;
    } else if (quote == '"') {
      if (c == '"')
        quote = 0;
      else if (c == '\\' && i + 1 < text.size() &&
               (text[i + 1] == '"' || text[i + 1] == '\\'))
        word += text[++i];
      else
        word += c;
    } else if (c == ' ' || c == '\t') {
      if (in_word) out.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      in_word = true;
      if (c == '\'' || c == '"')
        quote = c;
      else if (c == '\\' && i + 1 < text.size())
        word += text[++i];
      else
        word += c;
    }
  }
  if (quote != 0) {
    why = "unbalanced quote in 'arguments'";
    return std::nullopt;
  }
  if (in_word) out.push_back(std::move(word));
  return out;
}

// CommandLineToArgvW for every argument after the program name, as documented in
// "Parsing C++ command-line arguments" (learn.microsoft.com), including its example
// `a"b"" c d` → `ab"`, `c`, `d`.
std::vector<std::string> split_windows(std::string_view text) {
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  bool quoted = false;
  std::size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (!quoted && (c == ' ' || c == '\t')) {
      if (in_word) out.push_back(std::move(word));
      word.clear();
      in_word = false;
      ++i;
      continue;
    }
    in_word = true;
    if (c == '\\') {
      std::size_t n = 0;
      while (i < text.size() && text[i] == '\\') {
        ++n;
        ++i;
      }
      if (i < text.size() && text[i] == '"') {
        word.append(n / 2, '\\');
        if (n % 2 == 1) {
          word += '"';
          ++i;
        }
        // With an even count the quote is handled as a delimiter next round.
      } else {
        word.append(n, '\\');
      }
      continue;
    }
    if (c == '"') {
      if (quoted && i + 1 < text.size() && text[i + 1] == '"') {
        word += '"';
        quoted = false;
        i += 2;
      } else {
        quoted = !quoted;
        ++i;
      }
      continue;
    }
    word += c;
    ++i;
  }
  if (in_word) out.push_back(std::move(word));
  return out;
}

} // namespace

std::optional<std::vector<std::string>> split_arguments(std::string_view text,
                                                        os_family os, std::string& why) {
  switch (os) {
  case os_family::posix:
    return split_posix(text, why);
  case os_family::windows:
    return split_windows(text);
  }
  return std::nullopt;
}

std::string arguments_problem(const std::vector<std::string>& argv) {
  if (argv.size() > max_arguments)
    return "more than " + std::to_string(max_arguments) + " arguments";
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const auto& a = argv[i];
    bytes += a.size();
    auto which = "argument " + std::to_string(i);
    if (!valid_utf8(a)) return which + " is not valid UTF-8";
    if (a.find('\0') != std::string::npos) return which + " contains a NUL byte";
    if (has_control(a, true)) return which + " contains control characters";
  }
  if (bytes > max_arguments_bytes)
    return "the arguments are longer than " + std::to_string(max_arguments_bytes / 1024) +
           " KiB";
  return {};
}

} // namespace parry
