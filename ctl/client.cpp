#include "ctl/client.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fcntl.h>

#include <arpa/inet.h>
#include <poll.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/file_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

namespace parry {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using steady = std::chrono::steady_clock;
using stream_type = beast::ssl_stream<beast::tcp_stream>;

/// Largest response body accepted; a full incident list is far below this.
constexpr std::uint64_t max_body_bytes = 64u << 20;

/// How long close() waits for the server's close_notify.
constexpr std::chrono::milliseconds shutdown_timeout{250};

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && lower(s.substr(0, prefix.size())) == prefix;
}

// A CR or LF in a header would let a value smuggle extra fields into the request.
void check_header(std::string_view name, std::string_view value) {
  auto bad = [](char c) { return c == '\r' || c == '\n' || c == '\0'; };
  if (name.empty() || std::any_of(name.begin(), name.end(), bad) ||
      std::any_of(value.begin(), value.end(), bad))
    throw std::invalid_argument("invalid header field: " + std::string(name));
}

beast::string_view to_beast(std::string_view s) {
  return {s.data(), s.size()};
}

std::string_view to_std(beast::string_view s) {
  return {s.data(), s.size()};
}

bool host_char_ok(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}

} // namespace

bool is_ip_literal(std::string_view host) {
  std::string h(host);
  unsigned char buf[16];
  return inet_pton(AF_INET, h.c_str(), buf) == 1 ||
         inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

std::string base_url::authority() const {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string base_url::str() const {
  return "https://" + authority() + prefix;
}

base_url parse_base_url(std::string_view url) {
  auto fail = [&](const std::string& why) {
    throw std::invalid_argument("bad server URL '" + std::string(url) + "': " + why);
  };
  constexpr std::string_view scheme = "https://";
  if (!starts_with_nocase(url, scheme)) {
    if (starts_with_nocase(url, "http://"))
      fail("plain http is not supported, use https://");
    if (url.find("://") != std::string_view::npos)
      fail("unsupported scheme, use https://");
    fail("missing scheme, expected https://HOST:PORT");
  }
  std::string_view rest = url.substr(scheme.size());
  auto path_at = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, path_at);
  std::string_view path = path_at == std::string_view::npos ? "" : rest.substr(path_at);
  if (path.find_first_of("?#") != std::string_view::npos)
    fail("query or fragment not allowed");
  if (authority.find('@') != std::string_view::npos) fail("user info not allowed");
  if (authority.empty()) fail("missing host");

  base_url out;
  std::string_view port_text;
  bool has_port = false;
  if (authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) fail("unterminated IPv6 literal");
    out.host = std::string(authority.substr(1, close - 1));
    if (out.host.find(':') == std::string::npos || !is_ip_literal(out.host))
      fail("bad IPv6 literal");
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') fail("unexpected text after IPv6 literal");
      has_port = true;
      port_text = after.substr(1);
    }
  } else {
    auto colon = authority.find(':');
    if (colon != std::string_view::npos) {
      if (authority.find(':', colon + 1) != std::string_view::npos)
        fail("IPv6 literals need brackets, e.g. https://[::1]:8443");
      has_port = true;
      port_text = authority.substr(colon + 1);
      authority = authority.substr(0, colon);
    }
    if (authority.empty()) fail("missing host");
    if (!std::all_of(authority.begin(), authority.end(), host_char_ok))
      fail("bad character in host");
    out.host = std::string(authority);
  }
  if (has_port) {
    if (port_text.empty() || port_text.size() > 5 ||
        !std::all_of(port_text.begin(), port_text.end(),
                     [](char c) { return c >= '0' && c <= '9'; }))
      fail("bad port '" + std::string(port_text) + "'");
    unsigned long port = std::stoul(std::string(port_text));
    if (port == 0 || port > 65535) fail("port out of range: " + std::string(port_text));
    out.port = static_cast<uint16_t>(port);
  }
  while (!path.empty() && path.back() == '/')
    path.remove_suffix(1);
  if (std::any_of(path.begin(), path.end(), [](char c) {
        return static_cast<unsigned char>(c) <= ' ' || c == 0x7f;
      }))
    fail("bad character in path");
  out.prefix = std::string(path);
  return out;
}

