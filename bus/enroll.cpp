#include "bus/enroll.hpp"

#include <algorithm>
#include <stdexcept>

#include <zmq.hpp>

#include "bus/codec.hpp"
#include "common/crypto.hpp"
#include "common/keys.hpp"
#include "common/time.hpp"

namespace parry::bus {

namespace {

constexpr std::string_view token_prefix = "pe1_";
constexpr std::size_t hex_chars = 64;

bool all_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return hex_digit(c) >= 0; });
}

std::string hex_to_raw(std::string_view hex) {
  std::string raw(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < raw.size(); ++i)
    raw[i] = static_cast<char>(hex_digit(hex[2 * i]) * 16 + hex_digit(hex[2 * i + 1]));
  return raw;
}

std::string lower(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

} // namespace

enrollment_token make_enrollment_token(const std::string& server_key_z85) {
  return {random_hex(32), server_key_z85};
}

std::string format_token(const enrollment_token& t) {
  return std::string{token_prefix} + t.secret_hex + "_" +
         to_hex_text(z85_to_raw(t.server_key_z85));
}

std::optional<enrollment_token> parse_token(std::string_view text) {
  if (text.size() != token_prefix.size() + 2 * hex_chars + 1 ||
      text.substr(0, token_prefix.size()) != token_prefix)
    return std::nullopt;
  auto secret = text.substr(token_prefix.size(), hex_chars);
  auto sep = text[token_prefix.size() + hex_chars];
  auto key = text.substr(token_prefix.size() + hex_chars + 1);
  if (sep != '_' || !all_hex(secret) || !all_hex(key)) return std::nullopt;
  auto z85 = raw_to_z85(hex_to_raw(key));
  if (z85.empty()) return std::nullopt;
  return enrollment_token{lower(secret), z85};
}

std::string token_hash(const enrollment_token& t) {
  return sha256_hex("parry-enroll-v1:" + t.secret_hex);
}

std::vector<enroll_outcome> enroll_devices(const std::string& endpoint,
                                           const enrollment_token& token,
                                           const std::vector<enroll_item>& items,
                                           std::size_t parallel,
                                           std::chrono::milliseconds timeout) {
  using clock = std::chrono::steady_clock;
  struct slot {
    std::size_t item;
    zmq::socket_t sock;
    clock::time_point deadline;
    bool done = false;
  };
  std::vector<enroll_outcome> out(items.size());
  zmq::context_t ctx{1};
  std::vector<slot> active;
  std::size_t next = 0;
  uint64_t msg_id = static_cast<uint64_t>(now_us());
  std::string text = format_token(token);
  parallel = std::max<std::size_t>(parallel, 1);
  decode_limits lim;
  lim.max_frame = 64 * 1024;
  while (next < items.size() || !active.empty()) {
    try {
      while (active.size() < parallel && next < items.size()) {
        const auto& it = items[next];
        out[next].device_id = it.device_id;
        zmq::socket_t s{ctx, zmq::socket_type::dealer};
        s.set(zmq::sockopt::routing_id, it.device_id);
        s.set(zmq::sockopt::linger, 0);
        s.set(zmq::sockopt::ipv6, true); // an IPv6 literal server works too
        s.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(lim.max_frame));
        s.set(zmq::sockopt::curve_serverkey, token.server_key_z85);
        s.set(zmq::sockopt::curve_publickey, it.keys.public_z85);
        s.set(zmq::sockopt::curve_secretkey, it.keys.secret_z85);
        s.connect(endpoint);
        header h;
        h.type = type::enroll;
        h.msg_id = ++msg_id;
        h.device_id = it.device_id;
        h.time = now_us();
        auto hf = encode(h);
        auto bf = encode(enroll_request{text, it.keys.public_z85});
        // Queued until the handshake completes.
        (void)s.send(zmq::buffer(hf), zmq::send_flags::sndmore);
        (void)s.send(zmq::buffer(bf), zmq::send_flags::none);
        active.push_back({next, std::move(s), clock::now() + timeout});
        ++next;
      }
      std::vector<zmq::pollitem_t> poll;
      auto first = clock::time_point::max();
      for (auto& a : active) {
        poll.push_back({a.sock.handle(), 0, ZMQ_POLLIN, 0});
        first = std::min(first, a.deadline);
      }
      auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(first - clock::now());
      zmq::poll(poll, std::max(wait, std::chrono::milliseconds{0}));
      for (std::size_t i = 0; i < active.size(); ++i) {
        auto& a = active[i];
        auto& o = out[a.item];
        if (poll[i].revents & ZMQ_POLLIN) {
          std::vector<zmq::message_t> frames;
          zmq::message_t part;
          while (frames.size() < 4 && a.sock.recv(part, zmq::recv_flags::dontwait)) {
            bool more = part.more();
            frames.push_back(std::move(part));
            if (!more) break;
          }
          std::string why;
          auto h = frames.size() == 2
                       ? decode_header(frames[0].to_string_view(), lim, why)
                       : std::nullopt;
          if (h && h->type == type::enrolled) {
            if (auto r = decode<enroll_result>(frames[1].to_string_view(), lim, why)) {
              o.ok = r->ok && is_z85_key(r->server_key) &&
                     r->server_key == token.server_key_z85;
              o.reason = r->ok && !o.ok ? "bad_answer" : r->reason;
              o.error = r->ok && !o.ok ? "the server answered with keys that are not "
                                         "well-formed or not the token's"
                                       : r->error;
              o.server_key = r->server_key;
              o.signing_key = r->signing_key;
            } else {
              o.reason = "bad_answer";
              o.error = "undecodable answer: " + why;
            }
          } else if (h && h->type == "rejected") {
            auto r = decode<rejected>(frames[1].to_string_view(), lim, why);
            o.reason = "rejected";
            o.error = "the server refused the request" +
                      (r ? ": " + r->reason.substr(0, 200) : std::string{});
          } else {
            continue; // not an answer: keep waiting for one
          }
          a.done = true;
        } else if (clock::now() >= a.deadline) {
          o.reason = "timeout";
          o.error = "no answer from " + endpoint +
                    " in time (server down, not the token's server, or busy)";
          a.done = true;
        }
      }
      active.erase(std::remove_if(active.begin(), active.end(),
                                  [](const slot& a) { return a.done; }),
                   active.end());
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw std::runtime_error("enrollment at " + endpoint + ": " + e.what());
    }
  }
  return out;
}

} // namespace parry::bus
