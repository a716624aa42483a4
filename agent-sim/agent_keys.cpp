#include "agent-sim/agent_keys.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "bus/codec.hpp"
#include "bus/enroll.hpp"
#include "common/keys.hpp"

namespace parry::sim {

namespace {

// 20,000 devices at about 90 bytes a line.
constexpr std::size_t max_keys_file = 8 << 20;

std::string path_in(const std::string& dir) {
  return dir + "/" + agent_keys_file;
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

} // namespace

agent_keys load_agent_keys(const std::string& state_dir) {
  agent_keys out;
  auto path = path_in(state_dir);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 && errno == ENOENT) return out;
  std::string text;
  try {
    text = read_private_file(path, max_keys_file);
  } catch (const key_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  std::istringstream in{text};
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::istringstream words{line};
    std::string kind, a, b, extra;
    words >> kind >> a >> b;
    bool ok = !(words >> extra);
    if (ok && kind == "server" && bus::is_z85_key(a) && is_hex64(b)) {
      out.server_key_z85 = a;
      out.signing_key_hex = b;
    } else if (ok && kind == "device" && bus::valid_id(a) && bus::is_z85_key(b)) {
      out.devices[a] = bus::curve_key_pair{bus::curve_public_of(b), b};
    } else {
      wipe(text);
      throw std::runtime_error(path + ": line " + std::to_string(n) + " is malformed");
    }
  }
  wipe(text);
  return out;
}

void save_agent_keys(const std::string& state_dir, const agent_keys& keys) {
  std::filesystem::create_directories(state_dir);
  std::filesystem::permissions(state_dir, std::filesystem::perms::owner_all);
  std::string text;
  if (!keys.server_key_z85.empty())
    text += "server " + keys.server_key_z85 + " " + keys.signing_key_hex + "\n";
  for (const auto& [id, kp] : keys.devices)
    text += "device " + id + " " + kp.secret_z85 + "\n";
  write_private_file(path_in(state_dir), text);
  wipe(text);
}

void enroll_missing(agent_keys& keys, const std::vector<std::string>& ids,
                    const enrollment& how, const std::string& state_dir) {
  std::vector<bus::enroll_item> todo;
  for (const auto& id : ids)
    if (!keys.devices.count(id)) todo.push_back({id, bus::generate_curve_key_pair()});
  if (todo.empty()) return;
  if (how.token.empty())
    throw std::runtime_error(std::to_string(todo.size()) + " of " +
                             std::to_string(ids.size()) +
                             " devices have no enrolled key in " + state_dir +
                             ": pass an enrollment token (--enroll TOKEN or "
                             "PARRY_ENROLL_TOKEN)");
  auto token = bus::parse_token(how.token);
  if (!token) throw std::runtime_error("the enrollment token is malformed");
  if (!keys.server_key_z85.empty() && token->server_key_z85 != keys.server_key_z85)
    throw std::runtime_error("the enrollment token is for another server than the one "
                             "pinned in " +
                             state_dir);
  spdlog::info("enrolling {} device(s) at {}", todo.size(), how.endpoint);
  auto outcomes =
      bus::enroll_devices(how.endpoint, *token, todo, how.parallel, how.timeout);
  std::size_t failed = 0;
  std::string first;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    const auto& o = outcomes[i];
    bool pinned_ok =
        keys.signing_key_hex.empty() || o.signing_key == keys.signing_key_hex;
    if (!o.ok || !is_hex64(o.signing_key) || !pinned_ok) {
      if (++failed <= 3)
        first += "\n  " + o.device_id + ": " +
                 (o.ok ? std::string{"the server's signing key is not the pinned one"}
                       : o.reason + ": " + o.error);
      continue;
    }
    keys.server_key_z85 = o.server_key;
    keys.signing_key_hex = o.signing_key;
    keys.devices[todo[i].device_id] = todo[i].keys;
  }
  save_agent_keys(state_dir, keys);
  if (failed > 0)
    throw std::runtime_error(std::to_string(failed) + " of " +
                             std::to_string(todo.size()) +
                             " enrollments failed:" + first);
  spdlog::info("enrolled {} device(s); keys in {}/{}", todo.size(), state_dir,
               agent_keys_file);
}

} // namespace parry::sim
