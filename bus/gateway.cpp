#include "bus/gateway.hpp"

#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include <zmq.hpp>

#include "bus/keepalive.hpp"
#include "bus/reuse_port.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"

namespace parry::bus {

namespace {

// Messages drained per wake-up before the loop looks at the outbound queue again,
// so a flood from agents cannot starve commands going out.
constexpr int inbound_batch = 512;

bool is_bad(refusal_kind k) {
  switch (k) {
  case refusal_kind::malformed:
  case refusal_kind::oversized:
  case refusal_kind::spoofed:
  case refusal_kind::invalid:
    return true;
  case refusal_kind::device_cap:
  case refusal_kind::rate:
  case refusal_kind::busy:
    return false;
  }
  return true;
}

// Peer ids and header fields are attacker-chosen bytes: shown sanitised and cut.
std::string printable(std::string_view s) {
  return utf8_sanitized(s.substr(0, 160));
}

} // namespace

gateway::gateway(std::string endpoint, decode_limits limits, message_handler on_message,
                 unreachable_handler on_unreachable, gateway_options opts)
    : endpoint_(std::move(endpoint)), limits_(limits), opts_(opts),
      on_message_(std::move(on_message)), on_unreachable_(std::move(on_unreachable)),
      ctx_(std::make_unique<zmq::context_t>(std::max(1, opts_.io_threads))) {
  if (opts_.curve && opts_.curve->handshakes_per_second > 0)
    handshake_rate_ =
        log_limiter{opts_.curve->handshakes_per_second, std::chrono::seconds{1}};
  if (opts_.hard_frame == 0) opts_.hard_frame = 4 * limits_.max_frame;
  if (opts_.hard_frame < limits_.max_frame) opts_.hard_frame = limits_.max_frame;
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error("eventfd failed");
}

int gateway::io_threads() const {
  return ctx_->get(zmq::ctxopt::io_threads);
}

gateway::~gateway() {
  stop();
  ::close(wake_fd_);
}

std::string gateway::start() {
  auto sock = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::router);
  sock->set(zmq::sockopt::router_mandatory, 1);
  // A routing id stays with the connection that has it (see the header comment).
  sock->set(zmq::sockopt::router_handover, 0);
  // The soft limit (max_frame) is checked per frame below, so the agent can be told.
  sock->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(opts_.hard_frame));
  sock->set(zmq::sockopt::linger, 0);
  sock->set(zmq::sockopt::rcvhwm, opts_.rcvhwm);
  if (opts_.backlog > 0) sock->set(zmq::sockopt::backlog, opts_.backlog);
  sock->set(zmq::sockopt::sndhwm, 100000);
  if (opts_.heartbeat_ivl.count() > 0 && opts_.kernel_keepalive) {
    set_kernel_keepalive(*sock, opts_.heartbeat_ivl, opts_.heartbeat_timeout);
  } else if (opts_.heartbeat_ivl.count() > 0) {
    sock->set(zmq::sockopt::heartbeat_ivl, static_cast<int>(opts_.heartbeat_ivl.count()));
    sock->set(zmq::sockopt::heartbeat_timeout,
              static_cast<int>(opts_.heartbeat_timeout.count()));
  }
  if (opts_.curve) {
    const auto& c = *opts_.curve;
    if (!c.keys) throw std::invalid_argument("gateway: CURVE without a key registry");
    // The ZAP handler must be bound before any connection can complete a handshake;
    // libzmq asks it on this inproc endpoint of the socket's own context.
    auto zap = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::rep);
    zap->set(zmq::sockopt::linger, 0);
    zap->bind("inproc://zeromq.zap.01");
    sock->set(zmq::sockopt::curve_server, 1);
    sock->set(zmq::sockopt::curve_secretkey, c.secret_z85);
    sock->set(zmq::sockopt::zap_domain, c.domain);
    zap_ = zap.release();
  }
  if (opts_.curve || opts_.max_connections > 0) {
    // Which connection ended, so that its device may connect again, and how many
    // are open, for the cap.
    std::string mon = "inproc://parry-gateway-monitor";
    if (zmq_socket_monitor(sock->handle(), mon.c_str(),
                           ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_CLOSED) != 0)
      throw std::runtime_error("gateway: cannot monitor the socket");
    auto m = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::pair);
    m->set(zmq::sockopt::linger, 0);
    m->connect(mon);
    monitor_ = m.release();
  }
  if (opts_.reuse_port) {
    int fd = listen_reuse_port();
    // libzmq takes the listening descriptor as it is (it neither binds nor listens).
    if (zmq_setsockopt(sock->handle(), ZMQ_USE_FD, &fd, sizeof fd) != 0) {
      ::close(fd);
      throw std::runtime_error("gateway: ZMQ_USE_FD refused");
    }
  }
  sock->bind(endpoint_);
  auto bound = sock->get(zmq::sockopt::last_endpoint);
  if (bound.rfind("ipc://", 0) == 0) {
    bound_path_ = bound.substr(6);
  } else if (auto colon = bound.rfind(':'); colon != std::string::npos) {
    bound_port_ =
        static_cast<uint16_t>(std::strtoul(bound.c_str() + colon + 1, nullptr, 10));
  }
  if (!opts_.pub_endpoint.empty()) {
    auto pub = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::pub);
    pub->set(zmq::sockopt::linger, 0);
    // A subscriber that stops reading loses what is over this, never more memory.
    pub->set(zmq::sockopt::sndhwm, opts_.pub_hwm);
    if (opts_.curve) {
      pub->set(zmq::sockopt::curve_server, 1);
      pub->set(zmq::sockopt::curve_secretkey, opts_.curve->secret_z85);
      pub->set(zmq::sockopt::zap_domain, opts_.curve->domain);
    }
    pub->bind(opts_.pub_endpoint);
    pub_bound_ = pub->get(zmq::sockopt::last_endpoint);
    pub_ = pub.release();
  }
  socket_ = sock.release();
  thread_ = std::thread([this] { run(socket_); });
  return bound;
}

