// parry-bench: measures a real parryd against the performance envelope of DESIGN.md §9
// (ingest rate, isolate round trip, memory per connected device), each next to a
// baseline taken in the same run on the same machine: a bare ZeroMQ sink for ingest
// and a DEALER/ROUTER ping-pong for the round trip. Only 127.0.0.1 is used.

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "agent-sim/scenario.hpp"
#include "agent-sim/sim_endpoint.hpp"
#include "bus/codec.hpp"
#include "common/process.hpp"
#include "common/time.hpp"
#include "ctl/client.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

namespace bus = parry::bus;
using parry::now_us;

constexpr const char* admin_password = "parry-bench-admin-password";
constexpr const char* sim_prefix = "sim";
/// How often each bench device sends a heartbeat once welcomed: well inside the
/// server's default of 3 missed 5 s intervals.
constexpr std::chrono::milliseconds heartbeat_period{4000};

std::atomic<bool> interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free,
              "flag is set from a signal handler");

extern "C" void on_signal(int) {
  interrupted.store(true);
}

/// Throws when the user asked us to stop, so that cleanup runs on the way out.
void check_interrupt() {
  if (interrupted.load()) throw std::runtime_error("interrupted");
}

double ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

/// Nearest-rank percentile (p in 0..100) of `v`; NaN when empty.
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  auto rank =
      static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

std::string fixed(double x, int digits) {
  if (std::isnan(x)) return "n/a";
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(digits);
  os << x;
  return os.str();
}

/// VmRSS of `pid` in KiB, or -1 when it cannot be read.
long rss_kib(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

/// User + system CPU seconds in a /proc/.../stat file.
double cpu_of_stat(const std::string& path) {
  std::ifstream in{path};
  std::string line;
  std::getline(in, line);
  // The command name may hold spaces: count fields from after its closing parenthesis.
  auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest{line.substr(close + 2)};
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// CPU time `pid` has used so far, in seconds (its threads together).
double cpu_secs(pid_t pid) {
  return cpu_of_stat("/proc/" + std::to_string(pid) + "/stat");
}

/// CPU seconds of the live threads of `pid`, summed per thread name.
std::map<std::string, double> cpu_by_thread(pid_t pid) {
  std::map<std::string, double> out;
  std::error_code ec;
  auto dir = "/proc/" + std::to_string(pid) + "/task";
  for (fs::directory_iterator i{dir, ec}, end; !ec && i != end; i.increment(ec)) {
    std::ifstream comm{i->path() / "comm"};
    std::string name;
    std::getline(comm, name);
    out[name] += cpu_of_stat((i->path() / "stat").string());
  }
  return out;
}

std::string exe_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string{"."} : p.parent_path().string();
}

/// Lets one process hold many sockets (two descriptors per DEALER, plus ZeroMQ's own).
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

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

// -- frames ------------------------------------------------------------------------

/// One encoded bus message as a DEALER sends it.
struct frame_pair {
  std::string header;
  std::string body;
};

class fleet {
public:
  explicit fleet(std::size_t n) : ctx_(1), seq_(n, 0) {
    ctx_.set(zmq::ctxopt::max_sockets, static_cast<int>(n + 64));
    for (std::size_t i = 0; i < n; ++i) {
      char id[32];
      std::snprintf(id, sizeof id, "bench-%05zu", i);
      ids_.emplace_back(id);
      zmq::socket_t d{ctx_, zmq::socket_type::dealer};
      d.set(zmq::sockopt::routing_id, ids_.back());
      d.set(zmq::sockopt::linger, 0);
      // What a simulated agent uses, so both sides of the comparison queue alike.
      d.set(zmq::sockopt::sndhwm, 1000);
      d.set(zmq::sockopt::rcvhwm, 1000);
      dealers_.push_back(std::move(d));
    }
  }

  std::size_t size() const { return dealers_.size(); }

  void connect(const std::string& ep) {
    for (auto& d : dealers_)
      d.connect(ep);
  }
  void disconnect(const std::string& ep) {
    for (auto& d : dealers_)
      d.disconnect(ep);
  }

  /// An encoded message from device `i`, with its next sequence number.
  template <class Body>
  frame_pair frame(std::size_t i, const char* type, const Body& body) {
    bus::header h;
    h.type = type;
    h.msg_id = ++msg_id_;
    h.device_id = ids_[i];
    h.seq = ++seq_[i];
    h.time = now_us();
    return {bus::encode(h), bus::encode(body)};
  }

  /// Sends frames[k] from device k % N, as fast as the sockets take them, interleaving
  /// the devices. Returns how many were sent before `deadline`.
  std::size_t blast(const std::vector<frame_pair>& frames, steady::time_point deadline) {
    const std::size_t n = dealers_.size();
    std::vector<std::size_t> next(n);
    for (std::size_t s = 0; s < n; ++s)
      next[s] = s;
    std::size_t sent = 0;
    std::vector<zmq::pollitem_t> items;
    while (sent < frames.size()) {
      bool progress = false;
      for (std::size_t s = 0; s < n; ++s) {
        // A few per visit keeps the devices interleaved without a syscall per frame.
        for (int burst = 0; burst < 4 && next[s] < frames.size(); ++burst) {
          if (!send(s, frames[next[s]])) break;
          next[s] += n;
          ++sent;
          progress = true;
        }
      }
      if (progress) continue;
      check_interrupt();
      if (steady::now() >= deadline) break;
      // Every socket is at its high-water mark: wait until one can take more.
      items.clear();
      for (std::size_t s = 0; s < n; ++s)
        if (next[s] < frames.size())
          items.push_back({dealers_[s].handle(), 0, ZMQ_POLLOUT, 0});
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds{100});
    }
    return sent;
  }

  /// Non-blocking send of one message from device `i`; false when its queue is full.
  bool send(std::size_t i, const frame_pair& f) {
    auto& d = dealers_[i];
    if (!d.send(zmq::buffer(f.header),
                zmq::send_flags::sndmore | zmq::send_flags::dontwait))
      return false;
    // Once the first part is queued the rest of the message is accepted too.
    (void)d.send(zmq::buffer(f.body), zmq::send_flags::none);
    return true;
  }

  /// Sends `hello` from every device and waits for every `welcome`. Returns how many
  /// devices were welcomed before `timeout`.
  std::size_t greet(std::chrono::milliseconds timeout) {
    for (std::size_t i = 0; i < size(); ++i) {
      bus::hello h;
      h.hostname = ids_[i];
      h.os = "Windows 11 23H2 (parry-bench)";
      h.agent_version = "parry-bench";
      h.addresses = {"10.30." + std::to_string(i / 250) + "." +
                     std::to_string(1 + i % 250)};
      if (!send(i, frame(i, bus::type::hello, h)))
        throw std::runtime_error("cannot queue hello for " + ids_[i]);
    }
    std::vector<bool> welcomed(size(), false);
    std::size_t count = 0;
    auto deadline = steady::now() + timeout;
    std::vector<zmq::pollitem_t> items;
    for (auto& d : dealers_)
      items.push_back({d.handle(), 0, ZMQ_POLLIN, 0});
    std::string why;
    bus::decode_limits lim;
    while (count < size() && steady::now() < deadline) {
      check_interrupt();
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds{100});
      for (std::size_t i = 0; i < size(); ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        std::vector<zmq::message_t> parts;
        zmq::message_t part;
        while (dealers_[i].recv(part, zmq::recv_flags::dontwait)) {
          bool more = part.more();
          parts.push_back(std::move(part));
          if (more) continue;
          if (parts.size() == 2) {
            auto h = bus::decode_header(parts[0].to_string_view(), lim, why);
            if (h && h->type == bus::type::welcome && !welcomed[i]) {
              welcomed[i] = true;
              ++count;
            }
          }
          parts.clear();
        }
      }
    }
    return count;
  }

  /// Restarts the heartbeat schedule of `keep_alive` from now.
  void start_heartbeats() {
    hb_origin_ = steady::now();
    hb_sent_ = 0;
  }

  /// Sends the heartbeats that are due so that every device sends one per `period`,
  /// spread evenly, and the server keeps counting the bench devices as online.
  void keep_alive(std::chrono::milliseconds period) {
    auto elapsed = std::chrono::duration<double>(steady::now() - hb_origin_) /
                   std::chrono::duration<double>(period);
    auto due = static_cast<std::size_t>(elapsed * static_cast<double>(size()));
    for (; hb_sent_ < due; ++hb_sent_) {
      auto i = hb_sent_ % size();
      (void)send(i, frame(i, bus::type::heartbeat, bus::heartbeat{false}));
    }
  }

