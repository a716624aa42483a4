// parryctl: Parry's REST API from the command line, as aligned tables for people and
// as the server's own JSON (--json) for scripts. Exit codes: 0 ok, 1 the server said
// no (or an action failed), 2 usage or timeout, 3 connection or TLS failure.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "ctl/client.hpp"
#include "ctl/format.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using parry::ctl::outcome;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

constexpr const char* default_server = "https://127.0.0.1:8443";
constexpr milliseconds poll_interval{150};

/// Ends the run: `line` goes to stderr as it is, the outcome picks the exit code.
struct fatal : std::runtime_error {
  outcome result;
  fatal(outcome o, const std::string& line) : std::runtime_error(line), result(o) {}
};

/// Options that apply to every command.
struct globals {
  std::string server;
  std::string cacert;
  std::string token;
  std::string config;
  bool insecure = false;
  bool json = false;
};

/// What `login` leaves behind for later runs.
struct credentials {
  std::string server;
  std::string cacert;
  std::string token;
};

std::string home_dir() {
  if (const char* home = std::getenv("HOME"); home && *home) return home;
  if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir) return pw->pw_dir;
  throw fatal(outcome::usage, "error: cannot find the home directory; pass --config");
}

bool same_server(const std::string& a, const std::string& b) {
  try {
    auto x = parry::parse_base_url(a), y = parry::parse_base_url(b);
    auto lower = [](std::string s) {
      std::transform(s.begin(), s.end(), s.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      return s;
    };
    return lower(x.host) == lower(y.host) && x.port == y.port && x.prefix == y.prefix;
  } catch (const std::invalid_argument&) {
    return false;
  }
}

// A broken or foreign credentials file must not lock the user out of --token, so
// problems are warnings and the file is ignored.
std::optional<credentials> load_credentials(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  if (st.st_mode & 077)
    std::cerr << "warning: " << path << " is accessible by other users; chmod 600 it\n";
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  auto doc = json::parse(text.str(), nullptr, false);
  if (!in || doc.is_discarded() || !doc.is_object()) {
    std::cerr << "warning: ignoring " << path << ": not a JSON object\n";
    return std::nullopt;
  }
  credentials c;
  c.server = doc.value("server", "");
  c.cacert = doc.value("cacert", "");
  c.token = doc.value("token", "");
  return c;
}

// Creates the missing directories of `dir` with mode 0700; existing ones are left as
// they are.
void make_private_dirs(const fs::path& dir) {
  fs::path partial;
  for (const auto& part : dir) {
    partial /= part;
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST)
      throw fatal(outcome::usage, "error: cannot create " + partial.string() + ": " +
                                      std::strerror(errno));
  }
}

// Written to a temporary file created 0600 and renamed over the old one, so the token
// is never readable by others, not even for a moment, and a crash leaves no half file.
void save_credentials(const std::string& path, const credentials& c) {
  fs::path target(path);
  if (target.has_parent_path()) make_private_dirs(target.parent_path());
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    throw fatal(outcome::usage,
                "error: cannot write " + tmp + ": " + std::strerror(errno));
  std::string text =
      json{{"server", c.server}, {"cacert", c.cacert}, {"token", c.token}}.dump(2) + "\n";
  bool ok = ::fchmod(fd, 0600) == 0;
  for (std::size_t done = 0; ok && done < text.size();) {
    auto n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    done += ok ? static_cast<std::size_t>(n) : 0;
  }
  ok = ok && ::fsync(fd) == 0;
  int saved_errno = errno;
  ok = ::close(fd) == 0 && ok;
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    saved_errno = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    throw fatal(outcome::usage,
                "error: cannot write " + path + ": " + std::strerror(saved_errno));
  }
}

// The terminal state to put back if a signal arrives while echo is off.
int tty_fd = -1;
termios tty_saved{};

