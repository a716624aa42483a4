#define BOOST_TEST_MODULE config
#include <boost/test/unit_test.hpp>

// parryd's configuration: layering (defaults, file, environment, flags), the errors a
// bad value gives, --print-config, and the docs table against the code.

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "common/process.hpp"
#include "server/config.hpp"
#include "server/logging.hpp"
#include "server/server.hpp"

#include <caf/actor_system_config.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>
#include <spdlog/formatter.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

using namespace parry;
using namespace std::chrono_literals;

namespace {

/// A temporary directory for the test's files, and a fake environment.
struct fixture {
  std::filesystem::path dir;
  std::map<std::string, std::string> env;
  config_inputs in;

  fixture() {
    dir = std::filesystem::temp_directory_path() /
          ("parry-config-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    in.getenv = [this](const char* name) -> const char* {
      auto i = env.find(name);
      return i == env.end() ? nullptr : i->second.c_str();
    };
  }
  ~fixture() { std::filesystem::remove_all(dir); }

  /// Writes `text` as the configuration file and uses it.
  void file(const std::string& text) {
    auto p = dir / "parryd.toml";
    std::ofstream{p} << text;
    in.file = p.string();
  }

  /// Loads; fails the test on an error.
  loaded_config load() {
    loaded_config out;
    auto err = load_config(in, out);
    BOOST_REQUIRE_MESSAGE(err.empty(), err);
    return out;
  }