private:
  zmq::context_t ctx_;
  std::vector<zmq::socket_t> dealers_;
  std::vector<std::string> ids_;
  std::vector<uint64_t> seq_;
  uint64_t msg_id_ = 0;
  steady::time_point hb_origin_ = steady::now();
  std::size_t hb_sent_ = 0;
};

/// A ROUTER on its own thread and context (as if in another process): either counts
/// messages without looking at them (the ingest floor) or echoes them (the round-trip
/// floor).
class loopback_peer {
public:
  enum class mode { count, echo };

  explicit loopback_peer(mode m)
      : mode_(m), ctx_(1), sock_(ctx_, zmq::socket_type::router) {
    // The server's ROUTER settings, so only the work behind the socket differs.
    sock_.set(zmq::sockopt::router_mandatory, 1);
    sock_.set(zmq::sockopt::linger, 0);
    sock_.set(zmq::sockopt::rcvhwm, 100000);
    sock_.set(zmq::sockopt::sndhwm, 100000);
    sock_.bind("tcp://127.0.0.1:*");
    endpoint_ = sock_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { run(); });
  }

  ~loopback_peer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  const std::string& endpoint() const { return endpoint_; }
  uint64_t count() const { return count_.load(); }
  /// When the latest message arrived.
  steady::time_point last() const {
    return steady::time_point{steady::duration{last_.load()}};
  }

private:
  void run() {
    zmq::message_t parts[3];
    while (!stop_) {
      zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds{50});
      if (!(item.revents & ZMQ_POLLIN)) continue;
      for (;;) {
        if (!sock_.recv(parts[0], zmq::recv_flags::dontwait)) break;
        std::size_t n = 1;
        bool more = parts[0].more();
        while (more) {
          zmq::message_t extra;
          auto& dst = n < 3 ? parts[n] : extra;
          (void)sock_.recv(dst, zmq::recv_flags::none);
          more = dst.more();
          ++n;
        }
        if (mode_ == mode::echo && n == 3) {
          sock_.send(parts[0], zmq::send_flags::sndmore);
          sock_.send(parts[1], zmq::send_flags::sndmore);
          sock_.send(parts[2], zmq::send_flags::none);
        }
        last_.store(steady::now().time_since_epoch().count());
        count_.fetch_add(1);
      }
    }
  }

  mode mode_;
  zmq::context_t ctx_;
  zmq::socket_t sock_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> count_{0};
  std::atomic<steady::rep> last_{0};
  std::thread thread_;
};

// -- the server under test ----------------------------------------------------------

struct options {
  std::size_t endpoints = 200;
  std::size_t incidents = 20000;
  std::size_t rounds = 200;
  std::string bin_dir;
  std::string scenarios = "./config/scenarios";
  bool keep = false;
};

