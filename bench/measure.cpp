#include "bench/measure.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include <zmq.hpp>

#include "bench/fleet.hpp"
#include "bus/codec.hpp"
#include "common/process.hpp"
#include "common/time.hpp"

namespace parry::bench {

namespace fs = std::filesystem;

namespace {

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

} // namespace

double ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  auto rank =
      static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

long rss_kib(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

long rss_with_children_kib(pid_t pid) {
  long total = rss_kib(pid);
  for (pid_t kid : children_of(pid))
    if (auto k = rss_kib(kid); k > 0 && total >= 0) total += k;
  return total;
}

double cpu_secs(pid_t pid) {
  return cpu_of_stat("/proc/" + std::to_string(pid) + "/stat");
}

double cpu_secs_with_children(pid_t pid) {
  double total = cpu_secs(pid);
  for (pid_t kid : children_of(pid))
    total += cpu_secs(kid);
  return total;
}

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

std::size_t open_fds(pid_t pid) {
  std::error_code ec;
  std::size_t n = 0;
  for (fs::directory_iterator i{"/proc/" + std::to_string(pid) + "/fd", ec}, end;
       !ec && i != end; i.increment(ec))
    ++n;
  return n;
}

std::size_t open_fds_with_children(pid_t pid) {
  auto total = open_fds(pid);
  for (pid_t kid : children_of(pid))
    total += open_fds(kid);
  return total;
}

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

} // namespace parry::bench
