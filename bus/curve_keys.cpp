#include "bus/curve_keys.hpp"

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

namespace parry::bus {

namespace {

[[noreturn]] void fail(key_errc code, const std::string& what) {
  throw key_error(code, what);
}

bool in_z85_alphabet(char c) {
  static constexpr std::string_view alphabet =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/"
      "*?&<>()[]{}@%$#";
  return alphabet.find(c) != std::string_view::npos;
}

/// Makes `dir` (mode 0700) or checks that it is a directory of ours and closes it.
void ensure_private_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    fail(key_errc::io, "creating " + dir + ": " + std::strerror(errno));
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0)
    fail(key_errc::io, "stat of " + dir + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) fail(key_errc::not_regular, dir + " is not a directory");
  if (st.st_uid != ::geteuid())
    fail(key_errc::bad_owner, dir + " is owned by uid " + std::to_string(st.st_uid));
  if ((st.st_mode & 07777) != 0700 && ::chmod(dir.c_str(), 0700) != 0)
    fail(key_errc::io, "chmod 0700 of " + dir + ": " + std::strerror(errno));
}

/// Rewrites an informational public-key file when its content differs.
void refresh_public_file(const std::string& path, const std::string& content) {
  try {
    if (read_private_file(path, 1024) == content) return;
  } catch (const key_error&) {
    // Missing, or not what we wrote: replace it below.
  }
  write_private_file(path, content, file_write::replace);
}

} // namespace

curve_key_pair generate_curve_key_pair() {
  char pub[curve_key_z85_chars + 1] = {};
  char sec[curve_key_z85_chars + 1] = {};
  if (zmq_curve_keypair(pub, sec) != 0)
    fail(key_errc::crypto,
         std::string{"CURVE key generation failed: "} + zmq_strerror(zmq_errno()));
  curve_key_pair kp{std::string(pub, curve_key_z85_chars),
                    std::string(sec, curve_key_z85_chars)};
  std::memset(sec, 0, sizeof sec);
  return kp;
}

bool is_z85_key(std::string_view text) {
  if (text.size() != curve_key_z85_chars) return false;
  for (char c : text)
    if (!in_z85_alphabet(c)) return false;
  char z[curve_key_z85_chars + 1];
  std::memcpy(z, text.data(), curve_key_z85_chars);
  z[curve_key_z85_chars] = '\0';
  uint8_t raw[32];
  if (zmq_z85_decode(raw, z) == nullptr) return false;
  // Five characters can name values above 2^32; only the canonical text is a key.
  char back[curve_key_z85_chars + 1];
  if (zmq_z85_encode(back, raw, sizeof raw) == nullptr) return false;
  bool same = std::memcmp(back, z, curve_key_z85_chars) == 0;
  std::memset(raw, 0, sizeof raw);
  std::memset(z, 0, sizeof z);
  return same;
}

std::string curve_public_of(std::string_view secret_z85) {
  if (!is_z85_key(secret_z85)) return {};
  char sec[curve_key_z85_chars + 1];
  std::memcpy(sec, secret_z85.data(), curve_key_z85_chars);
  sec[curve_key_z85_chars] = '\0';
  char pub[curve_key_z85_chars + 1] = {};
  int rc = zmq_curve_public(pub, sec);
  std::memset(sec, 0, sizeof sec);
  if (rc != 0) return {};
  return std::string(pub, curve_key_z85_chars);
}

std::string z85_to_raw(std::string_view z85) {
  if (!is_z85_key(z85)) return {};
  char z[curve_key_z85_chars + 1];
  std::memcpy(z, z85.data(), curve_key_z85_chars);
  z[curve_key_z85_chars] = '\0';
  std::string raw(32, '\0');
  zmq_z85_decode(reinterpret_cast<uint8_t*>(raw.data()), z);
  return raw;
}

std::string raw_to_z85(std::string_view raw) {
  if (raw.size() != 32) return {};
  char z[curve_key_z85_chars + 1] = {};
  zmq_z85_encode(z, reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
  return std::string(z, curve_key_z85_chars);
}

void save_curve_key_pair(const std::string& path, const curve_key_pair& keys,
                         file_write how) {
  if (!is_z85_key(keys.secret_z85) || curve_public_of(keys.secret_z85) != keys.public_z85)
    fail(key_errc::bad_format, "refusing to save an inconsistent CURVE key pair");
  std::string content = keys.secret_z85 + "\n";
  try {
    write_private_file(path, content, how);
  } catch (...) {
    wipe(content);
    throw;
  }
  wipe(content);
}

curve_key_pair load_curve_key_pair(const std::string& path) {
  auto content = read_private_file(path, 1024);
  std::string_view text = content;
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  curve_key_pair kp;
  kp.public_z85 = curve_public_of(text);
  if (kp.public_z85.empty()) {
    wipe(content);
    fail(key_errc::bad_format, path + ": not a Z85 CURVE secret key (40 characters)");
  }
  kp.secret_z85.assign(text);
  wipe(content);
  return kp;
}

server_keys load_or_create(const std::string& data_dir) {
  auto dir = data_dir + "/" + key_files::dir;
  ensure_private_dir(dir);
  bool created = false;

  auto curve_path = dir + "/" + key_files::curve_secret;
  curve_key_pair curve;
  try {
    curve = load_curve_key_pair(curve_path);
  } catch (const key_error& e) {
    if (e.code() != key_errc::not_found) throw;
    curve = generate_curve_key_pair();
    // create_new: a concurrent creator wins and its key is the one used.
    try {
      save_curve_key_pair(curve_path, curve, file_write::create_new);
      created = true;
    } catch (const key_error& again) {
      if (again.code() != key_errc::exists) throw;
      curve = load_curve_key_pair(curve_path);
    }
  }

  auto signing_path = dir + "/" + key_files::signing_secret;
  auto load_signing = [&]() -> signing_key {
    try {
      return load_signing_key(signing_path);
    } catch (const key_error& e) {
      if (e.code() != key_errc::not_found) throw;
    }
    auto fresh = signing_key::generate();
    try {
      save_signing_key(signing_path, fresh, file_write::create_new);
      created = true;
      return fresh;
    } catch (const key_error& again) {
      if (again.code() != key_errc::exists) throw;
    }
    return load_signing_key(signing_path);
  };
  auto signing = load_signing();
  server_keys keys{std::move(curve), std::move(signing), created};

  refresh_public_file(dir + "/" + key_files::curve_public, keys.curve.public_z85 + "\n");
  refresh_public_file(dir + "/" + key_files::signing_public,
                      to_hex_text(keys.signing.public_key()) + "\n");
  return keys;
}

} // namespace parry::bus
