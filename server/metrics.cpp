#include "server/metrics.hpp"

#include <atomic>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace parry {

namespace {

/// Latencies from a millisecond to ten minutes: actions wait for agents, REST
/// answers and commits take milliseconds.
const prometheus::Histogram::BucketBoundaries action_buckets{
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1,     2.5,    5,     10,   30,    60,   300, 600};
const prometheus::Histogram::BucketBoundaries fast_buckets{
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,  0.05,    0.1,    0.25,  0.5,    1,     5};

/// Actions whose `sent` was seen and whose acknowledgement was not yet, to time
/// sent -> acknowledged. Bounded: past the cap an action is simply not timed.
constexpr std::size_t max_timed_actions = 100000;

bool is_final(std::string_view state) {
  return state == "completed" || state == "failed" || state == "expired" ||
         state == "cancelled" || state == "reverted";
}

prometheus::MetricFamily family(std::string name, std::string help,
                                prometheus::MetricType type,
                                std::vector<metric_sample> samples) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  for (auto& s : samples) {
    prometheus::ClientMetric m;
    for (auto& [k, v] : s.labels)
      m.label.push_back({k, v});
    (type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value) = s.value;
    f.metric.push_back(std::move(m));
  }
  return f;
}

} // namespace

prometheus::MetricFamily counter_family(std::string name, std::string help,
                                        std::vector<metric_sample> samples) {
  return family(std::move(name), std::move(help), prometheus::MetricType::Counter,
                std::move(samples));
}

prometheus::MetricFamily gauge_family(std::string name, std::string help,
                                      std::vector<metric_sample> samples) {
  return family(std::move(name), std::move(help), prometheus::MetricType::Gauge,
                std::move(samples));
}

struct server_metrics::impl {
  std::shared_ptr<prometheus::Registry> registry =
      std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Histogram>& http =
      prometheus::BuildHistogram()
          .Name("parry_http_request_duration_seconds")
          .Help("REST requests by route and HTTP status: time from the request read to "
                "the answer written")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& transitions =
      prometheus::BuildCounter()
          .Name("parry_action_transitions_total")
          .Help("Committed action state changes, by action type and the state reached")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& action_latency =
      prometheus::BuildHistogram()
          .Name("parry_action_latency_seconds")
          .Help("Action latencies by type: phase=registered_to_final (to the final "
                "state, labelled state) and phase=sent_to_acknowledged")
          .Register(*registry);
  prometheus::Histogram& commit =
      prometheus::BuildHistogram()
          .Name("parry_store_commit_duration_seconds")
          .Help("Time of one store transaction (a group of writes) including COMMIT")
          .Register(*registry)
          .Add({}, fast_buckets);
  prometheus::Counter& writes = prometheus::BuildCounter()
                                    .Name("parry_store_writes_total")
                                    .Help("Writes committed by the store")
                                    .Register(*registry)
                                    .Add({});
  prometheus::Gauge& batch = prometheus::BuildGauge()
                                 .Name("parry_store_last_batch_writes")
                                 .Help("Writes the store's last transaction committed "
                                       "together")
                                 .Register(*registry)
                                 .Add({});
  prometheus::Histogram& checkpoint =
      prometheus::BuildHistogram()
          .Name("parry_store_checkpoint_duration_seconds")
          .Help("Time of one checkpoint of the store's write-ahead log (copy into the "
                "database file and fsync), made off the commit path")
          .Register(*registry)
          .Add({}, fast_buckets);
  prometheus::Gauge& wal_pages = prometheus::BuildGauge()
                                     .Name("parry_store_wal_pages")
                                     .Help("Pages in the store's write-ahead log at the "
                                           "last checkpoint")
                                     .Register(*registry)
                                     .Add({});
  prometheus::Counter& incidents = prometheus::BuildCounter()
                                       .Name("parry_incidents_stored_total")
                                       .Help("EDR incidents stored")
                                       .Register(*registry)
                                       .Add({});
  prometheus::Counter& incidents_failed =
      prometheus::BuildCounter()
          .Name("parry_incidents_failed_total")
          .Help("EDR incidents from the bus that could not be stored (logged)")
          .Register(*registry)
          .Add({});
  prometheus::Family<prometheus::Counter>& audit =
      prometheus::BuildCounter()
          .Name("parry_audit_records_total")
          .Help("Audit records appended, by kind (login_failed, account_locked, "
                "trigger, transition, bus_refused, ...)")
          .Register(*registry);

