#include "bus/gateway.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

#include <zmq.hpp>

namespace parry::bus {

namespace {

// Messages drained per wake-up before the loop looks at the outbound queue again,
// so a flood from agents cannot starve commands going out.
constexpr int inbound_batch = 512;

} // namespace

gateway::gateway(std::string endpoint, decode_limits limits, message_handler on_message,
                 unreachable_handler on_unreachable)
    : endpoint_(std::move(endpoint)), limits_(limits), on_message_(std::move(on_message)),
      on_unreachable_(std::move(on_unreachable)),
      ctx_(std::make_unique<zmq::context_t>(1)) {}

gateway::~gateway() {
  stop();
}

std::string gateway::start() {
  auto sock = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::router);
  sock->set(zmq::sockopt::router_mandatory, 1);
  // A device that reconnects takes over its routing id from the dead connection.
  sock->set(zmq::sockopt::router_handover, 1);
  sock->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(limits_.max_frame));
  sock->set(zmq::sockopt::linger, 0);
  sock->set(zmq::sockopt::rcvhwm, 100000);
  sock->set(zmq::sockopt::sndhwm, 100000);
  sock->bind(endpoint_);
  auto bound = sock->get(zmq::sockopt::last_endpoint);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error("eventfd failed");
  socket_ = sock.release();
  thread_ = std::thread([this] { run(socket_); });
  return bound;
}

void gateway::stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  wake();
  thread_.join();
  delete static_cast<zmq::socket_t*>(socket_);
  socket_ = nullptr;
  ::close(wake_fd_);
  wake_fd_ = -1;
}

void gateway::send(std::string device_id, std::string header_frame,
                   std::string body_frame) {
  bool was_empty;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    was_empty = queue_.empty();
    queue_.push_back(
        {std::move(device_id), std::move(header_frame), std::move(body_frame)});
  }
  if (was_empty) wake();
}

void gateway::wake() {
  uint64_t one = 1;
  // A full eventfd counter already means "wake up": nothing to handle.
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void gateway::run(void* raw) {
  auto& sock = *static_cast<zmq::socket_t*>(raw);
  std::vector<outbound> batch;
  std::string why;
  zmq::message_t parts[3];
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
      if (count != 3) {
        ++stats_.bad_frames;
        continue;
      }
      auto routing = parts[0].to_string_view();
      auto hdr = decode_header(parts[1].to_string_view(), limits_, why);
      // The header must name the connection it came on: no speaking for others.
      if (!hdr || hdr->device_id != routing) {
        ++stats_.bad_frames;
        continue;
      }
      if (!on_message_(std::move(*hdr), parts[2].to_string_view())) ++stats_.bad_frames;
    }
    // Outbound.
    {
      std::lock_guard<std::mutex> guard{mtx_};
      batch.swap(queue_);
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
