// parryctl admin backup: a consistent copy of the server's live database, streamed
// to a local file (POST /api/v1/backup).

#include "ctl/cli.hpp"

#include <iostream>
#include <string>

namespace parry::ctl {

namespace {

/// The whole transfer may take this long.
constexpr milliseconds backup_transfer{std::chrono::hours{2}};
/// The server answers once its copy is made (up to 15 minutes), then streams it;
/// each read of the stream must then make progress within a minute.
constexpr milliseconds backup_wait{std::chrono::minutes{16}};

int cmd_backup(session& s, const std::string& file) {
  auto r =
      s.client().download("POST", "/api/v1/backup", file, backup_transfer, backup_wait);
  if (!r.ok()) s.fail(r, "/api/v1/backup");
  auto header = [&](const char* name) {
    auto it = r.headers.find(name);
    return it == r.headers.end() ? std::string{} : it->second;
  };
  auto records = printable(header("x-parry-audit-records"));
  auto head = printable(header("x-parry-audit-head"));
  if (s.opts().json) {
    json out{{"file", file}, {"audit", {{"records", records}, {"head", head}}}};
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << '\n';
  } else {
    std::cout << format_fields({{"backup", printable(file)},
                                {"audit records", records},
                                {"audit head", head},
                                {"check", "parryd --check-backup " + printable(file)}});
  }
  return 0;
}

} // namespace

command_group add_admin_commands(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  auto* admin = app.add_subcommand("admin", "server administration (administrator)");
  auto* backup = admin->add_subcommand(
      "backup", "copy the live database to FILE (a new file; restore it with "
                "parryd --restore on the server)");
  backup->add_option("file", *file, "where the copy goes (must not exist)")->required();
  return [=](session& s) -> std::optional<int> {
    if (backup->parsed()) return cmd_backup(s, *file);
    return std::nullopt;
  };
}

} // namespace parry::ctl
