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

#include "bus/command_signature.hpp"
#include "bus/curve_keys.hpp"
#include "common/crypto.hpp"
#include "common/keys.hpp"

namespace parry {
std::ostream& operator<<(std::ostream& os, key_errc e) {
  return os << to_string(e);
}
namespace bus {
std::ostream& operator<<(std::ostream& os, command_refusal r) {
  return os << to_string(r);
}
} // namespace bus
} // namespace parry

namespace fs = std::filesystem;
using namespace parry;
using namespace parry::bus;

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

command_fields sample_command() {
  command_fields f;
  f.action_id = "act-1";
  f.device_id = "dev-1";
  f.type = "quarantine";
  f.params = {{"path", "/tmp/x"}, {"sha256", std::string(64, 'a')}};
  f.issued_at = 1795000000000000;
  f.expires_at = 1795000060000000;
  f.seq = 1;
  return f;
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

// -- identifiers ---------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(time_ordered_ids_sort_by_their_time_and_differ) {
  // 2026-12-04 00:00:00.123 UTC, in µs.
  int64_t t = 1'796'342'400'123'000;
  auto a = time_ordered_id("act-", t);
  BOOST_TEST(a.size() == 4 + 12 + 16);
  BOOST_TEST(a.substr(0, 16) == "act-01a23e59c47b"); // the milliseconds, 12 hex digits
  BOOST_TEST(a.find_first_not_of("0123456789abcdef", 4) == std::string::npos);
  std::set<std::string> seen;
  std::string prev;
  for (int i = 0; i < 1000; ++i) {
    auto id = time_ordered_id("inc-", t + i * 1000); // one a millisecond
    BOOST_TEST(id > prev);
    prev = id;
    seen.insert(time_ordered_id("inc-", t)); // the same millisecond: still unique
  }
  BOOST_TEST(seen.size() == 1000u);
  // Before the epoch (a clock gone wrong) it is still well formed.
  BOOST_TEST(time_ordered_id("x-", -5).substr(0, 14) == "x-000000000000");
}

// -- CURVE ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(curve_key_pair_z85_round_trip) {
  auto kp = generate_curve_key_pair();
  BOOST_TEST(kp.public_z85.size() == curve_key_z85_chars);
  BOOST_TEST(kp.secret_z85.size() == curve_key_z85_chars);
  BOOST_TEST(is_z85_key(kp.public_z85));
  BOOST_TEST(is_z85_key(kp.secret_z85));
  BOOST_TEST(curve_public_of(kp.secret_z85) == kp.public_z85);
  BOOST_TEST(generate_curve_key_pair().public_z85 != kp.public_z85);

  temp_dir dir;
  auto path = dir.file("curve.key");
  {
    umask_scope scope{0};
    save_curve_key_pair(path, kp);
  }
  BOOST_TEST(mode_of(path) == 0600u);
  BOOST_TEST(read_private_file(path) == kp.secret_z85 + "\n");
  auto loaded = load_curve_key_pair(path);
  BOOST_TEST(loaded.public_z85 == kp.public_z85);
  BOOST_TEST(loaded.secret_z85 == kp.secret_z85);

  BOOST_REQUIRE(::chmod(path.c_str(), 0644) == 0);
  BOOST_TEST(error_of([&] { load_curve_key_pair(path); }) == key_errc::bad_mode);
  for (std::string bad :
       {kp.secret_z85.substr(1), kp.secret_z85 + "x", kp.secret_z85 + "\n\n",
        std::string(39, '0') + "\"", std::string(40, '#'), std::string("garbage")}) {
    write_plain(path, bad, 0600);
    BOOST_TEST((error_of([&] { load_curve_key_pair(path); }) == key_errc::bad_format),
               "content '" << bad << "'");
  }
  // An inconsistent pair is never written.
  auto other = generate_curve_key_pair();
  BOOST_TEST(error_of([&] {
               save_curve_key_pair(dir.file("mixed"), {other.public_z85, kp.secret_z85});
             }) == key_errc::bad_format);
  BOOST_TEST(!fs::exists(dir.file("mixed")));
}

