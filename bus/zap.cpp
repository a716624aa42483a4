#include "bus/zap.hpp"

#include <cstdio>
#include <mutex>

#include "common/keys.hpp"

namespace parry::bus {

std::string key_identity::user_id() const {
  return (kind == kind_t::agent ? "agent:" : "integrator:") + name;
}

std::string key_registry::admit(std::string public_key, key_identity who) {
  std::unique_lock lock{m_};
  auto& by_name = who.kind == key_identity::kind_t::agent ? agent_key_ : integrator_key_;
  std::string replaced;
  if (auto i = by_name.find(who.name); i != by_name.end() && i->second != public_key) {
    replaced = i->second;
    by_key_.erase(i->second);
  }
  // The key may have belonged to someone else before: that binding ends.
  if (auto i = by_key_.find(public_key); i != by_key_.end()) {
    auto& old =
        i->second.kind == key_identity::kind_t::agent ? agent_key_ : integrator_key_;
    old.erase(i->second.name);
  }
  by_name[who.name] = public_key;
  changed(public_key, &who);
  by_key_[std::move(public_key)] = std::move(who);
  return replaced;
}

std::optional<key_identity> key_registry::revoke_key(std::string_view public_key) {
  std::unique_lock lock{m_};
  auto i = by_key_.find(std::string{public_key});
  if (i == by_key_.end()) return std::nullopt;
  auto who = std::move(i->second);
  changed(i->first, nullptr);
  by_key_.erase(i);
  (who.kind == key_identity::kind_t::agent ? agent_key_ : integrator_key_)
      .erase(who.name);
  return who;
}

std::optional<std::string> key_registry::revoke(key_identity::kind_t kind,
                                                std::string_view name) {
  std::unique_lock lock{m_};
  auto& by_name = kind == key_identity::kind_t::agent ? agent_key_ : integrator_key_;
  auto i = by_name.find(std::string{name});
  if (i == by_name.end()) return std::nullopt;
  auto key = std::move(i->second);
  by_name.erase(i);
  by_key_.erase(key);
  changed(key, nullptr);
  return key;
}

std::optional<key_identity> key_registry::find(std::string_view public_key) const {
  std::shared_lock lock{m_};
  auto i = by_key_.find(std::string{public_key});
  if (i == by_key_.end()) return std::nullopt;
  return i->second;
}

std::optional<key_identity> key_registry::find_name(key_identity::kind_t kind,
                                                    std::string_view name) const {
  std::shared_lock lock{m_};
  const auto& by_name =
      kind == key_identity::kind_t::agent ? agent_key_ : integrator_key_;
  auto i = by_name.find(std::string{name});
  if (i == by_name.end()) return std::nullopt;
  return by_key_.at(i->second);
}

void key_registry::changed(const std::string& key, const key_identity* who) {
  ++change_;
  if (observer_) observer_(change_, key, who);
}

void key_registry::observe(observer o) {
  std::unique_lock lock{m_};
  observer_ = std::move(o);
}

key_registry::snapshot_t key_registry::snapshot() const {
  std::shared_lock lock{m_};
  snapshot_t out;
  out.change = change_;
  out.entries.reserve(by_key_.size());
  for (const auto& [k, who] : by_key_)
    out.entries.emplace_back(k, who);
  return out;
}

std::size_t key_registry::size() const {
  std::shared_lock lock{m_};
  return by_key_.size();
}

std::string key_fingerprint(std::string_view public_key) {
  std::string out;
  char buf[3];
  for (std::size_t i = 0; i < public_key.size() && i < 4; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(public_key[i]));
    out += buf;
  }
  return out;
}

namespace detail {

std::string hex_of(std::string_view bytes) {
  return to_hex_text(bytes);
}

zap_decision zap_reply(const std::vector<std::string>& frames, const char* code,
                       std::string text, std::string user_id) {
  zap_decision d;
  // version, request id (echoed), status code, status text, user id, metadata
  d.reply = {"1.0",
             frames.size() > 1 ? frames[1] : std::string{},
             code,
             std::move(text),
             std::move(user_id),
             std::string{}};
  return d;
}

} // namespace detail

} // namespace parry::bus