int gateway::listen_reuse_port() const {
  // Several processes share the port: it must be given.
  auto e = parse_tcp_endpoint(endpoint_);
  if (!e || e->port == "*" || e->port == "0")
    throw std::invalid_argument("gateway: reuse_port needs tcp://host:port with a fixed "
                                "port, not " +
                                endpoint_);
  return reuse_port_socket(*e, opts_.backlog > 0 ? opts_.backlog : 100);
}

void gateway::stop() {
  stopping_ = true;
  if (!thread_.joinable()) return;
  wake();
  thread_.join();
  delete static_cast<zmq::socket_t*>(socket_);
  socket_ = nullptr;
  delete static_cast<zmq::socket_t*>(monitor_);
  monitor_ = nullptr;
  delete static_cast<zmq::socket_t*>(zap_);
  zap_ = nullptr;
  delete static_cast<zmq::socket_t*>(pub_);
  pub_ = nullptr;
  std::lock_guard<std::mutex> guard{mtx_};
  stats_.dropped_stopped += queue_.size();
  queue_.clear();
}

void gateway::send(std::string device_id, std::string header_frame,
                   std::string body_frame) {
  if (stopping_) {
    ++stats_.dropped_stopped;
    return;
  }
  bool was_empty = false;
  bool full = false;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    full = queue_.size() >= max_queued_sends;
    if (!full) {
      was_empty = queue_.empty();
      queue_.push_back(
          {std::move(device_id), std::move(header_frame), std::move(body_frame)});
    }
  }
  if (full) {
    ++stats_.dropped_full;
    ++stats_.unreachable;
    if (on_unreachable_) on_unreachable_(device_id);
    return;
  }
  if (was_empty) wake();
}

void gateway::publish(std::string topic, std::string header_frame,
                      std::string body_frame) {
  if (stopping_ || pub_ == nullptr) return;
  bool was_empty;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    // Bounded even if the socket thread stalls: past the bound an event is dropped
    // (subscribers see the gap in its family's seq).
    if (events_.size() >= max_queued_events) {
      ++stats_.events_dropped;
      return;
    }
    was_empty = events_.empty() && queue_.empty();
    events_.push_back({std::move(topic), std::move(header_frame), std::move(body_frame)});
  }
  if (was_empty) wake();
}

