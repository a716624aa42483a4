#include "bus/command_signature.hpp"

#include <limits>
#include <stdexcept>
#include <utility>

#include "common/crypto.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"

namespace parry::bus {

namespace {

void put_u32(std::string& out, uint64_t v) {
  if (v > std::numeric_limits<uint32_t>::max())
    throw std::length_error("command signature: field longer than 2^32 - 1");
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void put_u64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void put_str(std::string& out, std::string_view s) {
  put_u32(out, s.size());
  out.append(s.data(), s.size());
}

/// A value from a command, fit for a refusal text.
std::string shown(std::string_view s) {
  return utf8_sanitized(utf8_prefix(s, 64));
}

} // namespace

command_fields fields_of(const command& c, std::string device_id, uint64_t seq) {
  return {c.action_id, std::move(device_id), c.type, c.params,
          c.issued_at, c.expires_at,         seq};
}

command_fields fields_of(const command& c) {
  return fields_of(c, c.device_id, c.seq);
}

command_fields fields_of(const cancel& c) {
  return {c.action_id, c.device_id, "cancel", {}, c.issued_at, c.expires_at, c.seq};
}

void sign_into(command& c, const parry::signing_key& key, const std::string& device_id,
               uint64_t seq) {
  c.device_id = device_id;
  c.seq = seq;
  c.sig = to_hex_text(sign_command(key, fields_of(c)));
}

void sign_into(cancel& c, const parry::signing_key& key, const std::string& device_id,
               uint64_t seq) {
  c.device_id = device_id;
  c.seq = seq;
  c.sig = to_hex_text(sign_command(key, fields_of(c)));
}

std::string signature_bytes(std::string_view sig_hex) {
  if (sig_hex.size() != 2 * ed25519_signature_bytes) return {};
  std::string raw(ed25519_signature_bytes, '\0');
  for (std::size_t i = 0; i < raw.size(); ++i) {
    int hi = hex_digit(sig_hex[2 * i]), lo = hex_digit(sig_hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return {};
    raw[i] = static_cast<char>(hi * 16 + lo);
  }
  return raw;
}

std::string encode_for_signature(const command_fields& f) {
  std::size_t size = 4 * 5 + command_signature_domain.size() + f.action_id.size() +
                     f.device_id.size() + f.type.size() + 3 * 8;
  for (const auto& [k, v] : f.params)
    size += 8 + k.size() + v.size();
  std::string out;
  out.reserve(size);
  put_str(out, command_signature_domain);
  put_str(out, f.action_id);
  put_str(out, f.device_id);
  put_str(out, f.type);
  put_u32(out, f.params.size());
  // std::map<std::string, ...> iterates in char_traits<char> order, which compares
  // as unsigned char: ascending bytewise, as documented.
  for (const auto& [k, v] : f.params) {
    put_str(out, k);
    put_str(out, v);
  }
  put_u64(out, static_cast<uint64_t>(f.issued_at));
  put_u64(out, static_cast<uint64_t>(f.expires_at));
  put_u64(out, f.seq);
  return out;
}

std::string sign_command(const parry::signing_key& key, const command_fields& f) {
  return key.sign(encode_for_signature(f));
}

bool verify_command(std::string_view public_key, const command_fields& f,
                    std::string_view signature) noexcept {
  if (public_key.size() != ed25519_public_key_bytes ||
      signature.size() != ed25519_signature_bytes)
    return false;
  try {
    return parry::verify(public_key, encode_for_signature(f), signature);
  } catch (...) {
    return false;
  }
}

const char* to_string(command_refusal r) {
  switch (r) {
  case command_refusal::bad_signature:
    return "bad_signature";
  case command_refusal::wrong_device:
    return "wrong_device";
  case command_refusal::expired:
    return "expired";
  case command_refusal::action_replayed:
    return "action_replayed";
  case command_refusal::seq_replayed:
    return "seq_replayed";
  }
  return "unknown";
}

command_guard::command_guard(std::string server_public_key, std::string device_id,
                             uint64_t last_seq, std::size_t remembered_actions)
    : server_key_(std::move(server_public_key)), device_id_(std::move(device_id)),
      last_seq_(last_seq),
      max_remembered_(remembered_actions > 0 ? remembered_actions : 1) {}

guard_verdict command_guard::refuse(command_refusal r, std::string text) {
  ++refused_[static_cast<std::size_t>(r)];
  guard_verdict v;
  v.reason = r;
  v.text = std::move(text);
  return v;
}

guard_verdict command_guard::check(const command_fields& f, std::string_view signature,
                                   int64_t now_us) {
  // Verify first: nothing about an unsigned command is believed, not even which
  // device it names.
  if (!verify_command(server_key_, f, signature))
    return refuse(command_refusal::bad_signature,
                  "bad signature: not signed by the pinned server key");
  if (f.device_id != device_id_)
    return refuse(command_refusal::wrong_device, "command for device '" +
                                                     shown(f.device_id) + "', this is '" +
                                                     shown(device_id_) + "'");
  if (now_us >= f.expires_at)
    return refuse(command_refusal::expired,
                  f.expires_at <= 0 ? std::string{"expired: the command has no expiry"}
                                    : "expired at " + format_time(f.expires_at) +
                                          " (now " + format_time(now_us) + ")");
  // A cancel names the command it withdraws and may be asked again: only its seq
  // stops a replay.
  bool is_cancel = f.type == "cancel";
  if (!is_cancel && seen_.count(f.action_id) != 0)
    return refuse(command_refusal::action_replayed,
                  "action '" + shown(f.action_id) + "' was already received");
  if (f.seq <= last_seq_)
    return refuse(command_refusal::seq_replayed,
                  "sequence number " + std::to_string(f.seq) +
                      " is not above the last accepted " + std::to_string(last_seq_));
  last_seq_ = f.seq;
  if (is_cancel) return guard_verdict{true, {}, {}};
  if (order_.size() >= max_remembered_) {
    seen_.erase(order_.front());
    order_.pop_front();
    ++forgotten_;
  }
  order_.push_back(f.action_id);
  seen_.insert(f.action_id);
  guard_verdict ok;
  ok.accepted = true;
  return ok;
}

} // namespace parry::bus
