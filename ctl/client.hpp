#pragma once

// A small synchronous HTTPS/1.1 client for Parry's REST API, shared by parryctl, the
// integration tests and the benchmark. One client holds one keep-alive connection and
// is not thread-safe; use one per thread. Boost.Beast stays behind the pimpl so that
// including this header costs no more than nlohmann/json.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace parry {

/// A failure below HTTP: name resolution, connect, TLS (including certificate
/// verification), timeout or a malformed response. HTTP error statuses are not
/// client errors; they come back as a `response`.
class client_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// The parts of a base URL `https://host[:port][/prefix]`.
struct base_url {
  std::string host; ///< Name or IP literal, IPv6 without brackets, as given.
  uint16_t port = 443;
  std::string prefix; ///< Path before `/api/...`, empty or starting with `/`, no
                      ///< trailing slash.

  /// `host:port` as it goes into the Host header (IPv6 in brackets).
  std::string authority() const;
  /// The URL back in canonical form, e.g. `https://127.0.0.1:8443`.
  std::string str() const;
};

/// Parses a base URL. Only `https` is accepted; user info, queries and fragments
/// are refused. Throws std::invalid_argument saying what is wrong.
base_url parse_base_url(std::string_view url);

/// True if `host` is an IPv4 or IPv6 literal (without brackets).
bool is_ip_literal(std::string_view host);

/// How the server's certificate is checked.
struct tls_options {
  /// PEM file of trusted certificates (for Parry: the server's own self-signed
  /// certificate). Empty means the system's default trust store.
  std::string ca_file;
  /// Skip certificate and host name verification altogether. Only when asked.
  bool insecure = false;
};

/// One HTTP answer.
struct response {
  int status = 0;
  nlohmann::json body;                        ///< Parsed JSON, null if not JSON.
  std::map<std::string, std::string> headers; ///< Lower-case names; repeated
                                              ///< fields joined with ", ".
  std::string raw;                            ///< The body exactly as received.

  /// True for a 2xx status.
  bool ok() const { return status >= 200 && status < 300; }
  /// `error.code` of a Parry error body, or empty.
  std::string error_code() const;
  /// `error.message` of a Parry error body, or empty.
  std::string error_message() const;
};

/// Extra request header fields, sent as given (they replace defaults of the same name).
using header_list = std::vector<std::pair<std::string, std::string>>;

/// Synchronous HTTPS client with one keep-alive connection.
class client {
public:
  /// Default time allowed for one request, connecting included.
  static constexpr std::chrono::milliseconds default_timeout{10000};

  /// Prepares a client for `url` (see parse_base_url; throws std::invalid_argument
  /// if malformed, client_error if the CA file cannot be loaded). Connects lazily.
  client(std::string_view url, tls_options tls = {});
  ~client();
  client(client&&) noexcept;
  client& operator=(client&&) noexcept;
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Sends one request and reads the answer. `path` starts with `/` and may carry a
  /// query (`/api/v1/incidents?limit=5`); it is appended to the URL's prefix. A JSON
  /// `body` is sent with `Content-Type: application/json`. If a kept-alive connection
  /// turns out to be closed by the server before any answer arrived, the client
  /// reconnects and sends once more. `timeout` of zero means the client's default.
  /// Throws client_error on any failure below HTTP.
  response request(std::string_view method, std::string_view path,
                   const nlohmann::json* body = nullptr,
                   const header_list& extra_headers = {},
                   std::chrono::milliseconds timeout = std::chrono::milliseconds{0});

  /// Like request() without a body, but a 2xx answer's body is written to the new
  /// file `file` as it arrives (never held in memory): first to FILE.partial, then
  /// fsynced and renamed. Refuses (std::invalid_argument) when `file` exists. Other
  /// answers come back as request() returns them, and no file is made. Every read
  /// must make progress within `idle` (the answer's head may take `answer_wait`),
  /// and the whole transfer end within `timeout`. Throws client_error on any failure
  /// below HTTP (FILE.partial is removed).
  response download(std::string_view method, std::string_view path,
                    const std::string& file, std::chrono::milliseconds timeout,
                    std::chrono::milliseconds answer_wait,
                    std::chrono::milliseconds idle = std::chrono::seconds{60});

  /// Shorthand for request("GET", path).
  response get(std::string_view path) { return request("GET", path); }
  /// Shorthand for request("POST", path, &body).
  response post(std::string_view path, const nlohmann::json& body) {
    return request("POST", path, &body);
  }

  /// Sends `Authorization: Bearer <token>` from now on; empty stops it.
  void set_bearer(std::string token);
  /// Sends `X-CSRF-Token: <token>` on every request other than GET and HEAD from
  /// now on; empty stops it.
  void set_csrf(std::string token);
  /// The value of a cookie the server set (e.g. `parry_session`), or empty.
  std::string cookie(std::string_view name) const;
  /// Forgets all cookies.
  void clear_cookies();

  /// Default timeout for requests that do not pass their own.
  void set_timeout(std::chrono::milliseconds timeout);

  /// Closes the connection (politely, bounded); the next request reconnects.
  void close();
  /// True while a connection is open.
  bool connected() const;
  /// How many connections (TCP + TLS handshakes) this client has made so far.
  std::size_t connections() const;
  /// The base URL this client talks to.
  const base_url& url() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace parry
