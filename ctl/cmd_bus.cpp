// parryctl enroll, integrator, bus-keys and device revoke: who may use the bus
// (administrator only; docs/operations.md, "Keys").

#include "ctl/cli.hpp"

#include <iostream>
#include <string>
#include <vector>

#include "common/domain.hpp"

namespace parry::ctl {

namespace {

/// "90", "90s", "30m", "1h", "7d" as seconds; 0 when malformed or not positive.
int64_t parse_duration(const std::string& text) {
  if (text.empty() || text.size() > 12) return 0;
  int64_t unit = 1;
  std::string digits = text;
  switch (text.back()) {
  case 's':
    unit = 1;
    digits.pop_back();
    break;
  case 'm':
    unit = 60;
    digits.pop_back();
    break;
  case 'h':
    unit = 3600;
    digits.pop_back();
    break;
  case 'd':
    unit = 86400;
    digits.pop_back();
    break;
  default:
    break;
  }
  if (digits.empty()) return 0;
  int64_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + (c - '0');
  }
  return n * unit;
}

int cmd_enroll_create(session& s, const std::string& ttl, uint32_t uses) {
  auto secs = parse_duration(ttl);
  if (secs <= 0)
    throw fatal(outcome::usage, "error: --ttl must be a duration like 3600, 30m, 1h, 7d");
  json body{{"ttl_seconds", secs}, {"uses", uses}};
  auto r = s.call("POST", "/api/v1/enrollment-tokens", &body);
  if (s.opts().json) return print_json(r), 0;
  // The token alone on stdout, for TOKEN=$(parryctl enroll create ...); the rest on
  // stderr. It is shown once: the server keeps only its hash.
  std::cerr << printable("enrollment token " + str(r.body, "token_id") + ": " +
                         std::to_string(uses) + " use(s), expires " +
                         str(r.body, "expires_at"))
            << '\n';
  std::cout << str(r.body, "token") << '\n';
  return 0;
}

int cmd_enroll_list(session& s) {
  auto r = s.call("GET", "/api/v1/enrollment-tokens");
  if (s.opts().json) return print_json(r), 0;
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : sub(r.body, "enrollment_tokens"))
    rows.push_back({cell(t, "token_id"), cell(t, "uses_left"), cell(t, "expires_at"),
                    cell(t, "created_by")});
  if (rows.empty())
    std::cout << "no enrollment tokens\n";
  else
    std::cout << format_table({"TOKEN ID", "USES LEFT", "EXPIRES", "CREATED BY"}, rows);
  return 0;
}

int cmd_bus_keys(session& s) {
  auto r = s.call("GET", "/api/v1/bus-keys");
  if (s.opts().json) return print_json(r), 0;
  std::vector<std::vector<std::string>> rows;
  for (const auto& k : sub(r.body, "bus_keys"))
    rows.push_back({cell(k, "kind"), cell(k, "name"), cell(k, "role"),
                    cell(k, "public_key"), cell(k, "created_at")});
  if (rows.empty())
    std::cout << "no bus keys\n";
  else
    std::cout << format_table({"KIND", "NAME", "ROLE", "PUBLIC KEY", "SINCE"}, rows);
  return 0;
}

/// DELETE `path` after a confirmation naming `what`.
int revoke(session& s, const std::string& path, const std::string& what, bool yes) {
  require_confirmable(yes);
  confirm(printable("about to revoke " + what +
                    ": its open connection is cut now and it cannot connect again") +
              "\n",
          yes);
  auto r = s.call("DELETE", path);
  if (s.opts().json) return print_json(r), 0;
  std::cout << printable("revoked " + what) << '\n';
  return 0;
}

} // namespace

command_group add_bus_commands(CLI::App& app) {
  struct options {
    std::string ttl;
    uint32_t uses = 1;
    std::string id;
    std::string name;
    std::string role;
    std::string key;
    bool yes = false;
    std::vector<std::string> roles;
  };
  auto o = std::make_shared<options>();
  for (auto r : parry::all_user_roles)
    o->roles.emplace_back(parry::to_string(r));
  auto* enroll = app.add_subcommand("enroll", "enrollment tokens for agents "
                                              "(administrator)");
  enroll->require_subcommand(1);
  auto* create = enroll->add_subcommand("create", "make a token; prints it once");
  create->add_option("--ttl", o->ttl, "lifetime: seconds, or 30m, 1h, 7d")->required();
  create->add_option("--uses", o->uses, "enrollments it allows (default 1)")
      ->check(CLI::Range(1u, 100000u));
  auto* list = enroll->add_subcommand("list", "tokens not used up");
  auto* del = enroll->add_subcommand("delete", "withdraw a token");
  del->add_option("id", o->id, "token id")->required();

  auto* keys = app.add_subcommand("bus-keys", "agent and integrator keys admitted to "
                                              "the bus (administrator)");
  auto* integ = app.add_subcommand("integrator", "integrator keys (administrator)");
  integ->require_subcommand(1);
  auto* add = integ->add_subcommand("add", "register (or replace) an integrator's key");
  add->add_option("name", o->name, "integrator name, shown in the audit trail")
      ->required();
  add->add_option("--role", o->role, "administrator, security_officer or operator")
      ->required()
      ->check(CLI::IsMember(o->roles));
  add->add_option("--public-key", o->key, "its CURVE public key (40 Z85 characters)")
      ->required();
  auto* irevoke = integ->add_subcommand("revoke", "revoke an integrator's key");
  irevoke->add_option("name", o->name, "integrator name")->required();
  irevoke->add_flag("--yes,-y", o->yes, "do not ask for confirmation");

  return [=](session& s) -> std::optional<int> {
    if (create->parsed()) return cmd_enroll_create(s, o->ttl, o->uses);
    if (list->parsed()) return cmd_enroll_list(s);
    if (del->parsed()) {
      auto r = s.call("DELETE", id_path("enrollment-tokens", o->id));
      if (s.opts().json) return print_json(r), 0;
      std::cout << printable("deleted enrollment token " + o->id) << '\n';
      return 0;
    }
    if (keys->parsed()) return cmd_bus_keys(s);
    if (add->parsed()) {
      json body{{"name", o->name}, {"role", o->role}, {"public_key", o->key}};
      auto r = s.call("POST", "/api/v1/integrators", &body);
      if (s.opts().json) return print_json(r), 0;
      std::cout << printable("registered integrator " + o->name + " (" + o->role + ")")
                << '\n';
      return 0;
    }
    if (irevoke->parsed())
      return revoke(s, id_path("integrators", o->name), "integrator " + o->name, o->yes);
    return std::nullopt;
  };
}

int revoke_device(session& s, const std::string& id, bool yes) {
  return revoke(s, id_path("devices", id) + "/key", "device " + id, yes);
}

} // namespace parry::ctl
