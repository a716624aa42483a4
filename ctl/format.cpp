#include "ctl/format.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include "common/crypto.hpp"
#include "common/domain.hpp"

namespace parry::ctl {

int exit_code(outcome o) {
  switch (o) {
  case outcome::ok:
    return 0;
  case outcome::server_error:
  case outcome::declined:
    return 1;
  case outcome::usage:
  case outcome::timeout:
    return 2;
  case outcome::connection:
    return 3;
  }
  return 1;
}

outcome outcome_for_status(int http_status) {
  return http_status >= 200 && http_status < 300 ? outcome::ok : outcome::server_error;
}

bool is_final_state(std::string_view state) {
  auto s = action_state_from_string(state);
  return s && is_final(*s);
}

std::optional<outcome> outcome_for_action(const nlohmann::json& action) {
  if (!action.is_object()) return std::nullopt;
  auto s = action.find("state");
  std::string state = s != action.end() && s->is_string() ? s->get<std::string>() : "";
  auto f = action.find("final");
  bool final =
      (f != action.end() && f->is_boolean() && f->get<bool>()) || is_final_state(state);
  if (!final) return std::nullopt;
  return state == "completed" ? outcome::ok : outcome::server_error;
}

namespace {

void append_escape(std::string& out, const char* fmt, unsigned value) {
  char buf[12];
  std::snprintf(buf, sizeof buf, fmt, value);
  out += buf;
}

// Bidirectional formatting characters reorder what is displayed (a file named
// "invoice\u202Efdp.exe" shows as "invoiceexe.pdf"), so they are shown escaped.
bool is_bidi_control(char32_t cp) {
  return cp == 0x061c || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
         (cp >= 0x2066 && cp <= 0x2069);
}

// Decodes one UTF-8 sequence at s[i]; returns its length, or 0 if invalid.
std::size_t decode_utf8(std::string_view s, std::size_t i, char32_t& cp) {
  auto b = static_cast<unsigned char>(s[i]);
  std::size_t len;
  if (b < 0x80) {
    cp = b;
    return 1;
  } else if (b >= 0xc2 && b <= 0xdf) {
    len = 2;
    cp = b & 0x1f;
  } else if (b >= 0xe0 && b <= 0xef) {
    len = 3;
    cp = b & 0x0f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    len = 4;
    cp = b & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (c & 0x3f);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid.
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

} // namespace

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    auto len = decode_utf8(s, i, cp);
    if (len == 0) {
      append_escape(out, "\\x%02x", static_cast<unsigned char>(s[i]));
      ++i;
      continue;
    }
    if (cp == '\n')
      out += "\\n";
    else if (cp == '\r')
      out += "\\r";
    else if (cp == '\t')
      out += "\\t";
    else if (cp < 0x20 || cp == 0x7f)
      append_escape(out, "\\x%02x", static_cast<unsigned>(cp));
    else if ((cp >= 0x80 && cp <= 0x9f) || is_bidi_control(cp))
      append_escape(out, "\\u%04x", static_cast<unsigned>(cp));
    else
      out.append(s.substr(i, len));
    i += len;
  }
  return out;
}

std::size_t display_width(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  }));
}

namespace {

void pad_to(std::string& out, std::size_t have, std::size_t want) {
  if (want > have) out.append(want - have, ' ');
}

} // namespace