extern "C" void restore_tty_and_reraise(int sig) {
  if (tty_fd >= 0) ::tcsetattr(tty_fd, TCSAFLUSH, &tty_saved);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

std::string prompt_password(const std::string& user) {
  int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0 || ::tcgetattr(fd, &tty_saved) != 0) {
    if (fd >= 0) ::close(fd);
    throw fatal(outcome::usage, "error: no terminal to ask for the password; set "
                                "PARRY_PASSWORD or use --password-stdin");
  }
  std::string prompt = "Password for " + user + ": ";
  (void)!::write(fd, prompt.data(), prompt.size());
  tty_fd = fd;
  const int signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};
  struct sigaction quiet_action = {};
  struct sigaction previous[5] = {};
  quiet_action.sa_handler = restore_tty_and_reraise;
  for (int i = 0; i < 5; ++i)
    ::sigaction(signals[i], &quiet_action, &previous[i]);
  termios quiet = tty_saved;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  quiet.c_lflag |= ECHONL; // the newline still shows, so the next output starts clean
  ::tcsetattr(fd, TCSAFLUSH, &quiet);

  std::string password;
  char c;
  while (true) {
    auto n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') break;
    password += c;
  }
  ::tcsetattr(fd, TCSAFLUSH, &tty_saved);
  for (int i = 0; i < 5; ++i)
    ::sigaction(signals[i], &previous[i], nullptr);
  tty_fd = -1;
  ::close(fd);
  if (!password.empty() && password.back() == '\r') password.pop_back();
  return password;
}

void wipe(std::string& secret) {
  std::fill(secret.begin(), secret.end(), '\0');
  secret.clear();
}

void print_json(const parry::response& r) {
  std::cout << parry::ctl::pretty_json(r.raw) << '\n' << std::flush;
}

/// The settings of one run and its lazily made client.
class session {
public:
  explicit session(const globals& g) : g_(g) {
    config_path_ =
        g.config.empty() ? home_dir() + "/.config/parry/credentials.json" : g.config;
    saved_ = load_credentials(config_path_);
    server_ = !g.server.empty() ? g.server : saved_ ? saved_->server : default_server;
    if (server_.empty()) server_ = default_server;
    // The saved CA and token belong to the saved server only; a token must never be
    // sent to a server other than the one that issued it.
    bool same = saved_ && same_server(saved_->server, server_);
    cacert_ = !g.cacert.empty() ? g.cacert : same ? saved_->cacert : "";
    token_ = !g.token.empty() ? g.token : same ? saved_->token : "";
    if (g.insecure)
      std::cerr << "warning: --insecure: the server's certificate is not verified\n";
  }

  const globals& opts() const { return g_; }
  const std::string& server() const { return server_; }
  const std::string& cacert() const { return cacert_; }
  const std::string& token() const { return token_; }
  const std::string& config_path() const { return config_path_; }
  const std::optional<credentials>& saved() const { return saved_; }

  /// The client; the bearer token is set unless `with_token` is false.
  parry::client& client(bool with_token = true) {
    if (!client_) {
      client_.emplace(server_, parry::tls_options{cacert_, g_.insecure});
      if (with_token && !token_.empty()) client_->set_bearer(token_);
    }
    return *client_;
  }

  /// One request that must succeed: a non-2xx answer ends the run with exit code 1
  /// (the server's JSON is still printed under --json).
  parry::response call(std::string_view method, const std::string& path,
                       const json* body = nullptr, const parry::header_list& headers = {},
                       milliseconds timeout = milliseconds{0}) {
    auto r = client().request(method, path, body, headers, timeout);
    if (!r.ok()) fail(r, path);
    return r;
  }

  /// Ends the run with the server's error (exit code 1).
  [[noreturn]] void fail(const parry::response& r, std::string_view path = {}) const {
    if (g_.json && !r.raw.empty()) print_json(r);
    std::string line = parry::ctl::error_line(r);
    if (r.status == 401 && token_.empty() && path != "/api/v1/login")
      line += "\nhint: run 'parryctl login --user NAME' or pass --token";
    throw fatal(outcome::server_error, line);
  }

private:
  globals g_;
  std::string config_path_;
  std::optional<credentials> saved_;
  std::string server_;
  std::string cacert_;
  std::string token_;
  std::optional<parry::client> client_;
};