  /// Loads and expects an error; returns it.
  std::string fail() {
    loaded_config out;
    auto err = load_config(in, out);
    BOOST_REQUIRE_MESSAGE(!err.empty(), "expected a configuration error");
    return err;
  }
};

const config_key_info& info(const std::string& key) {
  for (auto& k : config_keys())
    if (k.key == key) return k;
  throw std::runtime_error("no key " + key);
}

std::string env_name(const std::string& key) {
  std::string out = "PARRY_";
  for (char c : key)
    out += c == '.' ? '_' : static_cast<char>(std::toupper(c));
  return out;
}

std::string flag_name(const std::string& key) {
  std::string out = "--";
  for (char c : key)
    out += (c == '.' || c == '_') ? '-' : c;
  return out;
}

/// Checks that `err` names the key, its source, the value and the legal values.
void check_error(const std::string& err, const std::string& key,
                 const std::string& source, const std::string& value) {
  BOOST_TEST_INFO("error: " << err);
  BOOST_TEST(err.rfind(key + " (" + source + "): ", 0) == 0);
  BOOST_TEST(err.find("'" + value + "'") != std::string::npos);
  BOOST_TEST(err.find("legal values: " + info(key).legal) != std::string::npos);
}

std::string env_or_fail(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0')
    throw std::runtime_error(std::string{name} + " is not set (run through CTest)");
  return v;
}

std::string read_file(const std::string& path) {
  std::ifstream f{path};
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

} // namespace

BOOST_AUTO_TEST_SUITE(table)

BOOST_AUTO_TEST_CASE(every_key_has_an_env_var_and_a_flag_named_after_it) {
  std::set<std::string> seen;
  for (auto& k : config_keys()) {
    BOOST_TEST_INFO("key " << k.key);
    BOOST_TEST(seen.insert(k.key).second);
    BOOST_TEST(k.env == env_name(k.key));
    BOOST_TEST(!k.doc.empty());
    BOOST_TEST(!k.legal.empty());
    // A secret has no flag: a command line is readable by every local user.
    if (k.secret)
      BOOST_TEST(k.flag.empty());
    else
      BOOST_TEST(primary_flag(k) == flag_name(k.key));
  }
  BOOST_TEST(seen.size() >= 18u);
}

BOOST_AUTO_TEST_CASE(defaults_are_legal) {
  BOOST_TEST(server_config{}.validate() == "");
  fixture f;
  auto c = f.load();
  for (auto& [key, origin] : c.origin) {
    BOOST_TEST_INFO("key " << key);
    BOOST_TEST(to_string(origin) == "default");
  }
  BOOST_TEST(c.origin.size() == config_keys().size());
}

BOOST_AUTO_TEST_CASE(validate_names_the_key) {
  server_config c;
  c.http_address = "localhost";
  c.missed_heartbeats = 0;
  auto err = c.validate();
  BOOST_TEST_INFO(err);
  BOOST_TEST(err.find("http_address (configuration): not an IP address: 'localhost'") !=
             std::string::npos);
  BOOST_TEST(err.find("missed_heartbeats (configuration): out of range: '0'; legal "
                      "values: 1..100") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(layers)

BOOST_FIXTURE_TEST_CASE(file_then_env_then_flag, fixture) {
  file("http_port = 1001\n"
       "log_level = \"debug\"\n"
       "heartbeat_interval_ms = 1000\n"
       "[actions]\n"
       "password_required = [\"isolate\"]\n"
       "default_ttl_seconds = 60\n"
       "[actions.ttl_seconds]\n"
       "isolate = 10\n");
  env["PARRY_HTTP_PORT"] = "1002";
  env["PARRY_LOG_LEVEL"] = "warn";
  env["PARRY_ACTIONS_PASSWORD_REQUIRED"] = "quarantine, delete_file";
  env["PARRY_ACTIONS_TTL_SECONDS"] = "quarantine=20";
  in.flags = {{"http_port", "1003"}, {"actions.ttl_seconds", "delete_file=30"}};
  auto c = load();
  // Flag over environment over file.
  BOOST_TEST(c.cfg.http_port == 1003);
  BOOST_TEST(to_string(c.origin["http_port"]) == "flag --http-port");
  BOOST_TEST((c.cfg.ttl_seconds == std::map<std::string, uint32_t>{{"delete_file", 30}}));
  BOOST_TEST(to_string(c.origin["actions.ttl_seconds"]) == "flag --actions-ttl-seconds");
  // Environment over file.
  BOOST_TEST(c.cfg.log_level == "warn");
  BOOST_TEST(to_string(c.origin["log_level"]) == "env PARRY_LOG_LEVEL");
  BOOST_TEST(
      (c.cfg.password_required == std::vector<std::string>{"quarantine", "delete_file"}));
  BOOST_TEST(to_string(c.origin["actions.password_required"]) ==
             "env PARRY_ACTIONS_PASSWORD_REQUIRED");
  // File over default.
  BOOST_TEST(c.cfg.heartbeat_interval_ms == 1000u);
  BOOST_TEST(to_string(c.origin["heartbeat_interval_ms"]) == "file " + in.file);
  BOOST_TEST(c.cfg.default_ttl_seconds == 60u);
  BOOST_TEST(to_string(c.origin["actions.default_ttl_seconds"]) == "file " + in.file);
  // Default.
  BOOST_TEST(c.cfg.missed_heartbeats == 3);
  BOOST_TEST(to_string(c.origin["missed_heartbeats"]) == "default");
}

BOOST_FIXTURE_TEST_CASE(an_empty_variable_counts, fixture) {
  env["PARRY_ACTIONS_PASSWORD_REQUIRED"] = "";
  auto c = load();
  BOOST_TEST(c.cfg.password_required.empty());
  env["PARRY_DATA_DIR"] = "";
  check_error(fail(), "data_dir", "env PARRY_DATA_DIR", "");
}

// Every key can be set from each layer: its default, written in the layer's syntax,
// loads and is attributed to that layer.
BOOST_FIXTURE_TEST_CASE(every_key_is_reachable_from_every_layer, fixture) {
  std::string text;
  for (auto& k : config_keys())
    text += k.key + " = " + k.default_toml + "\n";
  file(text);
  auto from_file = load();
  for (auto& k : config_keys()) {
    BOOST_TEST_INFO("key " << k.key);
    BOOST_TEST(to_string(from_file.origin[k.key]) == "file " + in.file);
  }
  BOOST_TEST(print_config(from_file) != "");
  for (auto& k : config_keys())
    env[k.env] = k.default_text;
  auto from_env = load();
  for (auto& k : config_keys()) {
    BOOST_TEST_INFO("key " << k.key);
    BOOST_TEST(to_string(from_env.origin[k.key]) == "env " + k.env);
  }
  for (auto& k : config_keys())
    if (!k.flag.empty()) in.flags.emplace_back(k.key, k.default_text);
  auto from_flags = load();
  for (auto& k : config_keys()) {
    BOOST_TEST_INFO("key " << k.key);
    BOOST_TEST(to_string(from_flags.origin[k.key]) ==
               (k.flag.empty() ? "env " + k.env : "flag " + primary_flag(k)));
  }
  // The same values whichever layer set them.
  auto values = [](std::string s) {
    return std::regex_replace(s, std::regex{"  #.*"}, "");
  };
  BOOST_TEST(values(print_config(from_file)) == values(print_config(from_env)));
  BOOST_TEST(values(print_config(from_file)) == values(print_config(from_flags)));
  BOOST_TEST(values(print_config(from_file)) == values(print_config(loaded_config{})));
}

BOOST_AUTO_TEST_SUITE_END()

// Work sharing unless told otherwise: work stealing's spin locks stalled the
// store's answers on a machine whose cores the agents kept busy (docs/benchmarks.md).
BOOST_AUTO_TEST_CASE(the_scheduler_policy_reaches_the_actor_system) {
  server_config c;
  auto policy = [&] {
    return caf::get<caf::atom_value>(make_caf_config(c), "scheduler.policy");
  };
  BOOST_TEST(c.scheduler == "sharing");
  BOOST_TEST(policy() == caf::atom("sharing"));
  c.scheduler = "stealing";
  BOOST_TEST(policy() == caf::atom("stealing"));
  c.workers = 3;
  BOOST_TEST(caf::get<size_t>(make_caf_config(c), "scheduler.max-threads") == 3u);
}

BOOST_AUTO_TEST_SUITE(errors)

BOOST_FIXTURE_TEST_CASE(from_the_environment, fixture) {
  env["PARRY_HTTP_PORT"] = "70000";
  check_error(fail(), "http_port", "env PARRY_HTTP_PORT", "70000");
  env["PARRY_HTTP_PORT"] = "80x";
  check_error(fail(), "http_port", "env PARRY_HTTP_PORT", "80x");
  env.clear();
  env["PARRY_WORKERS"] = "-1";
  check_error(fail(), "workers", "env PARRY_WORKERS", "-1");
  env.clear();
  env["PARRY_SCHEDULER"] = "fastest";
  check_error(fail(), "scheduler", "env PARRY_SCHEDULER", "fastest");
  env.clear();
  env["PARRY_DATA_DIR"] = "bad\xFF\x01";
  auto err = fail();
  check_error(err, "data_dir", "env PARRY_DATA_DIR", "bad\xEF\xBF\xBD\\x01");
  BOOST_TEST(err.find("not valid UTF-8") != std::string::npos);
  env.clear();
  env["PARRY_ACTIONS_TTL_SECONDS"] = "isolate=0";
  check_error(fail(), "actions.ttl_seconds", "env PARRY_ACTIONS_TTL_SECONDS",
              "isolate=0");
  env.clear();
  env["PARRY_MAX_FRAME_BYTES"] = std::string(5000, '9');
  err = fail();
  BOOST_TEST(err.find("longer than") == std::string::npos); // an integer, not text
  BOOST_TEST(err.find("max_frame_bytes (env PARRY_MAX_FRAME_BYTES): ") == 0);
  BOOST_TEST(err.size() < 400u); // the value is cut for the message
}

BOOST_FIXTURE_TEST_CASE(from_the_file, fixture) {
  file("log_level = \"loud\"\n");
  check_error(fail(), "log_level", "file " + in.file, "loud");
  BOOST_TEST(info("log_level").legal == "one of trace, debug, info, warn, error");
  file("heartbeat_interval_ms = \"5000\"\n");
  auto err = fail();
  check_error(err, "heartbeat_interval_ms", "file " + in.file, "5000");
  BOOST_TEST(err.find("not an integer") != std::string::npos);
  file("[actions]\npassword_required = [\"isolate\", \"nuke\"]\n");
  err = fail();
  check_error(err, "actions.password_required", "file " + in.file,
              "[ 'isolate', 'nuke' ]");
  BOOST_TEST(err.find("unknown action type 'nuke'") != std::string::npos);
  file("[actions]\nstart_process_allowlist = [\"bin/sh\"]\n");
  check_error(fail(), "actions.start_process_allowlist", "file " + in.file,
              "[ 'bin/sh' ]");
}

// A float for an integer key is refused, never converted: 8e20 does not fit an
// int64_t (undefined behaviour if cast) and 2.0 is not "2"
// (fuzz/known/config-float-to-int).
BOOST_FIXTURE_TEST_CASE(float_for_an_integer_key, fixture) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"workers = 2.0\n", "workers"},
      {"[actions]\ndefault_ttl_seconds = 8e20\n", "actions.default_ttl_seconds"},
      {"[actions]\ndefault_ttl_seconds = -8e20\n", "actions.default_ttl_seconds"},
      {"http_port = nan\n", "http_port"},
      {"[actions.ttl_seconds]\nisolate = 3600.0\n", "actions.ttl_seconds"}};
  for (auto& [text, key] : cases) {
    file(text);
    auto err = fail();
    BOOST_TEST_INFO("file: " << text << "error: " << err);
    BOOST_TEST(err.rfind(key + " (file " + in.file + "): ", 0) == 0);
    BOOST_TEST(err.find("not an integer") != std::string::npos);
  }
}

