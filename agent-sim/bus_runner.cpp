#include "agent-sim/bus_runner.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <sys/resource.h>
#include <sys/stat.h>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "common/time.hpp"

namespace parry::sim {

namespace {

// Each session costs a TCP socket, two ZeroMQ sockets and their mailboxes.
constexpr std::size_t fds_per_session = 4;
// Messages taken from one socket per round, so a chatty peer cannot starve others.
constexpr int max_reads_per_round = 64;
// How often the hold files are looked at: a stat each, cheap enough.
constexpr int64_t hold_check_us = 100'000;
// Back-off between attempts after a refused handshake.
constexpr int64_t first_redial_us = 1'000'000;
constexpr int64_t max_redial_us = 30'000'000;

bool file_exists(const std::string& path) {
  struct stat st {};
  return !path.empty() && ::stat(path.c_str(), &st) == 0;
}

void raise_fd_limit(std::size_t sessions) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  // An unlimited hard limit cannot be the soft one; Linux caps it at nr_open.
  rlim_t target = rl.rlim_max == RLIM_INFINITY ? rlim_t{1} << 20 : rl.rlim_max;
  if (rl.rlim_cur < target) {
    rlimit raised = rl;
    raised.rlim_cur = target;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
      rl = raised;
    else
      spdlog::warn("cannot raise the open file limit: {}", std::strerror(errno));
  }
  std::size_t need = sessions * fds_per_session + 64;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
    spdlog::warn("{} endpoints need about {} file descriptors but the limit is {}",
                 sessions, need, static_cast<unsigned long long>(rl.rlim_cur));
}

} // namespace

struct bus_runner::impl {
  link_config cfg;
  std::vector<agent_session*> sessions;
  zmq::context_t ctx;
  // Declared after the context so they close before it terminates.
  std::vector<zmq::socket_t> dealers;
  std::vector<zmq::socket_t> monitors;
  // Dealer i at 2i, its monitor at 2i+1, then the watched descriptors.
  std::vector<zmq::pollitem_t> items;
  std::vector<std::function<void(int64_t)>> watchers; // by descriptor, in order
  std::vector<int> watched;
  std::function<int64_t(int64_t)> round_hook;
  // A refused handshake (key not enrolled or revoked, device still connected) ends
  // a ZeroMQ connection for good: the socket is made again later, backing off.
  std::vector<int64_t> redial_at;    // 0: none due
  std::vector<int64_t> redial_delay; // next back-off
  uint64_t generation = 0;           // makes each monitor endpoint unique
  uint64_t refused_handshakes = 0;
  uint64_t send_failures = 0;
  bool started = false;
  bool hold_commands = false;
  bool hold_results = false;
  int64_t next_hold_check = 0;
  int64_t hook_due = 0;

  void send(std::size_t i, const std::vector<outbound>& msgs);
  void check_hold(int64_t now);
  void read_messages(std::size_t i, int64_t now);
  void read_monitor(std::size_t i, int64_t now);
  void open_socket(std::size_t i);
  void redial_due(int64_t now);
};

void bus_runner::impl::open_socket(std::size_t i) {
  const std::string& id = sessions[i]->device_id();
  zmq::socket_t d(ctx, zmq::socket_type::dealer);
  d.set(zmq::sockopt::routing_id, id);
  d.set(zmq::sockopt::linger, 0);
  d.set(zmq::sockopt::ipv6, true); // an IPv6 literal server works too
  // Retry fast at first, back off to 5 s while the server stays away. A connect
  // that gets no answer (a partition) is abandoned after 2 s and dialled again,
  // instead of waiting out the kernel's SYN back-off once the network heals.
  d.set(zmq::sockopt::reconnect_ivl, 100);
  d.set(zmq::sockopt::reconnect_ivl_max, 5000);
  d.set(zmq::sockopt::connect_timeout, 2000);
  // ZMTP pings notice a dead server even when no FIN ever arrives.
  d.set(zmq::sockopt::heartbeat_ivl, 2000);
  d.set(zmq::sockopt::heartbeat_timeout, 6000);
  d.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(bus::decode_limits{}.max_frame));
  d.set(zmq::sockopt::sndhwm, 1000);
  d.set(zmq::sockopt::rcvhwm, 1000);
  if (!cfg.server_key_z85.empty()) {
    d.set(zmq::sockopt::curve_serverkey, cfg.server_key_z85);
    d.set(zmq::sockopt::curve_publickey, cfg.curve_keys[i].public_z85);
    d.set(zmq::sockopt::curve_secretkey, cfg.curve_keys[i].secret_z85);
  }
  // The monitor must be attached before connecting, or the first event is lost.
  std::string mon = "inproc://parry-agent-monitor-" + std::to_string(i) + "-" +
                    std::to_string(++generation);
  if (zmq_socket_monitor(d.handle(), mon.c_str(),
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) != 0)
    throw zmq::error_t();
  zmq::socket_t p(ctx, zmq::socket_type::pair);
  p.set(zmq::sockopt::linger, 0);
  p.connect(mon);
  d.connect(cfg.server);
  items[2 * i] = {d.handle(), 0, ZMQ_POLLIN, 0};
  items[2 * i + 1] = {p.handle(), 0, ZMQ_POLLIN, 0};
  dealers[i] = std::move(d);
  monitors[i] = std::move(p);
}