std::string format_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows) {
  std::size_t columns = header.size();
  for (const auto& row : rows)
    columns = std::max(columns, row.size());
  std::vector<std::vector<std::string>> cells;
  cells.reserve(rows.size() + 1);
  cells.push_back(header);
  cells.insert(cells.end(), rows.begin(), rows.end());
  std::vector<std::size_t> width(columns, 0);
  for (auto& row : cells) {
    row.resize(columns);
    for (std::size_t c = 0; c < columns; ++c) {
      row[c] = printable(row[c]);
      width[c] = std::max(width[c], display_width(row[c]));
    }
  }
  std::string out;
  for (const auto& row : cells) {
    std::string line;
    for (std::size_t c = 0; c < columns; ++c) {
      if (c > 0) line += "  ";
      line += row[c];
      if (c + 1 < columns) pad_to(line, display_width(row[c]), width[c]);
    }
    while (!line.empty() && line.back() == ' ')
      line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

std::string
format_fields(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::size_t width = 0;
  for (const auto& [label, value] : fields)
    width = std::max(width, display_width(printable(label)));
  std::string out;
  for (const auto& [raw_label, value] : fields) {
    std::string label = printable(raw_label);
    out += label;
    pad_to(out, display_width(label), width);
    out += "  ";
    out += printable(value);
    while (!out.empty() && out.back() == ' ')
      out.pop_back();
    out += '\n';
  }
  return out;
}

namespace {

std::string text_of(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_null()) return {};
  if (v.is_array()) {
    std::string out;
    for (const auto& item : v) {
      if (!out.empty()) out += ", ";
      out += text_of(item);
    }
    return out;
  }
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

const nlohmann::json* member(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string string_member(const nlohmann::json& object, std::string_view key) {
  auto v = member(object, key);
  return v ? text_of(*v) : std::string{};
}

} // namespace

std::string cell(const nlohmann::json& object, std::string_view key) {
  auto v = member(object, key);
  std::string text = v ? text_of(*v) : std::string{};
  return text.empty() ? "-" : text;
}

std::string describe_event(const nlohmann::json& event) {
  std::vector<std::string> parts;
  auto file = member(event, "file");
  auto process = member(event, "process");
  std::string image = process ? string_member(*process, "image") : std::string{};
  std::string path = file ? string_member(*file, "path") : std::string{};
  // For process_started the file is the image itself; say it once.
  if (!path.empty() && path != image) parts.push_back(path);
  if (process && process->is_object()) {
    // A file event's process is the one acting on the file.
    std::string p = parts.empty() ? "" : "by ";
    p += image.empty() ? "?" : image;
    std::string pid = string_member(*process, "pid");
    if (!pid.empty()) p += " (pid " + pid + ")";
    std::string cmdline = string_member(*process, "cmdline");
    if (!cmdline.empty() && cmdline != image) p += " " + cmdline;
    parts.push_back(p);
  }
  std::string detail = string_member(event, "detail");
  if (!detail.empty()) parts.push_back("(" + detail + ")");
  std::string out;
  for (const auto& part : parts) {
    if (!out.empty()) out += "  ";
    out += part;
  }
  return printable(out);
}

std::string render_chain(const nlohmann::json& incident) {
  auto events = member(incident, "events");
  if (!events || !events->is_array() || events->empty()) return "(no events)\n";
  const auto& list = *events;
  std::size_t n = list.size();
  std::string key_id = string_member(incident, "key_event_id");

  std::map<std::string, std::size_t> by_id;
  for (std::size_t i = 0; i < n; ++i)
    by_id.emplace(string_member(list[i], "id"), i);

  // Time order: microseconds when given, else the RFC 3339 text (same format, so
  // it sorts lexically), then the server's order.
  auto order_key = [&](std::size_t i) {
    auto us = member(list[i], "time_us");
    long long t = us && us->is_number_integer() ? us->get<long long>() : 0;
    return std::make_tuple(t, string_member(list[i], "time"), i);
  };
  auto earlier = [&](std::size_t a, std::size_t b) {
    return order_key(a) < order_key(b);
  };

  std::vector<std::vector<std::size_t>> children(n);
  std::vector<std::size_t> roots;
  for (std::size_t i = 0; i < n; ++i) {
    auto parent = by_id.find(string_member(list[i], "parent_id"));
    if (parent != by_id.end() && parent->second != i && !parent->first.empty())
      children[parent->second].push_back(i);
    else
      roots.push_back(i);
  }
  for (auto& c : children)
    std::sort(c.begin(), c.end(), earlier);
  std::sort(roots.begin(), roots.end(), earlier);

  std::size_t time_width = 0;
  for (const auto& e : list)
    time_width = std::max(time_width, display_width(printable(string_member(e, "time"))));

  std::vector<bool> seen(n, false);
  std::string out;
  struct frame {
    std::size_t index;
    std::string prefix;    // drawn before this event's connector
    std::string connector; // "|- ", "`- " or nothing for a root
  };
  auto render_from = [&](std::size_t root) {
    std::vector<frame> stack{{root, "", ""}};
    while (!stack.empty()) {
      frame f = std::move(stack.back());
      stack.pop_back();
      if (seen[f.index]) continue;
      seen[f.index] = true;
      const auto& e = list[f.index];
      std::string time = printable(string_member(e, "time"));
      std::string line = time;
      pad_to(line, display_width(time), time_width);
      line += "  " + f.prefix + f.connector;
      bool key = (member(e, "key") && e["key"].is_boolean() && e["key"].get<bool>()) ||
                 (!key_id.empty() && string_member(e, "id") == key_id);
      if (key) line += "[DETECTION] ";
      std::string type = string_member(e, "type");
      line += printable(type.empty() ? "event" : type);
      std::string subject = describe_event(e);
      if (!subject.empty()) line += "  " + subject;
      out += line + '\n';

      std::string child_prefix = f.prefix;
      if (!f.connector.empty()) child_prefix += f.connector == "`- " ? "   " : "|  ";
      const auto& kids = children[f.index];
      // Pushed in reverse so the earliest child is drawn first.
      for (std::size_t k = kids.size(); k-- > 0;)
        stack.push_back({kids[k], child_prefix, k + 1 == kids.size() ? "`- " : "|- "});
    }
  };
  for (auto r : roots)
    render_from(r);
  // Events only reachable through a parent cycle: show them rather than drop them.
  std::vector<std::size_t> rest;
  for (std::size_t i = 0; i < n; ++i)
    if (!seen[i]) rest.push_back(i);
  std::sort(rest.begin(), rest.end(), earlier);
  for (auto r : rest)
    render_from(r);
  return out;
}

std::string percent_encode(std::string_view s) {
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
      out += ch;
    else
      append_escape(out, "%%%02X", c);
  }
  return out;
}

std::string query_string(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  for (const auto& [name, value] : params) {
    if (value.empty()) continue;
    out += out.empty() ? '?' : '&';
    out += percent_encode(name) + "=" + percent_encode(value);
  }
  return out;
}

std::string error_line(const response& r) {
  std::string code = r.error_code();
  std::string message = r.error_message();
  if (code.empty()) {
    code = "http_" + std::to_string(r.status);
    message = r.raw.substr(0, 200);
    if (message.empty()) message = "no error details from the server";
  }
  return printable("error: " + code + ": " + message);
}

std::string pretty_json(std::string_view raw) {
  auto doc = nlohmann::ordered_json::parse(raw, nullptr, false);
  if (doc.is_discarded()) return std::string(raw);
  return doc.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

bool natural_less(std::string_view a, std::string_view b) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (digit(a[i]) && digit(b[j])) {
      std::size_t i_end = i, j_end = j;
      while (i_end < a.size() && digit(a[i_end]))
        ++i_end;
      while (j_end < b.size() && digit(b[j_end]))
        ++j_end;
      auto x = a.substr(i, i_end - i), y = b.substr(j, j_end - j);
      while (x.size() > 1 && x.front() == '0')
        x.remove_prefix(1);
      while (y.size() > 1 && y.front() == '0')
        y.remove_prefix(1);
      if (x.size() != y.size()) return x.size() < y.size();
      if (x != y) return x < y;
      i = i_end;
      j = j_end;
      continue;
    }
    if (a[i] != b[j])
      return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
    ++i;
    ++j;
  }
  if (i < a.size() || j < b.size()) return i == a.size();
  return a < b; // "01" and "1" are equal as numbers; keep the order strict
}

namespace {

struct command_name {
  std::string_view command;
  std::string_view type;
};

constexpr command_name command_names[] = {{"isolate", "isolate"},
                                          {"release", "release_isolation"},
                                          {"prevent-run", "prevent_run"},
                                          {"quarantine", "quarantine"},
                                          {"delete-file", "delete_file"},
                                          {"terminate", "terminate_process"},
                                          {"start-process", "start_process"}};

bool is_device_action(std::string_view type) {
  auto t = action_type_from_string(type);
  return t && acts_on_device(*t);
}

bool is_file_action(std::string_view type) {
  auto t = action_type_from_string(type);
  return t && object_of(*t) == action_object::file;
}

bool lists(const nlohmann::json* list, std::string_view type) {
  if (!list || !list->is_array()) return false;
  return std::any_of(list->begin(), list->end(), [&](const nlohmann::json& t) {
    return t.is_string() && t.get_ref<const std::string&>() == type;
  });
}

std::string command_list(const nlohmann::json* list) {
  std::string out;
  if (list && list->is_array())
    for (const auto& t : *list)
      out += (out.empty() ? "" : ", ") + command_for_action_type(text_of(t));
  return out;
}

// The key event: named by key_event_id, else marked "key": true.
const nlohmann::json* find_event(const nlohmann::json& incident, std::string_view id) {
  auto events = member(incident, "events");
  if (!events || !events->is_array()) return nullptr;
  for (const auto& e : *events) {
    if (id.empty()) {
      auto key = member(e, "key");
      if (key && key->is_boolean() && key->get<bool>()) return &e;
    } else if (string_member(e, "id") == id) {
      return &e;
    }
  }
  return nullptr;
}

std::string indent(const std::string& lines) {
  std::string out;
  std::size_t start = 0;
  while (start < lines.size()) {
    auto end = lines.find('\n', start);
    if (end == std::string::npos) end = lines.size() - 1;
    out += "  " + lines.substr(start, end + 1 - start);
    start = end + 1;
  }
  return out;
}

std::string or_dash(std::string s) {
  return s.empty() ? "-" : s;
}

// Members of an object as (key, text) in natural key order; nlohmann::json would give
// "arg.10" before "arg.2".
std::vector<std::pair<std::string, std::string>> sorted_members(const nlohmann::json* o) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!o || !o->is_object()) return out;
  for (auto it = o->begin(); it != o->end(); ++it)
    out.emplace_back(it.key(), or_dash(text_of(it.value())));
  std::sort(out.begin(), out.end(),
            [](const auto& x, const auto& y) { return natural_less(x.first, y.first); });
  return out;
}

} // namespace

