#pragma once

// What every parryctl command shares: the global options, the session (which server,
// which CA file, which token, and the client made from them), the saved credentials,
// passwords and confirmation on the terminal, small JSON accessors and the options
// several commands take. Each command group (ctl/cmd_*.cpp) registers its
// subcommands with a function declared at the end of this header.

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "ctl/client.hpp"
#include "ctl/format.hpp"

namespace parry::ctl {

using nlohmann::json;
using std::chrono::milliseconds;

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

/// The saved credentials at `path`, or nothing (with a warning) when the file is
/// missing, broken or not ours.
std::optional<credentials> load_credentials(const std::string& path);

/// Saves `c` at `path` (mode 0600, directories 0700), atomically.
void save_credentials(const std::string& path, const credentials& c);

/// Overwrites a secret before its memory is released.
void wipe(std::string& secret);

/// The caller's own password (login, or confirming an action): PARRY_PASSWORD, else
/// one line of stdin with --password-stdin, else a prompt on the terminal.
std::string own_password(bool from_stdin, const std::string& prompt);

/// A password for another account: PARRY_NEW_PASSWORD, else one line of stdin with
/// --password-stdin, else asked twice on the terminal so a typo cannot slip through.
std::string new_password(const std::string& user, bool from_stdin);

/// Fails early, before any request, when a confirmation will be needed but stdin is
/// not a terminal (a script): it must say --yes.
void require_confirmable(bool yes);

/// Shows `what` (already escaped) and asks `Proceed? [y/N]` on the terminal; only
/// `y` or `yes` goes on. With --yes, `what` goes to stderr as a record and no one is
/// asked.
void confirm(const std::string& what, bool yes);

/// Wipes `body["password"]` when the scope ends, however the request went.
struct password_scrub {
  json& body;
  ~password_scrub() {
    auto it = body.find("password");
    if (it != body.end() && it->is_string()) wipe(it->get_ref<std::string&>());
  }
};

/// Prints the server's answer as indented JSON (--json).
void print_json(const parry::response& r);

/// The settings of one run and its lazily made client.
class session {
public:
  /// Picks the server, CA file and token: flags and environment first, then the
  /// saved credentials (only for the server they were saved for).
  explicit session(const globals& g);

  const globals& opts() const { return g_; }
  const std::string& server() const { return server_; }
  const std::string& cacert() const { return cacert_; }
  const std::string& token() const { return token_; }
  const std::string& config_path() const { return config_path_; }
  const std::optional<credentials>& saved() const { return saved_; }

  /// The client; the bearer token is set unless `with_token` is false.
  parry::client& client(bool with_token = true);

  /// One request that must succeed: a non-2xx answer ends the run with exit code 1
  /// (the server's JSON is still printed under --json).
  parry::response call(std::string_view method, const std::string& path,
                       const json* body = nullptr, const parry::header_list& headers = {},
                       milliseconds timeout = milliseconds{0});

  /// Ends the run with the server's error (exit code 1).
  [[noreturn]] void fail(const parry::response& r, std::string_view path = {}) const;

private:
  globals g_;
  std::string config_path_;
  std::optional<credentials> saved_;
  std::string server_;
  std::string cacert_;
  std::string token_;
  std::optional<parry::client> client_;
};

/// `object[key]` when it is a string, else "".
std::string str(const json& object, std::string_view key);

/// `object[key]`, or an empty object when there is none.
const json& sub(const json& object, const char* key);

/// `/api/v1/<collection>/<id>` with `id` percent-encoded.
std::string id_path(const char* collection, const std::string& id);

/// The path of an incident's available actions.
std::string available_path(const std::string& incident);

/// Accepts a positive number (seconds, counts).
extern const CLI::Validator positive;

/// --yes and --password-stdin.
void add_confirm_options(CLI::App* cmd, bool& yes, bool& password_stdin);

/// --wait and --timeout.
void add_wait_options(CLI::App* cmd, bool& wait, double& timeout);

/// A command group once registered: runs the group's command when one of its
/// subcommands was parsed and returns the exit code; nothing when none of them was.
using command_group = std::function<std::optional<int>(session&)>;

/// login, logout (ctl/cmd_session.cpp).
command_group add_session_commands(CLI::App& app);
/// devices, device (ctl/cmd_devices.cpp).
command_group add_device_commands(CLI::App& app);
/// incidents, incident, available (ctl/cmd_incidents.cpp).
command_group add_incident_commands(CLI::App& app);
/// actions, action, the action commands, cancel, reverse, follow (ctl/cmd_actions.cpp).
command_group add_action_commands(CLI::App& app);
/// users, user add|set|delete (ctl/cmd_users.cpp).
command_group add_user_commands(CLI::App& app);
/// audit, audit verify (ctl/cmd_audit.cpp).
command_group add_audit_commands(CLI::App& app);
/// enroll, integrator, bus-keys (cmd_bus.cpp).
command_group add_bus_commands(CLI::App& app);
/// admin backup (ctl/cmd_admin.cpp).
command_group add_admin_commands(CLI::App& app);
/// device revoke: cuts and refuses a device's bus key (cmd_bus.cpp).
int revoke_device(session& s, const std::string& id, bool yes);

} // namespace parry::ctl
