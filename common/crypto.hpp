#pragma once

// Small wrappers over OpenSSL 3's EVP APIs: random identifiers, SHA-256 and the
// password hash. Nothing here allocates OpenSSL state beyond one call.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace parry {

/// `bytes` random bytes from the OS CSPRNG as lower-case hex.
std::string random_hex(std::size_t bytes);

/// Value of one hex digit (either case), or -1.
int hex_digit(char c);

/// SHA-256 of `data` as lower-case hex.
std::string sha256_hex(std::string_view data);

/// Parameters and output of one password hash (PBKDF2-HMAC-SHA256).
struct password_hash {
  std::string salt_hex;
  uint32_t iterations = 0;
  std::string hash_hex;
};

/// OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
inline constexpr uint32_t default_pbkdf2_iterations = 600000;

/// Hashes `password` with a fresh 16-byte salt.
password_hash hash_password(std::string_view password,
                            uint32_t iterations = default_pbkdf2_iterations);

/// Recomputes the hash with the stored salt and iterations and compares in
/// constant time.
bool verify_password(std::string_view password, const password_hash& stored);

/// Constant-time comparison of two strings of possibly different length.
bool equal_constant_time(std::string_view a, std::string_view b);

} // namespace parry