std::string action_type_for_command(std::string_view command) {
  for (const auto& n : command_names)
    if (n.command == command) return std::string(n.type);
  return {};
}

std::string command_for_action_type(std::string_view type) {
  for (const auto& n : command_names)
    if (n.type == type) return std::string(n.command);
  return std::string(type);
}

std::string reverse_type(std::string_view type) {
  auto t = action_type_from_string(type);
  auto r = t ? reverse_of(*t) : std::nullopt;
  return r ? to_string(*r) : std::string{};
}

bool needs_password(std::string_view type, const nlohmann::json& available) {
  auto t = action_type_from_string(type);
  if (t && password_always(*t)) return true;
  auto list = member(available, "password_required");
  if (list && list->is_array()) return lists(list, type);
  // No list in the answer: assume the server's documented default.
  return t && password_by_default(*t);
}

std::string applicability_problem(std::string_view type, std::string_view event_id,
                                  const nlohmann::json& available) {
  std::string name(type);
  if (is_device_action(type)) {
    auto list = member(available, "device_actions");
    if (!list || !list->is_array() || lists(list, type)) return {};
    auto isolated = member(available, "device_isolated");
    if (type == "release_isolation" && isolated && isolated->is_boolean() &&
        !isolated->get<bool>())
      return "device " + string_member(available, "device_id") +
             " is not isolated, there is nothing to release";
    return name + " does not apply to device " + string_member(available, "device_id");
  }
  auto targets = member(available, "targets");
  if (!targets || !targets->is_array()) return {};
  for (const auto& t : *targets) {
    bool match = event_id.empty() ? string_member(t, "kind") == "detection"
                                  : string_member(t, "event_id") == event_id;
    if (!match) continue;
    auto actions = member(t, "actions");
    if (!actions || !actions->is_array() || lists(actions, type)) return {};
    std::string what = event_id.empty() ? "the detection (event " : "event ";
    what += string_member(t, "event_id");
    what += event_id.empty() ? ", " : " (";
    what += or_dash(string_member(t, "event_type")) + ")";
    std::string allowed = command_list(actions);
    return name + " does not apply to " + what +
           (allowed.empty() ? "; no action does" : "; it allows " + allowed);
  }
  if (!event_id.empty())
    return "incident " + string_member(available, "incident_id") + " has no event " +
           std::string(event_id);
  return {};
}

