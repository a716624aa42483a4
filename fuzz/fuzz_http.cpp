// libFuzzer harness: what the HTTPS front end does with the bytes of a request
// before the api actor sees them, without sockets or TLS. The input is a decrypted
// byte stream from one connection: Beast's parser with the server's limits reads
// requests from it one after another (keep-alive), and each complete one goes
// through the server's own header extraction (to_api: bearer token, session cookie,
// CSRF token, idempotency key).
//
// The extraction lives in an anonymous namespace of server/http_server.cpp, so the
// harness includes that file: it tests the server's code, not a copy of it.

#include "server/http_server.cpp" // NOLINT(bugprone-suspicious-include)

#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace {

// The header limit the session sets in session::read().
constexpr std::size_t header_limit = 16 * 1024;

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  namespace http = boost::beast::http;
  boost::asio::const_buffer in(data, size);
  // At most a few requests per input: enough for keep-alive, bounded per run.
  for (int n = 0; n < 8 && in.size() > 0; ++n) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(parry::max_body);
    parser.header_limit(header_limit);
    parser.eager(true);
    boost::beast::error_code ec;
    while (in.size() > 0 && !parser.is_done()) {
      auto used = parser.put(in, ec);
      in += used;
      if (ec == http::error::need_more) {
        ec = {};
        if (used == 0) break; // the stream ends inside a request
        continue;
      }
      if (ec) return 0; // the server answers 400/413/431 and closes
    }
    if (!parser.is_done()) {
      parser.put_eof(ec); // the peer closed: a body up to EOF may now be complete
      if (ec || !parser.is_done()) return 0;
    }
    auto req = parser.release();
    auto api = parry::to_api(req, "192.0.2.1");
    if (api.target != std::string(req.target())) std::abort();
    if (api.body.size() > parry::max_body) std::abort();
    if (!req.keep_alive()) return 0;
  }
  return 0;
}