BOOST_FIXTURE_TEST_CASE(unknown_keys_and_broken_files, fixture) {
  file("http_prot = 1\n");
  auto err = fail();
  BOOST_TEST_INFO(err);
  BOOST_TEST(
      err.rfind("http_prot (file " + in.file + "): unknown key; known keys: ", 0) == 0);
  BOOST_TEST(err.find("http_port") != std::string::npos);
  file("[actions]\nttl = 5\n");
  err = fail();
  BOOST_TEST_INFO(err);
  BOOST_TEST(err.rfind("actions.ttl (file " + in.file + "): unknown key", 0) == 0);
  file("actions = 5\n");
  BOOST_TEST(fail().rfind("actions (file " + in.file + "): must be a table", 0) == 0);
  file("http_port = \n");
  BOOST_TEST(fail().rfind("file " + in.file + ": line 1", 0) == 0);
  file("data_dir = \"bad\xFF\"\n");
  BOOST_TEST(fail().rfind("file " + in.file + ": line 1", 0) == 0);
  file("[actions.ttl_seconds]\nnuke = 5\n");
  err = fail();
  check_error(err, "actions.ttl_seconds", "file " + in.file, "nuke = 5");
  BOOST_TEST(err.find("unknown action type 'nuke'") != std::string::npos);
  file("# " + std::string(1 << 20, 'x') + "\n");
  BOOST_TEST(fail().rfind("file " + in.file + ": larger than 1048576 bytes", 0) == 0);
  in.file = (dir / "missing.toml").string();
  BOOST_TEST(fail().rfind("file " + in.file + ": cannot read", 0) == 0);
}