std::string render_available_actions(const nlohmann::json& available,
                                     const nlohmann::json& incident) {
  std::string heading = "incident " + or_dash(string_member(available, "incident_id")) +
                        " on device " + or_dash(string_member(available, "device_id"));
  auto isolated = member(available, "device_isolated");
  if (isolated && isolated->is_boolean())
    heading += isolated->get<bool>() ? " (isolated)" : " (not isolated)";

  bool starred = false;
  auto actions_text = [&](const nlohmann::json* list) {
    std::string out;
    if (list && list->is_array())
      for (const auto& t : *list) {
        std::string type = text_of(t);
        std::string name = command_for_action_type(type);
        if (needs_password(type, available)) {
          name += '*';
          starred = true;
        }
        out += (out.empty() ? "" : ", ") + name;
      }
    return or_dash(out);
  };

  std::vector<std::vector<std::string>> rows;
  rows.push_back({"device", "-", "-", actions_text(member(available, "device_actions")),
                  or_dash(string_member(available, "device_id"))});
  auto targets = member(available, "targets");
  // The detection first, then the events in the server's order.
  for (bool detection : {true, false}) {
    if (!targets || !targets->is_array()) break;
    for (const auto& t : *targets) {
      std::string kind = string_member(t, "kind");
      if ((kind == "detection") != detection) continue;
      std::string id = string_member(t, "event_id");
      auto event = id.empty() ? nullptr : find_event(incident, id);
      rows.push_back({or_dash(kind), or_dash(id), or_dash(string_member(t, "event_type")),
                      actions_text(member(t, "actions")),
                      event ? or_dash(describe_event(*event)) : "-"});
    }
  }
  std::string out =
      printable(heading) + "\n\n" +
      format_table({"TARGET", "EVENT", "EVENT TYPE", "ACTIONS", "OBJECT"}, rows);
  if (starred) out += "\n* asks for your password\n";
  return out;
}