void bus_runner::impl::redial_due(int64_t now) {
  for (std::size_t i = 0; i < redial_at.size(); ++i) {
    if (redial_at[i] == 0 || redial_at[i] > now) continue;
    redial_at[i] = 0;
    spdlog::info("{}: connecting again after a refused handshake",
                 sessions[i]->device_id());
    open_socket(i);
  }
}

void bus_runner::impl::send(std::size_t i, const std::vector<outbound>& msgs) {
  for (const outbound& m : msgs) {
    std::string head = bus::encode(m.head);
    try {
      // ZeroMQ delivers multipart messages atomically: once the first frame is
      // queued the second is too, so only the first can hit the high-water mark.
      if (!dealers[i].send(zmq::const_buffer(head.data(), head.size()),
                           zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        ++send_failures;
        continue;
      }
      dealers[i].send(zmq::const_buffer(m.body.data(), m.body.size()),
                      zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      ++send_failures;
      spdlog::warn("{}: send failed: {}", sessions[i]->device_id(), e.what());
    }
  }
}

void bus_runner::impl::check_hold(int64_t now) {
  if (now < next_hold_check) return;
  next_hold_check = now + hold_check_us;
  bool commands = file_exists(cfg.hold_file);
  bool results = file_exists(cfg.hold_results_file);
  if (commands == hold_commands && results == hold_results) return;
  if (commands != hold_commands)
    spdlog::info("{} commands ({})", commands ? "holding" : "releasing held",
                 cfg.hold_file);
  if (results != hold_results)
    spdlog::info("{} results ({})", results ? "holding" : "releasing held",
                 cfg.hold_results_file);
  hold_commands = commands;
  hold_results = results;
  for (agent_session* s : sessions)
    s->set_hold(commands, results);
}

void bus_runner::impl::read_messages(std::size_t i, int64_t now) {
  for (int n = 0; n < max_reads_per_round; ++n) {
    zmq::message_t frames[2];
    std::size_t count = 0;
    zmq::message_t part;
    if (!dealers[i].recv(part, zmq::recv_flags::dontwait)) return;
    // Keep the first two frames, count and discard the rest of a longer message.
    for (;;) {
      bool more = part.more();
      if (count < 2) frames[count] = std::move(part);
      ++count;
      if (!more) break;
      if (!dealers[i].recv(part, zmq::recv_flags::dontwait)) break;
    }
    if (count != 2) {
      sessions[i]->count_bad_frame();
      spdlog::debug("{}: dropped a message of {} frames", sessions[i]->device_id(),
                    count);
      continue;
    }
    send(i, sessions[i]->on_message(frames[0].to_string_view(),
                                    frames[1].to_string_view(), now));
  }
}

void bus_runner::impl::read_monitor(std::size_t i, int64_t now) {
  for (;;) {
    zmq::message_t event, address;
    if (!monitors[i].recv(event, zmq::recv_flags::dontwait)) return;
    if (event.more()) (void)monitors[i].recv(address, zmq::recv_flags::dontwait);
    if (event.size() < 6) continue;
    uint16_t id = 0;
    std::memcpy(&id, event.data(), sizeof id);
    if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
        id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
      // The server refused this key or this connection; ZeroMQ will not try again.
      ++refused_handshakes;
      if (redial_at[i] == 0) {
        spdlog::warn("{}: the server refused the connection (key not enrolled, "
                     "revoked, or the device is connected elsewhere); trying again in "
                     "{} s",
                     sessions[i]->device_id(), redial_delay[i] / 1000000);
        redial_at[i] = now + redial_delay[i];
        redial_delay[i] = std::min(max_redial_us, 2 * redial_delay[i]);
      }
      sessions[i]->on_link_down();
      return;
    } else if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      redial_delay[i] = first_redial_us;
      spdlog::debug("{}: connected", sessions[i]->device_id());
      send(i, sessions[i]->on_link_up(now));
    } else if (id == ZMQ_EVENT_DISCONNECTED) {
      spdlog::debug("{}: disconnected", sessions[i]->device_id());
      sessions[i]->on_link_down();
    }
  }
}

