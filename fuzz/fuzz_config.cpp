// libFuzzer harness: parryd's TOML configuration loader (server/config.cpp). The
// loader reads a path, so each input is written to a file of this process first.
// Any text must either load (and then pass or fail validate() with a message) or be
// refused with a message naming the key; an exception, a crash or a sanitizer
// report is a bug.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include "server/config.hpp"

namespace {

std::string scratch_file() {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/parry-fuzz-config-" +
         std::to_string(::getpid()) + ".toml";
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const std::string path = scratch_file();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  parry::config_inputs in;
  in.file = path;
  in.getenv = [](const char*) -> const char* { return nullptr; }; // the file alone
  parry::loaded_config out;
  auto err = parry::load_config(in, out);
  if (err.empty()) (void)out.cfg.validate();
  std::remove(path.c_str());
  return 0;
}
