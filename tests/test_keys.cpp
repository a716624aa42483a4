#define BOOST_TEST_MODULE keys
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <zmq.hpp>

#include "common/crypto.hpp"
#include "common/keys.hpp"

namespace parry {
std::ostream& operator<<(std::ostream& os, key_errc e) {
  return os << to_string(e);
}
} // namespace parry

namespace fs = std::filesystem;
using namespace parry;

namespace {

/// A fresh directory under the system temp dir, removed at the end of the test.
struct temp_dir {
  fs::path path;
  temp_dir() {
    path = fs::temp_directory_path() / ("parry-keys-" + random_hex(8));
    fs::create_directory(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

/// Sets the umask for one scope.
struct umask_scope {
  mode_t old;
  explicit umask_scope(mode_t m) : old(::umask(m)) {}
  ~umask_scope() { ::umask(old); }
};

mode_t mode_of(const std::string& path) {
  struct stat st {};
  BOOST_REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

void write_plain(const std::string& path, const std::string& content, mode_t mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  BOOST_REQUIRE(::chmod(path.c_str(), mode) == 0);
}

std::string unhex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(hex_digit(hex[i]) << 4 | hex_digit(hex[i + 1])));
  return out;
}

/// key_errc of what `f` throws; fails the test if it throws nothing else.
template <class F> key_errc error_of(F&& f) {
  try {
    f();
  } catch (const key_error& e) {
    BOOST_TEST_MESSAGE("key_error: " << e.what());
    return e.code();
  }
  BOOST_FAIL("expected a key_error");
  return key_errc::io;
}

// RFC 8032 §7.1, TEST 1 (empty message).
constexpr std::string_view rfc_seed =
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
constexpr std::string_view rfc_public =
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
constexpr std::string_view rfc_signature =
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
    "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

/// The PKCS#8 PEM of an Ed25519 seed (RFC 8410: fixed 16-byte DER prefix + seed).
std::string pem_of_seed(std::string_view seed_hex) {
  auto der = unhex("302e020100300506032b657004220420") + unhex(seed_hex);
  return "-----BEGIN PRIVATE KEY-----\n" + to_base64_text(der) +
         "\n-----END PRIVATE KEY-----\n";
}

} // namespace

// -- Ed25519 -------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(ed25519_sign_verify_round_trip) {
  auto key = signing_key::generate();
  BOOST_TEST(key.public_key().size() == ed25519_public_key_bytes);
  auto sig = key.sign("hello");
  BOOST_TEST(sig.size() == ed25519_signature_bytes);
  BOOST_TEST(verify(key.public_key(), "hello", sig));
  BOOST_TEST(!verify(key.public_key(), "hellO", sig));
  BOOST_TEST(!verify(key.public_key(), "", sig));
  auto other = signing_key::generate();
  BOOST_TEST(other.public_key() != key.public_key());
  BOOST_TEST(!verify(other.public_key(), "hello", sig));
}

BOOST_AUTO_TEST_CASE(ed25519_rfc8032_known_answer) {
  auto key = signing_key::from_pem(pem_of_seed(rfc_seed));
  BOOST_TEST(to_hex_text(key.public_key()) == rfc_public);
  BOOST_TEST(to_hex_text(key.sign("")) == rfc_signature);
  BOOST_TEST(verify(unhex(rfc_public), "", unhex(rfc_signature)));
}

BOOST_AUTO_TEST_CASE(ed25519_malformed_input_is_false) {
  auto key = signing_key::generate();
  auto sig = key.sign("m");
  const auto& pub = key.public_key();
  BOOST_TEST(!verify(pub, "m", sig.substr(0, 63)));     // truncated
  BOOST_TEST(!verify(pub, "m", sig + "x"));             // too long
  BOOST_TEST(!verify(pub, "m", ""));                    // empty
  BOOST_TEST(!verify(pub.substr(0, 31), "m", sig));     // short key
  BOOST_TEST(!verify(pub + "x", "m", sig));             // long key
  BOOST_TEST(!verify("", "m", sig));                    // no key
  BOOST_TEST(!verify(std::string(32, '\0'), "m", sig)); // a point, not this key
  BOOST_TEST(!verify(std::string(32, '\xff'), "m", sig));
  for (std::size_t i : {0u, 31u, 32u, 63u}) {
    auto bad = sig;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    BOOST_TEST(!verify(pub, "m", bad), "bit flipped in byte " << i);
  }
  BOOST_TEST(verify(pub, "m", sig));
}

BOOST_AUTO_TEST_CASE(ed25519_pem_round_trip_and_refusals) {
  auto key = signing_key::generate();
  auto pem = key.to_pem();
  BOOST_TEST(pem.rfind("-----BEGIN PRIVATE KEY-----", 0) == 0);
  auto again = signing_key::from_pem(pem);
  BOOST_TEST(again.public_key() == key.public_key());
  BOOST_TEST(verify(key.public_key(), "x", again.sign("x")));

  BOOST_TEST(error_of([] { signing_key::from_pem("garbage"); }) == key_errc::bad_format);
  BOOST_TEST(error_of([] { signing_key::from_pem(""); }) == key_errc::bad_format);
  BOOST_TEST(error_of([&] { signing_key::from_pem(pem.substr(0, pem.size() / 2)); }) ==
             key_errc::bad_format);
  // A valid private key of another algorithm.
  EVP_PKEY* ec = EVP_EC_gen("P-256");
  BOOST_REQUIRE(ec != nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  BOOST_REQUIRE(
      PEM_write_bio_PrivateKey(bio, ec, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string ec_pem(data, static_cast<std::size_t>(len));
  BIO_free(bio);
  EVP_PKEY_free(ec);
  BOOST_TEST(error_of([&] { signing_key::from_pem(ec_pem); }) == key_errc::bad_format);
}

BOOST_AUTO_TEST_CASE(public_key_text_forms) {
  auto key = signing_key::generate();
  auto hex = to_hex_text(key.public_key());
  auto b64 = to_base64_text(key.public_key());
  BOOST_TEST(hex.size() == 64u);
  BOOST_TEST(b64.size() == 44u);
  BOOST_TEST(parse_public_key(hex) == key.public_key());
  BOOST_TEST(parse_public_key(b64) == key.public_key());
  std::string upper = hex;
  for (auto& c : upper)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  BOOST_TEST(parse_public_key(upper) == key.public_key());
  BOOST_TEST(to_base64_text(unhex(rfc_public)) ==
             "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");

  BOOST_TEST(parse_public_key("").empty());
  BOOST_TEST(parse_public_key(hex.substr(1)).empty());
  BOOST_TEST(parse_public_key(hex + "0").empty());
  BOOST_TEST(parse_public_key(std::string(63, '0') + "g").empty());
  BOOST_TEST(parse_public_key(" " + b64.substr(1)).empty());
  BOOST_TEST(parse_public_key(b64.substr(0, 43)).empty());
  BOOST_TEST(parse_public_key(b64.substr(0, 42) + "==").empty());
  // Non-canonical: the last character carries bits beyond the 32 bytes.
  BOOST_TEST(parse_public_key("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURp=").empty());
}

// -- private files -------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(private_file_is_0600_whatever_the_umask) {
  temp_dir dir;
  for (mode_t mask : {mode_t{0}, mode_t{022}, mode_t{077}, mode_t{0277}}) {
    umask_scope scope{mask};
    auto path = dir.file("k" + std::to_string(mask));
    write_private_file(path, "secret");
    BOOST_TEST(mode_of(path) == 0600u, "umask " << std::oct << mask);
    BOOST_TEST(read_private_file(path) == "secret");
  }
  // Nothing but the four files: no temporaries left behind.
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    BOOST_TEST(e.path().filename().string().find(".tmp.") == std::string::npos);
    ++n;
  }
  BOOST_TEST(n == 4u);
}

BOOST_AUTO_TEST_CASE(private_file_replace_and_create_new) {
  temp_dir dir;
  auto path = dir.file("k");
  write_private_file(path, "one", file_write::create_new);
  BOOST_TEST(read_private_file(path) == "one");
  BOOST_TEST(error_of([&] { write_private_file(path, "two", file_write::create_new); }) ==
             key_errc::exists);
  BOOST_TEST(read_private_file(path) == "one");
  write_private_file(path, "three", file_write::replace);
  BOOST_TEST(read_private_file(path) == "three");
  BOOST_TEST(mode_of(path) == 0600u);
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path))
    ++n;
  BOOST_TEST(n == 1u);
  // A missing directory is an error, not a crash.
  BOOST_TEST(error_of([&] { write_private_file(dir.file("no/such/k"), "x"); }) ==
             key_errc::not_found);
}

