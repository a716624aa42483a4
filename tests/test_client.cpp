#define BOOST_TEST_MODULE client
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ctl/client.hpp"
#include "ctl/format.hpp"

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

} // namespace

BOOST_AUTO_TEST_SUITE(url)

BOOST_AUTO_TEST_CASE(good_urls) {
  auto u = parry::parse_base_url("https://127.0.0.1:8443");
  BOOST_TEST(u.host == "127.0.0.1");
  BOOST_TEST(u.port == 8443);
  BOOST_TEST(u.prefix == "");
  BOOST_TEST(u.str() == "https://127.0.0.1:8443");

  auto d = parry::parse_base_url("HTTPS://parry.example.org/");
  BOOST_TEST(d.host == "parry.example.org");
  BOOST_TEST(d.port == 443);
  BOOST_TEST(d.prefix == "");

  auto v6 = parry::parse_base_url("https://[::1]:9000/parry/");
  BOOST_TEST(v6.host == "::1");
  BOOST_TEST(v6.port == 9000);
  BOOST_TEST(v6.prefix == "/parry");
  BOOST_TEST(v6.authority() == "[::1]:9000");
  BOOST_TEST(v6.str() == "https://[::1]:9000/parry");
}

BOOST_AUTO_TEST_CASE(bad_urls) {
  auto refused = [](const char* url, std::string_view why) {
    try {
      parry::parse_base_url(url);
    } catch (const std::invalid_argument& e) {
      BOOST_TEST_INFO(url << " -> " << e.what());
      BOOST_TEST(contains(e.what(), why));
      return;
    }
    BOOST_ERROR("accepted " << url);
  };
  refused("127.0.0.1:8443", "missing scheme");
  refused("http://127.0.0.1:8443", "plain http");
  refused("ftp://127.0.0.1", "unsupported scheme");
  refused("https://", "missing host");
  refused("https://:8443", "missing host");
  refused("https://127.0.0.1:", "bad port");
  refused("https://127.0.0.1:84x3", "bad port");
  refused("https://127.0.0.1:0", "out of range");
  refused("https://127.0.0.1:65536", "out of range");
  refused("https://127.0.0.1:123456", "bad port");
  refused("https://user@127.0.0.1", "user info");
  refused("https://127.0.0.1/?x=1", "query");
  refused("https://::1:8443", "brackets");
  refused("https://[::1", "unterminated");
  refused("https://[zz::1]:1", "IPv6");
  refused("https://bad host:1", "bad character");
}

