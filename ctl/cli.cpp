// The shared part of parryctl (see ctl/cli.hpp): credentials file, terminal prompts
// and confirmation, the session and the common options.

#include "ctl/cli.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

namespace parry::ctl {

namespace {

namespace fs = std::filesystem;

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

std::string stdin_line() {
  std::string line;
  std::getline(std::cin, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

} // namespace

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

void wipe(std::string& secret) {
  std::fill(secret.begin(), secret.end(), '\0');
  secret.clear();
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

void print_json(const parry::response& r) {
  std::cout << parry::ctl::pretty_json(r.raw) << '\n' << std::flush;
}

session::session(const globals& g) : g_(g) {
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
parry::client& session::client(bool with_token) {
  if (!client_) {
    client_.emplace(server_, parry::tls_options{cacert_, g_.insecure});
    if (with_token && !token_.empty()) client_->set_bearer(token_);
  }
  return *client_;
}
/// One request that must succeed: a non-2xx answer ends the run with exit code 1
/// (the server's JSON is still printed under --json).
parry::response session::call(std::string_view method, const std::string& path,
                              const json* body, const parry::header_list& headers,
                              milliseconds timeout) {
  auto r = client().request(method, path, body, headers, timeout);
  if (!r.ok()) fail(r, path);
  return r;
}

void session::fail(const parry::response& r, std::string_view path) const {
  if (g_.json && !r.raw.empty()) print_json(r);
  std::string line = parry::ctl::error_line(r);
  if (r.status == 401 && token_.empty() && path != "/api/v1/login")
    line += "\nhint: run 'parryctl login --user NAME' or pass --token";
  throw fatal(outcome::server_error, line);
}

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

std::string available_path(const std::string& incident) {
  return id_path("incidents", incident) + "/available-actions";
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

} // namespace parry::ctl
