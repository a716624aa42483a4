#include "server/event_hub.hpp"

#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/crypto.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"

namespace parry {

namespace {

using nlohmann::json;

/// msgpack as JSON: strings made valid UTF-8, binary as hex. Bodies are our own
/// encoding and flat; the depth bound only keeps a broken one from recursing far.
json to_json(const msgpack::object& o, int depth = 0) {
  if (depth > 8) return nullptr;
  switch (o.type) {
  case msgpack::type::BOOLEAN:
    return o.via.boolean;
  case msgpack::type::POSITIVE_INTEGER:
    return o.via.u64;
  case msgpack::type::NEGATIVE_INTEGER:
    return o.via.i64;
  case msgpack::type::FLOAT32:
  case msgpack::type::FLOAT64:
    return o.via.f64;
  case msgpack::type::STR:
    return utf8_sanitized({o.via.str.ptr, o.via.str.size});
  case msgpack::type::BIN:
    return to_hex(reinterpret_cast<const unsigned char*>(o.via.bin.ptr), o.via.bin.size);
  case msgpack::type::ARRAY: {
    auto a = json::array();
    for (uint32_t i = 0; i < o.via.array.size; ++i)
      a.push_back(to_json(o.via.array.ptr[i], depth + 1));
    return a;
  }
  case msgpack::type::MAP: {
    auto m = json::object();
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const auto& kv = o.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) continue;
      m[utf8_sanitized({kv.key.via.str.ptr, kv.key.via.str.size})] =
          to_json(kv.val, depth + 1);
    }
    return m;
  }
  default:
    return nullptr;
  }
}

std::optional<json> map_of(const std::string& body) {
  try {
    auto handle = msgpack::unpack(body.data(), body.size());
    if (handle.get().type != msgpack::type::MAP) return std::nullopt;
    return to_json(handle.get());
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

event_message message(const json& j) {
  return std::make_shared<const std::string>(j.dump());
}

} // namespace

event_hub::event_hub(event_hub_limits limits) : limits_(limits), epoch_(random_hex(8)) {}

void event_hub::publish(const char* family, const std::string& kind,
                        const std::string& body) {
  auto data = map_of(body);
  if (!data) {
    spdlog::error("events: {}.{}: the body is not a msgpack map; not sent", family,
                  utf8_sanitized(kind));
    return;
  }
  std::lock_guard<std::mutex> lock{m_};
  auto seq = ++seq_;
  auto text = message(json{{"type", "event"},
                           {"seq", seq},
                           {"topic", std::string{family} + "." + utf8_sanitized(kind)},
                           {"time_us", now_us()},
                           {"data", std::move(*data)}});
  backlog_.push_back({seq, text});
  backlog_bytes_ += text->size();
  while (!backlog_.empty() && (backlog_.size() > limits_.backlog_events ||
                               backlog_bytes_ > limits_.backlog_bytes)) {
    backlog_bytes_ -= backlog_.front().json->size();
    backlog_.pop_front();
  }
  ++stats_->published;
  for (auto& [id, out] : sinks_)
    out(text);
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