BOOST_AUTO_TEST_CASE(ip_literals) {
  BOOST_TEST(parry::is_ip_literal("127.0.0.1"));
  BOOST_TEST(parry::is_ip_literal("::1"));
  BOOST_TEST(!parry::is_ip_literal("localhost"));
  BOOST_TEST(!parry::is_ip_literal("127.0.0.1.example"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(format)

BOOST_AUTO_TEST_CASE(table_aligns_columns) {
  auto out = parry::ctl::format_table(
      {"ID", "NAME", "STATE"},
      {{"sim-0001", "ws-1", "online"}, {"x", "host-with-long-name", ""}, {"é", "a"}});
  auto lines = lines_of(out);
  BOOST_REQUIRE_EQUAL(lines.size(), 4u);
  BOOST_TEST(lines[0] == "ID        NAME                 STATE");
  BOOST_TEST(lines[1] == "sim-0001  ws-1                 online");
  BOOST_TEST(lines[2] == "x         host-with-long-name");
  // Alignment counts characters, not bytes.
  BOOST_TEST(lines[3] == "é         a");
  BOOST_TEST(out.back() == '\n');
}

BOOST_AUTO_TEST_CASE(table_cells_cannot_drive_the_terminal) {
  auto out = parry::ctl::format_table({"CMD"}, {{"evil\x1b[2J\nnext"}});
  BOOST_TEST(!contains(out, "\x1b"));
  BOOST_TEST(lines_of(out).size() == 2u);
  BOOST_TEST(contains(out, "evil\\x1b[2J\\nnext"));
}

BOOST_AUTO_TEST_CASE(printable_escapes) {
  using parry::ctl::printable;
  BOOST_TEST(printable("plain C:\\x.exe") == "plain C:\\x.exe");
  BOOST_TEST(printable("a\tb\r") == "a\\tb\\r");
  BOOST_TEST(printable("\x7f") == "\\x7f");
  BOOST_TEST(printable("\xff") == "\\xff");       // invalid UTF-8
  BOOST_TEST(printable("\xc2\x9b") == "\\u009b"); // C1 CSI
  BOOST_TEST(printable("inv\u202e"
                       "fdp.exe") == "inv\\u202efdp.exe");
  BOOST_TEST(printable("Grüße") == "Grüße");
}

BOOST_AUTO_TEST_CASE(fields_and_cells) {
  json d{{"id", "sim-1"}, {"online", true},  {"addrs", {"10.0.0.1", "10.0.0.2"}},
         {"n", 6},        {"none", nullptr}, {"empty", ""}};
  using parry::ctl::cell;
  BOOST_TEST(cell(d, "id") == "sim-1");
  BOOST_TEST(cell(d, "online") == "yes");
  BOOST_TEST(cell(d, "addrs") == "10.0.0.1, 10.0.0.2");
  BOOST_TEST(cell(d, "n") == "6");
  BOOST_TEST(cell(d, "none") == "-");
  BOOST_TEST(cell(d, "empty") == "-");
  BOOST_TEST(cell(d, "missing") == "-");
  BOOST_TEST(cell(json::array(), "id") == "-");

  auto out = parry::ctl::format_fields({{"device", "sim-1"}, {"first seen", "t"}});
  BOOST_TEST(out == "device      sim-1\nfirst seen  t\n");
}

BOOST_AUTO_TEST_CASE(query_and_encoding) {
  BOOST_TEST(parry::ctl::percent_encode("inc-7f/a b?") == "inc-7f%2Fa%20b%3F");
  BOOST_TEST(
      parry::ctl::query_string({{"device_id", "sim 1"}, {"state", ""}, {"limit", "5"}}) ==
      "?device_id=sim%201&limit=5");
  BOOST_TEST(parry::ctl::query_string({{"state", ""}}) == "");
}

BOOST_AUTO_TEST_CASE(pretty_json_keeps_server_order) {
  auto out = parry::ctl::pretty_json(R"({"zeta":1,"alpha":{"b":2,"a":3}})");
  BOOST_TEST(out.find("zeta") < out.find("alpha"));
  BOOST_TEST(out.find("\"b\"") < out.find("\"a\""));
  BOOST_TEST(contains(out, "\n  \"alpha\": {"));
  BOOST_TEST(parry::ctl::pretty_json("not json") == "not json");
}

BOOST_AUTO_TEST_CASE(error_lines) {
  parry::response r;
  r.status = 404;
  r.body = json{{"error", {{"code", "not_found"}, {"message", "no incident inc-42"}}}};
  BOOST_TEST(parry::ctl::error_line(r) == "error: not_found: no incident inc-42");
  parry::response bare;
  bare.status = 502;
  bare.raw = "Bad Gateway";
  BOOST_TEST(parry::ctl::error_line(bare) == "error: http_502: Bad Gateway");
}

BOOST_AUTO_TEST_CASE(exit_codes) {
  using parry::ctl::exit_code;
  using parry::ctl::outcome;
  BOOST_TEST(exit_code(outcome::ok) == 0);
  BOOST_TEST(exit_code(outcome::server_error) == 1);
  BOOST_TEST(exit_code(outcome::usage) == 2);
  BOOST_TEST(exit_code(outcome::timeout) == 2);
  BOOST_TEST(exit_code(outcome::connection) == 3);

  using parry::ctl::outcome_for_status;
  BOOST_TEST((outcome_for_status(200) == outcome::ok));
  BOOST_TEST((outcome_for_status(202) == outcome::ok));
  BOOST_TEST((outcome_for_status(401) == outcome::server_error));
  BOOST_TEST((outcome_for_status(409) == outcome::server_error));
  BOOST_TEST((outcome_for_status(500) == outcome::server_error));

  using parry::ctl::outcome_for_action;
  BOOST_TEST(!outcome_for_action(json{{"state", "sent"}, {"final", false}}));
  BOOST_TEST(!outcome_for_action(json{{"state", "queued"}}));
  BOOST_TEST(!outcome_for_action(json()));
  auto done = outcome_for_action(json{{"state", "completed"}, {"final", true}});
  BOOST_TEST((done && *done == outcome::ok));
  auto failed = outcome_for_action(json{{"state", "failed"}});
  BOOST_TEST((failed && *failed == outcome::server_error));
  auto other = outcome_for_action(json{{"state", "cancelled"}, {"final", true}});
  BOOST_TEST((other && *other == outcome::server_error));
}

BOOST_AUTO_TEST_CASE(chain_tree) {
  auto t = [](int s) { return "2026-11-27T21:15:0" + std::to_string(s) + ".000000Z"; };
  json proc_explorer{{"pid", 4100},
                     {"image", "C:\\Windows\\explorer.exe"},
                     {"cmdline", "C:\\Windows\\explorer.exe"}};
  // Deliberately not in time order, one orphan, one cycle.
  json events = json::array({
      {{"id", "e3"},
       {"type", "process_started"},
       {"time", t(3)},
       {"parent_id", "e2"},
       {"key", true},
       {"file", {{"path", "C:\\Users\\a\\invoice.exe"}}},
       {"process",
        {{"pid", 4242},
         {"image", "C:\\Users\\a\\invoice.exe"},
         {"cmdline", "invoice.exe /q"}}}},
      {{"id", "e5"},
       {"type", "network_connection"},
       {"time", t(5)},
       {"parent_id", "e1"},
       {"process", proc_explorer},
       {"detail", "10.0.0.9:443"}},
      {{"id", "e1"},
       {"type", "process_started"},
       {"time", t(1)},
       {"parent_id", ""},
       {"process", proc_explorer}},
      {{"id", "e4"},
       {"type", "file_modified"},
       {"time", t(4)},
       {"parent_id", "e3"},
       {"file", {{"path", "C:\\tmp\\\x1b[31mred.txt"}}}},
      {{"id", "e2"},
       {"type", "file_created"},
       {"time", t(2)},
       {"parent_id", "e1"},
       {"file", {{"path", "C:\\Users\\a\\invoice.exe"}}},
       {"process", proc_explorer}},
      {{"id", "e6"},
       {"type", "registry_set"},
       {"time", t(6)},
       {"parent_id", "gone"},
       {"detail", "Run key"}},
      {{"id", "e8"}, {"type", "loop_b"}, {"time", t(8)}, {"parent_id", "e7"}},
      {{"id", "e7"}, {"type", "loop_a"}, {"time", t(7)}, {"parent_id", "e8"}},
  });
  json incident{{"incident_id", "inc-1"}, {"key_event_id", "e3"}, {"events", events}};
  auto lines = lines_of(parry::ctl::render_chain(incident));
  std::vector<std::string> want{
      t(1) + "  process_started  C:\\Windows\\explorer.exe (pid 4100)",
      t(2) + "  |- file_created  C:\\Users\\a\\invoice.exe  by C:\\Windows\\explorer.exe "
             "(pid 4100)",
      t(3) + "  |  `- [DETECTION] process_started  C:\\Users\\a\\invoice.exe (pid 4242) "
             "invoice.exe /q",
      t(4) + "  |     `- file_modified  C:\\tmp\\\\x1b[31mred.txt",
      t(5) + "  `- network_connection  C:\\Windows\\explorer.exe (pid 4100)  "
             "(10.0.0.9:443)",
      t(6) + "  registry_set  (Run key)",
      t(7) + "  loop_a",
      t(8) + "  `- loop_b",
  };
  BOOST_TEST(lines == want, boost::test_tools::per_element());

  // Without "key": true the key_event_id still marks the detection.
  incident["events"][0].erase("key");
  auto again = parry::ctl::render_chain(incident);
  BOOST_TEST(contains(again, "[DETECTION] process_started"));
  BOOST_TEST(parry::ctl::render_chain(json{{"events", json::array()}}) ==
             "(no events)\n");
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

/// A self-signed certificate for 127.0.0.1 in a temporary directory.
struct test_pki {
  std::filesystem::path dir;
  std::string cert_file;
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;

  test_pki() {
    char tmpl[] = "/tmp/parry-client-test-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    cert_file = (dir / "cert.pem").string();

    key = EVP_EC_gen("P-256");
    BOOST_REQUIRE(key != nullptr);
    cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 4242);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("parry-test"), -1,
                               -1, 0);
    X509_set_issuer_name(cert, name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"},
                              std::pair{NID_basic_constraints, "critical,CA:FALSE"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
      BOOST_REQUIRE(ext != nullptr);
      X509_add_ext(cert, ext, -1);
      X509_EXTENSION_free(ext);
    }
    BOOST_REQUIRE(X509_sign(cert, key, EVP_sha256()) > 0);
    FILE* f = std::fopen(cert_file.c_str(), "w");
    BOOST_REQUIRE(f != nullptr);
    PEM_write_X509(f, cert);
    std::fclose(f);
  }

  ~test_pki() {
    X509_free(cert);
    EVP_PKEY_free(key);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

/// One request as the test server saw it.
struct seen_request {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers; // lower-case names
  std::string body;
};

/// What the test server does with one request.
struct reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body = R"({"ok":true})";
  std::vector<std::pair<std::string, std::string>> headers;
  bool close_after = false; // close the connection without saying so first
  bool silent = false;      // never answer
};

/// A tiny HTTPS/1.1 server on 127.0.0.1, one connection at a time, in its own thread.
class tls_server {
public:
  using handler = std::function<reply(const seen_request&)>;

  tls_server(const test_pki& pki, handler h) : handler_(std::move(h)) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    BOOST_REQUIRE(SSL_CTX_use_certificate(ctx_, pki.cert) == 1);
    BOOST_REQUIRE(SSL_CTX_use_PrivateKey(ctx_, pki.key) == 1);
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    BOOST_REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) ==
                  0);
    BOOST_REQUIRE(::listen(listen_fd_, 8) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    BOOST_REQUIRE(::pipe(wake_) == 0);
    thread_ = std::thread([this] { serve(); });
  }

  ~tls_server() {
    (void)!::write(wake_[1], "x", 1);
    thread_.join();
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
    SSL_CTX_free(ctx_);
  }

  std::string url(const std::string& host = "127.0.0.1") const {
    return "https://" + host + ":" + std::to_string(port_);
  }

  std::vector<seen_request> requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

  int connections() const { return connections_; }

private:
  void serve() {
    while (true) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      // Bounded: a test that forgets to stop the server still ends.
      if (::poll(fds, 2, 20000) <= 0 || fds[1].revents) return;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      timeval tv{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      SSL* ssl = SSL_new(ctx_);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) == 1) {
        ++connections_;
        serve_connection(ssl);
      }
      SSL_free(ssl);
      ::close(fd);
    }
  }

  void serve_connection(SSL* ssl) {
    std::string in;
    char buf[4096];
    while (true) {
      std::size_t end;
      while ((end = in.find("\r\n\r\n")) == std::string::npos) {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) return SSL_shutdown(ssl), void();
        in.append(buf, static_cast<std::size_t>(n));
      }
      seen_request req;
      std::istringstream head(in.substr(0, end));
      std::string line;
      std::getline(head, line);
      std::istringstream first(line);
      first >> req.method >> req.target;
      while (std::getline(head, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string name = line.substr(0, colon);
        for (auto& c : name)
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        req.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
      }
      in.erase(0, end + 4);
      std::size_t length = 0;
      if (auto it = req.headers.find("content-length"); it != req.headers.end())
        length = std::stoul(it->second);
      while (in.size() < length) {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) return;
        in.append(buf, static_cast<std::size_t>(n));
      }
      req.body = in.substr(0, length);
      in.erase(0, length);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        requests_.push_back(req);
      }
      reply r = handler_(req);
      if (r.silent) continue; // the next read returns when the client gives up and closes
      std::string out = "HTTP/1.1 " + std::to_string(r.status) +
                        " X\r\nContent-Type: " + r.content_type +
                        "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n";
      for (const auto& [name, value] : r.headers)
        out += name + ": " + value + "\r\n";
      out += "\r\n" + r.body;
      if (SSL_write(ssl, out.data(), static_cast<int>(out.size())) <= 0 || r.close_after)
        return;
    }
  }

  handler handler_;
  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<seen_request> requests_;
  std::atomic<int> connections_{0};
};