void gateway::reject(header h, refusal r) {
  if (stopping_) return;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    rejects_.emplace_back(std::move(h), std::move(r));
  }
  wake();
}

void gateway::cut(std::string device_id) {
  if (stopping_) return;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    cuts_.push_back(std::move(device_id));
  }
  wake();
}

void gateway::note_connection(const std::string& id, int fd) {
  if (fd < 0) return;
  auto i = live_fd_.find(id);
  if (i != live_fd_.end() && i->second == fd) return;
  if (i != live_fd_.end()) fd_device_.erase(i->second);
  live_fd_[id] = fd;
  fd_device_[fd] = id;
}

void gateway::serve_zap() {
  auto& zap = *static_cast<zmq::socket_t*>(zap_);
  std::vector<std::string> frames;
  for (bool more = true; more && frames.size() < 16;) {
    zmq::message_t part;
    if (!zap.recv(part, zmq::recv_flags::dontwait)) return;
    frames.emplace_back(part.to_string());
    more = part.more();
  }
  const auto& c = *opts_.curve;
  uint64_t held = 0;
  if ((opts_.max_connections > 0 && open_connections_ > opts_.max_connections) ||
      (c.handshakes_per_second > 0 && !handshake_rate_.pass("zap", held))) {
    ++stats_.zap_refused_busy;
    warn("handshakes", refusal_kind::busy,
         "bus: refused a connection on " + c.domain +
             ": too many connections or "
             "handshakes");
    std::vector<std::string> reply{
        "1.0", frames.size() > 1 ? frames[1] : std::string{}, "300", "busy", "", ""};
    for (std::size_t i = 0; i < reply.size(); ++i)
      (void)zap.send(zmq::buffer(reply[i]), i + 1 < reply.size()
                                                ? zmq::send_flags::sndmore
                                                : zmq::send_flags::none);
    return;
  }
  zap_stats z;
  auto d = decide_zap(frames, *opts_.curve->keys, z,
                      [this](const std::string& id) { return live_fd_.count(id) > 0; });
  stats_.zap_admitted += z.admitted;
  stats_.zap_refused_unknown += z.refused_unknown;
  stats_.zap_refused_domain += z.refused_domain;
  stats_.zap_refused_live += z.refused_live;
  stats_.zap_refused_malformed += z.refused_malformed;
  if (!d.admitted) {
    std::string peer = d.who ? d.who->user_id() : std::string{"unknown key"};
    warn(peer, refusal_kind::spoofed, "bus: refused a connection: " + printable(d.why));
    uint64_t held = 0;
    if (on_suspicious_ && audit_limit_.pass(peer + "|zap", held))
      on_suspicious_(printable(peer), "connection refused: " + d.why);
  }
  // A REP socket must answer every request; a request too malformed to answer still
  // gets a minimal refusal so the socket stays usable.
  if (d.reply.empty()) d.reply = {"1.0", "", "400", "malformed request", "", ""};
  for (std::size_t i = 0; i < d.reply.size(); ++i)
    (void)zap.send(zmq::buffer(d.reply[i]), i + 1 < d.reply.size()
                                                ? zmq::send_flags::sndmore
                                                : zmq::send_flags::none);
}