BOOST_AUTO_TEST_CASE(private_file_refusals) {
  temp_dir dir;
  auto path = dir.file("k");
  for (mode_t m : {0644, 0640, 0604, 0660, 0610, 0601, 0700 | 0004}) {
    write_plain(path, "secret", m);
    BOOST_TEST((error_of([&] { read_private_file(path); }) == key_errc::bad_mode),
               "mode " << std::oct << m);
  }
  for (mode_t m : {0600, 0400}) {
    write_plain(path, "secret", m);
    BOOST_TEST(read_private_file(path) == "secret");
  }
  BOOST_TEST(error_of([&] { read_private_file(dir.file("missing")); }) ==
             key_errc::not_found);
  // A symlink to a perfectly private file is still refused.
  write_plain(path, "secret", 0600);
  fs::create_symlink(path, dir.file("link"));
  BOOST_TEST(error_of([&] { read_private_file(dir.file("link")); }) ==
             key_errc::not_regular);
  fs::create_directory(dir.file("d"));
  ::chmod(dir.file("d").c_str(), 0700);
  BOOST_TEST(error_of([&] { read_private_file(dir.file("d")); }) ==
             key_errc::not_regular);
  BOOST_REQUIRE(::mkfifo(dir.file("fifo").c_str(), 0600) == 0);
  BOOST_TEST(error_of([&] { read_private_file(dir.file("fifo")); }) ==
             key_errc::not_regular);
  write_plain(path, std::string(100, 'x'), 0600);
  BOOST_TEST(error_of([&] { read_private_file(path, 99); }) == key_errc::too_large);
  BOOST_TEST(read_private_file(path, 100).size() == 100u);
}

BOOST_AUTO_TEST_CASE(signing_key_file_round_trip_and_mode_refusal) {
  temp_dir dir;
  auto path = dir.file("signing.key");
  auto key = signing_key::generate();
  {
    umask_scope scope{0};
    save_signing_key(path, key);
  }
  BOOST_TEST(mode_of(path) == 0600u);
  auto loaded = load_signing_key(path);
  BOOST_TEST(loaded.public_key() == key.public_key());
  BOOST_TEST(verify(key.public_key(), "m", loaded.sign("m")));

  BOOST_REQUIRE(::chmod(path.c_str(), 0644) == 0);
  BOOST_TEST(error_of([&] { load_signing_key(path); }) == key_errc::bad_mode);
  BOOST_REQUIRE(::chmod(path.c_str(), 0600) == 0);
  write_plain(path, "not a key", 0600);
  BOOST_TEST(error_of([&] { load_signing_key(path); }) == key_errc::bad_format);
}

BOOST_AUTO_TEST_CASE(key_error_names) {
  BOOST_TEST(std::string(to_string(key_errc::bad_mode)) == "bad_mode");
}
