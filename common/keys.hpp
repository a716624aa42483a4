#pragma once

// Ed25519 signing keys (OpenSSL 3 EVP) and the private-file rule every key file
// follows: written atomically with mode 0600, read only when it is a regular file
// that no one but its owner may read. No CAF, no ZeroMQ.
//
// Byte strings (raw keys, signatures, signed data) travel as std::string /
// std::string_view: they go into msgpack `bin` fields as they are.

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

typedef struct evp_pkey_st EVP_PKEY;

namespace parry {

// -- private files ----------------------------------------------------------------

/// Why a key file could not be read or written.
enum class key_errc {
  not_found,   ///< The file does not exist.
  not_regular, ///< A directory, symlink, device, fifo... (symlinks are not followed).
  bad_mode,    ///< Group or other has any permission bit (mode & 077 != 0).
  bad_owner,   ///< Owned by another user than the process's effective uid.
  too_large,   ///< Larger than the reader's bound.
  bad_format,  ///< Content is not a key of the expected kind.
  exists,      ///< Creating a new file, but one is already there.
  io,          ///< A system call failed (errno text in the message).
  crypto,      ///< OpenSSL or libzmq refused (key generation, signing).
};

/// Machine-stable name of a key_errc ("bad_mode", ...).
const char* to_string(key_errc e);

/// Thrown by everything here that reads or writes keys; what() names the path.
class key_error : public std::runtime_error {
public:
  key_error(key_errc code, const std::string& what)
      : std::runtime_error(what), code_(code) {}
  key_errc code() const noexcept { return code_; }

private:
  key_errc code_;
};

/// How write_private_file treats an existing file at `path`.
enum class file_write {
  replace,    ///< Atomically replace it (rename).
  create_new, ///< Fail with key_errc::exists (link, never clobbers).
};

/// Writes `content` to `path` so that no reader ever sees a partial file and no one
/// but the owner can ever read it: a temporary file in the same directory is created
/// with O_EXCL and mode 0600 (fchmod'ed to 0600 whatever the umask), written,
/// fsync'ed, then renamed (replace) or hard-linked (create_new) onto `path`, and the
/// directory is fsync'ed. The temporary file is removed on every failure.
void write_private_file(const std::string& path, std::string_view content,
                        file_write how = file_write::replace);

/// Upper bound on what read_private_file reads by default (a key file is < 1 KiB).
inline constexpr std::size_t max_private_file_bytes = 64 * 1024;

/// Reads a private file. Refuses (key_error) a path that is missing, a symlink or
/// not a regular file, owned by another user, has any group/other permission bit,
/// or is larger than `max_bytes`. Checks are made on the opened descriptor
/// (O_NOFOLLOW, fstat), so the file checked is the file read.
std::string read_private_file(const std::string& path,
                              std::size_t max_bytes = max_private_file_bytes);

/// Overwrites `s` with zeros (OPENSSL_cleanse, not optimised away).
void wipe(std::string& s);

// -- Ed25519 ---------------------------------------------------------------------

inline constexpr std::size_t ed25519_public_key_bytes = 32;
inline constexpr std::size_t ed25519_signature_bytes = 64;

/// An Ed25519 key pair. Move-only; the private half never leaves except through
/// to_pem() (for the key file).
class signing_key {
public:
  /// A fresh key pair from the OS CSPRNG. Throws key_error(crypto).
  static signing_key generate();

  /// Parses an unencrypted PKCS#8 PEM private key ("-----BEGIN PRIVATE KEY-----",
  /// what `openssl genpkey -algorithm ed25519` writes). Throws key_error(bad_format)
  /// for anything else, including keys of another algorithm.
  static signing_key from_pem(std::string_view pem);

  /// The private key as unencrypted PKCS#8 PEM.
  std::string to_pem() const;

  /// The public key: 32 raw bytes (RFC 8032 encoding).
  const std::string& public_key() const { return public_; }

  /// Ed25519 signature (64 bytes) over `message` (pure Ed25519, no prehash).
  std::string sign(std::string_view message) const;

  signing_key(signing_key&&) noexcept;
  signing_key& operator=(signing_key&&) noexcept;
  ~signing_key();

private:
  struct pkey_free {
    void operator()(EVP_PKEY* p) const;
  };
  explicit signing_key(EVP_PKEY* pkey);
  std::unique_ptr<EVP_PKEY, pkey_free> pkey_;
  std::string public_;
};

/// True only if `signature` is a valid Ed25519 signature of `message` by
/// `public_key` (32 raw bytes). Any malformed input — wrong lengths, an invalid
/// point — is simply false; nothing here throws.
bool verify(std::string_view public_key, std::string_view message,
            std::string_view signature) noexcept;

/// Writes `key` to `path` as PKCS#8 PEM through write_private_file.
void save_signing_key(const std::string& path, const signing_key& key,
                      file_write how = file_write::replace);

/// Reads `path` through read_private_file and parses it with from_pem.
signing_key load_signing_key(const std::string& path);

// -- text forms of a public key ------------------------------------------------------

/// Lower-case hex of raw bytes (a 32-byte key gives 64 characters).
std::string to_hex_text(std::string_view bytes);

/// Standard base64 with padding (RFC 4648 §4; a 32-byte key gives 44 characters).
std::string to_base64_text(std::string_view bytes);

/// Parses an Ed25519 public key written as 64 hex digits (either case) or 44
/// characters of padded standard base64. Returns the 32 raw bytes, or an empty
/// string for anything else (whitespace is not trimmed).
std::string parse_public_key(std::string_view text);

} // namespace parry