void gateway::on_monitor_event() {
  auto& mon = *static_cast<zmq::socket_t*>(monitor_);
  // Every event waiting, in order, before any descriptor is cut: a connection
  // accepted and already closed again in this batch is not cut (its number may be
  // someone else's by now).
  std::vector<int> over; // accepted past the cap, in order
  for (int n = 0; n < 4096; ++n) {
    zmq::message_t event, address;
    if (!mon.recv(event, zmq::recv_flags::dontwait)) break;
    if (event.more()) (void)mon.recv(address, zmq::recv_flags::none);
    if (event.size() < 6) continue;
    uint16_t id;
    uint32_t value;
    std::memcpy(&id, event.data(), sizeof id);
    std::memcpy(&value, static_cast<const char*>(event.data()) + 2, sizeof value);
    auto fd = static_cast<int>(value);
    if (id == ZMQ_EVENT_ACCEPTED) {
      stats_.connections_open = ++open_connections_;
      auto cap = opts_.max_connections;
      auto hard = opts_.curve ? cap + opts_.handshake_margin : cap;
      if (cap > 0 && open_connections_ > hard && fd >= 0) over.push_back(fd);
      continue;
    }
    if (id != ZMQ_EVENT_DISCONNECTED && id != ZMQ_EVENT_CLOSED) continue;
    if (open_connections_ > 0) --open_connections_;
    stats_.connections_open = open_connections_;
    over.erase(std::remove(over.begin(), over.end(), fd), over.end());
    if (auto i = fd_device_.find(fd); i != fd_device_.end()) {
      if (on_gone_) on_gone_(i->second);
      live_fd_.erase(i->second);
      fd_device_.erase(i);
    }
  }
  for (int fd : over)
    refuse_accepted(fd);
}

bool gateway::ours(int fd) const {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return false;
  if (a.ss_family == AF_INET)
    return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port) == bound_port_;
  if (a.ss_family == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port) == bound_port_;
  // ipc://: the listener's path.
  if (a.ss_family == AF_UNIX)
    return !bound_path_.empty() &&
           std::string_view{reinterpret_cast<const sockaddr_un&>(a).sun_path} ==
               bound_path_;
  return false;
}

bool gateway::refuse_accepted(int fd) {
  // The descriptor must still be a connection of this endpoint: libzmq's engine may
  // have closed it and the number gone to another socket of the process.
  if (!ours(fd)) return false;
  // libzmq owns the descriptor: shutting it down makes its engine see the end and
  // close it (counted down by the DISCONNECTED event that follows).
  ::shutdown(fd, SHUT_RDWR);
  ++stats_.accept_refused_busy;
  auto cap = opts_.max_connections;
  warn("connections", refusal_kind::busy,
       "bus: closed a connection as it was accepted: " +
           std::to_string(open_connections_) + " open, at most " +
           std::to_string(opts_.curve ? cap + opts_.handshake_margin : cap));
  return true;
}

