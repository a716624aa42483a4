#include "bench/fleet.hpp"

#include <cstdio>
#include <stdexcept>

namespace parry::bench {

fleet::fleet(std::size_t n, const std::string& server_key,
             const std::vector<bus::curve_key_pair>& keys)
    : ctx_(1), seq_(n, 0) {
  if (!server_key.empty() && keys.size() != n)
    throw std::invalid_argument("fleet: one CURVE key pair per device");
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
    if (!server_key.empty()) {
      d.set(zmq::sockopt::curve_serverkey, server_key);
      d.set(zmq::sockopt::curve_publickey, keys[i].public_z85);
      d.set(zmq::sockopt::curve_secretkey, keys[i].secret_z85);
    }
    dealers_.push_back(std::move(d));
  }
}

void fleet::connect(const std::string& ep) {
  for (auto& d : dealers_)
    d.connect(ep);
}

void fleet::disconnect(const std::string& ep) {
  for (auto& d : dealers_)
    d.disconnect(ep);
}

std::size_t fleet::blast(const std::vector<frame_pair>& frames,
                         steady::time_point deadline) {
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

bool fleet::send(std::size_t i, const frame_pair& f) {
  auto& d = dealers_[i];
  if (!d.send(zmq::buffer(f.header),
              zmq::send_flags::sndmore | zmq::send_flags::dontwait))
    return false;
  // Once the first part is queued the rest of the message is accepted too.
  (void)d.send(zmq::buffer(f.body), zmq::send_flags::none);
  return true;
}

std::size_t fleet::greet(std::chrono::milliseconds timeout) {
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

void fleet::start_heartbeats() {
  hb_origin_ = steady::now();
  hb_sent_ = 0;
}

void fleet::keep_alive(std::chrono::milliseconds period) {
  auto elapsed = std::chrono::duration<double>(steady::now() - hb_origin_) /
                 std::chrono::duration<double>(period);
  auto due = static_cast<std::size_t>(elapsed * static_cast<double>(size()));
  for (; hb_sent_ < due; ++hb_sent_) {
    auto i = hb_sent_ % size();
    (void)send(i, frame(i, bus::type::heartbeat, bus::heartbeat{false}));
  }
}

loopback_peer::loopback_peer(mode m)
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

loopback_peer::~loopback_peer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void loopback_peer::run() {
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

} // namespace parry::bench
