// libFuzzer harness: enrollment token text (bus/enroll.cpp, parse_token). A token
// arrives from outside twice: typed or pasted by an operator into parry-agent, and
// inside every `enroll` request the enrollment endpoint receives from anyone. Any
// text must be refused or parse into a token whose text form is the input itself
// (hex lower-cased), with a 64-hex-digit hash.

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bus/enroll.hpp"
#include "common/domain.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto t = parry::bus::parse_token(text);
  if (!t) return 0;
  std::string lower(text);
  for (char& c : lower)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (parry::bus::format_token(*t) != lower) std::abort();
  if (!parry::is_sha256(parry::bus::token_hash(*t))) std::abort();
  if (t->server_key_z85.size() != 40) std::abort();
  return 0;
}
