// parryctl users and user add|set|delete: accounts and roles (administrator only).

#include "ctl/cli.hpp"

#include <iostream>
#include <string>
#include <vector>

#include "common/domain.hpp"

namespace parry::ctl {

namespace {

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

} // namespace

command_group add_user_commands(CLI::App& app) {
  struct options {
    std::vector<std::string> roles;
    user_request user_req;
  };
  auto o = std::make_shared<options>();
  for (auto r : parry::all_user_roles)
    o->roles.emplace_back(parry::to_string(r));
  auto& user_req = o->user_req;
  const auto& roles = o->roles;
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
  return [=](session& s) -> std::optional<int> {
    if (users->parsed()) return cmd_users(s);
    if (user_add->parsed()) return cmd_user_add(s, o->user_req);
    if (user_set->parsed()) return cmd_user_set(s, o->user_req);
    if (user_delete->parsed()) return cmd_user_delete(s, o->user_req);
    return std::nullopt;
  };
}

} // namespace parry::ctl
