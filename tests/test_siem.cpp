#define BOOST_TEST_MODULE siem
#include <boost/test/unit_test.hpp>

// The SIEM exporter of the audit trail: CEF and RFC 5424 formatting of hostile
// records, RFC 5425 framing, the durable cursor, and delivery to an in-test TLS
// syslog receiver on 127.0.0.1 that stops, stalls and comes back. Every wait is a
// bounded poll for a condition.

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>

#include "common/process.hpp"
#include "common/utf8.hpp"
#include "server/siem_export.hpp"
#include "server/tls.hpp"

using namespace parry;
using namespace std::chrono_literals;

namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

namespace {

/// `cef` cut at its unescaped `|`: 7 header fields, then the extension.
std::vector<std::string> cef_fields(const std::string& cef) {
  std::vector<std::string> out(1);
  for (std::size_t i = 0; i < cef.size(); ++i) {
    if (cef[i] == '\\' && i + 1 < cef.size() && out.size() < 8) {
      out.back() += cef.substr(i, 2);
      ++i;
    } else if (cef[i] == '|' && out.size() < 8) {
      out.emplace_back();
    } else {
      out.back() += cef[i];
    }
  }
  return out;
}

/// The seq in a message's structured data, or -1.
int64_t seq_of(const std::string& msg) {
  auto at = msg.find("seq=\"");
  if (at == std::string::npos) return -1;
  return std::stoll(msg.substr(at + 5));
}

/// Polls `p` until it holds or `limit` passes; true if it held.
template <class Pred> bool eventually(Pred p, std::chrono::milliseconds limit = 30s) {
  return poll_until(p, limit);
}

/// An RFC 5425 receiver on 127.0.0.1: TLS with the test's certificate, octet-counted
/// frames parsed and kept. A stalled one completes handshakes and then reads nothing
/// (with a small receive buffer), so what is sent to it stays unacknowledged.
class receiver {
public:
  explicit receiver(const tls_files& tls, uint16_t port = 0, bool stalled = false,
                    const std::string& client_ca = {})
      : stalled_(stalled) {
    ctx_.use_certificate_chain_file(tls.cert);
    ctx_.use_private_key_file(tls.key, ssl::context::pem);
    if (!client_ca.empty()) {
      ctx_.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      ctx_.load_verify_file(client_ca);
      // ensure_certificate makes server certificates (EKU serverAuth); the test
      // takes one as a client's all the same.
      ctx_.set_verify_callback([](bool ok, ssl::verify_context& v) {
        return ok ||
               X509_STORE_CTX_get_error(v.native_handle()) == X509_V_ERR_INVALID_PURPOSE;
      });
    }
    tcp::endpoint ep{net::ip::make_address("127.0.0.1"), port};
    acc_.open(ep.protocol());
    acc_.set_option(tcp::acceptor::reuse_address(true));
    if (stalled) acc_.set_option(net::socket_base::receive_buffer_size(4096));
    acc_.bind(ep);
    acc_.listen();
    port_ = acc_.local_endpoint().port();
    accept();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~receiver() { stop(); }

  uint16_t port() const { return port_; }

  /// Closes the listening socket and every connection (unread bytes reset them).
  void stop() {
    if (!thread_.joinable()) return;
    net::post(ioc_, [this] {
      boost::system::error_code ec;
      acc_.close(ec);
      for (auto& c : conns_)
        c->stream.lowest_layer().close(ec);
    });
    thread_.join();
  }

  /// How many messages carried each seq.
  std::map<int64_t, int> seqs() const {
    std::lock_guard<std::mutex> g{m_};
    std::map<int64_t, int> out;
    for (auto& msg : messages_)
      ++out[seq_of(msg)];
    return out;
  }
  std::vector<std::string> messages() const {
    std::lock_guard<std::mutex> g{m_};
    return messages_;
  }
  int handshakes() const {
    std::lock_guard<std::mutex> g{m_};
    return handshakes_;
  }
  bool bad_frame() const {
    std::lock_guard<std::mutex> g{m_};
    return bad_frame_;
  }

  /// Waits until every seq in [from, to] has arrived.
  bool wait_for(int64_t from, int64_t to, std::chrono::milliseconds limit = 30s) {
    std::unique_lock<std::mutex> lk{m_};
    return cv_.wait_for(lk, limit, [&] {
      std::vector<bool> seen(static_cast<std::size_t>(to - from + 1));
      for (auto& msg : messages_)
        if (auto s = seq_of(msg); s >= from && s <= to)
          seen[static_cast<std::size_t>(s - from)] = true;
      return std::all_of(seen.begin(), seen.end(), [](bool b) { return b; });
    });
  }

private:
  struct conn {
    explicit conn(net::io_context& ioc, ssl::context& ctx) : stream(ioc, ctx) {}
    ssl::stream<tcp::socket> stream;
    std::string buf;
    char chunk[4096];
  };

  void accept() {
    auto c = std::make_shared<conn>(ioc_, ctx_);
    acc_.async_accept(c->stream.lowest_layer(), [this, c](boost::system::error_code ec) {
      if (ec) return;
      conns_.push_back(c);
      c->stream.async_handshake(ssl::stream_base::server,
                                [this, c](boost::system::error_code ec) {
                                  if (ec) return;
                                  {
                                    std::lock_guard<std::mutex> g{m_};
                                    ++handshakes_;
                                  }
                                  if (!stalled_) read(c);
                                });
      accept();
    });
  }

  void read(std::shared_ptr<conn> c) {
    c->stream.async_read_some(net::buffer(c->chunk),
                              [this, c](boost::system::error_code ec, std::size_t n) {
                                if (ec) return;
                                c->buf.append(c->chunk, n);
                                parse(*c);
                                read(c);
                              });
  }

  /// Takes every whole "LEN SP MSG" frame off the front of the buffer.
  void parse(conn& c) {
    for (;;) {
      auto sp = c.buf.find(' ');
      if (sp == std::string::npos) return;
      auto digits = c.buf.substr(0, sp);
      bool number = !digits.empty() && digits.size() < 8 && digits[0] != '0' &&
                    std::all_of(digits.begin(), digits.end(),
                                [](unsigned char d) { return std::isdigit(d) != 0; });
      std::lock_guard<std::mutex> g{m_};
      if (!number) {
        bad_frame_ = true;
        c.buf.clear();
        return;
      }
      auto len = std::stoul(digits);
      if (c.buf.size() < sp + 1 + len) return;
      messages_.push_back(c.buf.substr(sp + 1, len));
      c.buf.erase(0, sp + 1 + len);
      cv_.notify_all();
    }
  }

  bool stalled_;
  net::io_context ioc_;
  ssl::context ctx_{ssl::context::tls_server};
  tcp::acceptor acc_{ioc_};
  uint16_t port_ = 0;
  std::vector<std::shared_ptr<conn>> conns_; // the io thread's only
  std::thread thread_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::string> messages_;
  int handshakes_ = 0;
  bool bad_frame_ = false;
};

/// The server's audit table in a WAL database, written through a connection of its
/// own as the store would.
class audit_db {
public:
  explicit audit_db(const std::string& path) {
    BOOST_REQUIRE(sqlite3_open(path.c_str(), &db_) == SQLITE_OK);
    exec("PRAGMA journal_mode=WAL; CREATE TABLE audit (seq INTEGER PRIMARY KEY, "
         "time INTEGER NOT NULL, actor TEXT, kind TEXT, target TEXT, detail TEXT, "
         "prev_hash TEXT, hash TEXT);");
  }
  ~audit_db() { sqlite3_close(db_); }