std::string str(const json& object, std::string_view key) {
  if (!object.is_object()) return {};
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

const json& sub(const json& object, const char* key) {
  static const json empty = json::object();
  if (!object.is_object()) return empty;
  auto it = object.find(key);
  return it == object.end() ? empty : *it;
}

std::string target_text(const json& action) {
  const auto& target = sub(action, "target");
  std::string kind = str(target, "kind");
  if (kind == "event") return "event " + str(target, "event_id");
  return kind.empty() ? "-" : kind;
}

std::string id_path(const char* collection, const std::string& id) {
  return std::string("/api/v1/") + collection + "/" + parry::ctl::percent_encode(id);
}

int cmd_login(session& s, const std::string& user, bool password_stdin) {
  std::string password;
  if (const char* env = std::getenv("PARRY_PASSWORD"); env && *env) {
    password = env;
  } else if (password_stdin) {
    std::getline(std::cin, password);
    if (!password.empty() && password.back() == '\r') password.pop_back();
  } else {
    password = prompt_password(user);
  }
  if (password.empty()) throw fatal(outcome::usage, "error: empty password");

  auto& c = s.client(false);
  json body{{"username", user}, {"password", password}};
  wipe(password);
  parry::response login;
  try {
    login = s.call("POST", "/api/v1/login", &body);
  } catch (...) {
    wipe(body["password"].get_ref<std::string&>());
    throw;
  }
  wipe(body["password"].get_ref<std::string&>());
  c.set_csrf(str(login.body, "csrf_token"));

  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "unknown");
  json token_request{{"name", std::string("parryctl@") + host}};
  auto issued = s.call("POST", "/api/v1/tokens", &token_request);
  std::string token = str(issued.body, "token");
  if (token.empty())
    throw fatal(outcome::server_error, "error: bad_response: the server issued no token");
  const json& who =
      issued.body.contains("user") ? issued.body["user"] : login.body["user"];

  credentials saved;
  saved.server = c.url().str();
  if (!s.cacert().empty()) {
    std::error_code ec;
    auto abs = fs::absolute(s.cacert(), ec);
    saved.cacert = ec ? s.cacert() : abs.lexically_normal().string();
  }
  saved.token = token;
  try {
    save_credentials(s.config_path(), saved);
  } catch (const fatal&) {
    // A token nobody holds should not stay valid on the server.
    parry::client revoke(s.server(), parry::tls_options{s.cacert(), s.opts().insecure});
    revoke.set_bearer(token);
    try {
      revoke.request("POST", "/api/v1/logout");
    } catch (const std::exception&) {
    }
    throw;
  }
  // The session was only needed to get the token; end it now rather than at expiry.
  try {
    c.request("POST", "/api/v1/logout");
  } catch (const std::exception&) {
  }

  if (s.opts().json) {
    json out{{"server", saved.server}, {"user", who}, {"credentials", s.config_path()}};
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << '\n';
  } else {
    std::cout << parry::ctl::printable("logged in to " + saved.server + " as " +
                                       str(who, "username") + " (" + str(who, "role") +
                                       "); token saved in " + s.config_path())
              << '\n';
  }
  return 0;
}

int cmd_logout(session& s) {
  if (s.token().empty())
    throw fatal(
        outcome::usage,
        "error: not logged in (no --token, PARRY_TOKEN or saved credentials for " +
            s.server() + ")");
  auto r = s.client().request("POST", "/api/v1/logout");
  bool forget = r.ok() || r.status == 401; // 401: the token was already dead
  if (!forget) s.fail(r);
  bool removed = false;
  if (s.saved() && s.saved()->token == s.token()) {
    std::error_code ec;
    removed = fs::remove(s.config_path(), ec);
    if (ec)
      std::cerr << "warning: cannot remove " << s.config_path() << ": " << ec.message()
                << '\n';
  }
  if (s.opts().json) {
    json out{{"revoked", r.ok()}, {"credentials_removed", removed}};
    std::cout << out.dump(2) << '\n';
  } else {
    std::cout << (r.ok() ? "logged out" : "logged out (the token was no longer valid)")
              << (removed ? "; removed " + s.config_path() : std::string{}) << '\n';
  }
  return 0;
}

