// parryctl: Parry's REST API from the command line, as aligned tables for people and
// as the server's own JSON (--json) for scripts. Exit codes: 0 ok, 1 the server said
// no (or an action failed), 2 usage or timeout, 3 connection or TLS failure.

// This file builds the command line and registers the command groups (ctl/cmd_*.cpp);
// what they share is in ctl/cli.hpp.

#include <exception>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ctl/cli.hpp"
#include "ctl/client.hpp"
#include "ctl/format.hpp"

using parry::ctl::outcome;

int main(int argc, char** argv) {
  CLI::App app{"parryctl: command line client for the Parry response server"};
  app.set_version_flag("--version", "parryctl 0.1.0");
  app.require_subcommand(1);
  app.fallthrough();
  parry::ctl::globals g;
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

  // Registered in this order, which is also the order `--help` lists them in.
  std::vector<parry::ctl::command_group> groups{
      parry::ctl::add_session_commands(app),  parry::ctl::add_device_commands(app),
      parry::ctl::add_incident_commands(app), parry::ctl::add_action_commands(app),
      parry::ctl::add_user_commands(app),     parry::ctl::add_audit_commands(app),
      parry::ctl::add_bus_commands(app),      parry::ctl::add_admin_commands(app)};

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : parry::ctl::exit_code(outcome::usage);
  }

  std::string cacert_used = g.cacert;
  try {
    parry::ctl::session s(g);
    cacert_used = s.cacert();
    for (const auto& group : groups)
      if (auto rc = group(s)) return *rc;
    std::cerr << app.help();
    return parry::ctl::exit_code(outcome::usage);
  } catch (const parry::ctl::fatal& e) {
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
