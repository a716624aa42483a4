#pragma once

#include <string>
#include <vector>

namespace parry {

/// Paths of the server's certificate and key.
struct tls_files {
  std::string cert;
  std::string key;
};

/// Returns `dir/cert.pem` and `dir/key.pem`, creating a self-signed certificate
/// (EC P-256, SAN: localhost, 127.0.0.1, ::1 and `extra_names`) when they do not
/// exist yet. The key file is created with mode 0600. Throws on failure.
tls_files ensure_certificate(const std::string& dir,
                             const std::vector<std::string>& extra_names = {});

} // namespace parry
