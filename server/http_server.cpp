#include "server/http_server.hpp"

#include <sys/resource.h>

#include <cerrno>
#include <filesystem>
#include <thread>
#include <unordered_map>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "common/utf8.hpp"
#include "server/event_hub.hpp"
#include "server/event_stream.hpp"
#include "server/web_assets.hpp"

namespace parry {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace {

constexpr std::size_t max_body = 1 << 20;
// Writing an answer: a client that reads nothing is dropped after this.
constexpr auto write_timeout = std::chrono::seconds{30};
// Answer-side bound: an actor that never answers still frees the connection.
constexpr auto api_timeout = std::chrono::seconds{30};

/// An error answer's body; `code` and `message` are constants without quotes.
std::string error_body(const char* code, const char* message) {
  return std::string{R"({"error":{"code":")"} + code + R"(","message":")" + message +
         "\"}}";
}

/// On every answer: the console's pages run only their own scripts and styles, are
/// never framed, and leak no address to elsewhere.
template <class Response> void set_security_headers(Response& res) {
  res.set(http::field::server, "parry");
  res.set("X-Content-Type-Options", "nosniff");
  res.set(http::field::strict_transport_security, "max-age=31536000");
  res.set("Content-Security-Policy",
          "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' "
          "data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'");
  res.set("X-Frame-Options", "DENY");
  res.set("Referrer-Policy", "no-referrer");
  res.set("Cross-Origin-Opener-Policy", "same-origin");
  res.set("Cross-Origin-Resource-Policy", "same-origin");
}

std::string header_value(const http::request<http::string_body>& req,
                         beast::string_view name) {
  auto i = req.find(name);
  return i == req.end() ? std::string{} : std::string{i->value()};
}

std::string session_cookie(const std::string& cookies) {
  static const std::string key = "parry_session=";
  std::size_t pos = 0;
  while (pos < cookies.size()) {
    while (pos < cookies.size() && (cookies[pos] == ' ' || cookies[pos] == ';'))
      ++pos;
    auto end = cookies.find(';', pos);
    if (end == std::string::npos) end = cookies.size();
    if (cookies.compare(pos, key.size(), key) == 0)
      return cookies.substr(pos + key.size(), end - pos - key.size());
    pos = end;
  }
  return {};
}

http_request to_api(const http::request<http::string_body>& req,
                    const std::string& source) {
  http_request out;
  out.source = source;
  out.method = std::string{req.method_string()};
  out.target = std::string{req.target()};
  out.body = req.body();
  auto authz = header_value(req, "Authorization");
  if (authz.rfind("Bearer ", 0) == 0) out.bearer = authz.substr(7);
  out.session = session_cookie(header_value(req, "Cookie"));
  out.csrf = header_value(req, "X-CSRF-Token");
  out.idempotency_key = header_value(req, "Idempotency-Key");
  return out;
}

/// The request's target and the headers the api reads are UTF-8 (percent-decoding is
/// checked again by the api).
bool valid_text(const http_request& r) {
  return valid_utf8(r.method) && valid_utf8(r.target) && valid_utf8(r.bearer) &&
         valid_utf8(r.session) && valid_utf8(r.csrf) && valid_utf8(r.idempotency_key);
}

/// Where a server's connections are counted, shared by its sessions; touched only on
/// the io thread.
struct conn_table {
  http_limits limits;
  std::shared_ptr<http_stats> stats;
  std::size_t open = 0;
  std::unordered_map<std::string, std::size_t> per_source;
};

/// One connection's place in the table, given back when the session ends.
class conn_slot {
public:
  conn_slot(std::shared_ptr<conn_table> t, std::string source)
      : table_(std::move(t)), source_(std::move(source)) {
    ++table_->open;
    ++table_->per_source[source_];
    table_->stats->open = table_->open;
  }
  ~conn_slot() {
    --table_->open;
    if (auto i = table_->per_source.find(source_); i != table_->per_source.end())
      if (--i->second == 0) table_->per_source.erase(i);
    table_->stats->open = table_->open;
  }
  conn_slot(const conn_slot&) = delete;
  conn_slot& operator=(const conn_slot&) = delete;
  const std::string& source() const { return source_; }

private:
  std::shared_ptr<conn_table> table_;
  std::string source_;
};

/// What waits for the api's answer, held from outside the io_context (by the actor
/// that waits). Members end last to first: the callback (which may hold a session)
/// and the executor, which use the context's services, always before the context.
struct api_waiter {
  std::shared_ptr<net::io_context> ioc;
  net::any_io_executor exec;
  std::function<void(http_response)> done;
};

/// Asks the api to answer `r` and calls `done` with the answer on `exec`; neither
/// side blocks. The waiting actor holds the io_context while it lives, so a post after
/// stop() lands in a stopped context, never in a destroyed one. The request goes in as
/// a spawn argument: CAF 0.17.6 dereferences a null tuple pointer when a
/// function-based actor is spawned without arguments (UBSan, init_fun_factory.hpp).
void ask_api(caf::actor_system& sys, const api_actor& api, api_waiter w, http_request r,
             caf::timespan timeout = api_timeout) {
  // `done` (and the session it holds) moves into the posted handler: only the io
  // thread ever drops the last reference to a session, and its connection slot.
  auto waiter = std::make_shared<api_waiter>(std::move(w));
  auto answer = [waiter](http_response resp) {
    net::post(waiter->exec,
              [done = std::move(waiter->done), resp = std::move(resp)]() mutable {
                done(std::move(resp));
              });
  };
  sys.spawn(
      [api, answer, timeout](caf::event_based_actor* a, http_request r) {
        // Answered once, then done: by the api, by the timeout, or at once when the
        // api ends (a shutdown), which drops the answers it owed without a word.
        auto once = std::make_shared<bool>(false);
        auto reply = [a, answer, once](http_response resp) {
          if (*once) return;
          *once = true;
          answer(std::move(resp));
          a->quit();
        };
        auto busy = [reply] {
          reply(http_response{503, error_body("unavailable", "server busy"), {}, {}, {}});
        };
        a->monitor(api);
        a->set_down_handler([busy](caf::down_msg&) { busy(); });
        a->request(api, timeout, std::move(r))
            .then([reply](http_response& resp) { reply(std::move(resp)); },
                  [busy](caf::error&) { busy(); });
      },
      std::move(r));
}

/// What the HTTPS front end serves besides the api.
struct extras {
  std::shared_ptr<event_hub> events;
  std::shared_ptr<const web_assets> console;
  /// Told every answer's route, status and latency (may be empty).
  request_observer observe;
  route_labeler label;
  /// The OpenAPI description served at /api/v1/openapi.yaml (may be null).
  std::shared_ptr<const std::string> openapi;
};

/// A server context with `cert_file` (chain) and its key, TLS 1.2 and up. Throws
/// std::runtime_error when either cannot be read or the key does not match.
std::shared_ptr<net::ssl::context> tls_context(const std::string& cert_file,
                                               const std::string& key_file) {
  auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_server);
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                   net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                   net::ssl::context::no_tlsv1_1);
  beast::error_code ec;
  ctx->use_certificate_chain_file(cert_file, ec);
  if (ec) throw std::runtime_error("TLS certificate " + cert_file + ": " + ec.message());
  ctx->use_private_key_file(key_file, net::ssl::context::pem, ec);
  if (ec) throw std::runtime_error("TLS key " + key_file + ": " + ec.message());
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
    throw std::runtime_error("TLS key " + key_file + " does not match " + cert_file);
  return ctx;
}