std::string describe_pending_action(std::string_view type, const nlohmann::json& incident,
                                    std::string_view event_id,
                                    const nlohmann::json& params,
                                    const nlohmann::json& device) {
  std::vector<std::pair<std::string, std::string>> f;
  std::string device_id = string_member(device, "device_id");
  if (device_id.empty()) device_id = string_member(incident, "device_id");
  std::string host = string_member(device, "hostname");
  f.emplace_back("device", or_dash(device_id) + (host.empty() ? "" : " (" + host + ")"));
  std::string detection;
  if (auto d = member(incident, "detection")) detection = string_member(*d, "name");
  f.emplace_back("incident", or_dash(string_member(incident, "incident_id")) +
                                 (detection.empty() ? "" : "  " + detection));

  std::string target_id(event_id);
  if (target_id.empty()) target_id = string_member(incident, "key_event_id");
  const nlohmann::json* event = find_event(incident, target_id);
  if (target_id.empty() && event) target_id = string_member(*event, "id");
  if (is_device_action(type)) {
    f.emplace_back("target", "the device");
  } else {
    std::string t = event_id.empty() ? "the detection, event " : "event ";
    t += or_dash(target_id);
    t += event ? " (" + or_dash(string_member(*event, "type")) + ")"
               : " (not in this incident)";
    f.emplace_back("target", t);
  }

  if (type == to_string(action_type::start_process)) {
    std::string cwd = string_member(params, "working_directory");
    f.emplace_back("executable", or_dash(string_member(params, "path")));
    f.emplace_back("directory", cwd.empty() ? "(the agent's default)" : cwd);
    // The argv exactly as the agent will run it, one element a line.
    auto args = member(params, "arguments");
    if (args && args->is_array()) {
      if (args->empty()) f.emplace_back("arguments", "(none)");
      for (std::size_t i = 0; i < args->size(); ++i)
        f.emplace_back("arg " + std::to_string(i), "[" + text_of((*args)[i]) + "]");
    } else {
      std::string text = string_member(params, "arguments");
      f.emplace_back("arguments", text.empty() ? "(none)" : text);
    }
  } else if (event && is_file_action(type)) {
    // A process_started event may carry the image only as its process.
    auto file = member(*event, "file");
    auto process = member(*event, "process");
    const nlohmann::json* source = file && file->is_object() ? file : process;
    std::string path = source ? string_member(*source, source == file ? "path" : "image")
                              : std::string{};
    f.emplace_back("file", or_dash(path));
    f.emplace_back("sha256", or_dash(source ? string_member(*source, "sha256") : ""));
  } else if (event && type == to_string(action_type::terminate_process)) {
    auto process = member(*event, "process");
    const nlohmann::json& p = process ? *process : nlohmann::json::object();
    std::string pid = string_member(p, "pid");
    f.emplace_back("process",
                   "pid " + or_dash(pid) + "  " + or_dash(string_member(p, "image")));
    f.emplace_back("started", or_dash(string_member(p, "start_time")));
    f.emplace_back("command line", or_dash(string_member(p, "cmdline")));
  }
  return "about to " + printable(type) + ":\n" + indent(format_fields(f));
}