int cmd_devices(session& s) {
  auto r = s.call("GET", "/api/v1/devices");
  if (s.opts().json) return print_json(r), 0;
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : sub(r.body, "devices")) {
    using parry::ctl::cell;
    rows.push_back({cell(d, "device_id"), cell(d, "hostname"), cell(d, "os"),
                    cell(d, "addresses"), cell(d, "online"), cell(d, "isolated"),
                    cell(d, "last_seen")});
  }
  if (rows.empty())
    std::cout << "no devices\n";
  else
    std::cout << parry::ctl::format_table(
        {"DEVICE", "HOSTNAME", "OS", "ADDRESSES", "ONLINE", "ISOLATED", "LAST SEEN"},
        rows);
  return 0;
}

int cmd_device(session& s, const std::string& id) {
  auto r = s.call("GET", id_path("devices", id));
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  const auto& d = sub(r.body, "device");
  std::cout << parry::ctl::format_fields({{"device", cell(d, "device_id")},
                                          {"hostname", cell(d, "hostname")},
                                          {"os", cell(d, "os")},
                                          {"agent", cell(d, "agent_version")},
                                          {"addresses", cell(d, "addresses")},
                                          {"online", cell(d, "online")},
                                          {"isolated", cell(d, "isolated")},
                                          {"first seen", cell(d, "first_seen")},
                                          {"last seen", cell(d, "last_seen")}});
  return 0;
}

std::string detection_text(const json& incident) {
  const auto& det = sub(incident, "detection");
  std::string name = str(det, "name");
  std::string extra = str(det, "severity");
  if (!str(det, "engine").empty())
    extra += (extra.empty() ? "" : ", ") + str(det, "engine");
  if (name.empty()) name = "-";
  return extra.empty() ? name : name + " (" + extra + ")";
}

int cmd_incidents(session& s, const std::string& device, int limit) {
  auto q = parry::ctl::query_string(
      {{"device_id", device}, {"limit", limit > 0 ? std::to_string(limit) : ""}});
  auto r = s.call("GET", "/api/v1/incidents" + q);
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  std::vector<std::vector<std::string>> rows;
  for (const auto& i : sub(r.body, "incidents"))
    rows.push_back({cell(i, "incident_id"), cell(i, "device_id"), cell(i, "status"),
                    cell(sub(i, "detection"), "severity"),
                    cell(sub(i, "detection"), "name"), cell(i, "event_count"),
                    cell(i, "created_at")});
  if (rows.empty())
    std::cout << "no incidents\n";
  else
    std::cout << parry::ctl::format_table(
        {"INCIDENT", "DEVICE", "STATUS", "SEVERITY", "DETECTION", "EVENTS", "CREATED"},
        rows);
  return 0;
}

int cmd_incident(session& s, const std::string& id) {
  auto r = s.call("GET", id_path("incidents", id));
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  const auto& i = sub(r.body, "incident");
  std::cout << parry::ctl::format_fields({{"incident", cell(i, "incident_id")},
                                          {"device", cell(i, "device_id")},
                                          {"status", cell(i, "status")},
                                          {"detection", detection_text(i)},
                                          {"key event", cell(i, "key_event_id")},
                                          {"events", cell(i, "event_count")},
                                          {"created", cell(i, "created_at")}})
            << "\nchain:\n"
            << parry::ctl::render_chain(i);
  return 0;
}

