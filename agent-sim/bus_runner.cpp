#include "agent-sim/bus_runner.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <deque>
#include <queue>
#include <utility>

#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "bus/keepalive.hpp"
#include "common/time.hpp"

namespace parry::sim {

namespace {

// Readiness reports taken from epoll per wait; the rest come in the next round.
constexpr int max_events_per_wait = 512;
// What an epoll entry stands for: data.u64 = index << 2 | kind.
enum item_kind : uint64_t { dealer_item = 0, monitor_item = 1, watched_item = 2 };
// Messages taken from one socket per round, so a chatty peer cannot starve others.
constexpr int max_reads_per_round = 64;
// How often the hold files are looked at: a stat each, cheap enough.
constexpr int64_t hold_check_us = 100'000;
// How long an opened socket counts as dialling when no handshake finishes (as long
// as ZeroMQ waits for one connect: connect_timeout below).
constexpr int64_t dial_window_us = 2'000'000;
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
  // One epoll set over every socket's ZMQ_FD and the watched descriptors: a round
  // touches only the sockets that have work, whatever the number of sessions.
  int epoll_fd = -1;
  std::vector<int> dealer_fd, monitor_fd;             // ZMQ_FD of each, -1 when closed
  std::vector<std::function<void(int64_t)>> watchers; // by descriptor, in order
  std::vector<int> watched;
  std::function<int64_t(int64_t)> round_hook;
  // ZMQ_FD only says "look at ZMQ_EVENTS": a socket stays on this list while it may
  // hold input the descriptor will not signal again (after a send, or when a round
  // stopped reading it at max_reads_per_round).
  std::vector<std::pair<std::size_t, item_kind>> pending;
  std::vector<uint8_t> pending_flags; // bit 0: dealer listed, bit 1: monitor listed
  // Sessions' timers as a lazy min-heap: an entry counts only while its time equals
  // queued_due[i]; others are stale and skipped when they surface.
  using timer = std::pair<int64_t, std::size_t>;
  std::priority_queue<timer, std::vector<timer>, std::greater<timer>> timers;
  std::vector<int64_t> queued_due;
  // A refused handshake (key not enrolled or revoked, device still connected) ends
  // a ZeroMQ connection for good: the socket is made again later, backing off.
  std::vector<int64_t> redial_at;    // 0: none due
  std::vector<int64_t> redial_delay; // next back-off
  std::size_t redials_waiting = 0;
  std::size_t opened = 0; // sessions [0, opened) have their socket
  // Sockets opened and still counted against cfg.connects_in_flight, oldest first,
  // with the time each was opened; linked_once[i] ends its count early.
  std::deque<std::pair<int64_t, std::size_t>> dialling;
  std::vector<uint8_t> linked_once;
  uint64_t generation = 0; // makes each monitor endpoint unique
  uint64_t refused_handshakes = 0;
  uint64_t send_failures = 0;
  bool started = false;
  bool hold_commands = false;
  bool hold_results = false;
  int64_t next_hold_check = 0;
  int64_t hook_due = 0;

  ~impl() {
    if (epoll_fd >= 0) ::close(epoll_fd);
  }

  void send(std::size_t i, const std::vector<outbound>& msgs);
  void check_hold(int64_t now);
  void read_messages(std::size_t i, int64_t now);
  void read_monitor(std::size_t i, int64_t now);
  void open_socket(std::size_t i);
  int64_t next_open(int64_t now);
  void open_next(int64_t now);
  void close_socket(std::size_t i);
  void redial_due(int64_t now);
  void watch_fd(int fd, uint64_t tag);
  void mark_pending(std::size_t i, item_kind kind);
  void handle_pending(int64_t now);
  void touch_timer(std::size_t i);
  void run_timers(int64_t now);
  int64_t next_timer();
};

void bus_runner::impl::watch_fd(int fd, uint64_t tag) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag;
  if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0)
    throw std::runtime_error(std::string("epoll_ctl: ") + std::strerror(errno));
}

void bus_runner::impl::mark_pending(std::size_t i, item_kind kind) {
  uint8_t bit = kind == dealer_item ? 1 : 2;
  if (pending_flags[i] & bit) return;
  pending_flags[i] |= bit;
  pending.emplace_back(i, kind);
}

void bus_runner::impl::touch_timer(std::size_t i) {
  if (i >= opened) return; // its timers start with its socket
  int64_t due = sessions[i]->next_due();
  if (due >= queued_due[i]) return; // the queued entry comes first and re-queues
  queued_due[i] = due;
  timers.emplace(due, i);
}

int64_t bus_runner::impl::next_timer() {
  while (!timers.empty() && timers.top().first != queued_due[timers.top().second])
    timers.pop(); // stale
  return timers.empty() ? std::numeric_limits<int64_t>::max() : timers.top().first;
}

