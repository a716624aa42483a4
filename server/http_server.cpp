#include "server/http_server.hpp"

#include <sys/resource.h>

#include <cerrno>
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
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "common/utf8.hpp"

namespace parry {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr std::size_t max_body = 1 << 20;
// Writing an answer: a client that reads nothing is dropped after this.
constexpr auto write_timeout = std::chrono::seconds{30};
// Answer-side bound: an actor that never answers still frees the connection.
constexpr auto api_timeout = std::chrono::seconds{30};

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

class session;

/// A session as held from outside its io_context (by the actor that waits for the
/// api's answer). Members end last to first: the session and the executor, which
/// use the context's services, always before the context itself.
struct session_ref {
  std::shared_ptr<net::io_context> ioc;
  beast::ssl_stream<beast::tcp_stream>::executor_type exec;
  std::shared_ptr<session> self;
};

class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket&& socket, net::ssl::context& ctx, caf::actor_system& sys,
          api_actor api, std::weak_ptr<net::io_context> ioc,
          std::unique_ptr<conn_slot> slot, const http_limits& limits,
          std::shared_ptr<http_stats> stats)
      : stream_(std::move(socket), ctx), sys_(sys), api_(std::move(api)),
        ioc_(std::move(ioc)), slot_(std::move(slot)), limits_(limits),
        stats_(std::move(stats)) {}

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
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    auto r = to_api(req, slot_->source());
    if (!valid_text(r)) {
      ++stats_->bad_requests;
      return write_error(400, "bad_request", "request target or header is not UTF-8");
    }
    // A short-lived actor waits for the api's answer and posts it back to this
    // connection's executor; neither side blocks. It holds the io_context while it
    // lives, so a post after stop() lands in a stopped context, never in a destroyed
    // one. (The session itself holds it weakly: a session waiting in the context
    // must not keep the context alive, or neither is ever freed.) The request
    // goes in as a spawn argument: CAF 0.17.6 dereferences a null tuple pointer when a
    // function-based actor is spawned without arguments (UBSan, init_fun_factory.hpp).
    auto ioc = ioc_.lock();
    if (!ioc) return; // the server is going away
    session_ref ref{std::move(ioc), stream_.get_executor(), shared_from_this()};
    sys_.spawn(
        [api = api_, ref](caf::event_based_actor* a, http_request r) {
          a->request(api, api_timeout, std::move(r))
              .then(
                  [ref](http_response& resp) {
                    net::post(ref.exec,
                              [self = ref.self, resp = std::move(resp)]() mutable {
                                self->write(std::move(resp));
                              });
                  },
                  [ref](caf::error&) {
                    net::post(ref.exec, [self = ref.self] {
                      self->write(http_response{
                          503,
                          R"({"error":{"code":"unavailable","message":"server busy"}})",
                          {},
                          {}});
                    });
                  });
        },
        std::move(r));
  }

  void write_error(int status, const char* code, const char* message) {
    keep_alive_ = false;
    write(http_response{status,
                        std::string{R"({"error":{"code":")"} + code + R"(","message":")" +
                            message + "\"}}",
                        {},
                        {}});
  }

  void write(http_response resp) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(resp.status), version_);
    res->set(http::field::server, "parry");
    res->set(http::field::content_type, "application/json");
    res->set(http::field::cache_control, "no-store");
    res->set("X-Content-Type-Options", "nosniff");
    res->set(http::field::strict_transport_security, "max-age=31536000");
    for (auto& c : resp.set_cookies)
      res->insert(http::field::set_cookie, c);
    for (auto& [name, value] : resp.headers)
      res->set(name, value);
    res->keep_alive(keep_alive_);
    res->body() = std::move(resp.body);
    res->prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(write_timeout);
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

  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  caf::actor_system& sys_;
  api_actor api_;
  std::weak_ptr<net::io_context> ioc_;
  std::unique_ptr<conn_slot> slot_;
  http_limits limits_;
  std::shared_ptr<http_stats> stats_;
  bool keep_alive_ = false;
  unsigned version_ = 11;
};

} // namespace

struct http_server::impl {
  caf::actor_system& sys;
  api_actor api;
  std::string address;
  uint16_t port;
  std::shared_ptr<conn_table> table = std::make_shared<conn_table>();
  /// Shared with the actors that post answers back (see session::on_read).
  std::shared_ptr<net::io_context> ioc = std::make_shared<net::io_context>(1);
  net::ssl::context ssl{net::ssl::context::tls_server};
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
                                        table->limits, table->stats)
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
  auto& ssl = impl_->ssl;
  ssl.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                  net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                  net::ssl::context::no_tlsv1_1);
  ssl.use_certificate_chain_file(cert_file);
  ssl.use_private_key_file(key_file, net::ssl::context::pem);
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