/// parryd in a temporary directory, with a logged-in REST client.
class server_under_test {
public:
  explicit server_under_test(const options& opt)
      : bin_dir_(opt.bin_dir), keep_(opt.keep) {
    char tmpl[] = "/tmp/parry-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr)
      throw std::runtime_error("cannot create a temporary directory under /tmp");
    dir_ = tmpl;
  }

  /// Starts parryd and reads its REST URL and bus endpoint from its output.
  void start() {
    // A cheap password hash keeps the login short; warnings only, so the log stays
    // small under load.
    std::ofstream{dir_ / "parryd.toml"} << "pbkdf2_iterations = 20000\n"
                                        << "log_level = \"warn\"\n";
    auto parryd = bin_dir_ + "/parryd";
    if (::access(parryd.c_str(), X_OK) != 0)
      throw std::runtime_error(parryd + " is not an executable (see --bin-dir)");
    proc_ = std::make_unique<parry::child_process>(
        std::vector<std::string>{parryd, "--config", (dir_ / "parryd.toml").string(),
                                 "--data-dir", (dir_ / "data").string(), "--http-port",
                                 "0", "--bus", "tcp://127.0.0.1:*"},
        std::map<std::string, std::string>{{"PARRY_ADMIN_PASSWORD", admin_password}},
        log_file());
    auto rest = proc_->wait_for_line("REST ", 30s);
    auto bus_line = rest ? proc_->wait_for_line("bus ", 5s) : std::nullopt;
    if (!rest || !bus_line || rest->find("https://") == std::string::npos ||
        bus_line->find("tcp://") == std::string::npos)
      throw std::runtime_error("parryd did not start within 30 s");
    auto url = rest->substr(rest->find("https://"));
    base_url_ = url.substr(0, url.find("/api/v1"));
    bus_ = bus_line->substr(bus_line->find("tcp://"));
    while (!bus_.empty() && std::isspace(static_cast<unsigned char>(bus_.back())))
      bus_.pop_back();
  }

  ~server_under_test() {
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

  /// Logs in as the first administrator and switches to a bearer token.
  void login() {
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
    api_->set_bearer(tok.body["token"].get<std::string>());
  }

  /// GET returning the body; throws on anything but 200.
  json get(const std::string& path) {
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

  parry::client& api() { return *api_; }
  pid_t pid() const { return proc_ ? proc_->pid() : -1; }
  bool running() { return proc_ && proc_->running(); }
  const std::string& bus_endpoint() const { return bus_; }
  const fs::path& dir() const { return dir_; }
  std::string log_file() const { return (dir_ / "parryd.log").string(); }

  /// SIGTERM and the exit status (as waitpid gives it), or -1 when already gone.
  int stop() {
    if (!proc_) return -1;
    if (api_) api_->close();
    int status = proc_->stop(SIGTERM);
    proc_.reset();
    return status;
  }

private:
  std::string bin_dir_;
  bool keep_;
  fs::path dir_;
  std::unique_ptr<parry::child_process> proc_;
  std::unique_ptr<parry::client> api_;
  std::string base_url_;
  std::string bus_;
  int uncaught_ = std::uncaught_exceptions();
};

// -- results -------------------------------------------------------------------------

struct figure {
  std::string name;
  std::string value;
  std::string unit;
  std::string baseline;
  std::string target;
};

void print_table(const std::vector<figure>& rows) {
  std::vector<std::string> head{"figure", "value", "unit", "baseline",
                                "DESIGN §9 target"};
  std::size_t w[4] = {head[0].size(), head[1].size(), head[2].size(), head[3].size()};
  for (auto& r : rows) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], r.value.size());
    w[2] = std::max(w[2], r.unit.size());
    w[3] = std::max(w[3], r.baseline.size());
  }
  auto line = [&](const std::string& a, const std::string& b, const std::string& c,
                  const std::string& d, const std::string& e) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "  %-*s  %*s  %-*s  %-*s  %s", static_cast<int>(w[0]),
                  a.c_str(), static_cast<int>(w[1]), b.c_str(), static_cast<int>(w[2]),
                  c.c_str(), static_cast<int>(w[3]), d.c_str(), e.c_str());
    std::string out{buf};
    out.erase(out.find_last_not_of(' ') + 1);
    std::printf("%s\n", out.c_str());
  };
  line(head[0], head[1], head[2], head[3], head[4]);
  line(std::string(w[0], '-'), std::string(w[1], '-'), std::string(w[2], '-'),
       std::string(w[3], '-'), std::string(16, '-'));
  for (auto& r : rows)
    line(r.name, r.value, r.unit, r.baseline, r.target);
}

/// Latency samples of one action type, in milliseconds.
struct action_samples {
  std::vector<double> server; ///< registered -> completed, from the server's clock
  std::vector<double> client; ///< POST sent -> final state seen by polling
  /// Per step between consecutive transitions ("registered->sent", ...), in the
  /// order first seen.
  std::vector<std::pair<std::string, std::vector<double>>> stages;
  std::size_t failures = 0;

  std::vector<double>& stage(const std::string& name) {
    for (auto& [k, v] : stages)
      if (k == name) return v;
    return stages.emplace_back(name, std::vector<double>{}).second;
  }
};