  prometheus::Family<prometheus::Counter>& checks =
      prometheus::BuildCounter()
          .Name("parry_password_checks_total")
          .Help("Password checks (logins, confirmations) by kind and outcome: ok, "
                "wrong_password, locked, disabled")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& lockouts =
      prometheus::BuildCounter()
          .Name("parry_lockouts_total")
          .Help("Locks put on by failed password checks, by kind of check")
          .Register(*registry);

  std::mutex m;
  std::unordered_map<std::string, int64_t> sent_at; ///< action id -> µs
  std::vector<metrics_collector> collectors;
};

server_metrics::server_metrics() : impl_(std::make_unique<impl>()) {}
server_metrics::~server_metrics() = default;

void server_metrics::http_request(const std::string& route, int status, double seconds) {
  impl_->http.Add({{"route", route}, {"status", std::to_string(status)}}, fast_buckets)
      .Observe(seconds);
}

void server_metrics::action_transition(const std::string& action_id, const char* type,
                                       const char* state, int64_t created_us,
                                       int64_t time_us) {
  auto& m = *impl_;
  m.transitions.Add({{"type", type}, {"state", state}}).Increment();
  std::string_view s{state};
  int64_t sent = -1;
  {
    std::lock_guard<std::mutex> lock{m.m};
    if (s == "sent") {
      if (m.sent_at.size() < max_timed_actions) m.sent_at[action_id] = time_us;
    } else if (s == "acknowledged" || is_final(s)) {
      auto i = m.sent_at.find(action_id);
      if (i != m.sent_at.end()) {
        if (s == "acknowledged") sent = i->second;
        m.sent_at.erase(i);
      }
    }
  }
  if (sent >= 0 && time_us >= sent)
    m.action_latency
        .Add({{"type", type}, {"phase", "sent_to_acknowledged"}}, action_buckets)
        .Observe(double(time_us - sent) / 1e6);
  if (is_final(s) && created_us > 0 && time_us >= created_us)
    m.action_latency
        .Add({{"type", type}, {"phase", "registered_to_final"}, {"state", state}},
             action_buckets)
        .Observe(double(time_us - created_us) / 1e6);
}

void server_metrics::store_commit(double seconds, std::size_t writes) {
  impl_->commit.Observe(seconds);
  impl_->writes.Increment(double(writes));
  impl_->batch.Set(double(writes));
}

void server_metrics::store_checkpoint(double seconds, int64_t log_pages) {
  impl_->checkpoint.Observe(seconds);
  impl_->wal_pages.Set(double(log_pages));
}

void server_metrics::incident_stored() {
  impl_->incidents.Increment();
}

void server_metrics::incident_failed() {
  impl_->incidents_failed.Increment();
}

void server_metrics::audit_record(const std::string& kind) {
  impl_->audit.Add({{"kind", kind}}).Increment();
}

void server_metrics::password_check(const char* kind, const char* outcome) {
  impl_->checks.Add({{"kind", kind}, {"outcome", outcome}}).Increment();
}

void server_metrics::lockout(const char* kind) {
  impl_->lockouts.Add({{"kind", kind}}).Increment();
}

void server_metrics::add_collector(metrics_collector c) {
  std::lock_guard<std::mutex> lock{impl_->m};
  impl_->collectors.push_back(std::move(c));
}

std::string server_metrics::scrape() const {
  auto families = impl_->registry->Collect();
  std::vector<metrics_collector> collectors;
  {
    std::lock_guard<std::mutex> lock{impl_->m};
    collectors = impl_->collectors;
  }
  for (auto& c : collectors)
    c(families);
  return prometheus::TextSerializer{}.Serialize(families);
}