std::string describe_reverse(const nlohmann::json& original, std::string_view reverse) {
  std::string head = "about to reverse " + or_dash(string_member(original, "action_id")) +
                     " (" + or_dash(string_member(original, "type")) + ", " +
                     or_dash(string_member(original, "state")) + ") with " +
                     std::string(reverse) + ":";
  std::vector<std::pair<std::string, std::string>> f{
      {"device", cell(original, "device_id")},
      {"incident", cell(original, "incident_id")},
      {"target", action_target_text(original)}};
  for (auto& [key, value] : sorted_members(member(original, "params")))
    f.emplace_back(key, value);
  return printable(head) + "\n" + indent(format_fields(f));
}

std::string action_target_text(const nlohmann::json& action) {
  auto target = member(action, "target");
  std::string kind = target ? string_member(*target, "kind") : std::string{};
  if (kind == "event") return "event " + string_member(*target, "event_id");
  return or_dash(kind);
}

std::string result_text(const nlohmann::json& action) {
  auto result = member(action, "result");
  if (!result || !result->is_object() || result->empty()) return "-";
  auto ok = member(*result, "ok");
  if (ok && ok->is_boolean() && ok->get<bool>()) return "ok";
  std::string error = string_member(*result, "error");
  return error.empty() ? "failed" : "failed: " + error;
}

std::vector<std::pair<std::string, std::string>>
action_fields(const nlohmann::json& action) {
  std::string state = cell(action, "state");
  if (outcome_for_action(action)) state += " (final)";
  std::vector<std::pair<std::string, std::string>> f{
      {"action", cell(action, "action_id")},
      {"type", cell(action, "type")},
      {"device", cell(action, "device_id")},
      {"incident", cell(action, "incident_id")},
      {"target", action_target_text(action)},
      {"state", state},
      {"requested by", cell(action, "requested_by")},
      {"password confirmed", cell(action, "password_confirmed")},
      {"comment", cell(action, "comment")},
      {"created", cell(action, "created_at")},
      {"updated", cell(action, "updated_at")},
      {"expires", cell(action, "expires_at")},
      {"reverses", cell(action, "reverses")},
      {"reversed by", cell(action, "reversed_by")}};
  for (auto& [key, value] : sorted_members(member(action, "params")))
    f.emplace_back("param " + key, value);
  f.emplace_back("result", result_text(action));
  auto result = member(action, "result");
  for (auto& [key, value] : sorted_members(result ? member(*result, "effect") : nullptr))
    f.emplace_back("effect " + key, value);
  return f;
}

namespace {

// An integer that fits int64 (nlohmann keeps large positives as unsigned).
bool int64_of(const nlohmann::json* v, std::int64_t& out) {
  if (!v) return false;
  if (v->is_number_unsigned()) {
    auto u = v->get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return false;
    out = static_cast<std::int64_t>(u);
    return true;
  }
  if (!v->is_number_integer()) return false;
  out = v->get<std::int64_t>();
  return true;
}

std::string records_missing(std::int64_t first, std::int64_t last) {
  return first == last ? "record " + std::to_string(first) + " is missing"
                       : "records " + std::to_string(first) + " to " +
                             std::to_string(last) + " are missing";
}

} // namespace

bool audit_chain::add(const nlohmann::json& record) {
  if (!problem_.empty()) return false;
  ++count_;
  std::int64_t seq = 0;
  bool has_seq = int64_of(member(record, "seq"), seq) && seq >= 1;
  if (gap_) {
    // Only the record the gap skipped can still turn up; it settles the verdict.
    if (has_seq && seq == gap_->first) {
      problem_ = "records out of order: " + std::to_string(gap_->second) +
                 " comes before " + std::to_string(seq);
      return false;
    }
    return true;
  }
  if (!has_seq) {
    problem_ = "record at position " + std::to_string(count_) +
               " is malformed (seq is not a positive integer)";
    return false;
  }
  std::string name = "record " + std::to_string(seq);
  std::int64_t time_us = 0;
  if (!int64_of(member(record, "time_us"), time_us)) {
    problem_ = name + " is malformed (time_us is not an integer)";
    return false;
  }
  std::string text[6];
  const char* keys[6] = {"actor", "kind", "target", "detail", "prev_hash", "hash"};
  for (int k = 0; k < 6; ++k) {
    auto v = member(record, keys[k]);
    if (!v || !v->is_string()) {
      problem_ = name + " is malformed (" + keys[k] + " is not a string)";
      return false;
    }
    text[k] = v->get<std::string>();
  }
  if (seq != last_seq_ + 1) {
    if (seq == last_seq_)
      problem_ = name + " appears twice";
    else if (seq < last_seq_)
      problem_ = "records out of order: " + std::to_string(last_seq_) + " comes before " +
                 std::to_string(seq);
    else
      gap_.emplace(last_seq_ + 1, seq);
    return gap_.has_value();
  }
  const std::string& prev_hash = text[4];
  const std::string& hash = text[5];
  std::string input = std::to_string(seq) + '\n' + std::to_string(time_us) + '\n' +
                      text[0] + '\n' + text[1] + '\n' + text[2] + '\n' + text[3] + '\n' +
                      prev_hash;
  if (sha256_hex(input) != hash) {
    problem_ = name + " was changed (hash mismatch)";
    return false;
  }
  if (prev_hash != last_hash_) {
    problem_ = seq == 1 ? name + " does not start the chain (prev_hash is not 64 zeros)"
                        : name + " does not follow record " + std::to_string(seq - 1) +
                              " (prev_hash mismatch: one of them was rewritten)";
    return false;
  }
  last_seq_ = seq;
  last_hash_ = hash;
  return true;
}