int cmd_actions(session& s, const std::string& device, const std::string& state,
                int limit) {
  auto q = parry::ctl::query_string({{"device_id", device},
                                     {"state", state},
                                     {"limit", limit > 0 ? std::to_string(limit) : ""}});
  auto r = s.call("GET", "/api/v1/actions" + q);
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : sub(r.body, "actions"))
    rows.push_back({cell(a, "action_id"), cell(a, "type"), cell(a, "device_id"),
                    cell(a, "incident_id"), target_text(a), cell(a, "state"),
                    cell(a, "requested_by"), cell(a, "updated_at")});
  if (rows.empty())
    std::cout << "no actions\n";
  else
    std::cout << parry::ctl::format_table(
        {"ACTION", "TYPE", "DEVICE", "INCIDENT", "TARGET", "STATE", "BY", "UPDATED"},
        rows);
  return 0;
}

std::string result_text(const json& action) {
  const auto& result = sub(action, "result");
  if (!result.is_object() || result.empty()) return "-";
  auto ok = result.find("ok");
  if (ok != result.end() && ok->is_boolean() && ok->get<bool>()) return "ok";
  std::string error = str(result, "error");
  return error.empty() ? "failed" : "failed: " + error;
}

std::vector<std::string> transition_row(const json& t) {
  using parry::ctl::cell;
  return {cell(t, "time"), cell(t, "state"), cell(t, "reason")};
}

int cmd_action(session& s, const std::string& id) {
  auto r = s.call("GET", id_path("actions", id));
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  const auto& a = sub(r.body, "action");
  std::string state = cell(a, "state");
  if (parry::ctl::outcome_for_action(a)) state += " (final)";
  std::vector<std::pair<std::string, std::string>> fields{
      {"action", cell(a, "action_id")},
      {"type", cell(a, "type")},
      {"device", cell(a, "device_id")},
      {"incident", cell(a, "incident_id")},
      {"target", target_text(a)},
      {"state", state},
      {"requested by", cell(a, "requested_by")},
      {"comment", cell(a, "comment")},
      {"created", cell(a, "created_at")},
      {"updated", cell(a, "updated_at")},
      {"result", result_text(a)}};
  const auto& effect = sub(sub(a, "result"), "effect");
  if (!effect.empty())
    fields.emplace_back("effect",
                        effect.dump(-1, ' ', false, json::error_handler_t::replace));
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : sub(a, "transitions"))
    rows.push_back(transition_row(t));
  std::cout << parry::ctl::format_fields(fields) << '\n'
            << parry::ctl::format_table({"TIME", "STATE", "REASON"}, rows);
  return 0;
}

/// Polls the action until it is final or the time is up; prints transitions as they
/// appear (or, under --json, the last answer once).
int follow(session& s, const std::string& id, double timeout_s) {
  auto budget =
      std::chrono::duration_cast<milliseconds>(std::chrono::duration<double>(timeout_s));
  auto deadline = steady::now() + budget;
  std::size_t shown = 0;
  std::size_t state_width = 12;
  while (true) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
    auto per_call = std::clamp(left, milliseconds{1000}, parry::client::default_timeout);
    parry::response r;
    try {
      r = s.call("GET", id_path("actions", id), nullptr, {}, per_call);
    } catch (const parry::client_error&) {
      if (steady::now() < deadline) throw;
      r.status = 0; // the time ran out during the call: a timeout, not a failure
    }
    const auto& a = sub(r.body, "action");
    if (!s.opts().json) {
      const auto& ts = sub(a, "transitions");
      for (; ts.is_array() && shown < ts.size(); ++shown) {
        auto row = transition_row(ts[shown]);
        std::string line =
            parry::ctl::printable(row[0]) + "  " + parry::ctl::printable(row[1]);
        line.append(state_width > row[1].size() ? state_width - row[1].size() : 0, ' ');
        line += "  " + parry::ctl::printable(row[2]);
        std::cout << line << '\n' << std::flush;
      }
    }
    auto done = parry::ctl::outcome_for_action(a);
    if (done) {
      if (s.opts().json)
        print_json(r);
      else if (*done == outcome::ok)
        std::cout << "action " << parry::ctl::printable(id) << " completed\n";
      if (*done != outcome::ok) {
        std::string why = str(sub(a, "result"), "error");
        std::cerr << parry::ctl::printable("error: action_failed: action " + id + " " +
                                           str(a, "state") + ": " +
                                           (why.empty() ? "no reason given" : why))
                  << '\n';
      }
      return parry::ctl::exit_code(*done);
    }
    if (steady::now() >= deadline) {
      if (s.opts().json && r.status != 0) print_json(r);
      std::string state = str(a, "state");
      std::ostringstream msg;
      msg << "error: timeout: action " << id << " not final after " << timeout_s << " s"
          << (state.empty() ? "" : " (still " + state + ")");
      throw fatal(outcome::timeout, parry::ctl::printable(msg.str()));
    }
    std::this_thread::sleep_for(std::min<milliseconds>(
        poll_interval,
        std::chrono::duration_cast<milliseconds>(deadline - steady::now())));
  }
}