void gateway::wake() {
  uint64_t one = 1;
  // A full eventfd counter already means "wake up": nothing to handle.
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void gateway::warn(std::string_view peer, refusal_kind k, const std::string& line) {
  uint64_t held = 0, held_all = 0;
  std::string key{peer};
  key += '|';
  key += to_string(k);
  if (!log_limit_.pass(key, held) || !kind_log_limit_.pass(to_string(k), held_all)) {
    ++stats_.log_suppressed;
    return;
  }
  if (!warn_) return;
  std::string more;
  if (held > 0)
    more += " (" + std::to_string(held) + " similar lines from this peer suppressed)";
  if (held_all > 0)
    more += " (" + std::to_string(held_all) + " lines of this kind suppressed)";
  warn_(line + more);
}

void gateway::refuse(void* raw, std::string_view peer, const header* h,
                     const refusal& r) {
  ++stats_.refused[static_cast<std::size_t>(r.kind)];
  if (is_bad(r.kind)) ++stats_.bad_frames;
  warn(peer, r.kind,
       "bus: refused " + (h ? printable(h->type) : std::string{"frame"}) + " from " +
           printable(peer) + " (" + to_string(r.kind) + "): " + printable(r.reason));
  if (r.kind == refusal_kind::spoofed && on_suspicious_) {
    uint64_t held = 0;
    if (audit_limit_.pass(std::string{peer} + "|audit", held))
      on_suspicious_(
          printable(peer),
          r.reason + (held > 0 ? " (and " + std::to_string(held) + " more not audited)"
                               : std::string{}));
  }
  // Tell the agent, within reason: a flood gets a bounded number of answers.
  uint64_t held = 0;
  if (!reply_limit_.pass(std::string{peer} + '|' + to_string(r.kind), held)) return;
  rejected body;
  if (h) {
    body.msg_id = h->msg_id;
    body.type = h->type;
  }
  body.limit = r.limit;
  body.value = r.value;
  body.reason = r.reason;
  body.retry_after_ms = r.retry_after_ms;
  header out;
  out.type = type::rejected;
  out.msg_id = ++out_msg_id_;
  bool integrators = zap_ && opts_.curve->domain == zap_domain::integrators;
  out.device_id = integrators ? std::string{} : std::string{peer};
  out.time = now_us();
  auto hf = encode(out);
  auto bf = encode(body);
  auto& sock = *static_cast<zmq::socket_t*>(raw);
  try {
    auto ok = sock.send(zmq::buffer(peer.data(), peer.size()),
                        zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (!ok) return;
    (void)sock.send(zmq::buffer(hf), zmq::send_flags::sndmore);
    (void)sock.send(zmq::buffer(bf), zmq::send_flags::none);
    ++stats_.rejected_sent;
    ++stats_.frames_out;
  } catch (const zmq::error_t&) {
    // The peer is gone: nobody to tell.
  }
}

void gateway::run(void* raw) {
  auto& sock = *static_cast<zmq::socket_t*>(raw);
  std::vector<outbound> batch;
  std::string why;
  zmq::message_t parts[3];
  while (!stopping_) {
    zmq::pollitem_t items[] = {
        {sock.handle(), 0, ZMQ_POLLIN, 0},
        {nullptr, wake_fd_, ZMQ_POLLIN, 0},
        {monitor_ ? static_cast<zmq::socket_t*>(monitor_)->handle() : nullptr, -1,
         ZMQ_POLLIN, 0},
        {zap_ ? static_cast<zmq::socket_t*>(zap_)->handle() : nullptr, -1, ZMQ_POLLIN,
         0}};
    try {
      zmq::poll(items, zap_ ? 4 : monitor_ ? 3 : 2, std::chrono::milliseconds{-1});
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t n;
      [[maybe_unused]] auto r = ::read(wake_fd_, &n, sizeof n);
    }
    // Connections end before handshakes are judged, so a device whose old
    // connection just closed is not refused as still live.
    if (monitor_ && (items[2].revents & ZMQ_POLLIN)) on_monitor_event();
    if (zap_) {
      if (items[3].revents & ZMQ_POLLIN) serve_zap();
      std::vector<std::string> cuts;
      {
        std::lock_guard<std::mutex> guard{mtx_};
        cuts.swap(cuts_);
      }
      bool integrators = opts_.curve->domain == zap_domain::integrators;
      for (auto& id : cuts)
        if (auto i = live_fd_.find(integrators ? "integrator:" + id : id);
            i != live_fd_.end() && ours(i->second)) {
          // libzmq sees the connection end and closes its side; the key is gone
          // from the registry, so the agent's reconnect is refused at ZAP.
          ::shutdown(i->second, SHUT_RDWR);
          ++stats_.revoked_cut;
        }
    }
    // Inbound: expect exactly [routing id][header][body].
    for (int i = 0; i < inbound_batch; ++i) {
      int count = 0;
      bool more = true;
      zmq::recv_result_t got;
      try {
        got = sock.recv(parts[0], zmq::recv_flags::dontwait);
      } catch (const zmq::error_t&) {
        break;
      }
      if (!got) break;
      count = 1;
      more = parts[0].more();
      while (more) {
        zmq::message_t extra;
        zmq::message_t& dst = count < 3 ? parts[count] : extra;
        (void)sock.recv(dst, zmq::recv_flags::none);
        more = dst.more();
        ++count;
      }
      ++stats_.frames_in;
      auto routing = parts[0].to_string_view();
      if (count != 3) {
        refuse(raw, routing, nullptr,
               {refusal_kind::malformed,
                "expected [header][body], got " + std::to_string(count - 1) + " frames",
                "", 0, 0});
        continue;
      }
      auto hframe = parts[1].to_string_view();
      auto bframe = parts[2].to_string_view();
      // Over the soft limit: counted and answered, never decoded beyond the header.
      if (hframe.size() > limits_.max_frame || bframe.size() > limits_.max_frame) {
        std::optional<header> h;
        if (hframe.size() <= limits_.max_frame) {
          h = decode_header(hframe, limits_, why);
          if (h && h->device_id != routing) h.reset();
        }
        refuse(raw, routing, h ? &*h : nullptr,
               {refusal_kind::oversized,
                "frame of " + std::to_string(std::max(hframe.size(), bframe.size())) +
                    " bytes",
                "max_frame_bytes", limits_.max_frame, 0});
        continue;
      }
      bool integrators = zap_ && opts_.curve->domain == zap_domain::integrators;
      auto hdr = decode_header(hframe, limits_, why, !integrators);
      if (!hdr) {
        refuse(raw, routing, nullptr,
               {refusal_kind::malformed, "header: " + why, "", 0, 0});
        continue;
      }
      // With CURVE, the connection's authenticated identity (the ZAP User-Id) must be
      // the device the routing id claims (on the enrollment endpoint, any key: the
      // handler checks the key it enrolls is this one).
      std::string_view user_id;
      if (zap_) {
        const char* uid = zmq_msg_gets(parts[1].handle(), "User-Id");
        user_id = uid ? std::string_view{uid} : std::string_view{};
        bool enrolling = opts_.curve->domain == zap_domain::enroll;
        bool prefix_only = enrolling || integrators;
        std::string want = enrolling     ? std::string{"enroll:"}
                           : integrators ? std::string{"integrator:"}
                                         : "agent:" + std::string{routing};
        if (uid == nullptr || user_id.substr(0, want.size()) != want ||
            (!prefix_only && user_id.size() != want.size())) {
          refuse(raw, routing, &*hdr,
                 {refusal_kind::spoofed,
                  "connection authenticated as " + printable(uid ? uid : "nobody") +
                      " speaks as " + printable(routing),
                  "", 0, 0});
          continue;
        }
        // The descriptor the message came on (-1 if libzmq cannot say): how a
        // revoked device's connection is found and cut.
        note_connection(integrators ? std::string{user_id} : std::string{routing},
                        zmq_msg_get(parts[1].handle(), ZMQ_SRCFD));
      }
      // An integrator's routing id is whatever its socket has: answers go to it, and
      // the header's device_id means nothing here.
      if (integrators) hdr->device_id = std::string{routing};
      // The header must name the connection it came on: no speaking for others.
      if (!integrators && hdr->device_id != routing) {
        refuse(raw, routing, &*hdr,
               {refusal_kind::spoofed, "header names device " + printable(hdr->device_id),
                "", 0, 0});
        continue;
      }
      auto saved = *hdr;
      if (auto r = on_message_(std::move(*hdr), bframe, user_id))
        refuse(raw, routing, &saved, *r);
    }
    // Outbound.
    std::vector<outbound> events;
    std::vector<std::pair<header, refusal>> rejects;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      batch.swap(queue_);
      events.swap(events_);
      rejects.swap(rejects_);
    }
    for (auto& [h, r] : rejects)
      refuse(raw, h.device_id, &h, r);
    if (pub_) {
      auto& pub = *static_cast<zmq::socket_t*>(pub_);
      for (auto& e : events) {
        try {
          (void)pub.send(zmq::buffer(e.device_id), zmq::send_flags::sndmore);
          (void)pub.send(zmq::buffer(e.header), zmq::send_flags::sndmore);
          (void)pub.send(zmq::buffer(e.body), zmq::send_flags::dontwait);
          ++stats_.events_published;
        } catch (const zmq::error_t&) {
        }
      }
    }
    for (auto& out : batch) {
      try {
        auto ok = sock.send(zmq::buffer(out.device_id),
                            zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        if (ok) {
          (void)sock.send(zmq::buffer(out.header), zmq::send_flags::sndmore);
          (void)sock.send(zmq::buffer(out.body), zmq::send_flags::none);
          ++stats_.frames_out;
          continue;
        }
      } catch (const zmq::error_t& e) {
        // EHOSTUNREACH (ZMQ_ROUTER_MANDATORY): no such peer connected.
      }
      ++stats_.unreachable;
      if (on_unreachable_) on_unreachable_(out.device_id);
    }
    batch.clear();
  }
}

} // namespace parry::bus