class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket&& socket, std::shared_ptr<net::ssl::context> ctx,
          caf::actor_system& sys, api_actor api, std::weak_ptr<net::io_context> ioc,
          std::unique_ptr<conn_slot> slot, const http_limits& limits,
          std::shared_ptr<http_stats> stats, extras more)
      : ctx_(std::move(ctx)), stream_(std::move(socket), *ctx_), sys_(sys),
        api_(std::move(api)), ioc_(std::move(ioc)), slot_(std::move(slot)),
        limits_(limits), stats_(std::move(stats)), more_(std::move(more)) {}

  void run() {
    net::dispatch(stream_.get_executor(),
                  [self = shared_from_this()] { self->handshake(); });
  }

private:
  void handshake() {
    beast::get_lowest_layer(stream_).expires_after(limits_.handshake_timeout);
    stream_.async_handshake(net::ssl::stream_base::server,
                            [self = shared_from_this()](beast::error_code ec) {
                              if (!ec) self->read();
                            });
  }

  void read() {
    parser_.emplace();
    parser_->body_limit(max_body);
    parser_->header_limit(16 * 1024);
    beast::get_lowest_layer(stream_).expires_after(limits_.idle_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream) {
      close();
      return;
    }
    if (ec) {
      if (ec == http::error::body_limit)
        return write_error(413, "payload_too_large", "request body over 1 MiB");
      if (ec == http::error::header_limit)
        return write_error(431, "headers_too_large", "request headers over 16 KiB");
      if (ec.category() == http::make_error_code(http::error::bad_method).category())
        return write_error(400, "bad_request", "malformed HTTP request");
      if (ec != beast::error::timeout && ec != net::error::operation_aborted &&
          ec != net::ssl::error::stream_truncated)
        spdlog::debug("http: read: {}", ec.message());
      return;
    }
    auto req = parser_->release();
    started_ = std::chrono::steady_clock::now();
    route_ = "unmatched";
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    head_ = req.method() == http::verb::head;
    auto r = to_api(req, slot_->source());
    if (!valid_text(r)) {
      ++stats_->bad_requests;
      return write_error(400, "bad_request", "request target or header is not UTF-8");
    }
    auto path = std::string_view{r.target}.substr(0, r.target.find('?'));
    if (path.substr(0, 5) != "/api/" && more_.console) {
      route_ = "console";
      return serve_file(req, path);
    }
    if (path == "/api/v1/openapi.yaml" && more_.openapi) {
      route_ = "GET /openapi.yaml";
      return serve_openapi(req);
    }
    if (path == "/api/v1/events" && more_.events && websocket::is_upgrade(req))
      return upgrade(std::move(req), std::move(r));
    if (more_.label) route_ = more_.label(r.method, r.target);
    auto ioc = ioc_.lock();
    if (!ioc) return; // the server is going away
    // A backup answers once the copy is made: the api's own bound is longer.
    auto wait = r.method == "POST" && path == "/api/v1/backup"
                    ? caf::timespan{backup_timeout + std::chrono::minutes{1}}
                    : caf::timespan{api_timeout};
    ask_api(sys_, api_,
            {std::move(ioc), stream_.get_executor(),
             [self = shared_from_this()](http_response resp) {
               self->write(std::move(resp));
             }},
            std::move(r), wait);
  }

  /// The console's files: GET and HEAD only, from memory, revalidated by ETag.
  void serve_file(const http::request<http::string_body>& req, std::string_view path) {
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      http_response r{405, error_body("method_not_allowed", "use GET"), {}, {}, {}};
      r.headers["Allow"] = "GET, HEAD";
      return write(std::move(r));
    }
    auto file = more_.console->find(path);
    if (!file) return write({404, error_body("not_found", "no such page"), {}, {}, {}});
    auto res =
        std::make_shared<http::response<http::string_body>>(http::status::ok, version_);
    set_security_headers(*res);
    res->set(http::field::content_type, file->content_type);
    res->set(http::field::cache_control, "no-cache");
    res->set(http::field::etag, file->etag);
    if (header_value(req, "If-None-Match") == file->etag) {
      res->result(http::status::not_modified);
    } else if (req.method() == http::verb::get) {
      res->body() = file->body;
    }
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    if (req.method() == http::verb::head) res->content_length(file->body.size());
    send(std::move(res));
  }

  /// GET /api/v1/events with upgrade headers: the api admits it (session, role) as
  /// it would any GET, then the connection becomes the event stream. A browser must
  /// come from this server's own origin (a page elsewhere cannot use the cookie).
  void upgrade(http::request<http::string_body> req, http_request r) {
    auto origin = header_value(req, "Origin");
    auto host = header_value(req, "Host");
    if (!origin.empty() && origin != "https://" + host) {
      keep_alive_ = false;
      return write(
          {403, error_body("forbidden", "event stream from another origin"), {}, {}, {}});
    }
    auto ioc = ioc_.lock();
    if (!ioc) return;
    r.upgrade = true;
    auto check = r;
    check.passive = true;
    ask_api(sys_, api_,
            {std::move(ioc), stream_.get_executor(),
             [self = shared_from_this(), req = std::move(req),
              check = std::move(check)](http_response resp) mutable {
               if (resp.status != 200) return self->write(std::move(resp));
               self->become_stream(std::move(req), std::move(check));
             }},
            std::move(r));
  }

  void become_stream(http::request<http::string_body> req, http_request check) {
    auto ioc = ioc_.lock();
    if (!ioc) return;
    std::weak_ptr<net::io_context> weak_ioc = ioc;
    auto exec = stream_.get_executor();
    // Asked again every few seconds, passively: logout, the idle timeout or a
    // disabled account end the stream too.
    session_check again = [&sys = sys_, api = api_, weak_ioc, exec,
                           check](std::function<void(bool)> answer) {
      auto ioc = weak_ioc.lock();
      if (!ioc) return;
      ask_api(sys, api,
              {std::move(ioc), exec,
               // Only a refusal ends the stream: a busy server (503) is asked again.
               [answer](http_response resp) {
                 answer(resp.status != 401 && resp.status != 403);
               }},
              check);
    };
    std::shared_ptr<void> hold{std::shared_ptr<conn_slot>{std::move(slot_)}};
    start_event_stream(std::move(stream_), std::move(req), more_.events, std::move(again),
                       std::move(hold), limits_.events);
  }

  void write_error(int status, const char* code, const char* message) {
    keep_alive_ = false;
    write(http_response{status, error_body(code, message), {}, {}, {}});
  }

  /// The API's own description: GET and HEAD, for anyone (it holds no data).
  void serve_openapi(const http::request<http::string_body>& req) {
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      http_response r{405, error_body("method_not_allowed", "use GET"), {}, {}, {}};
      r.headers["Allow"] = "GET, HEAD";
      return write(std::move(r));
    }
    http_response r{200, *more_.openapi, {}, {}, {}};
    r.headers["Content-Type"] = "application/yaml";
    write(std::move(r));
  }

  void write(http_response resp) {
    if (!resp.file.empty()) return send_file(std::move(resp));
    observe(resp.status);
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(resp.status), version_);
    set_security_headers(*res);
    res->set(http::field::content_type, "application/json");
    res->set(http::field::cache_control, "no-store");
    for (auto& c : resp.set_cookies)
      res->insert(http::field::set_cookie, c);
    for (auto& [name, value] : resp.headers)
      res->set(name, value);
    res->keep_alive(keep_alive_);
    res->body() = std::move(resp.body);
    res->prepare_payload();
    if (head_) res->body().clear(); // the length stays; a HEAD answer has no body
    send(std::move(res));
  }

  /// The api's answer names a file (a backup): it is opened and removed at once (the
  /// open descriptor keeps it readable), so it never outlives this answer, then sent
  /// with its length. The write may take as long as the file needs at 1 MiB/s.
  void send_file(http_response resp) {
    http::file_body::value_type file;
    beast::error_code ec;
    file.open(resp.file.c_str(), beast::file_mode::scan, ec);
    std::error_code ignored;
    std::filesystem::remove(resp.file, ignored);
    if (ec) {
      spdlog::error("http: cannot open {}: {}", resp.file, ec.message());
      return write({500, error_body("internal", "the file to send is gone"), {}, {}, {}});
    }
    observe(resp.status);
    auto bytes = file.size();
    auto res = std::make_shared<http::response<http::file_body>>(
        static_cast<http::status>(resp.status), version_);
    res->body() = std::move(file);
    set_security_headers(*res);
    res->set(http::field::cache_control, "no-store");
    for (auto& [name, value] : resp.headers)
      res->set(name, value);
    res->keep_alive(keep_alive_);
    res->prepare_payload();
    send(std::move(res), write_timeout + std::chrono::seconds{bytes >> 20});
  }

  /// Tells the observer (metrics) of an answer about to go out.
  void observe(int status) {
    if (more_.observe)
      more_.observe(
          route_, status,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started_)
              .count());
  }

  template <class Body>
  void send(std::shared_ptr<http::response<Body>> res,
            std::chrono::seconds timeout = write_timeout) {
    beast::get_lowest_layer(stream_).expires_after(timeout);
    http::async_write(
        stream_, *res,
        [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
          if (ec) return;
          if (self->keep_alive_)
            self->read();
          else
            self->close();
        });
  }

  void close() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds{5});
    stream_.async_shutdown([self = shared_from_this()](beast::error_code) {});
  }

  /// The certificate this connection was accepted with: kept while it lives, even
  /// after a reload put a new one in place for new connections.
  std::shared_ptr<net::ssl::context> ctx_;
  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  caf::actor_system& sys_;
  api_actor api_;
  std::weak_ptr<net::io_context> ioc_;
  std::unique_ptr<conn_slot> slot_;
  http_limits limits_;
  std::shared_ptr<http_stats> stats_;
  extras more_;
  bool keep_alive_ = false;
  bool head_ = false;
  /// When the request was read, and its route as metrics label it.
  std::chrono::steady_clock::time_point started_;
  std::string route_;
  unsigned version_ = 11;
};

} // namespace