BOOST_FIXTURE_TEST_CASE(from_a_flag, fixture) {
  in.flags = {{"heartbeat_interval_ms", "50"}};
  check_error(fail(), "heartbeat_interval_ms", "flag --heartbeat-interval-ms", "50");
  BOOST_TEST(info("heartbeat_interval_ms").legal == "100..600000 ms");
  in.flags = {{"bus_endpoint", "udp://x"}};
  check_error(fail(), "bus_endpoint", "flag --bus-endpoint", "udp://x");
}

BOOST_FIXTURE_TEST_CASE(every_bad_value_is_reported, fixture) {
  file("missed_heartbeats = 0\n");
  env["PARRY_LOG_LEVEL"] = "loud";
  in.flags = {{"http_address", "localhost"}};
  auto err = fail();
  BOOST_TEST_INFO(err);
  BOOST_TEST(std::count(err.begin(), err.end(), '\n') == 2);
  BOOST_TEST(err.find("missed_heartbeats (file ") != std::string::npos);
  BOOST_TEST(err.find("log_level (env PARRY_LOG_LEVEL)") != std::string::npos);
  BOOST_TEST(err.find("http_address (flag --http-address)") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(a_secret_is_never_shown, fixture) {
  env["PARRY_ADMIN_PASSWORD"] = "short-pw";
  auto err = fail();
  BOOST_TEST_INFO(err);
  BOOST_TEST(err.find("short-pw") == std::string::npos);
  BOOST_TEST(err.find("admin_password (env PARRY_ADMIN_PASSWORD): shorter than 12 "
                      "bytes: '<secret>'") == 0);
  file("admin_password = \"short-pw\"\n");
  env.clear();
  BOOST_TEST(fail().find("short-pw") == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(print)

BOOST_FIXTURE_TEST_CASE(one_line_per_key_with_its_source, fixture) {
  file("workers = 2\n");
  env["PARRY_ADMIN_PASSWORD"] = "a-long-enough-secret";
  in.flags = {{"bus_endpoint", "tcp://127.0.0.1:*"}};
  auto out = print_config(load());
  BOOST_TEST_INFO(out);
  BOOST_TEST(out.find("a-long-enough-secret") == std::string::npos);
  std::istringstream lines{out};
  std::string line;
  std::getline(lines, line);
  BOOST_TEST(line.rfind("# ", 0) == 0);
  std::regex shape{
      R"(^([a-z0-9_.]+) = (.+?) +# (default|file .+|env PARRY_[A-Z0-9_]+|flag --[a-z0-9-]+)$)"};
  std::map<std::string, std::pair<std::string, std::string>> seen;
  while (std::getline(lines, line)) {
    std::smatch m;
    BOOST_TEST_INFO("line: " << line);
    BOOST_REQUIRE(std::regex_match(line, m, shape));
    BOOST_TEST(seen.emplace(m[1], std::pair{m[2].str(), m[3].str()}).second);
  }
  BOOST_TEST(seen.size() == config_keys().size());
  BOOST_TEST((seen["admin_password"] ==
              std::pair{std::string{"<set>"}, std::string{"env PARRY_ADMIN_PASSWORD"}}));
  BOOST_TEST((seen["workers"] == std::pair{std::string{"2"}, "file " + in.file}));
  BOOST_TEST((seen["bus_endpoint"] == std::pair{std::string{"\"tcp://127.0.0.1:*\""},
                                                std::string{"flag --bus-endpoint"}}));
  BOOST_TEST(
      (seen["http_port"] == std::pair{std::string{"8443"}, std::string{"default"}}));
  BOOST_TEST((seen["actions.password_required"].first ==
              R"(["prevent_run", "quarantine", "delete_file", "terminate_process", )"
              R"("start_process"])"));
}

BOOST_FIXTURE_TEST_CASE(an_unset_secret_says_so, fixture) {
  auto out = print_config(load());
  BOOST_TEST(
      std::regex_search(out, std::regex{"\nadmin_password = <unset> +# default\n"}));
}

BOOST_FIXTURE_TEST_CASE(the_toml_template_holds_every_key_and_loads_back, fixture) {
  env["PARRY_DATA_DIR"] = "/var/lib/parry";
  env["PARRY_ADMIN_PASSWORD"] = "a-long-enough-secret";
  in.flags = {{"actions.ttl_seconds", "isolate=60"}};
  auto text = config_template_toml(load());
  BOOST_TEST_INFO(text);
  BOOST_TEST(text.find("a-long-enough-secret") == std::string::npos);
  // Every key appears once, set or commented out, under its section.
  for (const auto& k : config_keys()) {
    auto name = k.key.substr(k.key.find('.') + 1);
    auto set = std::regex_search(text, std::regex{"\n" + name + " = "});
    auto commented = std::regex_search(text, std::regex{"\n#" + name + " = "});
    BOOST_TEST_INFO("key " << k.key);
    BOOST_TEST(set != commented);
  }
  BOOST_TEST(text.find("\ndata_dir = \"/var/lib/parry\"\n") != std::string::npos);
  BOOST_TEST(text.find("\n#admin_password = \"\"\n") != std::string::npos);
  BOOST_TEST(text.find("\n[actions]\n") != std::string::npos);
  BOOST_TEST(text.find("\nttl_seconds = { isolate = 60 }\n") != std::string::npos);
  // Loaded as a file, it gives what it was made from, and nothing else changes.
  env.clear();
  in.flags.clear();
  file(text);
  auto back = load();
  BOOST_TEST(back.cfg.data_dir == "/var/lib/parry");
  BOOST_TEST(back.cfg.ttl_seconds.at("isolate") == 60u);
  BOOST_TEST(back.cfg.http_port == server_config{}.http_port);
  BOOST_TEST(back.cfg.admin_password.empty());
}

BOOST_AUTO_TEST_CASE(a_reload_names_what_waits_for_a_restart) {
  server_config now, next;
  // Keys a running parryd applies on SIGHUP are not named ...
  next.log_level = "debug";
  next.max_login_failures = 9;
  next.siem_host = "siem.example";
  next.password_required = {"isolate"};
  BOOST_TEST(keys_needing_restart(now, next).empty());
  // ... keys it cannot apply are, in table order; secrets never are.
  next.workers = 3;
  next.http_port = 9443;
  next.admin_password = "another-long-secret";
  BOOST_TEST((keys_needing_restart(now, next) ==
              std::vector<std::string>{"http_port", "workers"}));
  // What a reload applies: the new values of keys that reload, the running ones of
  // the rest (a session idle time must not reach auth while the api tells another).
  next.session_idle_minutes = 1;
  std::vector<std::string> restart;
  auto applied = reloaded_config(now, next, restart);
  BOOST_TEST((restart ==
              std::vector<std::string>{"http_port", "session_idle_minutes", "workers"}));
  BOOST_TEST(applied.session_idle_minutes == now.session_idle_minutes);
  BOOST_TEST(applied.workers == now.workers);
  BOOST_TEST(applied.http_port == now.http_port);
  BOOST_TEST(applied.max_login_failures == 9);
  BOOST_TEST(applied.log_level == "debug");
  BOOST_TEST(applied.admin_password == "another-long-secret");
  BOOST_TEST((keys_needing_restart(applied, next) == restart));
  // The reference and the template say which keys reload.
  bool any = false;
  for (const auto& k : config_keys())
    any = any || k.reloads;
  BOOST_TEST(any);
  BOOST_TEST(config_reference_markdown().find(" | reloads | ") != std::string::npos);
  BOOST_TEST(config_reference_markdown().find(" | restart | ") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_docs_show_the_current_table) {
  auto doc = read_file(env_or_fail("PARRY_SOURCE_DIR") + "/docs/operations.md");
  BOOST_TEST_INFO("regenerate with: parryd --print-config --markdown");
  BOOST_TEST(doc.find(config_reference_markdown()) != std::string::npos);
}

BOOST_AUTO_TEST_CASE(parryd_prints_its_configuration) {
  auto dir = std::filesystem::temp_directory_path() /
             ("parry-config-bin-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto log = (dir / "out.log").string();
  {
    child_process p{{env_or_fail("PARRY_BIN_DIR") + "/parryd", "--print-config",
                     "--http-port", "0", "--actions-ttl-seconds", "isolate=60"},
                    {{"PARRY_ADMIN_PASSWORD", "a-long-enough-secret"},
                     {"PARRY_LOG_LEVEL", "warn"},
                     {"PARRY_HEARTBEAT_INTERVAL_MS", "1000"}},
                    log};
    BOOST_TEST(p.wait(30s) == 0);
  }
  auto out = read_file(log);
  BOOST_TEST_INFO(out);
  BOOST_TEST(out.find("a-long-enough-secret") == std::string::npos);
  BOOST_TEST(std::regex_search(out, std::regex{"\nhttp_port = 0 +# flag --http-port\n"}));
  BOOST_TEST(std::regex_search(
      out, std::regex{"\nlog_level = \"warn\" +# env PARRY_LOG_LEVEL\n"}));
  BOOST_TEST(std::regex_search(
      out, std::regex{"\nadmin_password = <set> +# env PARRY_ADMIN_PASSWORD\n"}));
  // Keys that once were file-only.
  BOOST_TEST(std::regex_search(
      out,
      std::regex{"\nheartbeat_interval_ms = 1000 +# env PARRY_HEARTBEAT_INTERVAL_MS\n"}));
  BOOST_TEST(std::regex_search(
      out, std::regex{"\nactions.ttl_seconds = \\{ isolate = 60 \\} +# flag "
                      "--actions-ttl-seconds\n"}));
  {
    std::filesystem::remove(log);
    child_process p{{env_or_fail("PARRY_BIN_DIR") + "/parryd", "--print-config",
                     "--http-port", "70000"},
                    {},
                    log};
    BOOST_TEST(p.wait(30s) == 2);
  }
  out = read_file(log);
  BOOST_TEST(
      out.find("parryd: http_port (flag --http-port): out of range: '70000'; legal "
               "values: 0..65535") != std::string::npos);
  std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(logging)

BOOST_AUTO_TEST_CASE(tags_name_what_a_line_concerns_and_cannot_be_forged) {
  BOOST_TEST(log_tags({{"action", "a1"}, {"device", "d7"}}) == "[action=a1 device=d7] ");
  BOOST_TEST(log_tags({{"action", ""}, {"user", ""}}) == "");
  // A hostile name cannot close the tags, add one, or break the line.
  BOOST_TEST(log_tags({{"user", "eve] [device=x y=z\n"}}) ==
             "[user=eve__[device_x_y_z_] ");
  BOOST_TEST(log_tags({{"device", std::string(300, 'a')}}).size() == 8 + 128 + 2);
}

/// One line as the JSON formatter writes it.
nlohmann::json json_line(const std::string& text) {
  spdlog::details::log_msg msg{"", spdlog::level::warn, text};
  spdlog::memory_buf_t buf;
  json_log_formatter()->format(msg, buf);
  std::string out{buf.data(), buf.size()};
  BOOST_TEST_INFO(out);
  BOOST_REQUIRE(!out.empty() && out.back() == '\n');
  BOOST_TEST(out.find('\n') == out.size() - 1);
  return nlohmann::json::parse(out);
}

// Reproduction: a reload from json back to text kept the JSON lines.
BOOST_AUTO_TEST_CASE(log_format_switches_both_ways) {
  std::ostringstream out;
  auto logger = std::make_shared<spdlog::logger>(
      "format-switch", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  spdlog::register_logger(logger);
  auto line = [&] {
    out.str("");
    logger->warn("hello");
    return out.str();
  };
  configure_logging("info", "json");
  BOOST_TEST(line().front() == '{');
  configure_logging("info", "text");
  auto text = line();
  BOOST_TEST(text.front() == '[');
  BOOST_TEST(text.find("hello") != std::string::npos);
  spdlog::drop("format-switch");
}

BOOST_AUTO_TEST_CASE(json_lines_carry_the_tags_as_fields) {
  auto j = json_line(log_tags({{"action", "a1"}, {"device", "d7"}, {"user", "bob"}}) +
                     "isolate is completed");
  BOOST_TEST(j["action"] == "a1");
  BOOST_TEST(j["device"] == "d7");
  BOOST_TEST(j["user"] == "bob");
  BOOST_TEST(j["msg"] == "isolate is completed");
  BOOST_TEST(j["level"] == "warning");
  BOOST_TEST(std::regex_match(j["time"].get<std::string>(),
                              std::regex{R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)"}));
  // Text that only looks like tags stays text; bytes that are not UTF-8 are replaced.
  auto plain = json_line("[not=a tag] text \xff\n second line");
  BOOST_TEST(plain["msg"].get<std::string>().find("[not=a tag] text") == 0);
  BOOST_TEST(!plain.contains("not"));
}

BOOST_AUTO_TEST_CASE(bus_connections_leave_descriptors_for_the_rest) {
  server_config c;
  // The default: the open-files limit less the reserve.
  BOOST_TEST(bus_connection_cap(c, 20000) == 20000u - c.bus_fd_reserve);
  // A limit too small for the reserve: half of it, never all of it.
  BOOST_TEST(bus_connection_cap(c, 1024) == 512u);
  BOOST_TEST(bus_connection_cap(c, 1) == 1u);
  // Set by the operator: taken as it is (parryd warns when it leaves nothing).
  c.bus_max_connections = 500;
  BOOST_TEST(bus_connection_cap(c, 20000) == 500u);
  BOOST_TEST(raise_open_files_limit() >= 1u);
}

BOOST_AUTO_TEST_SUITE_END()
