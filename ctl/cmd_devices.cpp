// parryctl devices and device: the inventory as a table, one device as fields.

#include "ctl/cli.hpp"

#include <iostream>
#include <string>
#include <vector>

namespace parry::ctl {

namespace {

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

} // namespace

command_group add_device_commands(CLI::App& app) {
  auto id = std::make_shared<std::string>();
  auto yes = std::make_shared<bool>(false);
  auto* devices = app.add_subcommand("devices", "list devices");
  auto* device_cmd =
      app.add_subcommand("device", "show one device (or: device revoke ID)");
  device_cmd->add_option("id", *id, "device id");
  auto* revoke = device_cmd->add_subcommand(
      "revoke", "revoke the device's bus key: cut its connection now, refuse it after "
                "(administrator)");
  revoke->add_option("id", *id, "device id")->required();
  revoke->add_flag("--yes,-y", *yes, "do not ask for confirmation");
  return [=](session& s) -> std::optional<int> {
    if (devices->parsed()) return cmd_devices(s);
    if (revoke->parsed()) return revoke_device(s, *id, *yes);
    if (device_cmd->parsed()) {
      if (id->empty()) throw fatal(outcome::usage, "error: device ID is required");
      return cmd_device(s, *id);
    }
    return std::nullopt;
  };
}

} // namespace parry::ctl