/// Everything one run measures.
struct results {
  std::size_t reports = 0;
  std::size_t events_total = 0;
  double events_per_incident = 0;
  double sink_secs = 0;   ///< first send -> last report counted by the bare ROUTER
  double send_secs = 0;   ///< first send -> last report queued by the bench
  double ingest_secs = 0; ///< first send -> /stats shows every report stored
  std::size_t stored = 0;
  double ingest_cpu = 0;       ///< parryd CPU seconds from first send to all stored
  double rounds_secs = 0;      ///< wall time of the isolate/release rounds
  double rounds_cpu = 0;       ///< parryd CPU seconds during the rounds
  double rounds_agent_cpu = 0; ///< parry-agent CPU seconds during the rounds
  std::vector<double> pong;    ///< DEALER/ROUTER round trips, ms
  std::vector<double> fsync;   ///< 4 KiB overwrite + fdatasync in the data dir, ms
  action_samples isolate, release;
  long rss_start = -1, rss_conn = -1, rss_bench = -1, rss_ingested = -1, rss_sim = -1,
       rss_end = -1;
  json final_stats;
  std::vector<std::string> problems; ///< what did not run as it should
};

/// A counter from GET /stats, 0 when absent.
std::size_t stat_of(const json& stats, const char* key) {
  return stats.is_object() && stats.contains(key) ? stats[key].get<std::size_t>() : 0;
}

/// Polls GET /stats until `pred` holds (every `every`, up to `timeout`), keeping the
/// bench devices alive meanwhile. Returns the last stats and whether `pred` held.
template <class Pred>
std::pair<json, bool> wait_stats(server_under_test& srv, fleet& devices, Pred pred,
                                 std::chrono::milliseconds timeout,
                                 std::chrono::milliseconds every = 50ms) {
  auto deadline = steady::now() + timeout;
  json last;
  for (;;) {
    check_interrupt();
    devices.keep_alive(heartbeat_period);
    try {
      last = srv.get("/stats");
      if (pred(last)) return {last, true};
    } catch (const parry::client_error&) {
      // A slow answer under load: ask again until the deadline.
    }
    if (!srv.running()) throw std::runtime_error("parryd exited");
    if (steady::now() >= deadline) return {last, false};
    std::this_thread::sleep_for(every);
  }
}

/// Open descriptors of `pid` (parryd holds one per accepted bus connection).
std::size_t open_fds(pid_t pid) {
  std::error_code ec;
  std::size_t n = 0;
  for (fs::directory_iterator i{"/proc/" + std::to_string(pid) + "/fd", ec}, end;
       !ec && i != end; i.increment(ec))
    ++n;
  return n;
}

/// Triggers `type` on the detection of `incident_id`, follows it to a final state and
/// records its latencies. Returns false (and why) when it did not complete.
bool run_action(server_under_test& srv, fleet& devices, const std::string& type,
                const std::string& incident_id, action_samples& out, std::string& why) {
  auto t0 = steady::now();
  auto r = srv.api().post("/api/v1/actions", json{{"type", type},
                                                  {"incident_id", incident_id},
                                                  {"target", {{"kind", "detection"}}},
                                                  {"comment", "parry-bench"}});
  if (r.status != 202) {
    why = "POST " + type + " -> " + std::to_string(r.status) + " " + r.raw.substr(0, 200);
    return false;
  }
  auto id = r.body["action"]["action_id"].get<std::string>();
  auto deadline = t0 + 5s;
  json action;
  for (;;) {
    action = srv.get("/actions/" + id)["action"];
    if (action["final"].get<bool>()) break;
    if (steady::now() >= deadline) {
      why = type + " " + id + " not final after 5 s: state " + action["state"].dump();
      return false;
    }
    devices.keep_alive(heartbeat_period);
    std::this_thread::sleep_for(2ms); // tight poll, bounded by the deadline above
  }
  auto seen = steady::now();
  if (action["state"] != "completed") {
    why = type + " " + id + " ended " + action["state"].dump() + ": " +
          action["result"].dump();
    return false;
  }
  std::vector<std::pair<std::string, int64_t>> steps;
  int64_t registered = -1, completed = -1;
  for (auto& t : action["transitions"]) {
    steps.emplace_back(t["state"].get<std::string>(), t["time_us"].get<int64_t>());
    if (steps.back().first == "registered") registered = steps.back().second;
    if (steps.back().first == "completed") completed = steps.back().second;
  }
  if (registered < 0 || completed < 0) {
    why = type + " " + id + " lacks a registered or completed transition";
    return false;
  }
  out.server.push_back(static_cast<double>(completed - registered) / 1000.0);
  out.client.push_back(ms_between(t0, seen));
  for (std::size_t i = 1; i < steps.size(); ++i)
    out.stage(steps[i - 1].first + "->" + steps[i].first)
        .push_back(static_cast<double>(steps[i].second - steps[i - 1].second) / 1000.0);
  return true;
}

/// DEALER/ROUTER ping-pong on loopback with command-sized frames: the bus floor.
std::vector<double> ping_pong(std::size_t rounds) {
  loopback_peer echo{loopback_peer::mode::echo};
  zmq::context_t ctx{1};
  zmq::socket_t d{ctx, zmq::socket_type::dealer};
  d.set(zmq::sockopt::routing_id, "bench-ping");
  d.set(zmq::sockopt::linger, 0);
  d.set(zmq::sockopt::rcvtimeo, 2000);
  d.connect(echo.endpoint());
  bus::header h;
  h.type = bus::type::command;
  h.device_id = "bench-ping";
  bus::command c;
  c.action_id = "act-0123456789abcdef01234567";
  c.type = "isolate";
  c.issued_at = now_us();
  auto hf = bus::encode(h), bf = bus::encode(c);
  std::vector<double> out;
  zmq::message_t in;
  const std::size_t warmup = 20;
  for (std::size_t i = 0; i < rounds + warmup; ++i) {
    check_interrupt();
    auto t0 = steady::now();
    d.send(zmq::buffer(hf), zmq::send_flags::sndmore);
    d.send(zmq::buffer(bf), zmq::send_flags::none);
    for (int part = 0; part < 2; ++part)
      if (!d.recv(in, zmq::recv_flags::none))
        throw std::runtime_error("ping-pong: no echo within 2 s");
    if (i >= warmup) out.push_back(ms_between(t0, steady::now()));
  }
  return out;
}

