// libFuzzer harness: the real agent's TOML configuration (agent-real/real_config.cpp).
// The loader reads a path, so each input is written to a file of this process
// first. Any text must either load into a configuration that keeps the loader's
// promises, or be refused with a config_error naming the key; any other exception, a
// crash or a sanitizer report is a bug. What loads here goes straight into nftables
// rules and file-root checks on a root-privileged agent.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include "agent-real/real_config.hpp"
#include "bus/codec.hpp"
#include "common/domain.hpp"

namespace {

std::string scratch_file() {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/parry-fuzz-agent-config-" +
         std::to_string(::getpid()) + ".toml";
}

bool clean_absolute(const std::string& p) {
  if (p.empty() || p[0] != '/') return false;
  if (("/" + p + "/").find("/../") != std::string::npos) return false;
  for (unsigned char c : p)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

// What the agent relies on once load_config returned.
void check_loaded(const parry::real::real_config& c) {
  using namespace parry::real;
  if (!c.device_id.empty() && !parry::bus::valid_id(c.device_id)) std::abort();
  (void)endpoint_address(c.server, "server"); // throws on a bad one: abort below
  (void)endpoint_address(c.enroll_server, "enroll_server");
  if (!clean_absolute(c.state_dir)) std::abort();
  for (const auto& r : c.file_roots)
    if (!clean_absolute(r)) std::abort();
  for (const auto& m : c.guard_mounts)
    if (!clean_absolute(m)) std::abort();
  for (const auto& h : c.iocs)
    if (!parry::is_sha256(h)) std::abort();
  for (const auto& e : c.exceptions)
    if (!check_exception(e).empty()) std::abort();
  if (c.start_timeout_ms < 100 || c.start_timeout_ms > 10'000) std::abort();
  if (c.heartbeat_ms != 0 && c.heartbeat_ms < 100) std::abort();
  if (c.dead_man_seconds < 5) std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const std::string path = scratch_file();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  try {
    check_loaded(parry::real::load_config(path));
  } catch (const parry::real::config_error&) {
    // refused, with the key named: fine
  } catch (...) {
    std::abort(); // anything else escaping the loader is a bug
  }
  std::remove(path.c_str());
  return 0;
}