namespace {

std::string error_field(const nlohmann::json& body, const char* key) {
  if (!body.is_object()) return {};
  auto e = body.find("error");
  if (e == body.end() || !e->is_object()) return {};
  auto v = e->find(key);
  return v != e->end() && v->is_string() ? v->get<std::string>() : std::string{};
}

} // namespace

std::string response::error_code() const {
  return error_field(body, "code");
}

std::string response::error_message() const {
  return error_field(body, "message");
}

struct client::impl {
  base_url url;
  std::string port_text;
  bool ip_host = false;
  tls_options tls;
  net::io_context ioc{1};
  ssl::context ctx{ssl::context::tls_client};
  std::unique_ptr<stream_type> stream;
  beast::flat_buffer buffer; // bytes read past one response stay for the next
  std::chrono::milliseconds timeout = default_timeout;
  std::string bearer;
  std::string csrf;
  std::map<std::string, std::string, std::less<>> cookies;
  std::size_t connections = 0;

  impl(base_url u, tls_options t) : url(std::move(u)), tls(std::move(t)) {
    port_text = std::to_string(url.port);
    ip_host = is_ip_literal(url.host);
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    if (tls.insecure) {
      ctx.set_verify_mode(ssl::verify_none);
      return;
    }
    ctx.set_verify_mode(ssl::verify_peer);
    beast::error_code ec;
    if (tls.ca_file.empty()) {
      ctx.set_default_verify_paths(ec);
      if (ec) throw client_error("cannot load the system trust store: " + ec.message());
      return;
    }
    // OpenSSL's own message for a missing file is vague; say it plainly.
    if (::access(tls.ca_file.c_str(), R_OK) != 0)
      throw client_error("cannot read CA file " + tls.ca_file + ": " +
                         std::strerror(errno));
    ctx.load_verify_file(tls.ca_file, ec);
    if (ec)
      throw client_error("cannot load CA file " + tls.ca_file + ": " + ec.message());
  }