struct http_server::impl {
  caf::actor_system& sys;
  api_actor api;
  std::string address;
  uint16_t port;
  std::shared_ptr<conn_table> table = std::make_shared<conn_table>();
  extras more;
  /// Shared with the actors that post answers back (see session::on_read).
  std::shared_ptr<net::io_context> ioc = std::make_shared<net::io_context>(1);
  /// The certificate for new connections; replaced (on the io thread) by a reload.
  std::shared_ptr<net::ssl::context> ssl;
  tcp::acceptor acceptor{net::make_strand(*ioc)};
  net::steady_timer backoff{acceptor.get_executor()};
  std::chrono::milliseconds backoff_delay{0};
  /// Highest descriptor number a connection may have (limit minus reserve).
  std::size_t max_fd = 0;
  std::thread thread;

  impl(caf::actor_system& s, api_actor a, std::string addr, uint16_t p, http_limits l,
       std::shared_ptr<http_stats> st)
      : sys(s), api(std::move(a)), address(std::move(addr)), port(p) {
    table->limits = l;
    table->stats = std::move(st);
    rlimit rl{};
    auto limit = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                     ? static_cast<std::size_t>(rl.rlim_cur)
                     : std::size_t{1} << 20;
    max_fd = limit > l.fd_reserve ? limit - l.fd_reserve : 0;
  }

