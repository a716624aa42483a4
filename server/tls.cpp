#include "server/tls.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace parry {

namespace {

template <class T, void (*Free)(T*)>
using owned = std::unique_ptr<T, std::integral_constant<decltype(Free), Free>>;

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string{"TLS certificate: "} + what + " failed");
}

bool is_ip(const std::string& name) {
  return name.find_first_not_of("0123456789.") == std::string::npos ||
         name.find(':') != std::string::npos;
}

template <class F> void write_pem(const std::string& path, mode_t mode, F&& writer) {
  // Create with the final mode so the key is never readable by others, even briefly.
  std::filesystem::remove(path);
  auto old = ::umask(0777 & ~mode);
  FILE* f = std::fopen(path.c_str(), "wx");
  ::umask(old);
  check(f != nullptr, "opening the output file");
  bool ok = writer(f) == 1;
  ok = (std::fclose(f) == 0) && ok;
  check(ok, "writing PEM");
}

} // namespace

tls_files ensure_certificate(const std::string& dir,
                             const std::vector<std::string>& extra_names) {
  tls_files files{dir + "/cert.pem", dir + "/key.pem"};
  if (std::filesystem::exists(files.cert) && std::filesystem::exists(files.key))
    return files;
  std::filesystem::create_directories(dir);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all);

  owned<EVP_PKEY, EVP_PKEY_free> key{EVP_EC_gen("P-256")};
  check(key != nullptr, "key generation");
  owned<X509, X509_free> cert{X509_new()};
  check(cert != nullptr, "X509_new");
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  check(RAND_bytes(serial, sizeof serial) == 1, "serial");
  serial[0] &= 0x7f; // positive
  owned<BIGNUM, BN_free> bn{BN_bin2bn(serial, sizeof serial, nullptr)};
  check(bn && BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())), "serial");
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 60L * 60 * 24 * 825);
  X509_set_pubkey(cert.get(), key.get());
  auto name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Parry"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("localhost"), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), name);

  std::string san = "DNS:localhost,IP:127.0.0.1,IP:::1";
  for (const auto& n : extra_names)
    if (!n.empty() && n.find(',') == std::string::npos)
      san += (is_ip(n) ? ",IP:" : ",DNS:") + n;
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  auto add = [&](int nid, const char* value) {
    owned<X509_EXTENSION, X509_EXTENSION_free> ext{
        X509V3_EXT_conf_nid(nullptr, &ctx, nid, value)};
    check(ext && X509_add_ext(cert.get(), ext.get(), -1) == 1, "extension");
  };
  add(NID_subject_alt_name, san.c_str());
  // A CA:TRUE self-signed certificate lets clients trust it with --cacert.
  add(NID_basic_constraints, "critical,CA:TRUE");
  add(NID_key_usage, "critical,digitalSignature,keyCertSign");
  add(NID_ext_key_usage, "serverAuth");
  check(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0, "signing");

  write_pem(files.key, 0600, [&](FILE* f) {
    return PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  write_pem(files.cert, 0644, [&](FILE* f) { return PEM_write_X509(f, cert.get()); });
  return files;
}

} // namespace parry
