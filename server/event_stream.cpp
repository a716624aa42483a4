#include "server/event_stream.hpp"

#include <atomic>
#include <charconv>
#include <deque>
#include <optional>
#include <string_view>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <spdlog/spdlog.h>

#include "server/event_hub.hpp"

namespace parry {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;

namespace {

/// The value of query parameter `key` in `target` (no decoding: the values read
/// here are digits and hex), or nullopt.
std::optional<std::string_view> query_value(std::string_view target,
                                            std::string_view key) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  auto rest = target.substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    auto pair = rest.substr(0, amp);
    if (pair.size() > key.size() && pair.substr(0, key.size()) == key &&
        pair[key.size()] == '=')
      return pair.substr(key.size() + 1);
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

class stream_session : public std::enable_shared_from_this<stream_session> {
public:
  stream_session(beast::ssl_stream<beast::tcp_stream>&& stream,
                 std::shared_ptr<event_hub> hub, session_check check,
                 std::shared_ptr<void> hold, event_stream_options opts)
      : ws_(std::move(stream)), hub_(std::move(hub)), check_(std::move(check)),
        hold_(std::move(hold)), opts_(opts), recheck_(ws_.get_executor()) {}

  ~stream_session() {
    if (subscribed_) hub_->unsubscribe(sub_id_);
  }

  void run(http::request<http::string_body> req) {
    // The WebSocket keeps its own time from here: pings, the idle limit.
    beast::get_lowest_layer(ws_).expires_never();
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::seconds{10};
    t.idle_timeout = opts_.idle_timeout;
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "parry"); }));
    ws_.read_message_max(opts_.max_message_in);
    ws_.text(true);
    target_ = std::string{req.target()};
    ws_.async_accept(req, [self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->on_accept();
    });
  }

private:
  void on_accept() {
    std::optional<uint64_t> since;
    if (auto v = query_value(target_, "since")) {
      uint64_t n = 0;
      auto [ptr, err] = std::from_chars(v->data(), v->data() + v->size(), n);
      // A number this server never gave makes the client reload (resync).
      since = err == std::errc{} && ptr == v->data() + v->size() ? n : 0;
    }
    auto epoch = query_value(target_, "epoch").value_or(std::string_view{});
    std::weak_ptr<stream_session> weak = shared_from_this();
    auto exec = ws_.get_executor();
    // The hub's thread counts what it hands over before posting it: a client that
    // falls behind stops receiving at the limit, whatever the io thread's pace.
    auto sink = [weak, exec, behind = behind_,
                 limit = opts_.max_queue_bytes](event_message m) {
      auto size = m->size();
      if (behind->bytes.fetch_add(size) + size > limit) {
        behind->bytes.fetch_sub(size);
        if (!behind->over.exchange(true))
          net::post(exec, [weak] {
            if (auto self = weak.lock()) self->too_slow();
          });
        return;
      }
      net::post(exec, [weak, m = std::move(m)]() mutable {
        if (auto self = weak.lock()) self->enqueue(std::move(m));
      });
    };
    auto sub = hub_->subscribe(since, std::string{epoch}, std::move(sink),
                               opts_.max_queue_bytes);
    if (!sub) return close(websocket::close_code::try_again_later, "too many streams");
    subscribed_ = true;
    sub_id_ = sub->id;
    for (auto& m : sub->first) {
      behind_->bytes += m->size();
      enqueue(std::move(m));
    }
    read();
    arm_recheck();
  }

  /// Clients have nothing to say: what they send is read (so pings and the close
  /// handshake work) and dropped.
  void read() {
    ws_.async_read(in_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->end();
      self->in_.consume(self->in_.size());
      self->read();
    });
  }

  void arm_recheck() {
    recheck_.expires_after(opts_.recheck);
    recheck_.async_wait([weak = weak_from_this()](beast::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->closing_) return;
      self->check_([weak](bool valid) {
        auto self = weak.lock();
        if (!self || self->closing_) return;
        if (valid) return self->arm_recheck();
        ++self->hub_->stats()->closed_session;
        self->close(websocket::close_code::policy_error, "session ended");
      });
    });
  }

  /// A message counted in behind_: written in turn, or uncounted when dropped.
  void enqueue(event_message m) {
    if (closing_) {
      behind_->bytes -= m->size();
      return;
    }
    queue_.push_back(std::move(m));
    if (!writing_) write_next();
  }

  void too_slow() {
    ++hub_->stats()->dropped_slow;
    spdlog::info("events: a client fell {} bytes behind; closed", behind_->bytes.load());
    close(websocket::close_code::try_again_later, "client too slow");
  }

  void write_next() {
    writing_ = true;
    ws_.async_write(net::buffer(*queue_.front()),
                    [self = shared_from_this()](beast::error_code ec, std::size_t) {
                      self->behind_->bytes -= self->queue_.front()->size();
                      self->queue_.pop_front();
                      self->writing_ = false;
                      if (ec) return self->end();
                      if (self->close_pending_) return self->send_close();
                      if (!self->queue_.empty()) self->write_next();
                    });
  }

  /// Ends the stream with `code`: after the write in progress, if any; nothing queued
  /// behind it is sent.
  void close(websocket::close_code code, const char* reason) {
    if (closing_) return;
    closing_ = true;
    unsubscribe(); // the close handshake may take its time (10 s at most)
    close_reason_ = websocket::close_reason{code, reason};
    while (queue_.size() > (writing_ ? 1u : 0u)) {
      behind_->bytes -= queue_.back()->size();
      queue_.pop_back();
    }
    if (writing_)
      close_pending_ = true;
    else
      send_close();
  }

  void send_close() {
    close_pending_ = false;
    ws_.async_close(close_reason_,
                    [self = shared_from_this()](beast::error_code) { self->end(); });
  }

  void end() {
    closing_ = true;
    recheck_.cancel();
    unsubscribe();
  }

  void unsubscribe() {
    if (!subscribed_) return;
    subscribed_ = false;
    hub_->unsubscribe(sub_id_);
  }

  websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws_;
  std::shared_ptr<event_hub> hub_;
  session_check check_;
  std::shared_ptr<void> hold_;
  event_stream_options opts_;
  net::steady_timer recheck_;
  std::string target_;
  beast::flat_buffer in_;
  std::deque<event_message> queue_;
  /// Bytes handed to this stream (posted or queued) and not yet written, shared with
  /// the hub's sink; `over` once it refused one.
  struct backlog {
    std::atomic<std::size_t> bytes{0};
    std::atomic<bool> over{false};
  };
  std::shared_ptr<backlog> behind_ = std::make_shared<backlog>();
  bool writing_ = false;
  bool closing_ = false;
  bool close_pending_ = false;
  websocket::close_reason close_reason_;
  bool subscribed_ = false;
  uint64_t sub_id_ = 0;
};

} // namespace

void start_event_stream(beast::ssl_stream<beast::tcp_stream> stream,
                        http::request<http::string_body> req,
                        std::shared_ptr<event_hub> hub, session_check check,
                        std::shared_ptr<void> hold, event_stream_options opts) {
  std::make_shared<stream_session>(std::move(stream), std::move(hub), std::move(check),
                                   std::move(hold), opts)
      ->run(std::move(req));
}

} // namespace parry