  /// Decides whether a fresh connection may stay; counts the refusal if not.
  bool admit(tcp::socket& socket, const std::string& source) {
    auto& t = *table;
    if (static_cast<std::size_t>(socket.native_handle()) >= max_fd) {
      ++t.stats->refused_fd_reserve;
      return false;
    }
    if (t.open >= t.limits.max_connections) {
      ++t.stats->refused_total_limit;
      return false;
    }
    if (auto i = t.per_source.find(source);
        i != t.per_source.end() && i->second >= t.limits.max_connections_per_source) {
      ++t.stats->refused_source_limit;
      return false;
    }
    return true;
  }

  void accept() {
    acceptor.async_accept(
        net::make_strand(*ioc), [this](beast::error_code ec, tcp::socket socket) {
          if (ec == net::error::operation_aborted) return;
          if (ec == net::error::no_descriptors || ec.value() == ENFILE ||
              ec == net::error::no_buffer_space) {
            // Out of descriptors: the pending connection stays in the backlog. Wait
            // before trying again instead of spinning on the same error.
            ++table->stats->accept_backoffs;
            backoff_delay =
                std::min(std::chrono::milliseconds{1000},
                         std::max(std::chrono::milliseconds{10}, backoff_delay * 2));
            spdlog::warn("http: accept: {}; waiting {} ms", ec.message(),
                         backoff_delay.count());
            backoff.expires_after(backoff_delay);
            backoff.async_wait([this](beast::error_code e) {
              if (!e) accept();
            });
            return;
          }
          backoff_delay = std::chrono::milliseconds{0};
          if (!ec) {
            beast::error_code ep_ec;
            auto ep = socket.remote_endpoint(ep_ec);
            auto source = ep_ec ? std::string{} : ep.address().to_string();
            if (!ep_ec && admit(socket, source)) {
              ++table->stats->accepted;
              std::make_shared<session>(std::move(socket), ssl, sys, api, ioc,
                                        std::make_unique<conn_slot>(table, source),
                                        table->limits, table->stats, more)
                  ->run();
            } else {
              socket.close(ep_ec);
            }
          }
          accept();
        });
  }
};