/// 4 KiB overwrites, each followed by fdatasync, in `dir`: the cost of one durable
/// commit on this disk (the store runs SQLite in WAL mode with synchronous=FULL).
std::vector<double> storage_floor(const fs::path& dir, std::size_t rounds) {
  auto path = (dir / "fsync-probe").string();
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + path);
  std::string block(4096, 'p');
  const std::size_t slots = 64;
  std::vector<double> out;
  bool ok = true;
  // Written once in full, so later writes overwrite like a reused WAL file does.
  for (std::size_t i = 0; i < slots && ok; ++i)
    ok = ::pwrite(fd, block.data(), block.size(), static_cast<off_t>(i * block.size())) >
         0;
  ok = ok && ::fsync(fd) == 0;
  for (std::size_t i = 0; i < rounds && ok; ++i) {
    auto t0 = steady::now();
    auto off = static_cast<off_t>((i % slots) * block.size());
    ok = ::pwrite(fd, block.data(), block.size(), off) > 0 && ::fdatasync(fd) == 0;
    out.push_back(ms_between(t0, steady::now()));
  }
  ::close(fd);
  ::unlink(path.c_str());
  if (!ok) throw std::runtime_error("write or fdatasync failed in " + dir.string());
  return out;
}

std::string stages_summary(const action_samples& s) {
  std::string out;
  for (auto& [name, v] : s.stages)
    out += "    " + name + ": p50 " + fixed(percentile(v, 50), 2) + " ms, p99 " +
           fixed(percentile(v, 99), 2) + " ms, max " + fixed(percentile(v, 100), 2) +
           " ms\n";
  return out;
}

/// Warning and error lines in a spdlog log, with a few examples.
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

/// Pre-encodes `m` incident reports spread over the fleet's devices. The chains come
/// from the same scenario files and instantiation as parry-agent's, one simulated
/// endpoint per bench device, so the bench measures what agents send.
std::vector<frame_pair> make_frames(fleet& devices, std::size_t m,
                                    const std::string& scenario_dir, results& res) {
  auto scenarios = parry::sim::load_scenarios(scenario_dir);
  parry::sim::endpoint_config cfg;
  cfg.id_prefix = "bench";
  // Report ids carry the start time, so reruns against a kept store stay distinct.
  cfg.run_tag = std::to_string(now_us() / 1'000'000);
  auto now = now_us();
  std::vector<parry::sim::sim_endpoint> sims;
  sims.reserve(devices.size());
  for (std::size_t i = 0; i < devices.size(); ++i)
    sims.emplace_back(i, cfg, scenarios, now);
  std::vector<frame_pair> frames;
  frames.reserve(m);
  for (std::size_t k = 0; k < m; ++k) {
    auto i = k % devices.size();
    auto rep = sims[i].next_incident(now);
    res.events_total += rep.events.size();
    frames.push_back(devices.frame(i, bus::type::incident, rep));
  }
  res.reports = m;
  res.events_per_incident =
      static_cast<double>(res.events_total) / static_cast<double>(m);
  return frames;
}

/// The ingest floor: the same frames through the same DEALERs into a ROUTER that only
/// counts. Leaves the DEALERs disconnected.
void ingest_floor(fleet& devices, const std::vector<frame_pair>& frames, results& res) {
  const std::size_t n = devices.size(), m = frames.size();
  loopback_peer sink{loopback_peer::mode::count};
  devices.connect(sink.endpoint());
  // One message per device first, so every connection is up before the clock starts.
  for (std::size_t i = 0; i < n; ++i)
    devices.send(i, devices.frame(i, bus::type::heartbeat, bus::heartbeat{false}));
  auto deadline = steady::now() + 20s;
  while (sink.count() < n && steady::now() < deadline) {
    check_interrupt();
    std::this_thread::sleep_for(1ms);
  }
  if (sink.count() < n)
    throw std::runtime_error("baseline sink: devices did not connect within 20 s");
  auto t0 = steady::now();
  auto sent = devices.blast(frames, t0 + 30s);
  while (sink.count() < n + m && steady::now() < t0 + 30s) {
    check_interrupt();
    std::this_thread::sleep_for(1ms);
  }
  if (sent < m || sink.count() < n + m)
    throw std::runtime_error("baseline sink received " +
                             std::to_string(sink.count() - n) + " of " +
                             std::to_string(m) + " reports within 30 s");
  res.sink_secs = ms_between(t0, sink.last()) / 1000.0;
  std::printf("baseline: %zu reports into a counting ROUTER in %.3f s\n", m,
              res.sink_secs);
  devices.disconnect(sink.endpoint());
}

/// Connects the fleet to parryd (memory before and after the hellos) and waits until
/// every device is welcomed and counted online.
void connect_fleet(server_under_test& srv, fleet& devices, results& res) {
  const std::size_t n = devices.size();
  auto fds = open_fds(srv.pid());
  devices.connect(srv.bus_endpoint());
  // Connections alone, before any device actor exists: parryd holds one fd for each.
  auto deadline = steady::now() + 20s;
  while (open_fds(srv.pid()) < fds + n && steady::now() < deadline) {
    check_interrupt();
    std::this_thread::sleep_for(10ms);
  }
  if (open_fds(srv.pid()) < fds + n)
    throw std::runtime_error("parryd did not accept " + std::to_string(n) +
                             " bus connections within 20 s");
  std::this_thread::sleep_for(300ms); // let the ZMTP handshakes finish
  res.rss_conn = rss_kib(srv.pid());

  auto welcomed = devices.greet(30s);
  if (welcomed < n)
    throw std::runtime_error("only " + std::to_string(welcomed) + " of " +
                             std::to_string(n) +
                             " bench devices were welcomed within 30 s");
  devices.start_heartbeats();
  auto [st, online] = wait_stats(
      srv, devices, [&](const json& s) { return stat_of(s, "devices_online") >= n; },
      20s);
  if (!online)
    throw std::runtime_error("parryd shows " +
                             std::to_string(stat_of(st, "devices_online")) +
                             " devices online, expected " + std::to_string(n));
  std::this_thread::sleep_for(300ms); // the device records are written in the background
  res.rss_bench = rss_kib(srv.pid());
}