/// Options shared by `isolate` and `release`.
struct action_request {
  std::string incident;
  std::string event;
  std::string comment;
  std::string idempotency_key;
  bool wait = false;
  double timeout = 60;
};

int cmd_respond(session& s, const char* type, const action_request& a) {
  json target = a.event.empty() ? json{{"kind", "detection"}}
                                : json{{"kind", "event"}, {"event_id", a.event}};
  json body{{"type", type},     {"incident_id", a.incident},
            {"target", target}, {"params", json::object()},
            {"password", ""},   {"comment", a.comment}};
  parry::header_list headers;
  if (!a.idempotency_key.empty())
    headers.emplace_back("Idempotency-Key", a.idempotency_key);
  auto r = s.call("POST", "/api/v1/actions", &body, headers);
  const auto& action = sub(r.body, "action");
  std::string id = str(action, "action_id");
  if (!s.opts().json) {
    using parry::ctl::cell;
    std::cout << parry::ctl::printable(
                     "action " + cell(action, "action_id") + " " + cell(action, "type") +
                     " on " + cell(action, "device_id") + ": " + cell(action, "state"))
              << '\n'
              << std::flush;
  }
  if (!a.wait) {
    if (s.opts().json) print_json(r);
    return 0;
  }
  if (id.empty())
    throw fatal(outcome::server_error, "error: bad_response: no action_id in the answer");
  return follow(s, id, a.timeout);
}

const CLI::Validator positive(
    [](const std::string& text) {
      try {
        std::size_t used = 0;
        if (std::stod(text, &used) > 0 && used == text.size()) return std::string{};
      } catch (const std::exception&) {
      }
      return "must be a positive number, got '" + text + "'";
    },
    "POSITIVE");

