#include "bus/link.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <iterator>
#include <stdexcept>

#include <zmq.hpp>

namespace parry::bus::link {

namespace {

// The snapshot of keys is complete: agents may connect.
constexpr std::string_view keys_done = "K";

// Link messages drained per wake-up before the outbound queue is looked at.
constexpr int inbound_batch = 1024;
// A link message has at most this many frames ([routing][kind] and three more).
constexpr std::size_t max_frames = 5;
// Messages queued on the link per peer: the whole fleet's traffic passes here.
constexpr int link_hwm = 1000000;

// Pointers to every counter of a gateway_stats, in a fixed order (the wire order of
// the `t` message: both ends are built from the same source).
template <class Stats, class F> void each_counter(Stats& s, F&& f) {
  f(s.frames_in);
  f(s.frames_out);
  f(s.bad_frames);
  f(s.unreachable);
  for (auto& r : s.refused)
    f(r);
  f(s.rejected_sent);
  f(s.connections_open);
  f(s.log_suppressed);
  f(s.dropped_stopped);
  f(s.zap_admitted);
  f(s.zap_refused_unknown);
  f(s.zap_refused_domain);
  f(s.zap_refused_live);
  f(s.zap_refused_malformed);
  f(s.zap_refused_busy);
  f(s.revoked_cut);
  f(s.events_published);
  f(s.events_dropped);
  f(s.dropped_full); // added last: an older peer's message reads it as 0
  f(s.accept_refused_busy);
}

decode_limits link_limits() {
  decode_limits l;
  l.max_frame = 1 << 20;
  l.max_depth = 3;
  l.max_array = 1000;
  l.max_map = 0;
  l.max_str = 4096;
  l.max_bin = 4096;
  return l;
}

std::vector<std::string> recv_frames(zmq::socket_t& s, bool& got) {
  std::vector<std::string> frames;
  got = false;
  zmq::message_t part;
  if (!s.recv(part, zmq::recv_flags::dontwait)) return frames;
  got = true;
  for (;;) {
    bool more = part.more();
    if (frames.size() < max_frames + 1) frames.emplace_back(part.to_string());
    if (!more) break;
    (void)s.recv(part, zmq::recv_flags::none);
  }
  return frames;
}

bool send_all(zmq::socket_t& s, const std::vector<std::string_view>& frames) {
  try {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      auto flags = zmq::send_flags::dontwait;
      if (i + 1 < frames.size()) flags = flags | zmq::send_flags::sndmore;
      if (!s.send(zmq::buffer(frames[i].data(), frames[i].size()), flags))
        return i > 0; // a part once started is always completed by libzmq
    }
    return true;
  } catch (const zmq::error_t&) {
    return false;
  }
}

// Waits up to `wait` for input on `s`; a signal only ends the wait early.
void wait_for(zmq::socket_t& s, std::chrono::milliseconds wait) {
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  try {
    zmq::poll(&item, 1, wait);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
  }
}

} // namespace

std::string up_id(int index) {
  return "up-" + std::to_string(index);
}

std::string down_id(int index) {
  return "gw-" + std::to_string(index);
}

std::optional<int> index_of(std::string_view routing, bool* up) {
  bool is_up = routing.substr(0, 3) == "up-";
  if (!is_up && routing.substr(0, 3) != "gw-") return std::nullopt;
  auto digits = routing.substr(3);
  int i = -1;
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), i);
  if (ec != std::errc{} || p != digits.data() + digits.size() || i < 0 ||
      digits.size() > 4)
    return std::nullopt;
  if (up != nullptr) *up = is_up;
  return i;
}

std::string encode_refusal(const refusal& r) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  pk.pack_array(5);
  pk.pack(static_cast<uint32_t>(r.kind));
  pk.pack(r.reason);
  pk.pack(r.limit);
  pk.pack(r.value);
  pk.pack(r.retry_after_ms);
  return {buf.data(), buf.size()};
}

