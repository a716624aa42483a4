#include "server/event_hub.hpp"

#include <algorithm>
#include <string_view>
#include <vector>

#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/crypto.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"

namespace parry {

namespace {

using nlohmann::json;

/// Appends `s`, made valid UTF-8, as a JSON string.
void put_string(std::string& out, std::string_view s) {
  append_json_string(out, utf8_sanitized(s));
}

/// Appends msgpack `o` as JSON text, written straight from the msgpack without a
/// JSON tree: strings made valid UTF-8, binary as hex, maps keep their string keys
/// only. Bodies are our own encoding and flat; the depth bound only keeps a broken
/// one from recursing far.
void put_json(std::string& out, const msgpack::object& o, int depth = 0) {
  if (depth > 8) {
    out += "null";
    return;
  }
  switch (o.type) {
  case msgpack::type::BOOLEAN:
    out += o.via.boolean ? "true" : "false";
    return;
  case msgpack::type::POSITIVE_INTEGER:
    out += std::to_string(o.via.u64);
    return;
  case msgpack::type::NEGATIVE_INTEGER:
    out += std::to_string(o.via.i64);
    return;
  case msgpack::type::FLOAT32:
  case msgpack::type::FLOAT64:
    out += json(o.via.f64).dump(); // null when not finite
    return;
  case msgpack::type::STR:
    put_string(out, {o.via.str.ptr, o.via.str.size});
    return;
  case msgpack::type::BIN:
    out += '"';
    out += to_hex(reinterpret_cast<const unsigned char*>(o.via.bin.ptr), o.via.bin.size);
    out += '"';
    return;
  case msgpack::type::ARRAY:
    out += '[';
    for (uint32_t i = 0; i < o.via.array.size; ++i) {
      if (i > 0) out += ',';
      put_json(out, o.via.array.ptr[i], depth + 1);
    }
    out += ']';
    return;
  case msgpack::type::MAP: {
    out += '{';
    std::vector<std::string_view> keys; // a repeated key keeps its first value
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const auto& kv = o.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) continue;
      std::string_view key{kv.key.via.str.ptr, kv.key.via.str.size};
      if (std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
      if (!keys.empty()) out += ',';
      keys.push_back(key);
      put_string(out, key);
      out += ':';
      put_json(out, kv.val, depth + 1);
    }
    out += '}';
    return;
  }
  default:
    out += "null";
  }
}

event_message message(const json& j) {
  return std::make_shared<const std::string>(j.dump());
}

} // namespace

event_hub::event_hub(event_hub_limits limits) : limits_(limits), epoch_(random_hex(8)) {}

void event_hub::publish(const char* family, const std::string& kind,
                        const std::string& body) {
  std::string data;
  try {
    auto handle = msgpack::unpack(body.data(), body.size());
    if (handle.get().type == msgpack::type::MAP) put_json(data, handle.get());
  } catch (const std::exception&) {
    data.clear();
  }
  if (data.empty()) {
    spdlog::error("events: {}.{}: the body is not a msgpack map; not sent", family,
                  utf8_sanitized(kind));
    return;
  }
  std::string topic{family};
  topic += '.';
  topic += kind;
  std::lock_guard<std::mutex> lock{m_};
  auto seq = ++seq_;
  std::string text = "{\"type\":\"event\",\"seq\":" + std::to_string(seq) + ",\"topic\":";
  put_string(text, topic);
  text += ",\"time_us\":" + std::to_string(now_us()) + ",\"data\":";
  text += data;
  text += '}';
  auto msg = std::make_shared<const std::string>(std::move(text));
  backlog_.push_back({seq, msg});
  backlog_bytes_ += msg->size();
  while (!backlog_.empty() && (backlog_.size() > limits_.backlog_events ||
                               backlog_bytes_ > limits_.backlog_bytes)) {
    backlog_bytes_ -= backlog_.front().json->size();
    backlog_.pop_front();
  }
  ++stats_->published;
  for (auto& [id, out] : sinks_)
    out(msg);
}

std::optional<event_hub::subscription>
event_hub::subscribe(std::optional<uint64_t> since, const std::string& epoch, sink out,
                     std::size_t max_replay_bytes) {
  std::lock_guard<std::mutex> lock{m_};
  if (sinks_.size() >= limits_.max_subscribers) {
    ++stats_->refused_subscribers;
    return std::nullopt;
  }
  subscription s;
  s.id = next_id_++;
  s.first.push_back(message(json{{"type", "hello"}, {"epoch", epoch_}, {"seq", seq_}}));
  if (since && (epoch != epoch_ || *since != seq_)) {
    // Replayable when it is a number of this run and nothing after it was forgotten.
    uint64_t oldest = backlog_.empty() ? seq_ + 1 : backlog_.front().seq;
    std::size_t bytes = 0;
    if (epoch == epoch_ && *since < seq_ && *since + 1 >= oldest) {
      // Newest last: sum from the end until `since`.
      for (auto i = backlog_.rbegin(); i != backlog_.rend() && i->seq > *since; ++i)
        bytes += i->json->size();
    }
    if (epoch == epoch_ && *since < seq_ && *since + 1 >= oldest &&
        bytes <= max_replay_bytes) {
      for (const auto& k : backlog_)
        if (k.seq > *since) s.first.push_back(k.json);
      stats_->replayed += seq_ - *since;
    } else {
      s.first.push_back(message(json{{"type", "resync"}, {"seq", seq_}}));
      ++stats_->resyncs;
    }
  }
  sinks_.emplace(s.id, std::move(out));
  stats_->subscribers = sinks_.size();
  return s;
}

void event_hub::unsubscribe(uint64_t id) {
  std::lock_guard<std::mutex> lock{m_};
  sinks_.erase(id);
  stats_->subscribers = sinks_.size();
}

uint64_t event_hub::last_seq() const {
  std::lock_guard<std::mutex> lock{m_};
  return seq_;
}

} // namespace parry
