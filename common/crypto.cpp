#include "common/crypto.hpp"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

namespace parry {

namespace {

std::vector<unsigned char> from_hex(std::string_view hex) {
  std::vector<unsigned char> out;
  if (hex.size() % 2 != 0) return out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    int hi = hex_digit(hex[i]), lo = hex_digit(hex[i + 1]);
    if (hi < 0 || lo < 0) return {};
    out.push_back(static_cast<unsigned char>(hi << 4 | lo));
  }
  return out;
}

std::string pbkdf2(std::string_view password, const std::vector<unsigned char>& salt,
                   uint32_t iterations) {
  unsigned char out[32];
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt.data(),
                        static_cast<int>(salt.size()), static_cast<int>(iterations),
                        EVP_sha256(), sizeof out, out) != 1)
    throw std::runtime_error("PBKDF2 failed");
  return to_hex(out, sizeof out);
}

} // namespace

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return to_hex(buf.data(), buf.size());
}

std::string time_ordered_id(std::string_view prefix, int64_t time_us) {
  auto ms = static_cast<uint64_t>(std::max<int64_t>(time_us, 0) / 1000);
  unsigned char t[6];
  for (int i = 5; i >= 0; --i, ms >>= 8)
    t[i] = static_cast<unsigned char>(ms & 0xff);
  std::string out{prefix};
  out += to_hex(t, sizeof t);
  out += random_hex(8);
  return out;
}

std::string to_hex(const unsigned char* p, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 0x0f];
  }
  return out;
}

sha256_stream::sha256_stream() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx_);
    throw std::runtime_error("SHA-256: cannot initialise the digest");
  }
}

sha256_stream::~sha256_stream() {
  EVP_MD_CTX_free(ctx_);
}

void sha256_stream::update(const void* p, std::size_t n) {
  if (n > 0 && EVP_DigestUpdate(ctx_, p, n) != 1)
    throw std::runtime_error("SHA-256: digest update failed");
}

std::string sha256_stream::hex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_, md, &len) != 1)
    throw std::runtime_error("SHA-256: digest final failed");
  return to_hex(md, len);
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 failed");
  return to_hex(md, len);
}

password_hash hash_password(std::string_view password, uint32_t iterations) {
  password_hash h;
  h.salt_hex = random_hex(16);
  h.iterations = iterations;
  h.hash_hex = pbkdf2(password, from_hex(h.salt_hex), iterations);
  return h;
}

bool verify_password(std::string_view password, const password_hash& stored) {
  auto salt = from_hex(stored.salt_hex);
  if (salt.empty() || stored.iterations == 0) return false;
  return equal_constant_time(pbkdf2(password, salt, stored.iterations), stored.hash_hex);
}

bool equal_constant_time(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace parry
