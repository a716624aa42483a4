#include "bench/server_under_test.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>

namespace parry::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

/// The last `n` lines of a file, for failure reports.
std::string tail(const std::string& path, std::size_t n) {
  std::ifstream in{path};
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (lines.size() > n) lines.erase(lines.begin());
  }
  std::string out;
  for (auto& l : lines)
    out += "    " + l + "\n";
  return out;
}

} // namespace

ingest_caps caps_for(const options& opt) {
  // Reports go round-robin over the bench devices (phases.cpp, make_frames).
  uint64_t per_device = (opt.incidents + opt.bench_sockets - 1) /
                        std::max<std::size_t>(opt.bench_sockets, 1);
  ingest_caps c;
  c.per_device_per_minute =
      static_cast<uint32_t>(std::clamp<uint64_t>(2 * per_device, 600, 1'000'000));
  c.per_second = static_cast<uint32_t>(
      std::clamp<uint64_t>(2 * static_cast<uint64_t>(opt.incidents), 10'000, 10'000'000));
  c.devices = std::max<std::size_t>(opt.bench_sockets + opt.sim_endpoints + 100, 10'000);
  return c;
}

server_under_test::server_under_test(const options& opt)
    : bin_dir_(opt.bin_dir), keep_(opt.keep), caps_(caps_for(opt)),
      passivate_after_(opt.passivate_after),
      gateways_(static_cast<std::size_t>(std::max(opt.gateways, 0))) {
  char tmpl[] = "/tmp/parry-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr)
    throw std::runtime_error("cannot create a temporary directory under /tmp");
  dir_ = tmpl;
}

void server_under_test::start(bool curve, std::chrono::milliseconds ready_within) {
  curve_ = curve;
  // A cheap password hash keeps the login short; warnings only, so the log stays
  // small under load; the flood guard raised so that it does not cap ingest.
  std::ofstream{dir_ / "parryd.toml"}
      << "pbkdf2_iterations = 20000\n"
      << "bus_curve = " << (curve ? "true" : "false") << "\n"
      << "bus_enroll_endpoint = \"tcp://127.0.0.1:*\"\n"
      << "bus_integrator_endpoint = \"tcp://127.0.0.1:*\"\n"
      << "bus_events_endpoint = \"tcp://127.0.0.1:*\"\n"
      << "log_level = \"warn\"\n"
      << "max_incidents_per_minute = " << caps_.per_device_per_minute << "\n"
      << "max_incidents_per_second = " << caps_.per_second << "\n"
      << "max_devices = " << caps_.devices << "\n";
  if (passivate_after_ > 0)
    std::ofstream{dir_ / "parryd.toml", std::ios::app}
        << "device_passivate_after_s = " << passivate_after_ << "\n";
  if (gateways_ > 0)
    std::ofstream{dir_ / "parryd.toml", std::ios::app} << "bus_gateways = " << gateways_
                                                       << "\n";
  auto parryd = bin_dir_ + "/parryd";
  if (::access(parryd.c_str(), X_OK) != 0)
    throw std::runtime_error(parryd + " is not an executable (see --bin-dir)");
  // A second start reads its own ready block, not the first run's: the old log is
  // kept beside it.
  std::error_code ec;
  if (std::filesystem::exists(log_file(), ec))
    std::filesystem::rename(log_file(), log_file() + ".1", ec);
  proc_ = std::make_unique<parry::child_process>(
      std::vector<std::string>{parryd, "--config", (dir_ / "parryd.toml").string(),
                               "--data-dir", (dir_ / "data").string(), "--http-port", "0",
                               "--bus", bus_bind_},
      std::map<std::string, std::string>{{"PARRY_ADMIN_PASSWORD", admin_password}},
      log_file());
  auto rest = proc_->wait_for_line("REST ", ready_within);
  auto bus_line = rest ? proc_->wait_for_line("bus ", 5s) : std::nullopt;
  if (!rest || !bus_line || rest->find("https://") == std::string::npos ||
      bus_line->find("tcp://") == std::string::npos)
    throw std::runtime_error("parryd did not start within " +
                             std::to_string(ready_within.count() / 1000) + " s");
  auto url = rest->substr(rest->find("https://"));
  base_url_ = url.substr(0, url.find("/api/v1"));
  auto trimmed = [](std::string s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
      s.pop_back();
    return s;
  };
  bus_ = trimmed(bus_line->substr(bus_line->find("tcp://")));
  if (curve) {
    auto enroll = proc_->wait_for_line("  enroll tcp", 5s);
    auto key = proc_->wait_for_line("  server key ", 5s);
    if (!enroll || !key) throw std::runtime_error("parryd did not print its CURVE lines");
    enroll_ = trimmed(enroll->substr(enroll->find("tcp://")));
    server_key_ = key->substr(key->find("key ") + 4, 40);
  }
}

server_under_test::~server_under_test() {
  stop();
  // Leaving because something failed: show what the children said about it.
  if (std::uncaught_exceptions() > uncaught_) {
    for (const char* name : {"parryd.log", "agent.log"})
      if (fs::exists(dir_ / name))
        std::cerr << "parry-bench: last lines of " << name << ":\n"
                  << tail((dir_ / name).string(), 15);
  }
  if (!keep_ && !dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

void server_under_test::login() {
  api_ = std::make_unique<parry::client>(
      base_url_, parry::tls_options{(dir_ / "data/tls/cert.pem").string(), false});
  auto r = api_->post("/api/v1/login",
                      json{{"username", "admin"}, {"password", admin_password}});
  if (r.status != 200)
    throw std::runtime_error("login failed: " + std::to_string(r.status) + " " + r.raw);
  auto tok = api_->request("POST", "/api/v1/tokens", nullptr,
                           {{"X-CSRF-Token", r.body["csrf_token"].get<std::string>()}});
  if (tok.status != 201)
    throw std::runtime_error("token failed: " + std::to_string(tok.status) + " " +
                             tok.raw);
  api_->clear_cookies();
  token_ = tok.body["token"].get<std::string>();
  api_->set_bearer(token_);
}

std::unique_ptr<parry::client> server_under_test::another_client() const {
  auto c = std::make_unique<parry::client>(
      base_url_, parry::tls_options{(dir_ / "data/tls/cert.pem").string(), false});
  c->set_bearer(token_);
  return c;
}

json server_under_test::get(const std::string& path) {
  parry::response r;
  try {
    r = api_->get("/api/v1" + path);
  } catch (const parry::client_error& e) {
    if (!running())
      throw std::runtime_error("parryd exited (GET " + path + ": " + e.what() + ")");
    throw;
  }
  if (r.status != 200)
    throw std::runtime_error("GET " + path + " -> " + std::to_string(r.status) + " " +
                             r.raw.substr(0, 200));
  return r.body;
}

int server_under_test::stop() {
  if (!proc_) return -1;
  if (api_) api_->close();
  int status = proc_->stop(SIGTERM);
  proc_.reset();
  return status;
}

namespace {

/// True once `pid` has exited (a zombie counts: it holds no socket).
bool exited(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string stat;
  if (!std::getline(in, stat)) return true;
  auto paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] == 'Z';
}

} // namespace

std::chrono::steady_clock::time_point
server_under_test::kill_and_restart(std::chrono::milliseconds ready_within) {
  if (!proc_) throw std::runtime_error("parryd is not running");
  auto gateways = children_of(proc_->pid());
  if (api_) api_->close();
  proc_->stop(SIGKILL);
  proc_.reset();
  // The gateways end by themselves once parryd is gone (PR_SET_PDEATHSIG); one that
  // does not is killed, or it would keep the bus port from the next parryd.
  if (!poll_until([&] { return std::all_of(gateways.begin(), gateways.end(), exited); },
                  10s)) {
    for (auto g : gateways)
      if (!exited(g)) ::kill(g, SIGKILL);
    throw std::runtime_error("parryd's gateway processes outlived it by 10 s");
  }
  bus_bind_ = bus_; // the agents dial the same port again
  auto started = std::chrono::steady_clock::now();
  start(curve_, ready_within);
  login();
  return started;
}

std::pair<std::size_t, std::vector<std::string>> log_problems(const std::string& path) {
  std::ifstream in{path};
  std::string line;
  std::size_t n = 0;
  std::vector<std::string> examples;
  while (std::getline(in, line)) {
    if (line.find("[warning]") == std::string::npos &&
        line.find("[error]") == std::string::npos &&
        line.find("[critical]") == std::string::npos)
      continue;
    ++n;
    if (examples.size() < 5) examples.push_back(line.substr(0, 200));
  }
  return {n, examples};
}

} // namespace parry::bench
