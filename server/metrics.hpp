#pragma once

// parryd's Prometheus metrics (docs/operations.md, "Monitoring"): counters and
// histograms kept as things happen, plus values read at each scrape from the
// counters the server keeps anyway (/stats). prometheus-cpp's core registry holds
// them and writes the text format; the listener is ours (metrics_http below), on an
// address of its own so scraping needs no user session.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace prometheus {
class Registry;
struct MetricFamily;
} // namespace prometheus

namespace parry {

/// Values read at scrape time: called on the listener's thread, so it must only
/// read atomics (or other thread-safe state) and append families.
using metrics_collector = std::function<void(std::vector<prometheus::MetricFamily>&)>;

/// Every method may be called from any thread.
class server_metrics {
public:
  server_metrics();
  ~server_metrics();
  server_metrics(const server_metrics&) = delete;
  server_metrics& operator=(const server_metrics&) = delete;

  /// One REST request answered: its route ("GET /actions/{id}", "console",
  /// "unmatched"), HTTP status and time from the request read to the answer.
  void http_request(const std::string& route, int status, double seconds);
  /// A committed action transition: counts it by type and state and observes the
  /// action's latencies (registered -> final state, sent -> acknowledged).
  /// Times are µs since the epoch.
  void action_transition(const std::string& action_id, const char* type,
                         const char* state, int64_t created_us, int64_t time_us);
  /// A store transaction committed `writes` writes in `seconds`. (The store's
  /// mailbox is not measured: CAF 0.17's inbox size() walks its queue, which UBSan
  /// reports as a bad downcast inside CAF; what waits for the store is the ingest
  /// gauge, reports in flight.)
  void store_commit(double seconds, std::size_t writes);
  /// A checkpoint of the store's log took `seconds`; the log held `log_pages` pages.
  void store_checkpoint(double seconds, int64_t log_pages);
  /// An incident stored.
  void incident_stored();
  /// An incident from the bus that could not be stored (the store logged it).
  void incident_failed();
  /// An audit record appended, by kind (login_failed, account_locked, ...).
  void audit_record(const std::string& kind);

  /// A password check (`kind`: login, password_confirmation) ended with `outcome`: ok,
  /// wrong_password, locked, disabled.
  void password_check(const char* kind, const char* outcome);
  /// A failed check locked an account (or a source, or a session).
  void lockout(const char* kind);

  /// Adds values read at every scrape.
  void add_collector(metrics_collector c);
  /// Everything, in the Prometheus text exposition format 0.0.4.
  std::string scrape() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Helpers for collectors: one family with one sample per label value.
struct metric_sample {
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
};
prometheus::MetricFamily counter_family(std::string name, std::string help,
                                        std::vector<metric_sample> samples);
prometheus::MetricFamily gauge_family(std::string name, std::string help,
                                      std::vector<metric_sample> samples);

/// GET /metrics over plain HTTP on a thread of its own; every other request gets
/// 404 (405 for another method on /metrics). At most 16 connections at once, 10 s
/// to send a request: a stuck scraper cannot hold the listener.
class metrics_http {
public:
  metrics_http(std::shared_ptr<const server_metrics> metrics, std::string address,
               uint16_t port);
  ~metrics_http();
  /// Binds and starts; returns the bound port. Throws std::runtime_error.
  uint16_t start();
  /// Idempotent.
  void stop();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace parry