/// Blasts the reports at parryd and times them until /stats shows every one stored.
void ingest(server_under_test& srv, fleet& devices, const std::vector<frame_pair>& frames,
            results& res) {
  const std::size_t m = frames.size();
  auto before = stat_of(srv.get("/stats"), "incidents");
  auto cpu0 = cpu_secs(srv.pid());
  auto threads0 = cpu_by_thread(srv.pid());
  auto t0 = steady::now();
  auto sent = devices.blast(frames, t0 + 60s);
  res.send_secs = ms_between(t0, steady::now()) / 1000.0;
  if (sent < m)
    throw std::runtime_error("parryd took only " + std::to_string(sent) + " of " +
                             std::to_string(m) + " reports within 60 s");
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(t0 + 60s - steady::now());
  auto [st, done] = wait_stats(
      srv, devices, [&](const json& s) { return stat_of(s, "incidents") >= before + m; },
      std::max(left, std::chrono::milliseconds{0}));
  res.ingest_secs = ms_between(t0, steady::now()) / 1000.0;
  res.ingest_cpu = cpu_secs(srv.pid()) - cpu0;
  std::string per_thread;
  for (auto& [name, secs] : cpu_by_thread(srv.pid()))
    if (auto used = secs - threads0[name]; used >= 0.01)
      per_thread += " " + name + " " + fixed(used, 2);
  res.stored = stat_of(st, "incidents") - before;
  std::printf("ingest: %zu reports sent in %.3f s, %zu stored after %.3f s "
              "(events %zu, bus %s)\n",
              m, res.send_secs, res.stored, res.ingest_secs, stat_of(st, "events"),
              st["bus"].dump().c_str());
  std::printf("  parryd CPU seconds by thread name:%s\n", per_thread.c_str());
  if (!done)
    res.problems.push_back("ingest: only " + std::to_string(res.stored) + " of " +
                           std::to_string(m) + " incidents stored after " +
                           fixed(res.ingest_secs, 1) + " s");
  else if (before == 0 && stat_of(st, "events") != res.events_total)
    res.problems.push_back("ingest: /stats counts " +
                           std::to_string(stat_of(st, "events")) + " events, " +
                           std::to_string(res.events_total) + " were sent");
  std::this_thread::sleep_for(300ms);
  res.rss_ingested = rss_kib(srv.pid());
}

/// Waits until `n` more devices are online and each simulated one has reported an
/// incident; returns (device id, incident id) pairs.
std::vector<std::pair<std::string, std::string>>
await_sims(server_under_test& srv, fleet& devices, parry::child_process& agents,
           std::size_t online_before, std::size_t n, results& res) {
  auto [st, online] = wait_stats(
      srv, devices,
      [&](const json& s) { return stat_of(s, "devices_online") >= online_before + n; },
      30s);
  if (!online) {
    auto now_online = stat_of(st, "devices_online");
    throw std::runtime_error(
        "only " +
        std::to_string(now_online > online_before ? now_online - online_before : 0) +
        " of " + std::to_string(n) + " simulated devices came online within 30 s" +
        (agents.running() ? "" : " (parry-agent exited)"));
  }
  std::this_thread::sleep_for(300ms);
  res.rss_sim = rss_kib(srv.pid());

  // The newest incidents are the simulated devices' own.
  std::map<std::string, std::string> incident_of;
  auto prefix = std::string{sim_prefix} + "-";
  auto limit = std::to_string(std::min<std::size_t>(5000, 4 * n));
  auto deadline = steady::now() + 30s;
  for (;;) {
    check_interrupt();
    devices.keep_alive(heartbeat_period);
    auto list = srv.get("/incidents?limit=" + limit);
    for (auto& inc : list["incidents"]) {
      auto dev = inc["device_id"].get<std::string>();
      if (dev.rfind(prefix, 0) == 0)
        incident_of.emplace(dev, inc["incident_id"].get<std::string>());
    }
    // With more devices than one page holds, ask for the missing ones one by one.
    if (list["incidents"].size() >= 5000)
      for (std::size_t i = 0; i < n && steady::now() < deadline; ++i) {
        char dev[32];
        std::snprintf(dev, sizeof dev, "%s-%04zu", sim_prefix, i);
        if (incident_of.count(dev) != 0) continue;
        auto one = srv.get(std::string{"/incidents?limit=1&device_id="} + dev);
        if (!one["incidents"].empty())
          incident_of.emplace(dev, one["incidents"][0]["incident_id"].get<std::string>());
      }
    if (incident_of.size() >= n) break;
    if (steady::now() >= deadline)
      throw std::runtime_error("only " + std::to_string(incident_of.size()) + " of " +
                               std::to_string(n) +
                               " simulated devices reported an incident within 30 s");
    std::this_thread::sleep_for(200ms);
  }
  return {incident_of.begin(), incident_of.end()};
}

