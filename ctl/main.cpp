// parryctl: Parry's REST API from the command line, as aligned tables for people and
// as the server's own JSON (--json) for scripts. Exit codes: 0 ok, 1 the server said
// no (or an action failed), 2 usage or timeout, 3 connection or TLS failure.

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
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

#include "common/domain.hpp"
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

// Reads one line from the terminal with echo off; the prompt goes to the terminal too,
// so stdout stays clean for --json.
std::string prompt_secret(const std::string& prompt) {
  int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0 || ::tcgetattr(fd, &tty_saved) != 0) {
    if (fd >= 0) ::close(fd);
    throw fatal(outcome::usage, "error: no terminal to ask for the password; set "
                                "PARRY_PASSWORD or use --password-stdin");
  }
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
  // Prompted only now: TCSAFLUSH drops what was typed before, and an answer typed
  // after seeing the prompt must not be lost.
  (void)!::write(fd, prompt.data(), prompt.size());

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

std::string stdin_line() {
  std::string line;
  std::getline(std::cin, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

/// The caller's own password (login, or confirming an action): PARRY_PASSWORD, else
/// one line of stdin with --password-stdin, else a prompt on the terminal.
std::string own_password(bool from_stdin, const std::string& prompt) {
  std::string password;
  if (const char* env = std::getenv("PARRY_PASSWORD"); env && *env)
    password = env;
  else if (from_stdin)
    password = stdin_line();
  else
    password = prompt_secret(prompt);
  if (password.empty()) throw fatal(outcome::usage, "error: empty password");
  return password;
}

/// A password for another account: PARRY_NEW_PASSWORD, else one line of stdin with
/// --password-stdin, else asked twice on the terminal so a typo cannot slip through.
std::string new_password(const std::string& user, bool from_stdin) {
  std::string password;
  if (const char* env = std::getenv("PARRY_NEW_PASSWORD"); env && *env) {
    password = env;
  } else if (from_stdin) {
    password = stdin_line();
  } else {
    password = prompt_secret(parry::ctl::printable("New password for " + user + ": "));
    std::string again = prompt_secret("Repeat the new password: ");
    bool same = again == password;
    wipe(again);
    if (!same) {
      wipe(password);
      throw fatal(outcome::usage, "error: the passwords do not match");
    }
  }
  if (password.empty()) throw fatal(outcome::usage, "error: empty password");
  return password;
}

/// Fails early, before any request, when a confirmation will be needed but stdin is
/// not a terminal (a script): it must say --yes.
void require_confirmable(bool yes) {
  if (!yes && !::isatty(STDIN_FILENO))
    throw fatal(outcome::usage,
                "error: stdin is not a terminal, so nobody can confirm; pass --yes to go "
                "ahead without asking");
}

/// Shows `what` (already escaped) and asks `Proceed? [y/N]` on the terminal; only
/// `y` or `yes` goes on. With --yes, `what` goes to stderr as a record and no one is
/// asked.
void confirm(const std::string& what, bool yes) {
  std::cout << std::flush;
  if (yes) {
    std::cerr << what << std::flush;
    return;
  }
  require_confirmable(false);
  int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    throw fatal(outcome::usage,
                "error: cannot open the terminal to confirm; pass --yes to go ahead");
  std::string text = what + "Proceed? [y/N] ";
  (void)!::write(fd, text.data(), text.size());
  std::string answer;
  char c;
  ssize_t n;
  while ((n = ::read(fd, &c, 1)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || c == '\n') break;
    answer += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (n == 0) (void)!::write(fd, "\n", 1); // end of input: finish the prompt's line
  ::close(fd);
  auto first = answer.find_first_not_of(" \t\r");
  auto last = answer.find_last_not_of(" \t\r");
  answer = first == std::string::npos ? "" : answer.substr(first, last - first + 1);
  if (answer != "y" && answer != "yes")
    throw fatal(outcome::declined, "not confirmed; nothing was done");
}

/// Wipes `body["password"]` when the scope ends, however the request went.
struct password_scrub {
  json& body;
  ~password_scrub() {
    auto it = body.find("password");
    if (it != body.end() && it->is_string()) wipe(it->get_ref<std::string&>());
  }
};

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

std::string id_path(const char* collection, const std::string& id) {
  return std::string("/api/v1/") + collection + "/" + parry::ctl::percent_encode(id);
}

int cmd_login(session& s, const std::string& user, bool password_stdin) {
  std::string password =
      own_password(password_stdin, parry::ctl::printable("Password for " + user + ": "));

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

int cmd_actions(session& s, const std::string& device, const std::string& incident,
                const std::string& state, int limit) {
  auto q = parry::ctl::query_string({{"device_id", device},
                                     {"incident_id", incident},
                                     {"state", state},
                                     {"limit", limit > 0 ? std::to_string(limit) : ""}});
  auto r = s.call("GET", "/api/v1/actions" + q);
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : sub(r.body, "actions"))
    rows.push_back({cell(a, "action_id"), cell(a, "type"), cell(a, "device_id"),
                    cell(a, "incident_id"), parry::ctl::action_target_text(a),
                    cell(a, "state"), cell(a, "requested_by"), cell(a, "updated_at")});
  if (rows.empty())
    std::cout << "no actions\n";
  else
    std::cout << parry::ctl::format_table(
        {"ACTION", "TYPE", "DEVICE", "INCIDENT", "TARGET", "STATE", "BY", "UPDATED"},
        rows);
  return 0;
}

std::vector<std::string> transition_row(const json& t) {
  using parry::ctl::cell;
  return {cell(t, "time"), cell(t, "state"), cell(t, "reason")};
}

int cmd_action(session& s, const std::string& id) {
  auto r = s.call("GET", id_path("actions", id));
  if (s.opts().json) return print_json(r), 0;
  const auto& a = sub(r.body, "action");
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : sub(a, "transitions"))
    rows.push_back(transition_row(t));
  std::cout << parry::ctl::format_fields(parry::ctl::action_fields(a)) << '\n'
            << parry::ctl::format_table({"TIME", "STATE", "REASON"}, rows);
  return 0;
}

// Why a final action did not complete: the result's error, else the reason of its
// last transition.
std::string final_reason(const json& action) {
  std::string why = str(sub(action, "result"), "error");
  const auto& ts = sub(action, "transitions");
  if (why.empty() && ts.is_array() && !ts.empty()) why = str(ts.back(), "reason");
  return why;
}

/// Polls the action until it reaches a final state or the time is up; prints
/// transitions as they appear (or, under --json, the last answer once). Exit 0 only
/// if the first final state is `completed`.
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
        std::string state = parry::ctl::printable(row[1]);
        std::string line = parry::ctl::printable(row[0]) + "  " + state;
        line.append(state_width > state.size() ? state_width - state.size() : 0, ' ');
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
        std::string state = str(a, "state");
        std::string why = final_reason(a);
        std::cerr << parry::ctl::printable("error: action_" + state + ": action " + id +
                                           " " + state + (why.empty() ? "" : ": " + why))
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

/// The options of one action command.
struct action_request {
  std::string type; ///< API action type
  std::string incident;
  std::string event;
  std::string comment;
  std::string idempotency_key;
  bool wait = false;
  double timeout = 60;
  bool yes = false;
  bool password_stdin = false;
  std::string path; ///< start-process only, like the two below
  std::string cwd;
  std::string args;
};

/// Prints a newly registered action (or, without --wait under --json, the answer) and
/// follows it with --wait.
int registered(session& s, const parry::response& r, bool wait, double timeout,
               const std::string& note = {}) {
  const auto& action = sub(r.body, "action");
  std::string id = str(action, "action_id");
  if (!s.opts().json) {
    using parry::ctl::cell;
    std::string line = "action " + cell(action, "action_id") + " " +
                       cell(action, "type") + " on " + cell(action, "device_id") + ": " +
                       cell(action, "state");
    if (!str(action, "reverses").empty())
      line += " (reverses " + str(action, "reverses") + ")";
    // Idempotency-Key: 200 means the first registration came back, not a new one.
    if (r.status == 200 && !note.empty()) line += " (" + note + ")";
    std::cout << parry::ctl::printable(line) << '\n' << std::flush;
  }
  if (!wait) {
    if (s.opts().json) print_json(r);
    return 0;
  }
  if (id.empty())
    throw fatal(outcome::server_error, "error: bad_response: no action_id in the answer");
  return follow(s, id, timeout);
}

std::string available_path(const std::string& incident) {
  return id_path("incidents", incident) + "/available-actions";
}

// The device's details make the confirmation clearer (host name) but are not needed
// to go on, so a refusal here is ignored.
json device_or_null(session& s, const std::string& device_id) {
  if (device_id.empty()) return nullptr;
  auto r = s.client().request("GET", id_path("devices", device_id));
  return r.ok() ? sub(r.body, "device") : json();
}

/// Shows what the action will do, has it confirmed, asks for the password when the
/// server wants one, and registers it.
int cmd_respond(session& s, const action_request& a) {
  require_confirmable(a.yes);
  auto available = s.call("GET", available_path(a.incident));
  if (auto why = parry::ctl::applicability_problem(a.type, a.event, available.body);
      !why.empty())
    throw fatal(outcome::server_error,
                parry::ctl::printable("error: not_applicable: " + why) +
                    "\nhint: 'parryctl available --incident " +
                    parry::ctl::printable(a.incident) + "' shows what applies");
  auto incident = s.call("GET", id_path("incidents", a.incident));
  const json& inc = sub(incident.body, "incident");

  json params = json::object();
  if (a.type == "start_process") {
    params["path"] = a.path;
    if (!a.cwd.empty()) params["working_directory"] = a.cwd;
  }
  json device = device_or_null(s, str(inc, "device_id"));
  if (a.type == "start_process") {
    // Split here by the device's rules and send the list: what is confirmed is what
    // runs (POSIX words, or CommandLineToArgvW on Windows; common/domain.hpp).
    auto os = str(available.body, "device_os_family") == "windows"
                  ? parry::os_family::windows
                  : parry::os_family_of(device.is_object() ? str(device, "os") : "");
    std::string why;
    auto argv = parry::split_arguments(a.args, os, why);
    if (!argv)
      throw fatal(outcome::usage, parry::ctl::printable("error: --args: " + why));
    params["arguments"] = *argv;
  }
  confirm(parry::ctl::describe_pending_action(a.type, inc, a.event, params, device),
          a.yes);

  json target = a.event.empty() ? json{{"kind", "detection"}}
                                : json{{"kind", "event"}, {"event_id", a.event}};
  json body{{"type", a.type},
            {"incident_id", a.incident},
            {"target", target},
            {"params", params},
            {"comment", a.comment}};
  password_scrub scrub{body};
  // Only sent when needed: a password the server does not expect is no help, and a
  // mistyped one would still count toward the lockout.
  if (parry::ctl::needs_password(a.type, available.body))
    body["password"] =
        own_password(a.password_stdin, "Your password (confirms " + a.type + "): ");
  parry::header_list headers;
  if (!a.idempotency_key.empty())
    headers.emplace_back("Idempotency-Key", a.idempotency_key);
  auto r = s.call("POST", "/api/v1/actions", &body, headers);
  return registered(s, r, a.wait, a.timeout,
                    "registered earlier with this idempotency key");
}

int cmd_available(session& s, const std::string& incident_id) {
  auto r = s.call("GET", available_path(incident_id));
  if (s.opts().json) return print_json(r), 0;
  auto incident = s.call("GET", id_path("incidents", incident_id));
  std::cout << parry::ctl::render_available_actions(r.body,
                                                    sub(incident.body, "incident"));
  return 0;
}

int cmd_cancel(session& s, const std::string& id, const std::string& comment) {
  json body{{"comment", comment}};
  auto r = s.call("POST", id_path("actions", id) + "/cancel", &body);
  if (s.opts().json) return print_json(r), 0;
  const auto& a = sub(r.body, "action");
  std::cout << parry::ctl::printable("action " + parry::ctl::cell(a, "action_id") + " " +
                                     parry::ctl::cell(a, "type") + ": " +
                                     parry::ctl::cell(a, "state"))
            << '\n';
  return 0;
}

/// The options of `reverse`.
struct reverse_request {
  std::string comment;
  bool wait = false;
  double timeout = 60;
  bool yes = false;
  bool password_stdin = false;
};

int cmd_reverse(session& s, const std::string& id, const reverse_request& q) {
  require_confirmable(q.yes);
  auto original = s.call("GET", id_path("actions", id));
  const json& a = sub(original.body, "action");
  std::string type = str(a, "type");
  std::string reverse = parry::ctl::reverse_type(type);
  // The server would refuse these too (409); saying so here spares the confirmation
  // and the password.
  auto refuse = [&](const std::string& why) {
    throw fatal(outcome::server_error,
                parry::ctl::printable("error: not_applicable: action " + id + " " + why));
  };
  if (reverse.empty())
    refuse("is " + (type.empty() ? std::string("of no known type") : "a " + type) +
           "; only isolate, prevent_run and quarantine can be reversed");
  if (!str(a, "reversed_by").empty())
    refuse("is already reversed by " + str(a, "reversed_by"));
  if (str(a, "state") != "completed")
    refuse("is " + str(a, "state") + "; only a completed action can be reversed");

  // Whether the reverse needs a password is the server's setting, published with
  // the incident's available actions.
  json available;
  if (!str(a, "incident_id").empty())
    available = s.call("GET", available_path(str(a, "incident_id"))).body;
  confirm(parry::ctl::describe_reverse(a, reverse), q.yes);
  json body{{"comment", q.comment}};
  password_scrub scrub{body};
  if (parry::ctl::needs_password(reverse, available))
    body["password"] =
        own_password(q.password_stdin, "Your password (confirms " + reverse + "): ");
  auto r = s.call("POST", id_path("actions", id) + "/reverse", &body);
  return registered(s, r, q.wait, q.timeout);
}

int cmd_users(session& s) {
  auto r = s.call("GET", "/api/v1/users");
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  std::vector<std::vector<std::string>> rows;
  for (const auto& u : sub(r.body, "users"))
    rows.push_back(
        {cell(u, "username"), cell(u, "role"), cell(u, "created_at"), cell(u, "locked")});
  if (rows.empty())
    std::cout << "no users\n";
  else
    std::cout << parry::ctl::format_table({"USER", "ROLE", "CREATED", "LOCKED"}, rows);
  return 0;
}

/// The options of `user add|set|delete`.
struct user_request {
  std::string name;
  std::string role;
  bool set_password = false;
  bool password_stdin = false;
  bool yes = false;
};

void print_user(session& s, const parry::response& r, const std::string& what,
                const std::string& note = {}) {
  if (s.opts().json) return print_json(r);
  const auto& u = sub(r.body, "user");
  std::cout << parry::ctl::printable(what + " user " + parry::ctl::cell(u, "username") +
                                     " (" + parry::ctl::cell(u, "role") + ")" + note)
            << '\n';
}

int cmd_user_add(session& s, const user_request& u) {
  json body{{"username", u.name}, {"role", u.role}};
  password_scrub scrub{body};
  body["password"] = new_password(u.name, u.password_stdin);
  auto r = s.call("POST", "/api/v1/users", &body);
  print_user(s, r, "created");
  return 0;
}

int cmd_user_set(session& s, const user_request& u) {
  if (u.role.empty() && !u.set_password)
    throw fatal(outcome::usage,
                "error: nothing to change; give --role and/or --password");
  json body = json::object();
  password_scrub scrub{body};
  if (!u.role.empty()) body["role"] = u.role;
  if (u.set_password) body["password"] = new_password(u.name, u.password_stdin);
  auto r = s.call("PATCH", id_path("users", u.name), &body);
  print_user(s, r, "updated",
             u.set_password ? "; new password, their sessions and tokens have ended"
                            : "");
  return 0;
}

int cmd_user_delete(session& s, const user_request& u) {
  require_confirmable(u.yes);
  confirm(parry::ctl::printable("about to delete user " + u.name +
                                "; their sessions and tokens end") +
              "\n",
          u.yes);
  auto r = s.call("DELETE", id_path("users", u.name));
  if (s.opts().json) return print_json(r), 0;
  std::cout << parry::ctl::printable("deleted user " + u.name) << '\n';
  return 0;
}

int cmd_audit(session& s, long long after, int limit) {
  auto q = parry::ctl::query_string({{"after", after > 0 ? std::to_string(after) : ""},
                                     {"limit", limit > 0 ? std::to_string(limit) : ""}});
  auto r = s.call("GET", "/api/v1/audit" + q);
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  std::vector<std::vector<std::string>> rows;
  long long last = after;
  for (const auto& rec : sub(r.body, "records")) {
    rows.push_back({cell(rec, "seq"), cell(rec, "time"), cell(rec, "actor"),
                    cell(rec, "kind"), cell(rec, "target"), cell(rec, "detail")});
    if (rec.contains("seq") && rec["seq"].is_number_integer())
      last = std::max(last, rec["seq"].get<long long>());
  }
  if (rows.empty())
    std::cout << "no audit records"
              << (after > 0 ? " after " + std::to_string(after) : "") << '\n';
  else
    std::cout << parry::ctl::format_table(
        {"SEQ", "TIME", "ACTOR", "KIND", "TARGET", "DETAIL"}, rows);
  const auto& head = sub(r.body, "head");
  if (!rows.empty() && head.contains("seq") && head["seq"].is_number_integer() &&
      head["seq"].get<long long>() > last)
    std::cout << "more: parryctl audit --after " << last << '\n';
  return 0;
}

/// Fetches the whole trail page by page and checks the hash chain as it comes, so a
/// long trail needs no more memory than one page.
int cmd_audit_verify(session& s) {
  auto verdict = parry::ctl::verify_audit_pages([&](std::int64_t after) {
    return s
        .call("GET", "/api/v1/audit" +
                         parry::ctl::query_string(
                             {{"after", std::to_string(after)}, {"limit", "1000"}}))
        .body;
  });
  if (s.opts().json) {
    json out{{"intact", verdict.intact},
             {"records", verdict.records},
             {"head", {{"seq", verdict.head_seq}, {"hash", verdict.head_hash}}},
             {"problem", verdict.problem}};
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << '\n';
  } else {
    std::cout << parry::ctl::audit_summary(verdict) << '\n';
  }
  return parry::ctl::exit_code(verdict.intact ? outcome::ok : outcome::server_error);
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

void add_confirm_options(CLI::App* cmd, bool& yes, bool& password_stdin) {
  cmd->add_flag("--yes,-y", yes,
                "do not ask for confirmation (required when stdin is not a terminal)");
  cmd->add_flag("--password-stdin", password_stdin,
                "read your password as one line from stdin (else PARRY_PASSWORD or a "
                "prompt)");
}

void add_wait_options(CLI::App* cmd, bool& wait, double& timeout) {
  cmd->add_flag("--wait", wait, "follow the action until it ends (like 'follow')");
  cmd->add_option("--timeout", timeout, "seconds to wait with --wait (default 60)")
      ->check(positive);
}

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
  add_wait_options(cmd, a.wait, a.timeout);
  add_confirm_options(cmd, a.yes, a.password_stdin);
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

  std::string id, device, incident_filter, state;
  int limit = 0;
  auto* devices = app.add_subcommand("devices", "list devices");
  auto* device_cmd = app.add_subcommand("device", "show one device");
  device_cmd->add_option("id", id, "device id")->required();
  auto* incidents = app.add_subcommand("incidents", "list incidents, newest first");
  incidents->add_option("--device", device, "only this device");
  incidents->add_option("--limit", limit, "at most this many")->check(positive);
  auto* incident = app.add_subcommand("incident", "show an incident and its chain");
  incident->add_option("id", id, "incident id")->required();
  auto* available = app.add_subcommand(
      "available", "show which actions apply to which targets of an incident");
  available->alias("actions-for");
  available->add_option("--incident", id, "incident id")->required();
  auto* actions = app.add_subcommand("actions", "list response actions, newest first");
  actions->add_option("--device", device, "only this device");
  actions->add_option("--incident", incident_filter, "only this incident");
  actions->add_option("--state", state,
                      "only this state (registered, queued, sent, ...)");
  actions->add_option("--limit", limit, "at most this many")->check(positive);
  auto* action = app.add_subcommand("action", "show an action and its transitions");
  action->add_option("id", id, "action id")->required();

  struct action_command {
    const char* name;
    const char* help;
  };
  const action_command action_commands[] = {
      {"isolate", "isolate the incident's device from the network"},
      {"release", "release the incident's device from isolation"},
      {"prevent-run", "stop the target's file from being run again"},
      {"quarantine", "move the target's file into quarantine"},
      {"delete-file", "delete the target's file"},
      {"terminate", "terminate the target's process"},
      {"start-process", "start a process on the incident's device"}};
  std::vector<std::pair<CLI::App*, std::unique_ptr<action_request>>> action_cmds;
  for (const auto& c : action_commands) {
    auto req = std::make_unique<action_request>();
    req->type = parry::ctl::action_type_for_command(c.name);
    auto* cmd = app.add_subcommand(c.name, c.help);
    add_action_options(cmd, *req);
    if (req->type == "start_process") {
      cmd->add_option("--path", req->path, "absolute path of the executable")->required();
      cmd->add_option("--cwd", req->cwd, "absolute working directory");
      cmd->add_option("--args", req->args,
                      "startup arguments as one string, split by the device's rules "
                      "(shell words, or CommandLineToArgvW on Windows; never run by a "
                      "shell) and shown before you confirm; use --args=\"-x ...\" when "
                      "it starts with -");
    }
    action_cmds.emplace_back(cmd, std::move(req));
  }

  std::string comment;
  auto* cancel =
      app.add_subcommand("cancel", "cancel an action the agent has not accepted");
  cancel->add_option("id", id, "action id")->required();
  cancel->add_option("--comment", comment, "why");
  reverse_request reverse_req;
  auto* reverse = app.add_subcommand(
      "reverse", "undo a completed isolate, prevent-run or quarantine");
  reverse->add_option("id", id, "action id")->required();
  reverse->add_option("--comment", reverse_req.comment, "why");
  add_wait_options(reverse, reverse_req.wait, reverse_req.timeout);
  add_confirm_options(reverse, reverse_req.yes, reverse_req.password_stdin);

  double follow_timeout = 60;
  auto* follow_cmd = app.add_subcommand("follow", "wait for an action to end");
  follow_cmd->add_option("id", id, "action id")->required();
  follow_cmd->add_option("--timeout", follow_timeout, "seconds to wait (default 60)")
      ->check(positive);

  std::vector<std::string> roles;
  for (auto r : parry::all_user_roles)
    roles.emplace_back(parry::to_string(r));
  user_request user_req;
  auto* users = app.add_subcommand("users", "list users (administrator)");
  auto* user_cmd = app.add_subcommand("user", "add, change or delete a user "
                                              "(administrator)");
  user_cmd->require_subcommand(1);
  auto* user_add = user_cmd->add_subcommand("add", "create a user");
  user_add->add_option("name", user_req.name, "user name")->required();
  user_add
      ->add_option("--role", user_req.role,
                   "administrator, security_officer or "
                   "operator")
      ->required()
      ->check(CLI::IsMember(roles));
  user_add->add_flag("--password-stdin", user_req.password_stdin,
                     "read the new password from stdin (else PARRY_NEW_PASSWORD or "
                     "asked twice)");
  auto* user_set = user_cmd->add_subcommand("set", "change a user's role or password");
  user_set->add_option("name", user_req.name, "user name")->required();
  user_set->add_option("--role", user_req.role, "new role")->check(CLI::IsMember(roles));
  user_set->add_flag("--password", user_req.set_password, "set a new password");
  user_set->add_flag("--password-stdin", user_req.password_stdin,
                     "read the new password from stdin (else PARRY_NEW_PASSWORD or "
                     "asked twice)");
  auto* user_delete = user_cmd->add_subcommand("delete", "delete a user");
  user_delete->add_option("name", user_req.name, "user name")->required();
  user_delete->add_flag("--yes,-y", user_req.yes,
                        "do not ask for confirmation (required when stdin is not a "
                        "terminal)");

  long long audit_after = 0;
  int audit_limit = 0;
  auto* audit = app.add_subcommand("audit", "show the audit trail (administrator)");
  audit->add_option("--after", audit_after, "records after this sequence number")
      ->check(CLI::NonNegativeNumber);
  audit->add_option("--limit", audit_limit, "at most this many (server default 1000)")
      ->check(positive);
  auto* audit_verify =
      audit->add_subcommand("verify", "check the audit trail's hash chain end to end");

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
    if (available->parsed()) return cmd_available(s, id);
    if (actions->parsed()) return cmd_actions(s, device, incident_filter, state, limit);
    if (action->parsed()) return cmd_action(s, id);
    for (const auto& [cmd, req] : action_cmds)
      if (cmd->parsed()) return cmd_respond(s, *req);
    if (cancel->parsed()) return cmd_cancel(s, id, comment);
    if (reverse->parsed()) return cmd_reverse(s, id, reverse_req);
    if (follow_cmd->parsed()) return follow(s, id, follow_timeout);
    if (users->parsed()) return cmd_users(s);
    if (user_add->parsed()) return cmd_user_add(s, user_req);
    if (user_set->parsed()) return cmd_user_set(s, user_req);
    if (user_delete->parsed()) return cmd_user_delete(s, user_req);
    if (audit_verify->parsed()) return cmd_audit_verify(s);
    if (audit->parsed()) return cmd_audit(s, audit_after, audit_limit);
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
