#include "ctl/format.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <tuple>

namespace parry::ctl {

int exit_code(outcome o) {
  switch (o) {
  case outcome::ok:
    return 0;
  case outcome::server_error:
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

std::optional<outcome> outcome_for_action(const nlohmann::json& action) {
  if (!action.is_object()) return std::nullopt;
  std::string state = action.value("state", "");
  auto f = action.find("final");
  bool final = (f != action.end() && f->is_boolean() && f->get<bool>()) ||
               state == "completed" || state == "failed";
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
    width = std::max(width, display_width(label));
  std::string out;
  for (const auto& [label, value] : fields) {
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

} // namespace parry::ctl