  // Starts one asynchronous operation and runs the io_context until it completes.
  // Beast's tcp_stream enforces the deadline and cancels its timer on completion,
  // so run() returns as soon as the operation is done.
  template <class Start> beast::error_code run(Start&& start) {
    beast::error_code result = net::error::operation_aborted;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  client_error failure(std::string_view what, beast::error_code ec,
                       std::chrono::milliseconds budget) const {
    std::string msg = std::string(what) + " " + url.authority() + ": ";
    if (ec == beast::error::timeout)
      msg += "timed out after " + std::to_string(budget.count()) + " ms";
    else if (ec == net::error::eof || ec == ssl::error::stream_truncated)
      msg += "connection closed by the server";
    else
      msg += ec.message();
    return client_error(msg);
  }

  void connect(steady::time_point deadline, std::chrono::milliseconds budget) {
    drop();
    beast::error_code ec;
    // Name resolution is synchronous and not bound by the deadline; Parry servers
    // are normally addressed by IP or a local name.
    tcp::resolver resolver(ioc);
    auto endpoints = resolver.resolve(url.host, port_text, ec);
    if (ec) throw client_error("cannot resolve " + url.host + ": " + ec.message());

    auto s = std::make_unique<stream_type>(ioc, ctx);
    auto& layer = beast::get_lowest_layer(*s);
    layer.expires_at(deadline);
    ec = run([&](auto handler) { layer.async_connect(endpoints, std::move(handler)); });
    if (ec) throw failure("cannot connect to", ec, budget);
    layer.socket().set_option(tcp::no_delay(true), ec);

    SSL* ssl_handle = s->native_handle();
    if (!tls.insecure) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl_handle);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      int ok = ip_host ? X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str())
                       : X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), 0);
      if (ok != 1) throw client_error("cannot set the expected host name " + url.host);
    }
    // RFC 6066 forbids IP literals in SNI.
    if (!ip_host) SSL_set_tlsext_host_name(ssl_handle, url.host.c_str());

    layer.expires_at(deadline);
    ec = run([&](auto handler) {
      s->async_handshake(ssl::stream_base::client, std::move(handler));
    });
    if (ec) {
      std::string msg = failure("TLS handshake with", ec, budget).what();
      long verify = SSL_get_verify_result(ssl_handle);
      if (!tls.insecure && verify != X509_V_OK)
        msg += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
      throw client_error(msg);
    }
    stream = std::move(s);
    ++connections;
  }

  // True if the idle connection has something to read: on an idle HTTP/1.1
  // connection that can only be the server closing it (FIN or close_notify).
  bool stale() const {
    pollfd p{};
    p.fd = beast::get_lowest_layer(*stream).socket().native_handle();
    p.events = POLLIN;
    return ::poll(&p, 1, 0) != 0;
  }

  void drop() {
    stream.reset();
    buffer.clear();
  }

  void shutdown() {
    if (!stream) return;
    beast::get_lowest_layer(*stream).expires_after(shutdown_timeout);
    run([&](auto handler) { stream->async_shutdown(std::move(handler)); });
    drop();
  }

  /// The request as sent: cookies, bearer and CSRF token included. Throws
  /// std::invalid_argument for a bad method, path or header.
  http::request<http::string_body> build(std::string_view method, std::string_view path,
                                         const nlohmann::json* body,
                                         const header_list& extra_headers) const {
    if (path.empty() || path.front() != '/')
      throw std::invalid_argument("request path must start with '/': " +
                                  std::string(path));
    if (method.empty()) throw std::invalid_argument("empty request method");
    bool reads_only = method == "GET" || method == "HEAD";
    http::request<http::string_body> req;
    req.version(11);
    auto verb = http::string_to_verb(to_beast(method));
    if (verb == http::verb::unknown)
      req.method_string(to_beast(method));
    else
      req.method(verb);
    std::string target = url.prefix;
    target += path;
    check_header("target", target);
    req.target(target);
    req.set(http::field::host, url.authority());
    req.set(http::field::user_agent, "parry-client/0.1");
    req.set(http::field::accept, "application/json");
    if (!bearer.empty()) req.set(http::field::authorization, "Bearer " + bearer);
    if (!cookies.empty()) {
      std::string jar;
      for (const auto& [name, value] : cookies)
        jar += (jar.empty() ? "" : "; ") + name + "=" + value;
      req.set(http::field::cookie, jar);
    }
    if (!csrf.empty() && !reads_only) req.set("X-CSRF-Token", csrf);
    if (body) {
      req.set(http::field::content_type, "application/json");
      req.body() = body->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    for (const auto& [name, value] : extra_headers) {
      check_header(name, value);
      req.set(name, value);
    }
    req.prepare_payload();
    return req;
  }

  /// Status and header fields of an answer into `out` (cookies remembered).
  template <class Fields> void take_head(const Fields& msg, int status, response& out) {
    out.status = status;
    for (const auto& field : msg) {
      auto name = lower(to_std(field.name_string()));
      std::string value(to_std(field.value()));
      if (name == "set-cookie") store_cookie(value);
      auto [it, inserted] = out.headers.emplace(name, value);
      if (!inserted) it->second += ", " + value;
    }
  }

  void store_cookie(std::string_view set_cookie) {
    auto semi = set_cookie.find(';');
    auto pair = trim(set_cookie.substr(0, semi));
    auto eq = pair.find('=');
    if (eq == std::string_view::npos) return;
    std::string name(trim(pair.substr(0, eq)));
    auto value = trim(pair.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    if (name.empty()) return;
    // One origin only, so Domain and Path do not matter; Max-Age<=0 or an empty
    // value is how servers delete a cookie.
    bool expired = value.empty();
    while (semi != std::string_view::npos) {
      auto next = set_cookie.find(';', semi + 1);
      auto attr = lower(trim(set_cookie.substr(semi + 1, next - semi - 1)));
      if (attr.rfind("max-age=", 0) == 0) {
        auto n = attr.substr(8);
        expired =
            expired || n.empty() || n[0] == '-' || n.find_first_not_of('0') == n.npos;
      }
      semi = next;
    }
    if (expired)
      cookies.erase(name);
    else
      cookies[name] = std::string(value);
  }
};

client::client(std::string_view url, tls_options tls)
    : impl_(std::make_unique<impl>(parse_base_url(url), std::move(tls))) {}

client::~client() {
  if (!impl_) return;
  try {
    impl_->shutdown();
  } catch (...) {
    // Closing is best effort; the socket is closed either way.
  }
}

client::client(client&&) noexcept = default;
client& client::operator=(client&&) noexcept = default;

response client::request(std::string_view method, std::string_view path,
                         const nlohmann::json* body, const header_list& extra_headers,
                         std::chrono::milliseconds timeout) {
  auto& d = *impl_;
  auto budget = timeout.count() > 0 ? timeout : d.timeout;
  auto deadline = steady::now() + budget;
  auto req = d.build(method, path, body, extra_headers);
  for (int attempt = 0;; ++attempt) {
    bool fresh = false;
    if (!d.stream || d.stale()) {
      d.connect(deadline, budget);
      fresh = true;
    }
    auto& layer = beast::get_lowest_layer(*d.stream);
    layer.expires_at(deadline);
    auto ec = d.run(
        [&](auto handler) { http::async_write(*d.stream, req, std::move(handler)); });
    http::response_parser<http::string_body> parser;
    parser.body_limit(max_body_bytes);
    if (method == "HEAD") parser.skip(true);
    bool got_some = false;
    if (!ec) {
      layer.expires_at(deadline);
      ec = d.run([&](auto handler) {
        http::async_read(*d.stream, d.buffer, parser, std::move(handler));
      });
      got_some = parser.got_some() || d.buffer.size() > 0;
    }
    if (ec) {
      d.drop();
      // The server may close an idle connection just as we reuse it; nothing was
      // answered, so the request was not processed and sending it again is safe.
      if (!fresh && attempt == 0 && !got_some && ec != beast::error::timeout) continue;
      throw d.failure("request to", ec, budget);
    }

    auto& msg = parser.get();
    response out;
    d.take_head(msg, static_cast<int>(msg.result_int()), out);
    bool keep = parser.keep_alive();
    out.raw = std::move(msg.body());
    if (!out.raw.empty()) {
      auto parsed = nlohmann::json::parse(out.raw, nullptr, false);
      if (!parsed.is_discarded()) out.body = std::move(parsed);
    }
    if (!keep) d.drop();
    return out;
  }
}

response client::download(std::string_view method, std::string_view path,
                          const std::string& file, std::chrono::milliseconds timeout,
                          std::chrono::milliseconds answer_wait,
                          std::chrono::milliseconds idle) {
  auto& d = *impl_;
  auto deadline = steady::now() + timeout;
  auto req = d.build(method, path, nullptr, {});
  std::error_code exists;
  if (std::filesystem::exists(file, exists) || std::filesystem::is_symlink(file, exists))
    throw std::invalid_argument(file + " exists; choose a new file");
  if (!d.stream || d.stale()) d.connect(std::min(deadline, steady::now() + idle), idle);
  auto& layer = beast::get_lowest_layer(*d.stream);
  // Each step has `idle` (the answer's head `answer_wait`) to make progress, and all
  // of them end by `deadline`.
  auto step = [&](std::chrono::milliseconds allowed = std::chrono::milliseconds{0}) {
    layer.expires_at(
        std::min(deadline, steady::now() + (allowed.count() > 0 ? allowed : idle)));
  };
  auto fail = [&](beast::error_code ec) {
    d.drop();
    return d.failure("download from", ec, timeout);
  };
  step();
  auto ec = d.run([&](auto h) { http::async_write(*d.stream, req, std::move(h)); });
  http::response_parser<http::empty_body> head;
  head.body_limit(max_body_bytes);
  if (!ec) {
    step(answer_wait);
    ec = d.run([&](auto h) {
      http::async_read_header(*d.stream, d.buffer, head, std::move(h));
    });
  }
  if (ec) throw fail(ec);
  response out;
  d.take_head(head.get(), static_cast<int>(head.get().result_int()), out);
  if (out.status < 200 || out.status >= 300) {
    // An error: its JSON body, read as request() reads one.
    http::response_parser<http::string_body> rest{std::move(head)};
    step();
    ec =
        d.run([&](auto h) { http::async_read(*d.stream, d.buffer, rest, std::move(h)); });
    if (ec) throw fail(ec);
    out.raw = std::move(rest.get().body());
    auto parsed = nlohmann::json::parse(out.raw, nullptr, false);
    if (!parsed.is_discarded()) out.body = std::move(parsed);
    if (!rest.keep_alive()) d.drop();
    return out;
  }
  // The body goes to FILE.partial as it arrives and becomes FILE once whole.
  auto partial = file + ".partial";
  http::response_parser<http::file_body> body{std::move(head)};
  body.body_limit(boost::none); // the server's copy is as large as its database
  // Private from the first byte (it holds password hashes): 0600, never an existing
  // file, not inherited by children.
  int out_fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out_fd < 0) {
    int err = errno;
    d.drop(); // the body stays unread on this connection
    throw client_error("cannot create " + partial + ": " + std::strerror(err));
  }
  body.get().body().file().native_handle(out_fd);
  while (!ec && !body.is_done()) {
    step();
    ec = d.run(
        [&](auto h) { http::async_read_some(*d.stream, d.buffer, body, std::move(h)); });
  }
  bool keep = body.keep_alive();
  body.get().body().close();
  std::error_code ignored;
  if (ec) {
    std::filesystem::remove(partial, ignored);
    throw fail(ec);
  }
  // On disk before it gets its name, and the name on disk before success is told.
  auto sync = [](const std::string& path, int flags) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    int err = fd < 0 || ::fsync(fd) != 0 ? errno : 0;
    if (fd >= 0) ::close(fd);
    return err;
  };
  if (int err = sync(partial, O_RDONLY); err != 0) {
    std::filesystem::remove(partial, ignored);
    throw client_error("cannot write " + partial + " to disk: " + std::strerror(err));
  }
  // link() never replaces: a FILE made meanwhile by someone else stays theirs.
  if (::link(partial.c_str(), file.c_str()) != 0) {
    int err = errno;
    std::filesystem::remove(partial, ignored);
    throw client_error("cannot name the copy " + file + ": " + std::strerror(err));
  }
  std::filesystem::remove(partial, ignored);
  auto parent = std::filesystem::absolute(file).parent_path().string();
  if (int err = sync(parent, O_RDONLY | O_DIRECTORY); err != 0)
    throw client_error("cannot write the directory " + parent +
                       " to disk: " + std::strerror(err));
  if (!keep) d.drop();
  return out;
}

void client::set_bearer(std::string token) {
  check_header("Authorization", token);
  impl_->bearer = std::move(token);
}

void client::set_csrf(std::string token) {
  check_header("X-CSRF-Token", token);
  impl_->csrf = std::move(token);
}

std::string client::cookie(std::string_view name) const {
  auto it = impl_->cookies.find(name);
  return it == impl_->cookies.end() ? std::string{} : it->second;
}

void client::clear_cookies() {
  impl_->cookies.clear();
}

void client::set_timeout(std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) throw std::invalid_argument("timeout must be positive");
  impl_->timeout = timeout;
}

void client::close() {
  impl_->shutdown();
}

bool client::connected() const {
  return impl_->stream != nullptr;
}

std::size_t client::connections() const {
  return impl_->connections;
}

const base_url& client::url() const {
  return impl_->url;
}

} // namespace parry