void bus_runner::impl::run_timers(int64_t now) {
  while (next_timer() <= now) {
    std::size_t i = timers.top().second;
    timers.pop();
    queued_due[i] = std::numeric_limits<int64_t>::max();
    if (sessions[i]->next_due() <= now) send(i, sessions[i]->tick(now));
    touch_timer(i);
  }
}

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
  // The kernel notices a dead server even when no FIN ever arrives (keepalive
  // probes, and a bound on unacknowledged data), within the same 6 s ZMTP pings
  // would, without a libzmq timer per connection (bus/keepalive.hpp).
  bus::set_kernel_keepalive(d, std::chrono::milliseconds{2000},
                            std::chrono::milliseconds{6000});
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
  if (cfg.sources.empty() || cfg.server.rfind("tcp://", 0) != 0)
    d.connect(cfg.server);
  else // tcp://SOURCE:0;HOST:PORT: bound to the source address, any port
  {
    auto g = cfg.first + i;
    const auto& src = cfg.sources[g % cfg.sources.size()];
    auto port = link_config::source_port_base + g / cfg.sources.size();
    bool v6 = src.find(':') != std::string::npos;
    d.connect("tcp://" + (v6 ? "[" + src + "]" : src) + ":" + std::to_string(port) + ";" +
              cfg.server.substr(6));
  }
  dealer_fd[i] = d.get(zmq::sockopt::fd);
  monitor_fd[i] = p.get(zmq::sockopt::fd);
  watch_fd(dealer_fd[i], uint64_t{i} << 2 | dealer_item);
  watch_fd(monitor_fd[i], uint64_t{i} << 2 | monitor_item);
  dealers[i] = std::move(d);
  monitors[i] = std::move(p);
  // Whatever arrived before the descriptor was watched is looked at once.
  mark_pending(i, monitor_item);
  mark_pending(i, dealer_item);
}

// When the next socket may be opened: now while fewer than cfg.connects_in_flight
// are dialling, else when the oldest of them stops counting (a finished handshake
// wakes the loop by itself); never once every session has its socket.
int64_t bus_runner::impl::next_open(int64_t now) {
  while (!dialling.empty() && (linked_once[dialling.front().second] ||
                               now - dialling.front().first >= dial_window_us))
    dialling.pop_front();
  if (opened == sessions.size()) return std::numeric_limits<int64_t>::max();
  if (dialling.size() < std::max<std::size_t>(1, cfg.connects_in_flight)) return now;
  return dialling.front().first + dial_window_us;
}

// Opens sockets while the window allows, and starts their sessions.
void bus_runner::impl::open_next(int64_t now) {
  while (next_open(now) <= now) {
    std::size_t i = opened;
    try {
      open_socket(i);
    } catch (const zmq::error_t& e) {
      throw std::runtime_error("cannot set up endpoint sockets for " + cfg.server + ": " +
                               e.what());
    }
    ++opened;
    dialling.emplace_back(now, i);
    send(i, sessions[i]->start(now));
    touch_timer(i);
  }
}

void bus_runner::impl::close_socket(std::size_t i) {
  for (int* fd : {&dealer_fd[i], &monitor_fd[i]}) {
    if (*fd >= 0) ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, *fd, nullptr);
    *fd = -1;
  }
  monitors[i].close();
  dealers[i].close();
}

void bus_runner::impl::redial_due(int64_t now) {
  if (redials_waiting == 0) return;
  for (std::size_t i = 0; i < redial_at.size(); ++i) {
    if (redial_at[i] == 0 || redial_at[i] > now) continue;
    redial_at[i] = 0;
    --redials_waiting;
    spdlog::info("{}: connecting again after a refused handshake",
                 sessions[i]->device_id());
    close_socket(i);
    open_socket(i);
  }
}

void bus_runner::impl::send(std::size_t i, const std::vector<outbound>& msgs) {
  if (msgs.empty()) return;
  if (i >= opened) { // no socket yet: nothing to send on
    send_failures += msgs.size();
    return;
  }
  // A send may take in the socket's pending commands and with them the signal that
  // input arrived: look at ZMQ_EVENTS again next round.
  if (dealer_fd[i] >= 0) mark_pending(i, dealer_item);
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
  if (started)
    for (std::size_t i = 0; i < sessions.size(); ++i)
      touch_timer(i);
}