http_server::http_server(caf::actor_system& sys, api_actor api, std::string address,
                         uint16_t port, std::string cert_file, std::string key_file,
                         http_limits limits, std::shared_ptr<http_stats> stats)
    : impl_(std::make_shared<impl>(sys, std::move(api), std::move(address), port, limits,
                                   std::move(stats))) {
  impl_->ssl = tls_context(cert_file, key_file);
}

void http_server::reload_certificate(const std::string& cert_file,
                                     const std::string& key_file) {
  auto next = tls_context(cert_file, key_file);
  std::weak_ptr<impl> weak = impl_;
  net::post(*impl_->ioc, [weak, next] {
    if (auto m = weak.lock()) m->ssl = next;
  });
}

void http_server::serve_events(std::shared_ptr<event_hub> hub) {
  impl_->more.events = std::move(hub);
}

void http_server::observe_requests(route_labeler label, request_observer observe) {
  impl_->more.label = std::move(label);
  impl_->more.observe = std::move(observe);
}

void http_server::serve_openapi(std::string spec) {
  impl_->more.openapi = std::make_shared<const std::string>(std::move(spec));
}

void http_server::serve_console(web_assets files) {
  impl_->more.console = std::make_shared<const web_assets>(std::move(files));
}

http_server::~http_server() {
  stop();
}

uint16_t http_server::start() {
  auto& a = impl_->acceptor;
  tcp::endpoint ep{net::ip::make_address(impl_->address), impl_->port};
  a.open(ep.protocol());
  a.set_option(net::socket_base::reuse_address(true));
  a.bind(ep);
  a.listen(net::socket_base::max_listen_connections);
  auto port = a.local_endpoint().port();
  impl_->accept();
  impl_->thread = std::thread([this] { impl_->ioc->run(); });
  return port;
}

void http_server::stop() {
  if (!impl_->thread.joinable()) return;
  net::post(impl_->acceptor.get_executor(), [this] {
    impl_->acceptor.close();
    impl_->backoff.cancel();
  });
  impl_->ioc->stop();
  impl_->thread.join();
}

} // namespace parry
