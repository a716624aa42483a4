// parryctl login and logout: a token issued for this user and saved in the
// credentials file, and its revocation.

#include "ctl/cli.hpp"

#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

#include <unistd.h>

namespace parry::ctl {

namespace {

namespace fs = std::filesystem;

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

} // namespace

command_group add_session_commands(CLI::App& app) {
  struct options {
    std::string user;
    bool password_stdin = false;
  };
  auto o = std::make_shared<options>();
  auto* login = app.add_subcommand("login", "log in and save a token for later commands");
  login->add_option("--user", o->user, "user name")->required();
  login->add_flag("--password-stdin", o->password_stdin,
                  "read the password as one line from stdin (else PARRY_PASSWORD or "
                  "a prompt)");
  auto* logout = app.add_subcommand("logout", "revoke the token and forget it");
  return [=](session& s) -> std::optional<int> {
    if (login->parsed()) return cmd_login(s, o->user, o->password_stdin);
    if (logout->parsed()) return cmd_logout(s);
    return std::nullopt;
  };
}

} // namespace parry::ctl