void bus_runner::impl::read_messages(std::size_t i, int64_t now) {
  for (int n = 0;; ++n) {
    if (n == max_reads_per_round) {
      mark_pending(i, dealer_item); // the rest next round, after the others
      return;
    }
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
    touch_timer(i);
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
        ++redials_waiting;
      }
      sessions[i]->on_link_down();
      touch_timer(i);
      mark_pending(i, monitor_item); // the events after it are read next round
      return;
    } else if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      redial_delay[i] = first_redial_us;
      linked_once[i] = 1;
      spdlog::debug("{}: connected", sessions[i]->device_id());
      send(i, sessions[i]->on_link_up(now));
      touch_timer(i);
    } else if (id == ZMQ_EVENT_DISCONNECTED) {
      spdlog::debug("{}: disconnected", sessions[i]->device_id());
      sessions[i]->on_link_down();
      touch_timer(i);
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
  m.dealer_fd.assign(n, -1);
  m.monitor_fd.assign(n, -1);
  m.pending_flags.assign(n, 0);
  m.queued_due.assign(n, std::numeric_limits<int64_t>::max());
  m.redial_at.assign(n, 0);
  m.redial_delay.assign(n, first_redial_us);
  m.linked_once.assign(n, 0);
  m.epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (m.epoll_fd < 0)
    throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
  for (std::size_t w = 0; w < m.watched.size(); ++w)
    m.watch_fd(m.watched[w], uint64_t{w} << 2 | watched_item);
  int64_t now = now_us();
  // Before any socket: a command must not slip through ahead of the first look.
  m.check_hold(now);
  m.open_next(now);
  m.started = true;
}

void bus_runner::impl::handle_pending(int64_t now) {
  std::vector<std::pair<std::size_t, item_kind>> due;
  due.swap(pending);
  std::size_t k = 0;
  try {
    for (; k < due.size(); ++k) {
      auto [i, kind] = due[k];
      pending_flags[i] &= static_cast<uint8_t>(kind == dealer_item ? ~1u : ~2u);
      if (kind == monitor_item) {
        if (monitor_fd[i] >= 0) read_monitor(i, now);
      } else if (dealer_fd[i] >= 0) {
        read_messages(i, now);
      }
    }
  } catch (...) {
    // Interrupted (EINTR): what was not read yet is looked at next round.
    for (std::size_t j = k; j < due.size(); ++j) {
      auto [i, kind] = due[j];
      pending_flags[i] &= static_cast<uint8_t>(kind == dealer_item ? ~1u : ~2u);
      mark_pending(i, kind);
    }
    throw;
  }
}

void bus_runner::poll_once(long max_wait_ms) {
  impl& m = *impl_;
  if (!m.started) throw std::logic_error("bus_runner::poll_once before start");
  int64_t now = now_us();
  int64_t due = std::min({m.round_hook ? m.hook_due : std::numeric_limits<int64_t>::max(),
                          m.next_timer(), m.next_open(now)});
  long wait = max_wait_ms;
  if (!m.pending.empty())
    wait = 0; // sockets that may hold input without a signal
  else if (due - now < static_cast<int64_t>(max_wait_ms) * 1000)
    wait = static_cast<long>(std::max<int64_t>(0, (due - now + 999) / 1000));
  epoll_event events[max_events_per_wait];
  int ready =
      ::epoll_wait(m.epoll_fd, events, max_events_per_wait, static_cast<int>(wait));
  if (ready < 0) {
    // A signal: let the caller look at its stop flag; unread input waits for the
    // next round.
    if (errno == EINTR) return;
    throw std::runtime_error(std::string("epoll_wait: ") + std::strerror(errno));
  }
  now = now_us();
  bool watcher_ran = false;
  try {
    for (int e = 0; e < ready; ++e) {
      uint64_t tag = events[e].data.u64;
      auto kind = static_cast<item_kind>(tag & 3);
      std::size_t i = static_cast<std::size_t>(tag >> 2);
      if (kind == watched_item) {
        m.watchers[i](now);
        watcher_ran = true;
      } else {
        m.mark_pending(i, kind);
      }
    }
    m.handle_pending(now);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return;
    throw;
  }
  now = now_us();
  m.open_next(now);
  m.redial_due(now);
  m.check_hold(now);
  // Watchers and the round hook may change any session's timers (the real agent's
  // detections): then every timer is looked at again.
  if (watcher_ran || m.round_hook)
    for (std::size_t i = 0; i < m.sessions.size(); ++i)
      m.touch_timer(i);
  m.run_timers(now);
  if (m.round_hook) {
    m.hook_due = m.round_hook(now);
    for (std::size_t i = 0; i < m.sessions.size(); ++i)
      m.touch_timer(i);
  }
}

void bus_runner::send(std::size_t i, const std::vector<outbound>& msgs) {
  impl_->send(i, msgs);
  impl_->touch_timer(i);
}

std::size_t bus_runner::sockets_opened() const {
  return impl_->opened;
}

uint64_t bus_runner::send_failures() const {
  return impl_->send_failures;
}

uint64_t bus_runner::refused_handshakes() const {
  return impl_->refused_handshakes;
}

} // namespace parry::sim