BOOST_AUTO_TEST_CASE(z85_key_validation) {
  BOOST_TEST(!is_z85_key(""));
  BOOST_TEST(!is_z85_key(std::string(39, '0')));
  BOOST_TEST(!is_z85_key(std::string(41, '0')));
  BOOST_TEST(is_z85_key(std::string(40, '0')));
  BOOST_TEST(!is_z85_key(std::string(39, '0') + "~")); // not in the alphabet
  BOOST_TEST(!is_z85_key(std::string(39, '0') + '\0'));
  BOOST_TEST(!is_z85_key(std::string(40, '#'))); // 85^5 - 1 > 2^32 - 1
  BOOST_TEST(curve_public_of("nonsense").empty());
}

BOOST_AUTO_TEST_CASE(curve_keys_from_files_secure_a_zmq_connection) {
  temp_dir dir;
  save_curve_key_pair(dir.file("server.key"), generate_curve_key_pair());
  save_curve_key_pair(dir.file("client.key"), generate_curve_key_pair());
  auto server = load_curve_key_pair(dir.file("server.key"));
  auto client = load_curve_key_pair(dir.file("client.key"));

  zmq::context_t ctx;
  zmq::socket_t rep(ctx, zmq::socket_type::router);
  rep.set(zmq::sockopt::curve_server, 1);
  rep.set(zmq::sockopt::curve_secretkey, server.secret_z85);
  rep.set(zmq::sockopt::linger, 0);
  rep.bind("tcp://127.0.0.1:*");
  auto endpoint = rep.get(zmq::sockopt::last_endpoint);

  auto try_exchange = [&](const std::string& server_public, int wait_ms) {
    zmq::socket_t req(ctx, zmq::socket_type::dealer);
    req.set(zmq::sockopt::curve_serverkey, server_public);
    req.set(zmq::sockopt::curve_publickey, client.public_z85);
    req.set(zmq::sockopt::curve_secretkey, client.secret_z85);
    req.set(zmq::sockopt::linger, 0);
    req.connect(endpoint);
    req.send(zmq::str_buffer("ping"), zmq::send_flags::dontwait);
    zmq::pollitem_t items[] = {{rep.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(wait_ms));
    if (!(items[0].revents & ZMQ_POLLIN)) return std::string{};
    zmq::message_t id, body;
    BOOST_REQUIRE(rep.recv(id));
    BOOST_REQUIRE(rep.recv(body));
    return body.to_string();
  };
  // The pinned key of another server: the handshake fails and nothing arrives
  // (a success would arrive well within the shorter wait).
  BOOST_TEST(try_exchange(generate_curve_key_pair().public_z85, 1000).empty());
  BOOST_TEST(try_exchange(server.public_z85, 10000) == "ping");
}

BOOST_AUTO_TEST_CASE(server_keys_load_or_create) {
  temp_dir dir;
  auto data = dir.path.string();
  umask_scope scope{0};
  auto first = load_or_create(data);
  BOOST_TEST(first.created);
  BOOST_TEST(mode_of(data + "/keys") == 0700u);
  for (const char* f : {key_files::curve_secret, key_files::curve_public,
                        key_files::signing_secret, key_files::signing_public})
    BOOST_TEST(mode_of(data + "/keys/" + f) == 0600u, f);
  BOOST_TEST(read_private_file(data + "/keys/curve.pub") ==
             first.curve.public_z85 + "\n");
  BOOST_TEST(read_private_file(data + "/keys/signing.pub") ==
             to_hex_text(first.signing.public_key()) + "\n");

  auto second = load_or_create(data);
  BOOST_TEST(!second.created);
  BOOST_TEST(second.curve.secret_z85 == first.curve.secret_z85);
  BOOST_TEST(second.curve.public_z85 == first.curve.public_z85);
  BOOST_TEST(second.signing.public_key() == first.signing.public_key());
  BOOST_TEST(verify(first.signing.public_key(), "m", second.signing.sign("m")));

  // A damaged .pub is rewritten; a too-open directory is closed again.
  write_plain(data + "/keys/curve.pub", "stale\n", 0600);
  BOOST_REQUIRE(::chmod((data + "/keys").c_str(), 0755) == 0);
  load_or_create(data);
  BOOST_TEST(read_private_file(data + "/keys/curve.pub") ==
             first.curve.public_z85 + "\n");
  BOOST_TEST(mode_of(data + "/keys") == 0700u);

  // A private key file others can read is refused, not replaced.
  auto signing = data + "/keys/signing.key";
  BOOST_REQUIRE(::chmod(signing.c_str(), 0644) == 0);
  BOOST_TEST(error_of([&] { load_or_create(data); }) == key_errc::bad_mode);
  BOOST_TEST(mode_of(signing) == 0644u);
  BOOST_REQUIRE(::chmod(signing.c_str(), 0600) == 0);
  BOOST_TEST(load_signing_key(signing).public_key() == first.signing.public_key());

  // A keys "directory" that is a symlink is refused.
  temp_dir other;
  fs::create_directory(other.path / "real");
  fs::create_directory_symlink(other.path / "real", other.path / "keys");
  BOOST_TEST(error_of([&] { load_or_create(other.path.string()); }) ==
             key_errc::not_regular);
}

// -- command signatures --------------------------------------------------------------

BOOST_AUTO_TEST_CASE(command_encoding_golden_bytes) {
  // The documented encoding (docs/bus-protocol.md, Command signatures): a change
  // here breaks every deployed agent.
  command_fields f;
  f.action_id = "a1";
  f.device_id = "d";
  f.type = "isolate";
  f.params = {{"k", "v"}};
  f.issued_at = 1;
  f.expires_at = -2;
  f.seq = 3;
  BOOST_TEST(to_hex_text(encode_for_signature(f)) ==
             "0000000c70617272792d636d642d7631" // str("parry-cmd-v1")
             "000000026131"                     // str("a1")
             "0000000164"                       // str("d")
             "0000000769736f6c617465"           // str("isolate")
             "00000001"                         // one param
             "000000016b"                       // str("k")
             "0000000176"                       // str("v")
             "0000000000000001"                 // issued_at
             "fffffffffffffffe"                 // expires_at (two's complement)
             "0000000000000003");               // seq
  // Ed25519 is deterministic: the RFC 8032 test key's signature of this message, as
  // computed independently by Python's `cryptography` (docs/bus-protocol.md).
  auto rfc_key = signing_key::from_pem(pem_of_seed(rfc_seed));
  auto sig = sign_command(rfc_key, f);
  BOOST_TEST(to_hex_text(sig) ==
             "825ba2c00e968221e056b88895d4e93db2ac880e25a669f805e0410c2694da68"
             "c70df179da52a3ca3e1514b376bf29bbd3843beade4060d77aa74806ee1fd303");
  BOOST_TEST(verify_command(unhex(rfc_public), f, sig));
}

BOOST_AUTO_TEST_CASE(command_encoding_is_unambiguous) {
  auto enc = [](auto change) {
    auto f = sample_command();
    change(f);
    return encode_for_signature(f);
  };
  std::set<std::string> seen;
  std::vector<std::string> all = {
      enc([](command_fields&) {}),
      enc([](command_fields& f) {
        f.action_id = "act-";
        f.device_id = "1dev-1";
      }),
      enc([](command_fields& f) {
        f.params = {{"path", "/tmp/xsha256"}};
      }),
      enc([](command_fields& f) {
        f.params = {{"pa", "th/tmp/x"}, {"sha256", std::string(64, 'a')}};
      }),
      enc([](command_fields& f) { f.params.clear(); }),
      enc([](command_fields& f) {
        f.params = {{"", ""}};
      }),
      enc([](command_fields& f) { f.type = std::string("quarantine\0", 11); }),
      enc([](command_fields& f) { std::swap(f.issued_at, f.expires_at); }),
      enc([](command_fields& f) { f.seq = 2; }),
  };
  for (const auto& e : all)
    BOOST_TEST(seen.insert(e).second);
  // Map order is bytewise: "B" (0x42) before "a" (0x61) before "\xc3" (UTF-8 lead).
  command_fields f;
  f.params = {{"a", ""}, {"\xc3\xa9", ""}, {"B", ""}};
  auto bytes = encode_for_signature(f);
  using namespace std::string_literals;
  auto at = [&](const std::string& key) {
    auto pos = bytes.find(key);
    BOOST_REQUIRE(pos != std::string::npos);
    return pos;
  };
  BOOST_TEST(at("\0\0\0\1B"s) < at("\0\0\0\1a"s));
  BOOST_TEST(at("\0\0\0\1a"s) < at("\0\0\0\2\xc3\xa9"s));
}

BOOST_AUTO_TEST_CASE(command_signature_round_trip_and_tampering) {
  auto key = signing_key::generate();
  auto good = sample_command();
  auto sig = sign_command(key, good);
  BOOST_TEST(sig.size() == ed25519_signature_bytes);
  BOOST_TEST(verify_command(key.public_key(), good, sig));

  std::vector<std::pair<const char*, void (*)(command_fields&)>> tamper = {
      {"action_id", [](command_fields& f) { f.action_id = "act-2"; }},
      {"device_id", [](command_fields& f) { f.device_id = "dev-2"; }},
      {"type", [](command_fields& f) { f.type = "delete_file"; }},
      {"param value", [](command_fields& f) { f.params["path"] = "/etc/passwd"; }},
      {"param key",
       [](command_fields& f) {
         f.params.erase("path");
         f.params["Path"] = "/tmp/x";
       }},
      {"param added", [](command_fields& f) { f.params["extra"] = ""; }},
      {"param removed", [](command_fields& f) { f.params.erase("sha256"); }},
      {"issued_at", [](command_fields& f) { f.issued_at += 1; }},
      {"expires_at", [](command_fields& f) { f.expires_at += 1; }},
      {"seq", [](command_fields& f) { f.seq += 1; }},
  };
  for (auto& [name, change] : tamper) {
    auto f = good;
    change(f);
    BOOST_TEST(!verify_command(key.public_key(), f, sig), "tampered " << name);
  }
  BOOST_TEST(!verify_command(signing_key::generate().public_key(), good, sig));
  BOOST_TEST(!verify_command(key.public_key(), good, sig.substr(0, 32)));
  BOOST_TEST(!verify_command(key.public_key(), good, ""));
  BOOST_TEST(!verify_command(key.public_key().substr(1), good, sig));
  BOOST_TEST(!verify_command("", good, sig));
}

BOOST_AUTO_TEST_CASE(fields_of_a_bus_command) {
  command c;
  c.action_id = "act-9";
  c.type = "isolate";
  c.params = {{"a", "b"}};
  c.issued_at = 10;
  c.expires_at = 20;
  auto f = fields_of(c, "dev-9", 42);
  BOOST_TEST(f.action_id == "act-9");
  BOOST_TEST(f.device_id == "dev-9");
  BOOST_TEST(f.type == "isolate");
  BOOST_TEST((f.params == std::map<std::string, std::string>{{"a", "b"}}));
  BOOST_TEST(f.issued_at == 10);
  BOOST_TEST(f.expires_at == 20);
  BOOST_TEST(f.seq == 42u);
}

// -- command_guard -------------------------------------------------------------------

namespace {

constexpr int64_t now = 1795000030000000; // between sample issued_at and expires_at

struct guard_fixture {
  signing_key server = signing_key::generate();
  command_guard guard{server.public_key(), "dev-1"};

  command_fields cmd(const std::string& action_id, uint64_t seq) {
    auto f = sample_command();
    f.action_id = action_id;
    f.seq = seq;
    return f;
  }
  guard_verdict send(const command_fields& f) {
    return guard.check(f, sign_command(server, f), now);
  }
};

} // namespace

BOOST_FIXTURE_TEST_CASE(guard_accepts_a_good_sequence, guard_fixture) {
  for (auto [id, seq] : {std::pair{"a", 1}, {"b", 2}, {"c", 5}, {"d", 6}}) {
    auto v = send(cmd(id, seq));
    BOOST_TEST(v.accepted, id << ": " << v.text);
    BOOST_TEST(v.text.empty());
  }
  BOOST_TEST(guard.last_seq() == 6u);
  BOOST_TEST(guard.remembered() == 4u);
  for (std::size_t r = 0; r < command_refusal_count; ++r)
    BOOST_TEST(guard.refused(static_cast<command_refusal>(r)) == 0u);
}

BOOST_FIXTURE_TEST_CASE(guard_refuses_each_reason, guard_fixture) {
  BOOST_REQUIRE(send(cmd("a", 1)).accepted);

  // bad_signature: tampered after signing, another key, truncated signature. A
  // high seq in a refused command must not move last_seq.
  auto f = cmd("b", 100);
  auto sig = sign_command(server, f);
  f.type = "delete_file";
  auto v = guard.check(f, sig, now);
  BOOST_TEST(!v.accepted);
  BOOST_TEST(v.reason == command_refusal::bad_signature);
  BOOST_TEST(v.text.find("signature") != std::string::npos);
  auto other = signing_key::generate();
  BOOST_TEST(guard.check(cmd("b", 2), sign_command(other, cmd("b", 2)), now).reason ==
             command_refusal::bad_signature);
  BOOST_TEST(
      guard.check(cmd("b", 2), sign_command(server, cmd("b", 2)).substr(0, 63), now)
          .reason == command_refusal::bad_signature);
  BOOST_TEST(guard.refused(command_refusal::bad_signature) == 3u);
  BOOST_TEST(guard.last_seq() == 1u);

  // wrong_device: validly signed for another device.
  auto elsewhere = cmd("b", 2);
  elsewhere.device_id = "dev-2";
  v = send(elsewhere);
  BOOST_TEST(v.reason == command_refusal::wrong_device);
  BOOST_TEST(v.text.find("dev-2") != std::string::npos);

  // expired: at the deadline, after it, and a command without one.
  auto late = cmd("b", 2);
  late.expires_at = now;
  BOOST_TEST(send(late).reason == command_refusal::expired);
  late.expires_at = now - 1;
  v = send(late);
  BOOST_TEST(v.reason == command_refusal::expired);
  BOOST_TEST(v.text.find("expired") != std::string::npos);
  late.expires_at = 0;
  BOOST_TEST(send(late).reason == command_refusal::expired);

  // action_replayed: the same action again, even with a fresh sequence number.
  v = send(cmd("a", 2));
  BOOST_TEST(v.reason == command_refusal::action_replayed);
  BOOST_TEST(v.text.find("'a'") != std::string::npos);
  // The very same signed command again.
  BOOST_TEST(send(cmd("a", 1)).reason == command_refusal::action_replayed);

  // seq_replayed: a new action with a sequence number already used.
  v = send(cmd("b", 1));
  BOOST_TEST(v.reason == command_refusal::seq_replayed);
  BOOST_TEST(v.text.find("1") != std::string::npos);
  BOOST_TEST(send(cmd("b", 0)).reason == command_refusal::seq_replayed);

  BOOST_TEST(guard.refused(command_refusal::wrong_device) == 1u);
  BOOST_TEST(guard.refused(command_refusal::expired) == 3u);
  BOOST_TEST(guard.refused(command_refusal::action_replayed) == 2u);
  BOOST_TEST(guard.refused(command_refusal::seq_replayed) == 2u);

  // None of the refusals changed the state: the next good command is accepted.
  BOOST_TEST(guard.last_seq() == 1u);
  BOOST_TEST(guard.remembered() == 1u);
  BOOST_TEST(send(cmd("b", 2)).accepted);
}

BOOST_AUTO_TEST_CASE(guard_memory_is_bounded) {
  auto server = signing_key::generate();
  command_guard guard{server.public_key(), "dev-1", 10, 2};
  auto send = [&](const char* id, uint64_t seq) {
    auto f = sample_command();
    f.action_id = id;
    f.seq = seq;
    return guard.check(f, sign_command(server, f), now);
  };
  // Starts from the journal's last seq.
  BOOST_TEST(send("x", 10).reason == command_refusal::seq_replayed);
  BOOST_TEST(send("a", 11).accepted);
  BOOST_TEST(send("b", 12).accepted);
  BOOST_TEST(send("c", 13).accepted);
  BOOST_TEST(guard.remembered() == 2u);
  BOOST_TEST(guard.forgotten() == 1u);
  // "a" left the window, but its signed command is still refused by its seq.
  BOOST_TEST(send("a", 11).reason == command_refusal::seq_replayed);
  BOOST_TEST(send("b", 14).reason == command_refusal::action_replayed);
}

BOOST_AUTO_TEST_CASE(refusal_names) {
  BOOST_TEST(std::string(to_string(command_refusal::bad_signature)) == "bad_signature");
  BOOST_TEST(std::string(to_string(command_refusal::wrong_device)) == "wrong_device");
  BOOST_TEST(std::string(to_string(command_refusal::expired)) == "expired");
  BOOST_TEST(std::string(to_string(command_refusal::action_replayed)) ==
             "action_replayed");
  BOOST_TEST(std::string(to_string(command_refusal::seq_replayed)) == "seq_replayed");
  BOOST_TEST(std::string(to_string(key_errc::bad_mode)) == "bad_mode");
}