bus_runner::bus_runner(link_config cfg, std::vector<agent_session*> sessions)
    : impl_(std::make_unique<impl>()) {
  impl_->cfg = std::move(cfg);
  impl_->sessions = std::move(sessions);
}

bus_runner::~bus_runner() = default;

void bus_runner::watch(int fd, std::function<void(int64_t)> on_ready) {
  if (impl_->started) throw std::logic_error("bus_runner::watch after start");
  impl_->watched.push_back(fd);
  impl_->watchers.push_back(std::move(on_ready));
}

void bus_runner::on_round(std::function<int64_t(int64_t)> hook) {
  impl_->round_hook = std::move(hook);
}

void bus_runner::start() {
  impl& m = *impl_;
  if (m.started) return;
  std::size_t n = m.sessions.size();
  if (m.cfg.raise_fd_limit) raise_fd_limit(n);
  // A DEALER, the monitor's own PAIR inside ZeroMQ, and our PAIR reading it.
  std::size_t sockets = 3 * n + 16;
  int limit = m.ctx.get(zmq::ctxopt::socket_limit);
  if (sockets > static_cast<std::size_t>(limit))
    throw std::runtime_error("ZeroMQ allows at most " + std::to_string(limit) +
                             " sockets per process: run at most " +
                             std::to_string((limit - 16) / 3) +
                             " endpoints per parry-agent");
  m.ctx.set(zmq::ctxopt::max_sockets, static_cast<int>(sockets));

  bool curve = !m.cfg.server_key_z85.empty();
  if (curve && m.cfg.curve_keys.size() != n)
    throw std::runtime_error("a CURVE key pair is needed for every endpoint");
  m.dealers.resize(n);
  m.monitors.resize(n);
  m.items.assign(2 * n, zmq::pollitem_t{});
  for (int fd : m.watched)
    m.items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
  m.redial_at.assign(n, 0);
  m.redial_delay.assign(n, first_redial_us);
  int64_t now = now_us();
  // Before any socket: a command must not slip through ahead of the first look.
  m.check_hold(now);
  try {
    for (std::size_t i = 0; i < n; ++i)
      m.open_socket(i);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot set up endpoint sockets for " + m.cfg.server + ": " +
                             e.what());
  }
  for (std::size_t i = 0; i < n; ++i)
    m.send(i, m.sessions[i]->start(now));
  m.started = true;
}

void bus_runner::poll_once(long max_wait_ms) {
  impl& m = *impl_;
  if (!m.started) throw std::logic_error("bus_runner::poll_once before start");
  int64_t now = now_us();
  int64_t due = m.round_hook ? m.hook_due : std::numeric_limits<int64_t>::max();
  for (const agent_session* s : m.sessions)
    due = std::min(due, s->next_due());
  long wait = max_wait_ms;
  if (due - now < static_cast<int64_t>(max_wait_ms) * 1000)
    wait = static_cast<long>(std::max<int64_t>(0, (due - now + 999) / 1000));
  std::size_t n = m.sessions.size();
  try {
    zmq::poll(m.items, std::chrono::milliseconds(wait));
    now = now_us();
    for (std::size_t i = 0; i < n; ++i) {
      if (m.items[2 * i + 1].revents & ZMQ_POLLIN) m.read_monitor(i, now);
      if (m.items[2 * i].revents & ZMQ_POLLIN) m.read_messages(i, now);
    }
    for (std::size_t w = 0; w < m.watched.size(); ++w)
      if (m.items[2 * n + w].revents & ZMQ_POLLIN) m.watchers[w](now);
  } catch (const zmq::error_t& e) {
    // A signal: let the caller look at its stop flag; unread input waits for the
    // next round.
    if (e.num() == EINTR) return;
    throw;
  }
  now = now_us();
  m.redial_due(now);
  m.check_hold(now);
  for (std::size_t i = 0; i < n; ++i)
    if (m.sessions[i]->next_due() <= now) m.send(i, m.sessions[i]->tick(now));
  if (m.round_hook) m.hook_due = m.round_hook(now);
}

void bus_runner::send(std::size_t i, const std::vector<outbound>& msgs) {
  impl_->send(i, msgs);
}

uint64_t bus_runner::send_failures() const {
  return impl_->send_failures;
}

uint64_t bus_runner::refused_handshakes() const {
  return impl_->refused_handshakes;
}

} // namespace parry::sim