reply route(const seen_request& req) {
  reply r;
  if (req.target == "/api/v1/login") {
    r.body =
        R"({"csrf_token":"csrf-1","user":{"username":"admin","role":"administrator"}})";
    r.headers.emplace_back(
        "Set-Cookie", "parry_session=s-123; Path=/; HttpOnly; Secure; SameSite=Strict");
  } else if (req.target == "/api/v1/logout") {
    r.body = "{}";
    r.headers.emplace_back("Set-Cookie", "parry_session=; Max-Age=0");
  } else if (req.target == "/text") {
    r.content_type = "text/plain";
    r.body = "hello";
  } else if (req.target == "/missing") {
    r.status = 404;
    r.body = R"({"error":{"code":"not_found","message":"no such thing"}})";
  } else if (req.target == "/close-me") {
    r.close_after = true;
  } else if (req.target == "/hang") {
    r.silent = true;
  } else {
    r.body = json{{"ok", true}, {"target", req.target}, {"echo", req.body}}.dump();
  }
  return r;
}

struct tls_fixture {
  tls_fixture() { std::signal(SIGPIPE, SIG_IGN); }
  test_pki pki;
  tls_server server{pki, route};

  parry::tls_options trusted() const { return {pki.cert_file, false}; }
};

std::string header(const seen_request& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? "<none>" : it->second;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(tls, tls_fixture)

BOOST_AUTO_TEST_CASE(verifies_with_ca_and_sends_bearer) {
  parry::client c(server.url(), trusted());
  c.set_bearer("tok-abc");
  auto r = c.get("/api/v1/devices");
  BOOST_TEST(r.status == 200);
  BOOST_TEST(r.ok());
  BOOST_TEST(r.body.value("ok", false));
  BOOST_TEST(r.body.value("target", "") == "/api/v1/devices");
  BOOST_TEST(r.headers["content-type"] == "application/json");
  auto seen = server.requests();
  BOOST_REQUIRE_EQUAL(seen.size(), 1u);
  BOOST_TEST(seen[0].method == "GET");
  BOOST_TEST(header(seen[0], "authorization") == "Bearer tok-abc");
  BOOST_TEST(header(seen[0], "host") == "127.0.0.1:" + server.url().substr(18));
  BOOST_TEST(header(seen[0], "x-csrf-token") == "<none>");
}

BOOST_AUTO_TEST_CASE(keeps_alive_and_handles_session_cookie_and_csrf) {
  parry::client c(server.url(), trusted());
  json creds{{"username", "admin"}, {"password", "pw"}};
  auto login = c.post("/api/v1/login", creds);
  BOOST_TEST(login.status == 200);
  BOOST_TEST(c.cookie("parry_session") == "s-123");
  c.set_csrf(login.body.value("csrf_token", ""));

  json name{{"name", "ci"}};
  auto tok = c.post("/api/v1/tokens", name);
  BOOST_TEST(tok.status == 200);
  c.get("/api/v1/devices");
  c.post("/api/v1/logout", json::object());
  BOOST_TEST(c.cookie("parry_session") == "");

  auto seen = server.requests();
  BOOST_REQUIRE_EQUAL(seen.size(), 4u);
  BOOST_TEST(json::parse(seen[0].body) == creds);
  BOOST_TEST(header(seen[0], "content-type") == "application/json");
  BOOST_TEST(header(seen[0], "cookie") == "<none>");
  BOOST_TEST(header(seen[1], "cookie") == "parry_session=s-123");
  BOOST_TEST(header(seen[1], "x-csrf-token") == "csrf-1");
  BOOST_TEST(json::parse(seen[1].body) == name);
  BOOST_TEST(header(seen[2], "x-csrf-token") == "<none>"); // not on GET
  BOOST_TEST(header(seen[2], "cookie") == "parry_session=s-123");
  // Four requests, one TLS handshake.
  BOOST_TEST(c.connections() == 1u);
  BOOST_TEST(server.connections() == 1);
}

BOOST_AUTO_TEST_CASE(extra_headers_and_non_json_bodies) {
  parry::client c(server.url(), trusted());
  json body{{"type", "isolate"}};
  auto r = c.request("POST", "/api/v1/actions", &body, {{"Idempotency-Key", "k-1"}});
  BOOST_TEST(json::parse(r.body.value("echo", "")) == body);
  BOOST_TEST(header(server.requests().at(0), "idempotency-key") == "k-1");

  auto text = c.get("/text");
  BOOST_TEST(text.status == 200);
  BOOST_TEST(text.body.is_null());
  BOOST_TEST(text.raw == "hello");

  auto missing = c.get("/missing");
  BOOST_TEST(missing.status == 404);
  BOOST_TEST(!missing.ok());
  BOOST_TEST(missing.error_code() == "not_found");
  BOOST_TEST(missing.error_message() == "no such thing");

  BOOST_CHECK_THROW(c.request("GET", "/x", nullptr, {{"X-Evil", "a\r\nInjected: 1"}}),
                    std::invalid_argument);
  BOOST_CHECK_THROW(c.get("no-slash"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(fails_verification_without_the_ca) {
  parry::client c(server.url()); // system trust store does not know our cert
  try {
    c.get("/api/v1/devices");
    BOOST_ERROR("connected to an untrusted server");
  } catch (const parry::client_error& e) {
    BOOST_TEST_INFO(e.what());
    BOOST_TEST(contains(e.what(), "certificate verify failed"));
  }
  BOOST_TEST(!c.connected());
  BOOST_TEST(server.requests().empty());
}

BOOST_AUTO_TEST_CASE(checks_the_host_name) {
  // Same certificate, but "localhost" is not in its SAN (only IP:127.0.0.1).
  parry::client c(server.url("localhost"), trusted());
  try {
    c.get("/api/v1/devices");
    BOOST_ERROR("accepted a certificate for another name");
  } catch (const parry::client_error& e) {
    BOOST_TEST_INFO(e.what());
    BOOST_TEST(contains(e.what(), "mismatch"));
  }
  BOOST_TEST(server.requests().empty());
}

BOOST_AUTO_TEST_CASE(insecure_skips_verification) {
  parry::client c(server.url(), parry::tls_options{"", true});
  BOOST_TEST(c.get("/api/v1/devices").status == 200);
}

BOOST_AUTO_TEST_CASE(missing_ca_file_is_reported) {
  BOOST_CHECK_EXCEPTION(
      parry::client(server.url(), parry::tls_options{(pki.dir / "nope.pem").string()}),
      parry::client_error,
      [](const parry::client_error& e) { return contains(e.what(), "nope.pem"); });
}

BOOST_AUTO_TEST_CASE(reconnects_when_the_server_closed_the_connection) {
  parry::client c(server.url(), trusted());
  BOOST_TEST(c.get("/close-me").status == 200);
  // The server dropped the connection silently; the next request must still work.
  auto r = c.get("/api/v1/devices");
  BOOST_TEST(r.status == 200);
  BOOST_TEST(c.connections() == 2u);
  BOOST_TEST(server.requests().size() == 2u);
}

BOOST_AUTO_TEST_CASE(times_out_and_recovers) {
  parry::client c(server.url(), trusted());
  try {
    c.request("GET", "/hang", nullptr, {}, 300ms);
    BOOST_ERROR("no timeout");
  } catch (const parry::client_error& e) {
    BOOST_TEST_INFO(e.what());
    BOOST_TEST(contains(e.what(), "timed out after 300 ms"));
  }
  BOOST_TEST(!c.connected());
  BOOST_TEST(c.get("/api/v1/devices").status == 200);
}

BOOST_AUTO_TEST_CASE(connection_refused_is_a_client_error) {
  // A port that was just free: bind, read the port, close.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  parry::client c("https://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), trusted());
  BOOST_CHECK_EXCEPTION(
      c.get("/"), parry::client_error,
      [](const parry::client_error& e) { return contains(e.what(), "cannot connect"); });
}

BOOST_AUTO_TEST_SUITE_END()
