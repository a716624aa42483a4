#pragma once

// Small wrappers over OpenSSL 3's EVP APIs: random identifiers, SHA-256 and the
// password hash. Nothing here allocates OpenSSL state beyond one call.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

struct evp_md_ctx_st; // OpenSSL's EVP_MD_CTX

namespace parry {

/// `bytes` random bytes from the OS CSPRNG as lower-case hex.
std::string random_hex(std::size_t bytes);

/// A new identifier: `prefix`, the milliseconds of `time_us` (µs since the epoch) as
/// 12 hex digits, then 16 random hex digits (64 bits). Identifiers of a later
/// millisecond sort later (within one, at random), so a store's index of them grows
/// at its end instead of at random places: a group commit then writes a few index
/// pages, not one per new row. An identifier shows when it was made: a name, not a
/// secret.
std::string time_ordered_id(std::string_view prefix, int64_t time_us);

/// Value of one hex digit (either case), or -1.
int hex_digit(char c);

/// SHA-256 of `data` as lower-case hex.
std::string sha256_hex(std::string_view data);

/// `n` bytes as lower-case hex.
std::string to_hex(const unsigned char* p, std::size_t n);

/// SHA-256 of data fed in pieces (a file read in blocks). Throws std::runtime_error
/// only when OpenSSL itself fails.
class sha256_stream {
public:
  sha256_stream();
  ~sha256_stream();
  sha256_stream(const sha256_stream&) = delete;
  sha256_stream& operator=(const sha256_stream&) = delete;
  void update(const void* p, std::size_t n);
  /// The digest as lower-case hex; the stream is finished.
  std::string hex();

private:
  ::evp_md_ctx_st* ctx_;
};

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
