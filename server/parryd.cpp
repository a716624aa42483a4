// parryd: the Parry server.

#include <csignal>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "server/config.hpp"
#include "server/server.hpp"

int main(int argc, char** argv) {
  CLI::App app{"parryd - server for EDR response actions\n\nSettings come from, each "
               "overriding the one before: defaults, the TOML file (--config), PARRY_* "
               "environment variables, the flags below."};
  parry::config_inputs inputs;
  bool print = false;
  bool markdown = false;
  app.add_option("--config", inputs.file, "TOML configuration file");
  auto* print_option =
      app.add_flag("--print-config", print,
                   "print each key's effective value and where it came from, then exit");
  app.add_flag("--markdown", markdown,
               "with --print-config: print the reference table of every key (defaults "
               "only) in Markdown instead")
      ->needs(print_option);
  // One option per key of the table, each taken as text and checked by the table, so
  // a bad flag fails with the same message as a bad file or environment value.
  const auto& keys = parry::config_keys();
  std::vector<std::string> texts(keys.size());
  std::vector<CLI::Option*> options(keys.size(), nullptr);
  for (size_t i = 0; i < keys.size(); ++i) {
    const auto& k = keys[i];
    if (k.flag.empty()) continue;
    options[i] = app.add_option(k.flag, texts[i],
                                k.doc + " [" + k.legal + "; env " + k.env + "; default " +
                                    k.default_toml + "]")
                     ->type_name(k.type == "integer"   ? "INT"
                                 : k.type == "boolean" ? "BOOL"
                                                       : "TEXT");
  }
  std::string env_only;
  for (const auto& k : keys)
    if (k.flag.empty()) env_only += "\n  " + k.env + ": " + k.doc + " [" + k.legal + "]";
  if (!env_only.empty())
    app.footer("Set only in the file or the environment:" + env_only);
  CLI11_PARSE(app, argc, argv);
  if (markdown) {
    std::cout << parry::config_reference_markdown();
    return 0;
  }
  for (size_t i = 0; i < keys.size(); ++i)
    if (options[i] != nullptr && options[i]->count() > 0)
      inputs.flags.emplace_back(keys[i].key, texts[i]);

  // Defaults, then the file, then the environment, then the command line.
  parry::loaded_config loaded;
  if (auto err = parry::load_config(inputs, loaded); !err.empty()) {
    std::istringstream lines{err};
    for (std::string line; std::getline(lines, line);)
      std::cerr << "parryd: " << line << '\n';
    return 2;
  }
  if (print) {
    std::cout << parry::print_config(loaded);
    return 0;
  }
  const auto& cfg = loaded.cfg;
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  spdlog::debug("parryd: configuration\n{}", parry::print_config(loaded));

  // Every thread started from here on inherits the blocked set; main waits for the
  // signals with sigwait instead of running code inside a handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  parry::server srv{cfg};
  try {
    srv.start();
  } catch (const std::exception& e) {
    std::cerr << "parryd: cannot start: " << e.what() << '\n';
    srv.stop();
    return 1;
  }
  // An IPv6 address goes in brackets in a URL.
  auto host = cfg.http_address.find(':') == std::string::npos
                  ? cfg.http_address
                  : "[" + cfg.http_address + "]";
  std::printf("parryd ready\n  REST   https://%s:%u/api/v1\n  bus    %s\n  CA     %s\n",
              host.c_str(), srv.http_port(), srv.bus_endpoint().c_str(),
              srv.cert_file().c_str());
  if (srv.serves_console())
    std::printf("  console https://%s:%u/\n", host.c_str(), srv.http_port());
  if (cfg.bus_curve)
    std::printf("  enroll %s\n  integrators %s\n  events %s\n  server key %s\n",
                srv.enroll_endpoint().c_str(), srv.integrator_endpoint().c_str(),
                srv.events_endpoint().c_str(), srv.bus_public_key().c_str());
  else
    std::printf("  WARNING: bus_curve = false: the bus is plain TCP; anyone who reaches "
                "it can speak as any device\n");
  if (!srv.generated_admin_password().empty())
    std::printf("  first administrator: admin / %s  (shown once; change it)\n",
                srv.generated_admin_password().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("parryd: signal {}, stopping", sig);
  srv.stop();
  return 0;
}