/// Isolates and releases the simulated devices round-robin.
void round_trips(server_under_test& srv, fleet& devices, parry::child_process& agents,
                 const std::vector<std::pair<std::string, std::string>>& targets,
                 std::size_t rounds, results& res) {
  auto cpu0 = cpu_secs(srv.pid()), agent_cpu0 = cpu_secs(agents.pid());
  auto t0 = steady::now();
  for (std::size_t r = 0; r < rounds; ++r) {
    check_interrupt();
    auto& [dev, inc] = targets[r % targets.size()];
    std::string why;
    if (!run_action(srv, devices, "isolate", inc, res.isolate, why)) {
      ++res.isolate.failures;
      res.problems.push_back("round " + std::to_string(r) + " on " + dev + ": " + why);
    } else if (!run_action(srv, devices, "release_isolation", inc, res.release, why)) {
      ++res.release.failures;
      res.problems.push_back("round " + std::to_string(r) + " on " + dev + ": " + why);
    }
    if (res.isolate.failures + res.release.failures > 10)
      throw std::runtime_error("more than 10 actions failed; last: " + why);
  }
  res.rounds_secs = ms_between(t0, steady::now()) / 1000.0;
  res.rounds_cpu = cpu_secs(srv.pid()) - cpu0;
  res.rounds_agent_cpu = cpu_secs(agents.pid()) - agent_cpu0;
  std::printf("isolate: %zu completed, %zu failed; release: %zu completed, %zu failed\n",
              res.isolate.server.size(), res.isolate.failures, res.release.server.size(),
              res.release.failures);
  std::printf("  isolate steps (server clock):\n%s", stages_summary(res.isolate).c_str());
  std::printf("  release steps (server clock):\n%s", stages_summary(res.release).c_str());
}

std::vector<figure> table(const results& res, std::size_t n) {
  std::vector<figure> rows;
  auto ms = [](double x) { return fixed(x, 2); };
  auto dist = [&](const std::vector<double>& v) {
    return "p50 " + ms(percentile(v, 50)) + ", p99 " + ms(percentile(v, 99));
  };
  double rate = static_cast<double>(res.stored) / res.ingest_secs;
  double floor_rate = static_cast<double>(res.reports) / res.sink_secs;
  rows.push_back({"ingest (first send -> all stored)", fixed(rate, 0), "incidents/s",
                  fixed(floor_rate, 0) + " (bare ROUTER)", ""});
  rows.push_back({"ingest (first send -> all stored)",
                  fixed(rate * res.events_per_incident, 0), "events/s",
                  fixed(floor_rate * res.events_per_incident, 0) + " (bare ROUTER)",
                  ">= 20000 events/s"});
  rows.push_back(
      {"ingest, parryd / bare ROUTER", fixed(rate / floor_rate, 3), "ratio", "", ""});
  rows.push_back(
      {"ingest, time to queue all reports", fixed(res.send_secs, 3), "s", "", ""});
  rows.push_back({"ingest, parryd CPU (cores busy)",
                  fixed(res.ingest_cpu / res.ingest_secs, 2), "cores", "", ""});
  auto add_action = [&](const char* name, const action_samples& s, bool with_target) {
    std::string n1 = std::string{name} + " registered->completed ";
    rows.push_back({n1 + "p50", ms(percentile(s.server, 50)), "ms",
                    with_target ? dist(res.pong) + " (bus ping-pong)" : "", ""});
    rows.push_back({n1 + "p99", ms(percentile(s.server, 99)), "ms",
                    with_target ? dist(res.fsync) + " (fdatasync)" : "",
                    with_target ? "< 50 ms (loopback)" : ""});
    rows.push_back({n1 + "max", ms(percentile(s.server, 100)), "ms", "", ""});
    std::string n2 = std::string{name} + " POST->seen final (client) ";
    rows.push_back({n2 + "p50", ms(percentile(s.client, 50)), "ms", "", ""});
    rows.push_back({n2 + "p99", ms(percentile(s.client, 99)), "ms", "", ""});
  };
  add_action("isolate", res.isolate, true);
  add_action("release", res.release, false);
  rows.push_back({"rounds, parryd CPU (cores busy)",
                  fixed(res.rounds_cpu / res.rounds_secs, 2), "cores", "", ""});
  rows.push_back({"rounds, parry-agent CPU (cores busy)",
                  fixed(res.rounds_agent_cpu / res.rounds_secs, 2), "cores", "", ""});
  auto kib = [](long v) { return std::to_string(v); };
  rows.push_back({"parryd VmRSS after start", kib(res.rss_start), "KiB", "", ""});
  rows.push_back(
      {"parryd VmRSS, bench connections open", kib(res.rss_conn), "KiB", "", ""});
  rows.push_back(
      {"parryd VmRSS, bench devices welcomed", kib(res.rss_bench), "KiB", "", ""});
  rows.push_back({"parryd VmRSS after ingest", kib(res.rss_ingested), "KiB", "", ""});
  rows.push_back({"parryd VmRSS, sim devices online", kib(res.rss_sim), "KiB", "", ""});
  rows.push_back({"parryd VmRSS at the end", kib(res.rss_end), "KiB", "", ""});
  auto per = [&](long a, long b) {
    return fixed(static_cast<double>(b - a) / static_cast<double>(n), 2);
  };
  rows.push_back({"per bench device: connection only", per(res.rss_start, res.rss_conn),
                  "KiB/device", "", ""});
  rows.push_back({"per bench device: hello (actor + record)",
                  per(res.rss_conn, res.rss_bench), "KiB/device", "",
                  "< 2 KiB (idle actor)"});
  rows.push_back({"per bench device: total", per(res.rss_start, res.rss_bench),
                  "KiB/device", "", ""});
  rows.push_back({"per sim device (connect+hello, after ingest)",
                  per(res.rss_ingested, res.rss_sim), "KiB/device", "", ""});
  rows.push_back({"restart to ready", "skipped", "", "", "< 10 s @ 100k actions"});
  return rows;
}