audit_verdict audit_chain::finish(const nlohmann::json& head) const {
  audit_verdict v;
  v.records = count_;
  if (!problem_.empty()) {
    v.problem = problem_;
    return v;
  }
  if (gap_) {
    v.problem =
        records_missing(gap_->first, gap_->second - 1) +
        (gap_->first == 1 ? " (the trail starts at " + std::to_string(gap_->second)
                          : " (seq jumps from " + std::to_string(gap_->first - 1) +
                                " to " + std::to_string(gap_->second)) +
        ")";
    return v;
  }
  auto hash = member(head, "hash");
  if (!int64_of(member(head, "seq"), v.head_seq) || v.head_seq < 0 || !hash ||
      !hash->is_string()) {
    v.problem = "the server's head is missing or malformed";
    return v;
  }
  v.head_hash = hash->get<std::string>();
  std::string head_seq = std::to_string(v.head_seq);
  if (last_seq_ < v.head_seq)
    v.problem = count_ == 0 ? "the trail is empty but the server's head is " + head_seq +
                                  " (records removed)"
                            : "the trail ends at " + std::to_string(last_seq_) +
                                  " but the server's head is " + head_seq +
                                  " (records removed from the end)";
  else if (last_seq_ > v.head_seq)
    v.problem = "the trail ends at " + std::to_string(last_seq_) +
                " but the server's head is " + head_seq + " (the head is behind)";
  else if (count_ > 0 && v.head_hash != last_hash_)
    v.problem =
        "record " + head_seq + " does not match the server's head (hash mismatch)";
  v.intact = v.problem.empty();
  return v;
}

audit_verdict verify_audit_trail(const nlohmann::json& records,
                                 const nlohmann::json& head) {
  audit_chain chain;
  if (records.is_array())
    for (const auto& r : records)
      if (!chain.add(r)) break;
  return chain.finish(head);
}

audit_verdict
verify_audit_pages(const std::function<nlohmann::json(std::int64_t after)>& fetch) {
  audit_chain chain;
  nlohmann::json head;
  std::int64_t after = 0;
  while (true) {
    nlohmann::json page = fetch(after);
    auto records = member(page, "records");
    if (!records || !records->is_array()) {
      audit_verdict v;
      v.records = chain.size();
      v.problem = "the server's answer after record " + std::to_string(after) +
                  " has no list of records";
      return v;
    }
    head = page.is_object() && page.contains("head") ? page["head"] : nlohmann::json();
    if (records->empty()) break;
    std::int64_t next = after;
    for (const auto& r : *records) {
      if (!chain.add(r)) return chain.finish(head);
      std::int64_t seq = 0;
      if (int64_of(member(r, "seq"), seq)) next = std::max(next, seq);
    }
    if (next <= after) break;
    after = next;
  }
  return chain.finish(head);
}

std::string audit_summary(const audit_verdict& v) {
  if (!v.intact) return printable("audit trail broken: " + v.problem);
  std::string out = "audit trail intact: " + std::to_string(v.records) +
                    (v.records == 1 ? " record" : " records");
  if (v.records > 0) out += ", head " + v.head_hash.substr(0, 16);
  return printable(out);
}

} // namespace parry::ctl
