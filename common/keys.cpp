#include "common/keys.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/crypto.hpp"

namespace parry {

namespace {

template <class T, void (*Free)(T*)> struct freer {
  void operator()(T* p) const { Free(p); }
};
using bio_ptr = std::unique_ptr<BIO, freer<BIO, BIO_free_all>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, freer<EVP_MD_CTX, EVP_MD_CTX_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, freer<EVP_PKEY, EVP_PKEY_free>>;

[[noreturn]] void fail(key_errc code, const std::string& what) {
  throw key_error(code, what);
}

[[noreturn]] void fail_errno(const std::string& what, int err) {
  fail(err == ENOENT ? key_errc::not_found : key_errc::io,
       what + ": " + std::strerror(err));
}

/// Closes a descriptor on scope exit.
struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

std::string dir_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    auto n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("writing " + path, errno);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

void fsync_dir(const std::string& dir) {
  fd_guard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0) fail_errno("opening directory " + dir, errno);
  if (::fsync(d.fd) != 0) fail_errno("fsync of directory " + dir, errno);
}

} // namespace

const char* to_string(key_errc e) {
  switch (e) {
  case key_errc::not_found:
    return "not_found";
  case key_errc::not_regular:
    return "not_regular";
  case key_errc::bad_mode:
    return "bad_mode";
  case key_errc::bad_owner:
    return "bad_owner";
  case key_errc::too_large:
    return "too_large";
  case key_errc::bad_format:
    return "bad_format";
  case key_errc::exists:
    return "exists";
  case key_errc::io:
    return "io";
  case key_errc::crypto:
    return "crypto";
  }
  return "unknown";
}

void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

// -- private files ----------------------------------------------------------------

void write_private_file(const std::string& path, std::string_view content,
                        file_write how) {
  auto dir = dir_of(path);
  // A random suffix: two writers never share a temporary, and O_EXCL refuses a
  // name someone planted (a symlink included).
  auto tmp = path + ".tmp." + random_hex(8);
  fd_guard f{
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)};
  if (f.fd < 0) fail_errno("creating " + tmp, errno);
  try {
    // open() applied the umask: a umask can only take bits away, but set the mode
    // exactly so the file is 0600 whatever it was.
    if (::fchmod(f.fd, 0600) != 0) fail_errno("chmod of " + tmp, errno);
    write_all(f.fd, content, tmp);
    if (::fsync(f.fd) != 0) fail_errno("fsync of " + tmp, errno);
    int fd = f.fd;
    f.fd = -1;
    if (::close(fd) != 0) fail_errno("closing " + tmp, errno);
    if (how == file_write::replace) {
      if (::rename(tmp.c_str(), path.c_str()) != 0)
        fail_errno("renaming " + tmp + " to " + path, errno);
    } else {
      if (::link(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        if (err == EEXIST) fail(key_errc::exists, path + " already exists");
        fail_errno("linking " + tmp + " to " + path, err);
      }
      ::unlink(tmp.c_str());
    }
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(dir);
}

std::string read_private_file(const std::string& path, std::size_t max_bytes) {
  fd_guard f{
      ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)};
  if (f.fd < 0) {
    int err = errno;
    // O_NOFOLLOW on a symlink gives ELOOP.
    if (err == ELOOP) fail(key_errc::not_regular, path + " is a symbolic link");
    fail_errno("opening " + path, err);
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail_errno("stat of " + path, errno);
  if (!S_ISREG(st.st_mode)) fail(key_errc::not_regular, path + " is not a regular file");
  if (st.st_uid != ::geteuid())
    fail(key_errc::bad_owner, path + " is owned by uid " + std::to_string(st.st_uid) +
                                  ", not by this process's uid " +
                                  std::to_string(::geteuid()));
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    fail(key_errc::bad_mode, path + " has mode " + mode +
                                 ": group and others must have no access (chmod 600)");
  }
  if (static_cast<unsigned long long>(st.st_size) > max_bytes)
    fail(key_errc::too_large,
         path + " is larger than " + std::to_string(max_bytes) + " bytes");
  std::string out;
  out.resize(max_bytes + 1);
  std::size_t got = 0;
  while (got < out.size()) {
    auto n = ::read(f.fd, out.data() + got, out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      wipe(out);
      fail_errno("reading " + path, err);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got > max_bytes) { // grew after fstat
    wipe(out);
    fail(key_errc::too_large,
         path + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  out.resize(got);
  return out;
}

// -- Ed25519 ---------------------------------------------------------------------

void signing_key::pkey_free::operator()(EVP_PKEY* p) const {
  EVP_PKEY_free(p);
}

signing_key::signing_key(EVP_PKEY* pkey) : pkey_(pkey) {
  std::size_t len = ed25519_public_key_bytes;
  public_.resize(len);
  if (EVP_PKEY_get_raw_public_key(pkey, reinterpret_cast<unsigned char*>(public_.data()),
                                  &len) != 1 ||
      len != ed25519_public_key_bytes)
    fail(key_errc::crypto, "Ed25519: reading the public key failed");
}

signing_key::signing_key(signing_key&&) noexcept = default;
signing_key& signing_key::operator=(signing_key&&) noexcept = default;
signing_key::~signing_key() = default;

signing_key signing_key::generate() {
  EVP_PKEY* p = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (p == nullptr) fail(key_errc::crypto, "Ed25519: key generation failed");
  return signing_key{p}; // owns p from here, also if the constructor throws
}

signing_key signing_key::from_pem(std::string_view pem) {
  if (pem.size() > max_private_file_bytes)
    fail(key_errc::bad_format, "Ed25519: PEM text too large");
  bio_ptr bio{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
  if (!bio) fail(key_errc::crypto, "Ed25519: BIO_new_mem_buf failed");
  // A null password callback with an empty passphrase: an encrypted key fails
  // instead of prompting on the terminal.
  pkey_ptr p{PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>(""))};
  if (!p) fail(key_errc::bad_format, "not a PEM private key");
  if (EVP_PKEY_get_id(p.get()) != EVP_PKEY_ED25519)
    fail(key_errc::bad_format, "not an Ed25519 private key");
  return signing_key{p.release()};
}

std::string signing_key::to_pem() const {
  bio_ptr bio{BIO_new(BIO_s_secmem())};
  if (!bio) bio.reset(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), pkey_.get(), nullptr, nullptr, 0,
                                       nullptr, nullptr) != 1)
    fail(key_errc::crypto, "Ed25519: writing PEM failed");
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  if (len <= 0 || data == nullptr) fail(key_errc::crypto, "Ed25519: empty PEM");
  return std::string(data, static_cast<std::size_t>(len));
}

std::string signing_key::sign(std::string_view message) const {
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  std::string sig(ed25519_signature_bytes, '\0');
  std::size_t len = sig.size();
  if (!ctx ||
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1 ||
      len != ed25519_signature_bytes)
    fail(key_errc::crypto, "Ed25519: signing failed");
  return sig;
}

bool verify(std::string_view public_key, std::string_view message,
            std::string_view signature) noexcept {
  if (public_key.size() != ed25519_public_key_bytes ||
      signature.size() != ed25519_signature_bytes)
    return false;
  pkey_ptr p{EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr,
      reinterpret_cast<const unsigned char*>(public_key.data()), public_key.size())};
  if (!p) return false;
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, p.get()) != 1)
    return false;
  return EVP_DigestVerify(
             ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
             signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
             message.size()) == 1;
}