// -- the listener ---------------------------------------------------------------

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr int max_connections = 16;
constexpr auto request_timeout = std::chrono::seconds{10};

class scrape_session : public std::enable_shared_from_this<scrape_session> {
public:
  scrape_session(tcp::socket s, std::shared_ptr<const server_metrics> metrics,
                 std::shared_ptr<std::atomic<int>> open)
      : stream_(std::move(s)), metrics_(std::move(metrics)), open_(std::move(open)) {}
  ~scrape_session() { --*open_; }

  void read() {
    req_ = {};
    parser_.emplace();
    parser_->header_limit(8192);
    parser_->body_limit(0);
    stream_.expires_after(request_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       if (!ec) self->answer(self->parser_->release());
                     });
  }

private:
  void answer(http::request<http::empty_body> req) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req.version());
    res->keep_alive(req.keep_alive());
    auto path = req.target().substr(0, req.target().find('?'));
    if (path != "/metrics") {
      res->result(http::status::not_found);
      res->set(http::field::content_type, "text/plain");
      res->body() = "not found; metrics are at /metrics\n";
    } else if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res->result(http::status::method_not_allowed);
      res->set(http::field::allow, "GET, HEAD");
    } else {
      res->result(http::status::ok);
      res->set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      res->body() = metrics_->scrape();
    }
    res->set(http::field::cache_control, "no-store");
    res->prepare_payload();
    if (req.method() == http::verb::head) res->body().clear();
    stream_.expires_after(request_timeout);
    http::async_write(
        stream_, *res,
        [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
          if (!ec && res->keep_alive()) self->read();
        });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  http::request<http::empty_body> req_;
  std::shared_ptr<const server_metrics> metrics_;
  std::shared_ptr<std::atomic<int>> open_;
};

} // namespace

struct metrics_http::impl {
  std::shared_ptr<const server_metrics> metrics;
  std::string address;
  uint16_t port;
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::shared_ptr<std::atomic<int>> open = std::make_shared<std::atomic<int>>(0);
  std::thread thread;
  bool stopped = false;

  // Handlers hold `this`, never a shared_ptr: the io_context they wait in is a
  // member, so holding the owner from a handler would keep both alive for ever.
  void accept() {
    acceptor.async_accept(
        net::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
          if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
          if (!ec) {
            // Past the cap a connection is closed at once: scrapes are few.
            if (open->fetch_add(1) >= max_connections) {
              --*open;
            } else {
              std::make_shared<scrape_session>(std::move(s), metrics, open)->read();
            }
          }
          accept();
        });
  }
};

metrics_http::metrics_http(std::shared_ptr<const server_metrics> metrics,
                           std::string address, uint16_t port)
    : impl_(std::make_shared<impl>()) {
  impl_->metrics = std::move(metrics);
  impl_->address = std::move(address);
  impl_->port = port;
}

metrics_http::~metrics_http() {
  stop();
}

uint16_t metrics_http::start() {
  auto& m = *impl_;
  beast::error_code ec;
  auto addr = net::ip::make_address(m.address, ec);
  if (ec) throw std::runtime_error("metrics: bad address " + m.address);
  tcp::endpoint ep{addr, m.port};
  m.acceptor.open(ep.protocol(), ec);
  if (!ec) m.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(ep, ec);
  if (!ec) m.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("metrics: cannot listen on " + m.address + ":" +
                             std::to_string(m.port) + ": " + ec.message());
  auto port = m.acceptor.local_endpoint().port();
  m.accept();
  m.thread = std::thread{[self = impl_] { self->ioc.run(); }};
  return port;
}

void metrics_http::stop() {
  auto& m = *impl_;
  if (m.stopped) return;
  m.stopped = true;
  net::post(m.ioc, [&m] {
    beast::error_code ignored;
    m.acceptor.close(ignored);
    m.ioc.stop();
  });
  if (m.thread.joinable()) m.thread.join();
}

} // namespace parry