  void exec(const std::string& sql) {
    char* err = nullptr;
    auto rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    BOOST_REQUIRE_MESSAGE(rc == SQLITE_OK, (err ? err : "?") << " in " << sql);
  }

  /// Records `from`..`to`, each with `detail_bytes` of detail.
  void add(int64_t from, int64_t to, std::size_t detail_bytes = 20) {
    exec("BEGIN");
    for (auto seq = from; seq <= to; ++seq) {
      auto detail = "ok " + std::string(detail_bytes, 'd');
      exec("INSERT INTO audit VALUES (" + std::to_string(seq) + ", " +
           std::to_string(1700000000000000 + seq) + ", 'alice', 'login', 'alice', '" +
           detail + "', 'p', 'h" + std::to_string(seq) + "')");
    }
    exec("COMMIT");
  }

private:
  sqlite3* db_ = nullptr;
};

struct fixture {
  std::filesystem::path dir;
  tls_files tls;
  siem_options opts;

  fixture() {
    static int n = 0;
    dir = std::filesystem::temp_directory_path() /
          ("parry-siem-" + std::to_string(::getpid()) + "-" + std::to_string(++n));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    tls = ensure_certificate((dir / "tls").string(), {"127.0.0.1"});
    opts.host = "127.0.0.1";
    opts.ca_file = tls.cert;
    opts.db_path = (dir / "parry.db").string();
    opts.cursor_file = (dir / "siem.cursor").string();
    opts.hostname = "parry-test";
    opts.min_backoff = 20ms;
    opts.max_backoff = 200ms;
    opts.io_timeout = 5s;
    opts.ack_timeout = 5s;
    opts.batch = 16;
  }
  ~fixture() { std::filesystem::remove_all(dir); }
};

} // namespace

BOOST_AUTO_TEST_SUITE(formatting)

BOOST_AUTO_TEST_CASE(cef_escapes_hostile_text_where_it_lands) {
  audit_row r;
  r.seq = 42;
  r.time_us = 1700000000123456;
  r.actor = "mallory|x=1\\ y\nz";
  r.kind = "bus|re\\fused\n";
  r.target = std::string("t\0\r\n\xff\xfe=", 7);
  r.detail = "refused: a=b|c\\d\r\nsuser=root";
  r.hash = "abc";
  auto cef = format_cef(r, "0.1|x");
  BOOST_TEST(valid_utf8(cef));
  BOOST_TEST(cef.find('\n') == std::string::npos);
  BOOST_TEST(cef.find('\r') == std::string::npos);
  BOOST_TEST(cef.find('\0') == std::string::npos);
  auto f = cef_fields(cef);
  BOOST_REQUIRE_EQUAL(f.size(), 8u);
  BOOST_TEST(f[0] == "CEF:0");
  BOOST_TEST(f[1] == "Parry");
  BOOST_TEST(f[2] == "parryd");
  BOOST_TEST(f[3] == "0.1\\|x");
  // The header escapes `\` and `|`; a newline cannot be escaped there.
  BOOST_TEST(f[4] == "bus\\|re\\\\fused ");
  BOOST_TEST(f[5] == f[4]); // an unknown kind names itself
  BOOST_TEST(f[6] == "7");  // refused: raised
  auto& ext = f[7];
  BOOST_TEST(ext.rfind("rt=1700000000123 externalId=42 cn1=42 cn1Label=auditSeq ", 0) ==
             0);
  // Extension values escape `\`, `=` and newlines, and keep `|`.
  BOOST_TEST(ext.find(" suser=mallory|x\\=1\\\\ y\\nz ") != std::string::npos);
  BOOST_TEST(ext.find(" act=bus|re\\\\fused\\n ") != std::string::npos);
  BOOST_TEST(ext.find(" cs1=t \\r\\n\xEF\xBF\xBD\xEF\xBF\xBD\\= cs1Label=target") !=
             std::string::npos);
  BOOST_TEST(ext.find(" msg=refused: a\\=b|c\\\\d\\r\\nsuser\\=root") !=
             std::string::npos);
  // Nothing a value holds can start a key: every `=` in values is escaped.
  std::size_t keys = 0;
  for (std::size_t i = 0; i < ext.size(); ++i)
    if (ext[i] == '=' && ext[i - 1] != '\\') ++keys;
  BOOST_TEST(keys == 11u);
}

BOOST_AUTO_TEST_CASE(cef_names_known_kinds_and_bounds_every_field) {
  audit_row r;
  r.seq = 7;
  r.kind = "bus_refused";
  r.actor = std::string(100000, 'a');
  r.detail = std::string(100000, '=') + "tail";
  r.target = std::string(3000, 'x') + "\xC3\xA9";
  auto cef = format_cef(r, "0.1.0");
  auto f = cef_fields(cef);
  BOOST_REQUIRE_EQUAL(f.size(), 8u);
  BOOST_TEST(f[4] == "bus_refused");
  BOOST_TEST(f[5] == "Bus message refused");
  BOOST_TEST(f[6] == "8");
  BOOST_TEST(valid_utf8(cef));
  BOOST_TEST(cef.find("tail") == std::string::npos);
  BOOST_TEST(cef.find("... cs1Label") != std::string::npos);
  // Every field full, every byte escaped: still a frame RFC 5425 says to accept.
  r.actor = r.kind = r.target = r.hash = std::string(100000, '\\');
  auto worst = octet_frame(format_syslog(
      r, syslog_identity{std::string(1000, 'h'), std::string(1000, 'a'), "1"},
      format_cef(r, std::string(1000, '|'))));
  BOOST_TEST(worst.size() <= 8192u);
}

BOOST_AUTO_TEST_CASE(severity_follows_kind_and_outcome) {
  BOOST_TEST(cef_severity("login", "ok") == 3);
  BOOST_TEST(cef_severity("login", "failed: wrong password") == 7);
  BOOST_TEST(cef_severity("login", "refused: locked") == 7);
  BOOST_TEST(cef_severity("transition", "failed: device offline") == 7);
  BOOST_TEST(cef_severity("bus_refused", "bad signature") == 8);
  BOOST_TEST(cef_severity("user_deleted", "ok") == 7);
  BOOST_TEST(cef_severity("something_new", "") == 5);
}

BOOST_AUTO_TEST_CASE(syslog_header_is_rfc5424_and_the_frame_counts_bytes) {
  audit_row r;
  r.seq = 9;
  r.time_us = 1700000000123456;
  r.kind = "login";
  r.detail = "failed: wrong password";
  r.hash = "h\"]\\";
  syslog_identity id{"host name\xC3\xA9", "parryd", "123"};
  auto msg = format_syslog(r, id, "CEF:0|caf\xC3\xA9");
  // facility 13 (log audit) * 8 + warning (4)
  BOOST_TEST(msg == "<108>1 2023-11-14T22:13:20.123456Z host_name__ parryd 123 login "
                    "[parry@32473 seq=\"9\" hash=\"h\\\"\\]\\\\\"] CEF:0|caf\xC3\xA9");
  auto frame = octet_frame(msg);
  BOOST_TEST(frame == std::to_string(msg.size()) + " " + msg);
  BOOST_TEST(octet_frame("\xC3\xA9t\xC3\xA9") == "5 \xC3\xA9t\xC3\xA9");

  r.time_us = -1;
  r.kind = "";
  r.detail = "";
  msg = format_syslog(r, syslog_identity{"", "", ""}, "x");
  BOOST_TEST(msg == "<109>1 - - - - - [parry@32473 seq=\"9\" hash=\"h\\\"\\]\\\\\"] x");
}

BOOST_AUTO_TEST_CASE(options_name_the_bad_key) {
  siem_options o;
  BOOST_TEST(o.validate().find("siem_host") != std::string::npos);
  o.host = "siem.example";
  o.ca_file = "ca.pem";
  o.db_path = "parry.db";
  o.cursor_file = "siem.cursor";
  BOOST_TEST(o.validate().empty());
  o.cert_file = "client.pem";
  BOOST_TEST(o.validate().find("siem_key_file") != std::string::npos);
  BOOST_CHECK_THROW(siem_exporter{o}, std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(cursor, fixture)

BOOST_AUTO_TEST_CASE(cursor_file_round_trips_and_refuses_garbage) {
  BOOST_TEST(read_cursor(opts.cursor_file) == 0);
  write_cursor(opts.cursor_file, 42);
  BOOST_TEST(read_cursor(opts.cursor_file) == 42);
  write_cursor(opts.cursor_file, 43);
  BOOST_TEST(read_cursor(opts.cursor_file) == 43);
  BOOST_TEST(!std::filesystem::exists(opts.cursor_file + ".tmp"));
  std::ofstream{opts.cursor_file} << "forty-two";
  BOOST_CHECK_THROW(read_cursor(opts.cursor_file), std::runtime_error);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(delivery, fixture)

BOOST_AUTO_TEST_CASE(every_record_arrives_across_a_receiver_restart) {
  audit_db db{opts.db_path};
  receiver r1{tls};
  opts.port = r1.port();
  siem_exporter x{opts};
  x.start();
  // Rows arrive while the exporter runs, a hostile one among them.
  for (int64_t seq = 1; seq <= 30; seq += 10) {
    db.add(seq, seq + 9);
    x.notify();
  }
  db.exec("INSERT INTO audit VALUES (31, 1700000000000031, NULL, 'x|y', 42, "
          "CAST(X'66ff0a3d7c5c' AS BLOB), NULL, NULL)");
  x.notify();
  BOOST_REQUIRE(r1.wait_for(1, 31));
  BOOST_REQUIRE(eventually([&] { return x.stats().cursor == 31; }));

  // The receiver goes away; records keep coming.
  auto port = r1.port();
  r1.stop();
  db.add(32, 80);
  x.notify();
  BOOST_REQUIRE(eventually([&] { return x.stats().connect_failures > 0; }));
  BOOST_TEST(x.stats().cursor < 80);
  BOOST_TEST(read_cursor(opts.cursor_file) < 80);

  receiver r2{tls, port};
  db.add(81, 100);
  x.notify();
  BOOST_REQUIRE(r2.wait_for(32, 100));
  BOOST_REQUIRE(eventually([&] { return x.stats().cursor == 100; }));
  BOOST_TEST(read_cursor(opts.cursor_file) == 100);
  BOOST_TEST(x.stats().acknowledged == 100u);
  BOOST_TEST(eventually([&] { return x.stats().backlog == 0; }));
  x.stop();

  BOOST_TEST(!r1.bad_frame());
  BOOST_TEST(!r2.bad_frame());
  auto all = r1.messages();
  for (auto& m : r2.messages())
    all.push_back(m);
  std::map<int64_t, int> seen;
  for (auto& m : all) {
    BOOST_TEST(valid_utf8(m));
    BOOST_TEST(m.find('\n') == std::string::npos);
    BOOST_TEST(m.find("CEF:0|Parry|parryd|0.1.0|") != std::string::npos);
    ++seen[seq_of(m)];
  }
  for (int64_t seq = 1; seq <= 100; ++seq)
    BOOST_TEST(seen[seq] >= 1, "seq " << seq << " never arrived");
  auto hostile =
      std::find_if(all.begin(), all.end(), [](auto& m) { return seq_of(m) == 31; });
  BOOST_REQUIRE(hostile != all.end());
  BOOST_TEST(hostile->find("|x\\|y|x\\|y|5|") != std::string::npos);
  BOOST_TEST(hostile->find(" suser= act=x|y cs1=42 ") != std::string::npos);
  BOOST_TEST(hostile->find(" msg=f\xEF\xBF\xBD\\n\\=|\\\\") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(unacknowledged_records_are_resent_after_a_stalled_receiver_dies) {
  audit_db db{opts.db_path};
  // Far more than a 4 KiB receive window and the sender's buffers can hold.
  db.add(1, 300, 4000);
  opts.io_timeout = 1s;
  opts.ack_timeout = 1s;
  auto stalled = std::make_unique<receiver>(tls, 0, true);
  auto port = stalled->port();
  opts.port = port;
  siem_exporter x{opts};
  x.start();
  // It gives up on the stalled connection and comes back to it with records sent
  // before.
  BOOST_REQUIRE(eventually([&] { return x.stats().resent > 0; }));
  stalled.reset();
  BOOST_REQUIRE(eventually([&] { return x.stats().connect_failures > 0; }));
  // No connection: the cursor stands where the acknowledgements left it.
  int64_t acked = x.stats().cursor;
  BOOST_TEST(acked < 300);
  BOOST_TEST(read_cursor(opts.cursor_file) == acked);

  receiver r{tls, port};
  BOOST_REQUIRE(r.wait_for(acked + 1, 300));
  BOOST_REQUIRE(eventually([&] { return x.stats().cursor == 300; }));
  BOOST_TEST(read_cursor(opts.cursor_file) == 300);
  x.stop();
  // Sent again from the first unacknowledged record on, nothing before it.
  auto seen = r.seqs();
  BOOST_TEST(seen.begin()->first == acked + 1);
}

BOOST_AUTO_TEST_CASE(a_receiver_with_an_untrusted_certificate_gets_nothing) {
  audit_db db{opts.db_path};
  db.add(1, 5);
  receiver r{tls};
  opts.port = r.port();
  opts.ca_file = ensure_certificate((dir / "other").string()).cert;
  siem_exporter x{opts};
  x.start();
  BOOST_REQUIRE(eventually([&] { return x.stats().tls_failures >= 2; }));
  x.stop();
  BOOST_TEST(x.stats().acknowledged == 0u);
  BOOST_TEST(x.stats().sent == 0u);
  BOOST_TEST(x.stats().cursor == 0);
  BOOST_TEST(x.stats().backlog == 5);
  BOOST_TEST(x.stats().last_error().find("certificate") != std::string::npos,
             x.stats().last_error());
  BOOST_TEST(!std::filesystem::exists(opts.cursor_file));
  BOOST_TEST(r.messages().empty());
}

BOOST_AUTO_TEST_CASE(a_receiver_that_wants_a_client_certificate_takes_only_that) {
  audit_db db{opts.db_path};
  db.add(1, 5);
  auto client = ensure_certificate((dir / "client").string());
  receiver r{tls, 0, false, client.cert};
  opts.port = r.port();
  {
    // TLS 1.3: our handshake ends before the receiver refuses; nothing may count as
    // delivered on that connection.
    siem_exporter x{opts};
    x.start();
    BOOST_REQUIRE(eventually([&] { return x.stats().tls_failures >= 2; }));
    x.stop();
    BOOST_TEST(x.stats().acknowledged == 0u);
    BOOST_TEST(x.stats().sent == 0u);
    BOOST_TEST(!std::filesystem::exists(opts.cursor_file));
  }
  opts.cert_file = client.cert;
  opts.key_file = client.key;
  siem_exporter x{opts};
  x.start();
  BOOST_REQUIRE(r.wait_for(1, 5));
  BOOST_REQUIRE(eventually([&] { return x.stats().cursor == 5; }));
  BOOST_TEST(x.stats().tls_failures == 0u);
}

BOOST_AUTO_TEST_CASE(the_cursor_survives_a_restart_of_the_exporter) {
  audit_db db{opts.db_path};
  receiver r{tls};
  opts.port = r.port();
  db.add(1, 40);
  {
    siem_exporter x{opts};
    x.start();
    BOOST_REQUIRE(r.wait_for(1, 40));
    BOOST_REQUIRE(eventually([&] { return x.stats().cursor == 40; }));
  }
  BOOST_TEST(read_cursor(opts.cursor_file) == 40);
  db.add(41, 60);
  siem_exporter x{opts};
  x.start();
  BOOST_REQUIRE(r.wait_for(41, 60));
  BOOST_REQUIRE(eventually([&] { return x.stats().cursor == 60; }));
  x.stop();
  BOOST_TEST(x.stats().sent == 20u);
  BOOST_TEST(x.stats().resent == 0u);
  for (auto& [seq, n] : r.seqs())
    BOOST_TEST(n == 1, "seq " << seq << " arrived " << n << " times");
  BOOST_TEST(r.seqs().size() == 60u);
}

BOOST_AUTO_TEST_CASE(notify_wakes_an_idle_exporter) {
  audit_db db{opts.db_path};
  receiver r{tls};
  opts.port = r.port();
  opts.poll = 1h; // only notify() can bring these records in time
  siem_exporter x{opts};
  x.start();
  for (int64_t seq = 1; seq <= 9; seq += 3) {
    db.add(seq, seq + 2);
    x.notify();
    BOOST_REQUIRE(r.wait_for(seq, seq + 2));
    BOOST_REQUIRE(eventually([&] { return x.stats().cursor == seq + 2; }));
  }
  x.stop(); // in an hour-long idle wait: prompt all the same
  BOOST_TEST(x.stats().acknowledged == 9u);
}

BOOST_AUTO_TEST_CASE(stop_is_prompt_in_a_long_back_off) {
  audit_db db{opts.db_path};
  db.add(1, 1);
  // A port nobody listens on: bind one, note it, close it.
  uint16_t port;
  {
    receiver gone{tls};
    port = gone.port();
  }
  opts.port = port;
  opts.min_backoff = 1h;
  opts.max_backoff = 1h;
  siem_exporter x{opts};
  x.start();
  BOOST_REQUIRE(eventually([&] { return x.stats().connect_failures == 1; }));
  x.stop(); // would take an hour if the back-off slept blindly
  BOOST_TEST(x.stats().connect_failures == 1u);
  BOOST_TEST(x.stats().last_error().find("cannot connect") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