std::optional<refusal> decode_refusal(std::string_view frame) {
  std::string why;
  auto oh = parse_frame(frame, link_limits(), why);
  if (!oh) return std::nullopt;
  try {
    const auto& o = oh->get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 5) return std::nullopt;
    auto k = o.via.array.ptr[0].as<uint32_t>();
    if (k >= refusal_kinds) return std::nullopt;
    refusal r;
    r.kind = static_cast<refusal_kind>(k);
    r.reason = o.via.array.ptr[1].as<std::string>();
    r.limit = o.via.array.ptr[2].as<std::string>();
    r.value = o.via.array.ptr[3].as<uint64_t>();
    r.retry_after_ms = o.via.array.ptr[4].as<uint32_t>();
    return r;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::vector<std::string> encode_keys(const std::vector<key_change>& changes,
                                     std::size_t per_frame) {
  std::vector<std::string> out;
  per_frame = std::max<std::size_t>(per_frame, 1);
  std::size_t i = 0;
  do {
    auto n = std::min(per_frame, changes.size() - i);
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk{buf};
    pk.pack_array(static_cast<uint32_t>(n));
    for (std::size_t j = i; j < i + n; ++j) {
      const auto& [key, who] = changes[j];
      if (!who) {
        pk.pack_array(1);
        pk.pack(key);
        continue;
      }
      pk.pack_array(4);
      pk.pack(key);
      pk.pack(static_cast<uint32_t>(who->kind));
      pk.pack(who->name);
      pk.pack(who->role);
    }
    out.emplace_back(buf.data(), buf.size());
    i += n;
  } while (i < changes.size());
  return out;
}

std::optional<std::vector<key_change>> decode_keys(std::string_view frame) {
  std::string why;
  auto oh = parse_frame(frame, link_limits(), why);
  if (!oh) return std::nullopt;
  try {
    const auto& o = oh->get();
    if (o.type != msgpack::type::ARRAY) return std::nullopt;
    std::vector<key_change> out;
    for (uint32_t i = 0; i < o.via.array.size; ++i) {
      const auto& e = o.via.array.ptr[i];
      if (e.type != msgpack::type::ARRAY ||
          (e.via.array.size != 1 && e.via.array.size != 4))
        return std::nullopt;
      auto key = e.via.array.ptr[0].as<std::string>();
      if (key.size() != 32) return std::nullopt;
      if (e.via.array.size == 1) {
        out.emplace_back(std::move(key), std::nullopt);
        continue;
      }
      auto k = e.via.array.ptr[1].as<uint32_t>();
      if (k > static_cast<uint32_t>(key_identity::kind_t::integrator))
        return std::nullopt;
      key_identity who;
      who.kind = static_cast<key_identity::kind_t>(k);
      who.name = e.via.array.ptr[2].as<std::string>();
      who.role = e.via.array.ptr[3].as<std::string>();
      if (!valid_id(who.name)) return std::nullopt;
      out.emplace_back(std::move(key), std::move(who));
    }
    return out;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string encode_stats(const gateway_stats& s) {
  std::vector<uint64_t> v;
  each_counter(s, [&v](const std::atomic<uint64_t>& c) { v.push_back(c.load()); });
  msgpack::sbuffer buf;
  msgpack::pack(buf, v);
  return {buf.data(), buf.size()};
}

bool decode_stats(std::string_view frame, gateway_stats& out) {
  std::string why;
  auto oh = parse_frame(frame, link_limits(), why);
  if (!oh) return false;
  try {
    auto v = oh->get().as<std::vector<uint64_t>>();
    std::size_t i = 0;
    each_counter(out, [&](std::atomic<uint64_t>& c) {
      c = i < v.size() ? v[i] : 0;
      ++i;
    });
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

void add_stats(gateway_stats& sum, const gateway_stats& part) {
  std::vector<uint64_t> v;
  each_counter(part, [&v](const std::atomic<uint64_t>& c) { v.push_back(c.load()); });
  std::size_t i = 0;
  each_counter(sum, [&](std::atomic<uint64_t>& c) { c += v[i++]; });
}

// -- the core's side ----------------------------------------------------------------

hub::hub(std::string endpoint, int gateways, decode_limits limits,
         gateway::message_handler on_message, gateway::unreachable_handler on_unreachable,
         bool exclusive)
    : endpoint_(std::move(endpoint)), gateways_(std::max(gateways, 1)), limits_(limits),
      on_message_(std::move(on_message)), on_unreachable_(std::move(on_unreachable)),
      exclusive_(exclusive), ctx_(std::make_unique<zmq::context_t>(1)),
      keys_from_(static_cast<std::size_t>(gateways_), 0),
      said_hello_(static_cast<std::size_t>(gateways_), false),
      listening_(static_cast<std::size_t>(gateways_), false) {
  for (int i = 0; i < gateways_; ++i)
    per_gateway_.push_back(std::make_unique<gateway_stats>());
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error("eventfd failed");
}

hub::~hub() {
  stop();
  ::close(wake_fd_);
}

void hub::serve_keys(std::shared_ptr<key_registry> keys) {
  keys_ = std::move(keys);
  keys_->observe(
      [this](uint64_t change, const std::string& key, const key_identity* who) {
        out_msg m;
        m.kind = std::string{kind::keys};
        m.a = encode_keys({{key, who ? std::optional<key_identity>{*who} : std::nullopt}})
                  .front();
        m.change = change;
        queue(std::move(m));
      });
}

void hub::start() {
  auto sock = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::router);
  sock->set(zmq::sockopt::router_mandatory, 1);
  sock->set(zmq::sockopt::linger, 0);
  sock->set(zmq::sockopt::sndhwm, link_hwm);
  sock->set(zmq::sockopt::rcvhwm, link_hwm);
  sock->bind(endpoint_);
  socket_ = sock.release();
  thread_ = std::thread([this] { run(); });
}

void hub::stop() {
  if (keys_) keys_->observe(nullptr);
  stopping_ = true;
  if (!thread_.joinable()) return;
  wake();
  thread_.join();
  delete static_cast<zmq::socket_t*>(socket_);
  socket_ = nullptr;
}

void hub::wake() {
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

bool hub::queue(out_msg&& m) {
  if (stopping_) return true;
  bool was_empty;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (m.kind == kind::deliver) {
      if (queued_sends_ >= max_queued_sends) return false; // `m` is left as it was
      ++queued_sends_;
    }
    was_empty = queue_.empty();
    queue_.push_back(std::move(m));
  }
  if (was_empty) wake();
  return true;
}

void hub::send(std::string device_id, std::string header_frame, std::string body_frame) {
  if (stopping_) {
    ++stats_.no_route;
    return;
  }
  out_msg m{std::string{kind::deliver}, std::move(device_id), std::move(header_frame),
            std::move(body_frame), 0};
  if (queue(std::move(m))) return;
  ++stats_.dropped_full;
  ++stats_.no_route;
  if (on_unreachable_) on_unreachable_(m.device_id);
}

void hub::cut(std::string device_id) {
  queue({std::string{kind::cut}, std::move(device_id), {}, {}, 0});
}

void hub::gateway_down(int index) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    down_.push_back(index);
  }
  wake();
}

void hub::gateway_totals(gateway_stats& out) const {
  std::lock_guard<std::mutex> guard{stats_mtx_};
  for (const auto& g : per_gateway_)
    add_stats(out, *g);
}

std::vector<uint64_t> hub::connections() const {
  std::lock_guard<std::mutex> guard{stats_mtx_};
  std::vector<uint64_t> out;
  for (const auto& g : per_gateway_)
    out.push_back(g->connections_open.load());
  return out;
}

bool hub::send_to(void* raw, int index, std::vector<std::string_view> frames) {
  auto id = down_id(index);
  frames.insert(frames.begin(), id);
  return send_all(*static_cast<zmq::socket_t*>(raw), frames);
}

void hub::on_inbound(void* raw, int index, bool up, std::vector<std::string>& f) {
  auto bad = [this] { ++stats_.bad_link_messages; };
  if (f.size() < 2) return bad();
  const auto& k = f[1];
  if (up && k == kind::message && f.size() == 4) {
    std::string why;
    auto h = decode_header(f[2], limits_, why);
    if (!h) return bad();
    const auto& device = h->device_id;
    auto reject = [&](const refusal& r) {
      (void)send_to(raw, index, {kind::reject, f[2], encode_refusal(r)});
    };
    auto o = owner_.find(device);
    if (exclusive_ && o != owner_.end() && o->second != index) {
      ++stats_.refused_elsewhere;
      return reject({refusal_kind::spoofed,
                     "device already connected through another gateway", "", 0, 0});
    }
    if (o == owner_.end()) {
      owner_.emplace(device, index);
      routed_ = owner_.size();
    } else {
      o->second = index;
    }
    ++stats_.messages;
    if (auto r = on_message_(std::move(*h), f[3], {})) reject(*r);
    return;
  }
  if (up && (k == kind::gone || k == kind::unreachable) && f.size() == 3) {
    // Either way the gateway holds no connection of the device now (on plain TCP,
    // where no `gone` comes, this is what keeps the routes bounded).
    if (auto o = owner_.find(f[2]); o != owner_.end() && o->second == index) {
      owner_.erase(o);
      routed_ = owner_.size();
    }
    if (k == kind::unreachable && on_unreachable_) on_unreachable_(f[2]);
    return;
  }
  if (up && k == kind::suspicious && f.size() == 4) {
    if (on_suspicious_) on_suspicious_(f[2], f[3]);
    return;
  }
  if (!up && k == kind::stats && f.size() == 3) {
    std::lock_guard<std::mutex> guard{stats_mtx_};
    if (!decode_stats(f[2], *per_gateway_[static_cast<std::size_t>(index)])) bad();
    return;
  }
  if (!up && k == kind::hello && f.size() == 2) {
    auto i = static_cast<std::size_t>(index);
    said_hello_[i] = true;
    // A gateway that (re)starts holds no connection yet.
    for (auto o = owner_.begin(); o != owner_.end();)
      o = o->second == index ? owner_.erase(o) : std::next(o);
    routed_ = owner_.size();
    key_registry::snapshot_t snap;
    if (keys_) snap = keys_->snapshot();
    std::vector<key_change> all;
    all.reserve(snap.entries.size());
    for (auto& [key, who] : snap.entries)
      all.emplace_back(std::move(key), std::move(who));
    for (const auto& frame : encode_keys(all))
      (void)send_to(raw, index, {kind::keys, frame});
    (void)send_to(raw, index, {keys_done});
    keys_from_[i] = snap.change;
    listening_[i] = false;
    count_up();
    return;
  }
  if (!up && k == kind::listening && f.size() == 2) {
    listening_[static_cast<std::size_t>(index)] = true;
    count_up();
    return;
  }
  bad();
}

void hub::count_up() {
  uint64_t n = 0;
  for (bool b : listening_)
    n += b ? 1 : 0;
  stats_.gateways_up = n;
}

void hub::run() {
  auto& sock = *static_cast<zmq::socket_t*>(socket_);
  std::vector<out_msg> batch;
  while (!stopping_) {
    zmq::pollitem_t items[] = {{sock.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds{-1});
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t n;
      [[maybe_unused]] auto r = ::read(wake_fd_, &n, sizeof n);
    }
    for (int i = 0; i < inbound_batch; ++i) {
      bool got = false;
      auto frames = recv_frames(sock, got);
      if (!got) break;
      bool up = false;
      auto index = frames.empty() ? std::nullopt : index_of(frames[0], &up);
      if (!index || *index >= gateways_ || frames.size() > max_frames) {
        ++stats_.bad_link_messages;
        continue;
      }
      on_inbound(socket_, *index, up, frames);
    }
    std::vector<int> down;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      batch.swap(queue_);
      queued_sends_ = 0;
      down.swap(down_);
    }
    for (int index : down) {
      if (index < 0 || index >= gateways_) continue;
      said_hello_[static_cast<std::size_t>(index)] = false;
      listening_[static_cast<std::size_t>(index)] = false;
      count_up();
      for (auto o = owner_.begin(); o != owner_.end();)
        o = o->second == index ? owner_.erase(o) : std::next(o);
      routed_ = owner_.size();
      std::lock_guard<std::mutex> guard{stats_mtx_};
      per_gateway_[static_cast<std::size_t>(index)]->connections_open = 0;
    }
    for (auto& m : batch) {
      if (m.kind == kind::deliver) {
        auto o = owner_.find(m.device_id);
        if (o != owner_.end() &&
            send_to(socket_, o->second, {kind::deliver, m.device_id, m.a, m.b})) {
          ++stats_.delivered;
          continue;
        }
        ++stats_.no_route;
        if (on_unreachable_) on_unreachable_(m.device_id);
        continue;
      }
      for (int g = 0; g < gateways_; ++g) {
        auto gi = static_cast<std::size_t>(g);
        if (!said_hello_[gi]) continue;
        if (m.kind == kind::cut) {
          (void)send_to(socket_, g, {kind::cut, m.device_id});
        } else if (m.kind == kind::keys && m.change > keys_from_[gi]) {
          (void)send_to(socket_, g, {kind::keys, m.a});
          keys_from_[gi] = m.change;
        }
      }
    }
    batch.clear();
  }
}

// -- the gateway process's side -----------------------------------------------------

int run_gateway_side(const gateway_side_options& opts, const std::atomic<bool>& stop,
                     const std::function<void(const std::string&)>& started) {
  auto log = [&](const std::string& line) {
    if (opts.log) opts.log(line);
  };
  zmq::context_t ctx{1};
  auto dealer = [&](const std::string& id) {
    auto s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
    s->set(zmq::sockopt::routing_id, id);
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::sndhwm, link_hwm);
    s->set(zmq::sockopt::rcvhwm, link_hwm);
    s->connect(opts.link);
    return s;
  };
  // The socket thread sends on `up`; this thread owns `down`.
  auto up = dealer(up_id(opts.index));
  auto down = dealer(down_id(opts.index));
  auto registry = std::make_shared<key_registry>();
  auto apply_keys = [&](std::string_view frame) {
    auto changes = decode_keys(frame);
    if (!changes) {
      log("gateway link: a keys message that does not decode was ignored");
      return;
    }
    for (auto& [key, who] : *changes)
      if (who)
        registry->admit(std::move(key), std::move(*who));
      else
        registry->revoke_key(key);
  };
  (void)send_all(*down, {kind::hello});
  // The keys first: a handshake before them would be refused for nothing.
  auto deadline = std::chrono::steady_clock::now() + opts.keys_timeout;
  for (bool done = false; !done;) {
    if (stop) return 0;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      log("gateway link: no keys from the core at " + opts.link);
      return 1;
    }
    wait_for(*down, std::min(left, std::chrono::milliseconds{200}));
    bool got = true;
    while (got) {
      auto f = recv_frames(*down, got);
      if (!got || f.empty()) break;
      if (f[0] == kind::keys && f.size() == 2) apply_keys(f[1]);
      if (f[0] == keys_done) done = true;
    }
  }
  auto gopts = opts.gateway;
  gopts.reuse_port = true;
  if (gopts.curve) gopts.curve->keys = registry;
  auto* up_sock = up.get();
  auto forward = [up_sock](std::vector<std::string_view> frames) {
    return send_all(*up_sock, frames);
  };
  gateway gw{opts.endpoint, opts.limits,
             [forward](header&& h, std::string_view body,
                       std::string_view) -> std::optional<refusal> {
               if (forward({kind::message, encode(h), body})) return std::nullopt;
               return refusal{refusal_kind::busy, "server busy: link to the core full",
                              "", 0, 1000};
             },
             [forward](const std::string& device) {
               (void)forward({kind::unreachable, device});
             },
             gopts};
  gw.on_gone([forward](const std::string& device) {
    (void)forward({kind::gone, device});
  });
  gw.on_suspicious([forward](const std::string& peer, const std::string& what) {
    (void)forward({kind::suspicious, peer, what});
  });
  gw.on_warning(log);
  std::string bound;
  try {
    bound = gw.start();
  } catch (const std::exception& e) {
    log(std::string{"gateway: "} + e.what());
    return 1;
  }
  (void)send_all(*down, {kind::listening});
  if (started) started(bound);
  auto next_stats = std::chrono::steady_clock::now();
  std::string why;
  while (!stop) {
    auto now = std::chrono::steady_clock::now();
    if (now >= next_stats) {
      (void)send_all(*down, {kind::stats, encode_stats(gw.stats())});
      next_stats = now + opts.stats_every;
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_stats - now);
    wait_for(*down, std::min(wait, std::chrono::milliseconds{200}));
    for (int i = 0; i < inbound_batch; ++i) {
      bool got = false;
      auto f = recv_frames(*down, got);
      if (!got) break;
      if (f.empty()) continue;
      const auto& k = f[0];
      if (k == kind::deliver && f.size() == 4) {
        gw.send(std::move(f[1]), std::move(f[2]), std::move(f[3]));
      } else if (k == kind::cut && f.size() == 2) {
        gw.cut(std::move(f[1]));
      } else if (k == kind::keys && f.size() == 2) {
        apply_keys(f[1]);
      } else if (k == kind::reject && f.size() == 3) {
        auto h = decode_header(f[1], opts.limits, why);
        auto r = decode_refusal(f[2]);
        if (h && r) gw.reject(std::move(*h), std::move(*r));
      }
    }
  }
  gw.stop();
  return 0;
}

} // namespace parry::bus::link