void save_signing_key(const std::string& path, const signing_key& key, file_write how) {
  auto pem = key.to_pem();
  try {
    write_private_file(path, pem, how);
  } catch (...) {
    wipe(pem);
    throw;
  }
  wipe(pem);
}

signing_key load_signing_key(const std::string& path) {
  auto pem = read_private_file(path);
  try {
    auto k = signing_key::from_pem(pem);
    wipe(pem);
    return k;
  } catch (const key_error& e) {
    wipe(pem);
    throw key_error(e.code(), path + ": " + e.what());
  }
}

// -- text forms ----------------------------------------------------------------------

std::string to_hex_text(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    auto b = static_cast<unsigned char>(bytes[i]);
    out[2 * i] = digits[b >> 4];
    out[2 * i + 1] = digits[b & 0x0f];
  }
  return out;
}

std::string to_base64_text(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

std::string parse_public_key(std::string_view text) {
  std::string out;
  if (text.size() == 2 * ed25519_public_key_bytes) {
    out.resize(ed25519_public_key_bytes);
    for (std::size_t i = 0; i < out.size(); ++i) {
      int hi = hex_digit(text[2 * i]), lo = hex_digit(text[2 * i + 1]);
      if (hi < 0 || lo < 0) return {};
      out[i] = static_cast<char>(hi << 4 | lo);
    }
    return out;
  }
  // 32 bytes = 10 groups of 3 and 2 left over: 43 characters and one '='.
  if (text.size() == 44 && text[43] == '=' && text[42] != '=') {
    for (std::size_t i = 0; i < 43; ++i) {
      char c = text[i];
      bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                (c >= '0' && c <= '9') || c == '+' || c == '/';
      if (!ok) return {};
    }
    unsigned char buf[33];
    int n = EVP_DecodeBlock(buf, reinterpret_cast<const unsigned char*>(text.data()), 44);
    // EVP_DecodeBlock counts the padding as a zero byte.
    if (n != 33) return {};
    out.assign(reinterpret_cast<const char*>(buf), ed25519_public_key_bytes);
    // Canonical only: the unused low bits of the last character are zero.
    if (to_base64_text(out) != text) return {};
    return out;
  }
  return {};
}

} // namespace parry
