#include "agent-sim/scenario.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

namespace parry::sim {

namespace {

constexpr const char* placeholders[] = {"user", "domain", "host", "rand", "c2"};
constexpr const char* severities[] = {"low", "medium", "high", "critical"};
constexpr uint64_t max_file_size = uint64_t{1} << 40;

template <std::size_t N> bool one_of(std::string_view s, const char* const (&set)[N]) {
  return std::find(std::begin(set), std::end(set), s) != std::end(set);
}

template <std::size_t N> std::string list(const char* const (&set)[N]) {
  std::string out;
  for (const char* s : set)
    out += (out.empty() ? "" : ", ") + std::string(s);
  return out;
}

bool plain_name(std::string_view s, std::size_t max_len) {
  if (s.empty() || s.size() > max_len) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
  });
}

bool is_lower_hex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Reads one file's tables and turns every problem into a scenario_error that says
// where it is: "<file>:<line>: <what>".
class reader {
public:
  explicit reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const toml::node* at, const std::string& what) const {
    std::string where = source_;
    if (at && at->source().begin.line > 0)
      where += ":" + std::to_string(at->source().begin.line);
    throw scenario_error(where + ": " + what);
  }

  // Refuses keys outside `allowed`, so a misspelt key is an error, not a no-op.
  template <std::size_t N>
  void only_keys(const toml::table& t, const char* const (&allowed)[N],
                 const std::string& ctx) const {
    for (auto&& [k, v] : t)
      if (!one_of(k.str(), allowed))
        fail(&v, ctx + ": unknown key '" + std::string(k.str()) +
                     "' (allowed: " + list(allowed) + ")");
  }

  const toml::table& table(const toml::table& t, std::string_view key) const {
    const toml::node* n = t.get(key);
    if (!n) fail(&t, "missing table [" + std::string(key) + "]");
    if (!n->is_table()) fail(n, "'" + std::string(key) + "' must be a table");
    return *n->as_table();
  }

  std::string str(const toml::table& t, std::string_view key, const std::string& ctx,
                  bool required) const {
    const toml::node* n = t.get(key);
    if (!n) {
      if (required) fail(&t, ctx + ": missing key '" + std::string(key) + "'");
      return {};
    }
    if (!n->is_string()) fail(n, ctx + ": '" + std::string(key) + "' must be a string");
    std::string s = n->as_string()->get();
    if (required && s.empty())
      fail(n, ctx + ": '" + std::string(key) + "' must not be empty");
    return s;
  }

  // A string that may hold placeholders: each {name} must be a known one.
  std::string templ(const toml::table& t, std::string_view key, const std::string& ctx,
                    bool required) const {
    std::string s = str(t, key, ctx, required);
    for (std::size_t pos = 0; (pos = s.find_first_of("{}", pos)) != std::string::npos;) {
      std::size_t close = s[pos] == '{' ? s.find('}', pos) : std::string::npos;
      if (close == std::string::npos)
        fail(t.get(key), ctx + ": '" + std::string(key) + "' has an unmatched brace");
      std::string name = s.substr(pos + 1, close - pos - 1);
      if (!one_of(name, placeholders))
        fail(t.get(key), ctx + ": '" + std::string(key) + "' uses unknown placeholder {" +
                             name + "} (known: " + list(placeholders) + ")");
      pos = close + 1;
    }
    return s;
  }

  bool boolean(const toml::table& t, std::string_view key, const std::string& ctx) const {
    const toml::node* n = t.get(key);
    if (!n) return false;
    if (!n->is_boolean())
      fail(n, ctx + ": '" + std::string(key) + "' must be true or false");
    return n->as_boolean()->get();
  }

  uint64_t positive(const toml::node* n, const std::string& what, uint64_t max) const {
    if (!n->is_integer()) fail(n, what + " must be an integer");
    int64_t v = n->as_integer()->get();
    if (v < 1 || static_cast<uint64_t>(v) > max)
      fail(n, what + " must be between 1 and " + std::to_string(max));
    return static_cast<uint64_t>(v);
  }

  // `size = 1234` or `size = [min, max]`.
  void size(const toml::table& t, const std::string& ctx, scenario_event& ev) const {
    const toml::node* n = t.get("size");
    if (!n) return;
    if (const toml::array* a = n->as_array()) {
      if (a->size() != 2) fail(n, ctx + ": 'size' must be an integer or [min, max]");
      ev.size_min = positive(a->get(0), ctx + ": 'size' minimum", max_file_size);
      ev.size_max = positive(a->get(1), ctx + ": 'size' maximum", max_file_size);
      if (ev.size_min > ev.size_max)
        fail(n, ctx + ": 'size' minimum is larger than its maximum");
      return;
    }
    ev.size_min = ev.size_max = positive(n, ctx + ": 'size'", max_file_size);
  }

  // Paths must be absolute in the scenario's own OS flavour.
  void absolute(const toml::table& t, std::string_view key, const std::string& value,
                const std::string& os, const std::string& ctx) const {
    bool ok = os == "windows" ? value.size() > 3 &&
                                    std::isalpha(static_cast<unsigned char>(value[0])) &&
                                    value[1] == ':' && value[2] == '\\'
                              : value.size() > 1 && value[0] == '/';
    if (!ok)
      fail(t.get(key), ctx + ": '" + std::string(key) + "' must be an absolute " +
                           (os == "windows" ? "Windows path (C:\\...)" : "path (/...)"));
  }