int run(const options& opt) {
  const std::size_t n = opt.endpoints;
  results res;
  raise_fd_limit();
  // Each DEALER holds a TCP connection and a mailbox descriptor.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * n + 256)
    throw std::runtime_error("open file limit " + std::to_string(rl.rlim_cur) +
                             " is too low for " + std::to_string(n) +
                             " endpoints (needs about " + std::to_string(2 * n + 256) +
                             ")");
  std::printf("parry-bench: %zu endpoints, %zu incidents, %zu rounds; binaries in %s\n",
              n, opt.incidents, opt.rounds, opt.bin_dir.c_str());
  // Other work on the machine skews every figure: say how busy it was at the start.
  std::string load;
  std::getline(std::ifstream{"/proc/loadavg"}, load);
  std::printf(
      "machine: %u cores, load average %s\n", std::thread::hardware_concurrency(),
      load.substr(0, load.find(' ', load.find(' ', load.find(' ') + 1) + 1)).c_str());

  // Frames first, so that neither clock includes encoding.
  fleet devices{n};
  auto frames = make_frames(devices, opt.incidents, opt.scenarios, res);
  std::size_t bytes = 0;
  for (auto& f : frames)
    bytes += f.header.size() + f.body.size();
  std::printf(
      "frames: %zu incident reports, %.1f events and %.0f bytes each on average\n",
      frames.size(), res.events_per_incident,
      static_cast<double>(bytes) / static_cast<double>(frames.size()));
  std::fflush(stdout);

  // Started after construction, so that a failed start still cleans up and shows the log.
  server_under_test srv{opt};
  srv.start();
  std::printf("parryd: pid %d, bus %s, files in %s\n", srv.pid(),
              srv.bus_endpoint().c_str(), srv.dir().c_str());
  srv.login();
  std::this_thread::sleep_for(500ms); // start-up allocations settle before the first look
  res.rss_start = rss_kib(srv.pid());

  ingest_floor(devices, frames, res);
  connect_fleet(srv, devices, res);
  ingest(srv, devices, frames, res);
  std::vector<frame_pair>().swap(frames);
  std::fflush(stdout);

  // Simulated agents for the round trip, with their own id prefix.
  auto online_before = stat_of(srv.get("/stats"), "devices_online");
  parry::child_process agents{{opt.bin_dir + "/parry-agent", "--sim", std::to_string(n),
                               "--seed", "1", "--id-prefix", sim_prefix, "--server",
                               srv.bus_endpoint(), "--incident-interval-ms", "1000",
                               "--incidents", "2", "--scenarios", opt.scenarios,
                               "--log-level", "warn"},
                              {},
                              (srv.dir() / "agent.log").string()};
  struct agents_stopper {
    parry::child_process& p;
    ~agents_stopper() { p.stop(SIGTERM); }
  } stop_agents{agents};
  auto targets = await_sims(srv, devices, agents, online_before, n, res);

  // The floors, taken beside the running server and agents.
  res.pong = ping_pong(opt.rounds);
  res.fsync = storage_floor(srv.dir(), opt.rounds);

  round_trips(srv, devices, agents, targets, opt.rounds, res);

  res.final_stats = srv.get("/stats");
  res.rss_end = rss_kib(srv.pid());
  if (!srv.running()) throw std::runtime_error("parryd exited");

  std::printf("\nresults (%zu endpoints, %zu incidents, %zu rounds)\n", n, opt.incidents,
              opt.rounds);
  print_table(table(res, n));
  std::printf("\nfinal /stats: %s\n", res.final_stats.dump().c_str());

  int agent_status = agents.stop(SIGTERM);
  if (!(WIFEXITED(agent_status) && WEXITSTATUS(agent_status) == 0))
    res.problems.push_back("parry-agent did not exit cleanly on SIGTERM (wait status " +
                           std::to_string(agent_status) + ")");
  int status = srv.stop();
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    res.problems.push_back("parryd did not exit cleanly on SIGTERM (wait status " +
                           std::to_string(status) + ")");
  auto [warnings, examples] = log_problems(srv.log_file());
  if (warnings > 0) {
    std::printf("parryd logged %zu warnings/errors, e.g.:\n", warnings);
    for (auto& e : examples)
      std::printf("  %s\n", e.c_str());
  }
  if (opt.keep)
    std::printf("kept %s (parryd.log, agent.log, data/)\n", srv.dir().c_str());
  std::fflush(stdout);
  for (auto& p : res.problems)
    std::fprintf(stderr, "parry-bench: %s\n", p.c_str());
  return res.problems.empty() ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  CLI::App app{"parry-bench: measures parryd against DESIGN.md §9 on loopback"};
  app.add_option("--endpoints", opt.endpoints, "Devices: N bench sockets and N simulated")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--incidents", opt.incidents, "Incident reports to ingest")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  app.add_option("--rounds", opt.rounds, "Isolate + release rounds")
      ->capture_default_str()
      ->check(CLI::Range(1, 100'000));
  app.add_option("--bin-dir", opt.bin_dir,
                 "Directory of parryd and parry-agent (default: this program's)");
  app.add_option("--scenarios", opt.scenarios, "Scenario directory for parry-agent")
      ->capture_default_str();
  app.add_flag("--keep", opt.keep, "Keep the temporary directory (logs, database)");
  CLI11_PARSE(app, argc, argv);
  if (opt.bin_dir.empty()) opt.bin_dir = exe_dir();
  opt.scenarios = fs::absolute(opt.scenarios).string();
  if (!fs::is_directory(opt.scenarios)) {
    std::cerr << "parry-bench: no scenario directory " << opt.scenarios
              << " (see --scenarios)\n";
    return 2;
  }

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  try {
    return run(opt);
  } catch (const std::exception& e) {
    std::cerr << "parry-bench: failed: " << e.what() << '\n';
    return 1;
  }
}