void add_action_options(CLI::App* cmd, action_request& a) {
  cmd->add_option("--incident", a.incident, "incident the action responds to")
      ->required();
  cmd->add_option("--event", a.event,
                  "target this event of the chain instead of the detection");
  cmd->add_option("--comment", a.comment, "free text kept with the action");
  cmd->add_option(
         "--idempotency-key", a.idempotency_key,
         "a retry with the same key returns the first action instead of a new one")
      ->check([](const std::string& k) {
        return k.size() <= 128 ? std::string{} : std::string("at most 128 characters");
      });
  cmd->add_flag("--wait", a.wait, "follow the action until it ends (like 'follow')");
  cmd->add_option("--timeout", a.timeout, "seconds to wait with --wait (default 60)")
      ->check(positive);
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"parryctl: command line client for the Parry response server"};
  app.set_version_flag("--version", "parryctl 0.1.0");
  app.require_subcommand(1);
  app.fallthrough();
  globals g;
  app.add_option("--server", g.server, "server base URL (default https://127.0.0.1:8443)")
      ->envname("PARRY_SERVER");
  app.add_option("--cacert", g.cacert,
                 "PEM file the server's certificate is checked with")
      ->envname("PARRY_CACERT");
  app.add_flag("--insecure", g.insecure, "do not verify the server's certificate");
  app.add_option("--token", g.token, "bearer token (prefer PARRY_TOKEN or login)")
      ->envname("PARRY_TOKEN");
  app.add_flag("--json", g.json, "print the server's JSON instead of tables");
  app.add_option("--config", g.config,
                 "credentials file (default $HOME/.config/parry/credentials.json)")
      ->envname("PARRY_CONFIG");

  std::string user;
  bool password_stdin = false;
  auto* login = app.add_subcommand("login", "log in and save a token for later commands");
  login->add_option("--user", user, "user name")->required();
  login->add_flag("--password-stdin", password_stdin,
                  "read the password as one line from stdin (else PARRY_PASSWORD or "
                  "a prompt)");
  auto* logout = app.add_subcommand("logout", "revoke the token and forget it");

  std::string id, device, state;
  int limit = 0;
  auto* devices = app.add_subcommand("devices", "list devices");
  auto* device_cmd = app.add_subcommand("device", "show one device");
  device_cmd->add_option("id", id, "device id")->required();
  auto* incidents = app.add_subcommand("incidents", "list incidents, newest first");
  incidents->add_option("--device", device, "only this device");
  incidents->add_option("--limit", limit, "at most this many")->check(positive);
  auto* incident = app.add_subcommand("incident", "show an incident and its chain");
  incident->add_option("id", id, "incident id")->required();
  auto* actions = app.add_subcommand("actions", "list response actions, newest first");
  actions->add_option("--device", device, "only this device");
  actions->add_option("--state", state,
                      "only this state (registered, queued, sent, ...)");
  actions->add_option("--limit", limit, "at most this many")->check(positive);
  auto* action = app.add_subcommand("action", "show an action and its transitions");
  action->add_option("id", id, "action id")->required();

  action_request isolate_req, release_req;
  auto* isolate = app.add_subcommand("isolate", "isolate the incident's device");
  add_action_options(isolate, isolate_req);
  auto* release = app.add_subcommand("release", "release the device from isolation");
  add_action_options(release, release_req);

  double follow_timeout = 60;
  auto* follow_cmd = app.add_subcommand("follow", "wait for an action to end");
  follow_cmd->add_option("id", id, "action id")->required();
  follow_cmd->add_option("--timeout", follow_timeout, "seconds to wait (default 60)")
      ->check(positive);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : parry::ctl::exit_code(outcome::usage);
  }

  std::string cacert_used = g.cacert;
  try {
    session s(g);
    cacert_used = s.cacert();
    if (login->parsed()) return cmd_login(s, user, password_stdin);
    if (logout->parsed()) return cmd_logout(s);
    if (devices->parsed()) return cmd_devices(s);
    if (device_cmd->parsed()) return cmd_device(s, id);
    if (incidents->parsed()) return cmd_incidents(s, device, limit);
    if (incident->parsed()) return cmd_incident(s, id);
    if (actions->parsed()) return cmd_actions(s, device, state, limit);
    if (action->parsed()) return cmd_action(s, id);
    if (isolate->parsed()) return cmd_respond(s, "isolate", isolate_req);
    if (release->parsed()) return cmd_respond(s, "release_isolation", release_req);
    if (follow_cmd->parsed()) return follow(s, id, follow_timeout);
    std::cerr << app.help();
    return parry::ctl::exit_code(outcome::usage);
  } catch (const fatal& e) {
    std::cerr << e.what() << '\n';
    return parry::ctl::exit_code(e.result);
  } catch (const parry::client_error& e) {
    std::string msg = parry::ctl::printable(e.what());
    std::cerr << "error: " << msg << '\n';
    if (msg.find("verif") != std::string::npos && cacert_used.empty())
      std::cerr << "hint: pass the server's certificate with --cacert "
                   "(DATA_DIR/tls/cert.pem on the server)\n";
    return parry::ctl::exit_code(outcome::connection);
  } catch (const std::invalid_argument& e) {
    std::cerr << "error: " << parry::ctl::printable(e.what()) << '\n';
    return parry::ctl::exit_code(outcome::usage);
  } catch (const std::exception& e) {
    std::cerr << "error: " << parry::ctl::printable(e.what()) << '\n';
    return parry::ctl::exit_code(outcome::server_error);
  }
}