private:
  std::string source_;
};

constexpr const char* top_keys[] = {"scenario", "detection", "event"};
constexpr const char* scenario_keys[] = {"name", "os", "weight", "description"};
constexpr const char* detection_keys[] = {"name", "severity", "engine"};
constexpr const char* process_keys[] = {"id",      "type",       "parent", "key",
                                        "actor",   "actor_user", "detail", "image",
                                        "cmdline", "user",       "sha256", "size"};
constexpr const char* file_keys[] = {"id",         "type",   "parent", "key",    "actor",
                                     "actor_user", "detail", "path",   "sha256", "size"};
constexpr const char* network_keys[] = {"id",    "type",       "parent", "key",
                                        "actor", "actor_user", "remote", "protocol"};

scenario_event read_event(const reader& r, const toml::table& t, std::size_t n,
                          const scenario& sc) {
  scenario_event ev;
  std::string ctx = "event #" + std::to_string(n + 1);
  ev.id = r.str(t, "id", ctx, true);
  if (!plain_name(ev.id, 64))
    r.fail(t.get("id"), ctx + ": 'id' must be 1..64 characters of [A-Za-z0-9_-]");
  ctx = "event '" + ev.id + "'";
  ev.type = r.str(t, "type", ctx, true);
  if (!known_event_type(ev.type))
    r.fail(t.get("type"), ctx + ": unknown event type '" + ev.type +
                              "' (known: " + list(event_types) + ")");
  if (ev.type == "process_started")
    r.only_keys(t, process_keys, ctx);
  else if (ev.type == "network_connection")
    r.only_keys(t, network_keys, ctx);
  else
    r.only_keys(t, file_keys, ctx);

  ev.parent = r.str(t, "parent", ctx, false);
  ev.key = r.boolean(t, "key", ctx);
  ev.actor = r.templ(t, "actor", ctx, false);
  ev.actor_user = r.templ(t, "actor_user", ctx, false);
  if (!ev.parent.empty() && !ev.actor.empty())
    r.fail(t.get("actor"), ctx + ": 'actor' is only allowed on an event without "
                                 "parent (otherwise the parent's process acts)");
  if (!ev.actor_user.empty() && ev.actor.empty())
    r.fail(t.get("actor_user"), ctx + ": 'actor_user' needs 'actor'");
  if (!ev.actor.empty()) r.absolute(t, "actor", ev.actor, sc.os, ctx);
  ev.detail = r.templ(t, "detail", ctx, false);

  if (ev.type == "process_started") {
    ev.path = r.templ(t, "image", ctx, true);
    r.absolute(t, "image", ev.path, sc.os, ctx);
    ev.cmdline = r.templ(t, "cmdline", ctx, true);
    ev.user = r.templ(t, "user", ctx, false);
  } else if (ev.type == "network_connection") {
    ev.remote = r.templ(t, "remote", ctx, true);
    std::size_t colon = ev.remote.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == ev.remote.size())
      r.fail(t.get("remote"), ctx + ": 'remote' must be host:port");
    ev.protocol = r.str(t, "protocol", ctx, false);
    if (ev.protocol.empty()) ev.protocol = "tcp";
    if (ev.protocol != "tcp" && ev.protocol != "udp")
      r.fail(t.get("protocol"), ctx + ": 'protocol' must be tcp or udp");
  } else {
    ev.path = r.templ(t, "path", ctx, true);
    r.absolute(t, "path", ev.path, sc.os, ctx);
  }
  if (ev.type != "network_connection") {
    ev.sha256 = r.str(t, "sha256", ctx, false);
    if (!ev.sha256.empty() && !is_lower_hex64(ev.sha256))
      r.fail(t.get("sha256"), ctx + ": 'sha256' must be 64 lower-case hex digits");
    r.size(t, ctx, ev);
  }
  if (ev.key && ev.type != "process_started" && ev.type != "file_created")
    r.fail(t.get("key"), ctx + ": the key event must be process_started or "
                               "file_created (the detection object is its file)");
  return ev;
}

} // namespace

bool known_event_type(std::string_view type) {
  return one_of(type, event_types);
}

scenario parse_scenario(std::string_view toml_text, const std::string& source) {
  toml::table doc;
  try {
    doc = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    throw scenario_error(source + ":" + std::to_string(e.source().begin.line) + ": " +
                         std::string(e.description()));
  }
  reader r(source);
  r.only_keys(doc, top_keys, "top level");

  scenario sc;
  sc.source = source;
  const toml::table& head = r.table(doc, "scenario");
  r.only_keys(head, scenario_keys, "[scenario]");
  sc.name = r.str(head, "name", "[scenario]", true);
  if (!plain_name(sc.name, 64))
    r.fail(head.get("name"), "[scenario]: 'name' must be 1..64 characters of "
                             "[A-Za-z0-9_-]");
  sc.os = r.str(head, "os", "[scenario]", true);
  if (sc.os != "windows" && sc.os != "linux")
    r.fail(head.get("os"), "[scenario]: 'os' must be windows or linux");
  sc.description = r.str(head, "description", "[scenario]", false);
  if (const toml::node* w = head.get("weight"))
    sc.weight = static_cast<uint32_t>(r.positive(w, "[scenario]: 'weight'", 1000));

  const toml::table& det = r.table(doc, "detection");
  r.only_keys(det, detection_keys, "[detection]");
  sc.det.name = r.str(det, "name", "[detection]", true);
  sc.det.severity = r.str(det, "severity", "[detection]", true);
  if (!one_of(sc.det.severity, severities))
    r.fail(det.get("severity"),
           "[detection]: 'severity' must be one of " + list(severities));
  sc.det.engine = r.str(det, "engine", "[detection]", true);

  const toml::node* events = doc.get("event");
  if (!events) r.fail(&doc, "no [[event]] entries");
  const toml::array* arr = events->as_array();
  if (!arr || !arr->is_array_of_tables())
    r.fail(events, "'event' must be an array of tables ([[event]])");
  if (arr->empty() || arr->size() > 64) r.fail(events, "a scenario needs 1..64 events");

  std::size_t keys = 0;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    scenario_event ev = read_event(r, t, i, sc);
    for (const auto& earlier : sc.events)
      if (earlier.id == ev.id) r.fail(t.get("id"), "event '" + ev.id + "': duplicate id");
    if (!ev.parent.empty()) {
      // Parents must come earlier: the chain is in order and cannot loop.
      auto it = std::find_if(sc.events.begin(), sc.events.end(),
                             [&](const scenario_event& e) { return e.id == ev.parent; });
      if (it == sc.events.end())
        r.fail(t.get("parent"), "event '" + ev.id + "': parent '" + ev.parent +
                                    "' is not an earlier event of this scenario");
      ev.parent_index = static_cast<std::size_t>(it - sc.events.begin());
    }
    if (ev.key) {
      ++keys;
      sc.key_index = sc.events.size();
    }
    sc.events.push_back(std::move(ev));
  }
  if (keys != 1)
    r.fail(events, keys == 0 ? "no event has key = true (one must hold the detection)"
                             : "more than one event has key = true");
  return sc;
}

scenario load_scenario_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw scenario_error(file.string() + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_scenario(text.str(), file.string());
}

std::vector<scenario> load_scenarios(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw scenario_error(dir.string() + ": scenario directory does not exist");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (entry.path().extension() == ".toml" && entry.is_regular_file())
      files.push_back(entry.path());
  if (ec) throw scenario_error(dir.string() + ": cannot list: " + ec.message());
  if (files.empty()) throw scenario_error(dir.string() + ": no *.toml scenario files");
  std::sort(files.begin(), files.end());

  std::vector<scenario> out;
  std::set<std::string> names;
  for (const auto& f : files) {
    scenario sc = load_scenario_file(f);
    if (!names.insert(sc.name).second)
      throw scenario_error(f.string() + ": [scenario] name '" + sc.name +
                           "' is already used by another file");
    out.push_back(std::move(sc));
  }
  return out;
}

} // namespace parry::sim
