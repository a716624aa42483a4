#pragma once

// Who may use the bus: the registry of enrolled CURVE keys and the ZAP handler that
// consults it (ZeroMQ RFC 27, ZAP 1.0). libzmq asks the handler, over the inproc
// endpoint `inproc://zeromq.zap.01` of the socket's context, whether a peer that
// completed the CURVE handshake may stay; the answer's User-Id then travels with
// every message of that connection (zmq_msg_gets "User-Id"), so the gateway knows
// which device or integrator sent it without trusting anything the peer wrote.
//
// The registry is read on the gateway thread (each handshake) and written by the
// server's actors (enrollment, revocation): a reader/writer lock guards it.

#include <cstdint>
#include <functional>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace parry::bus {

/// The ZAP domains of Parry's sockets (ZMQ_ZAP_DOMAIN): each socket admits its own
/// kind of key.
namespace zap_domain {
inline constexpr const char* agents = "parry-agents";           ///< Enrolled agent keys.
inline constexpr const char* integrators = "parry-integrators"; ///< Integrator keys.
/// The enrollment endpoint: any CURVE key may connect (to enroll it); the User-Id is
/// "enroll:" + the key's 64 hex digits, and only `enroll` messages are accepted.
inline constexpr const char* enroll = "parry-enroll";
} // namespace zap_domain

/// Whose key it is.
struct key_identity {
  enum class kind_t : uint8_t { agent, integrator };
  kind_t kind = kind_t::agent;
  /// The agent's device_id, or the integrator's name.
  std::string name;
  /// The integrator's role (a user_role word); empty for agents.
  std::string role;

  /// The User-Id the connection carries: "agent:<device_id>" or
  /// "integrator:<name>".
  std::string user_id() const;
  bool operator==(const key_identity& o) const {
    return kind == o.kind && name == o.name && role == o.role;
  }
};

/// Enrolled keys, by CURVE public key (32 raw bytes). Thread-safe.
class key_registry {
public:
  /// Admits `public_key` (32 raw bytes) as `who`, replacing what it was before.
  /// An agent key is bound to one device: a device keeps at most one key, so
  /// enrolling a device again replaces its old key (returned, raw, "" if none).
  std::string admit(std::string public_key, key_identity who);
  /// Removes a key; returns whose it was.
  std::optional<key_identity> revoke_key(std::string_view public_key);
  /// Removes the key of an agent's device, or of an integrator by name; returns the
  /// raw key removed.
  std::optional<std::string> revoke(key_identity::kind_t kind, std::string_view name);
  /// Whose key `public_key` is, if admitted.
  std::optional<key_identity> find(std::string_view public_key) const;
  /// The identity of the agent (device_id) or integrator `name` while it has a key.
  std::optional<key_identity> find_name(key_identity::kind_t kind,
                                        std::string_view name) const;
  std::size_t size() const;

  /// Every change, in order: the key and its new owner (nullptr: revoked). Called
  /// under the registry's lock, so it must be quick and must not call back here.
  /// Each change is numbered from 1; a snapshot says which number it includes.
  using observer =
      std::function<void(uint64_t change, const std::string& key, const key_identity*)>;
  void observe(observer o);
  struct snapshot_t {
    uint64_t change = 0; ///< The last change the entries include.
    std::vector<std::pair<std::string, key_identity>> entries;
  };
  snapshot_t snapshot() const;

private:
  void changed(const std::string& key, const key_identity* who);

  mutable std::shared_mutex m_;
  observer observer_;
  uint64_t change_ = 0;
  std::unordered_map<std::string, key_identity> by_key_;
  std::unordered_map<std::string, std::string> agent_key_;      ///< device_id -> key
  std::unordered_map<std::string, std::string> integrator_key_; ///< name -> key
};

/// Counters of the ZAP handler, written on the gateway thread.
struct zap_stats {
  uint64_t admitted = 0;
  uint64_t refused_unknown = 0;   ///< Key not enrolled (or revoked).
  uint64_t refused_domain = 0;    ///< Key of the wrong kind for this socket.
  uint64_t refused_live = 0;      ///< The device already has a live connection.
  uint64_t refused_malformed = 0; ///< Not a well-formed ZAP 1.0 CURVE request.
};

/// The decision for one ZAP request. `frames` is the request as received (version,
/// request id, domain, address, routing id, mechanism, credentials...).
/// `is_live(device_id)` says whether that device has a live connection already (a
/// second one is refused). Returns the reply frames (version, request id, status
/// code, status text, user id, metadata) and, for a refusal, why (for the audit);
/// a request too malformed to answer returns no frames.
struct zap_decision {
  std::vector<std::string> reply;
  bool admitted = false;
  std::string why; ///< Refusal reason, e.g. "key not enrolled".
  std::optional<key_identity> who;
};

template <class IsLive>
zap_decision decide_zap(const std::vector<std::string>& frames, const key_registry& keys,
                        zap_stats& stats, IsLive&& is_live);

/// The public key as Z85-free text for logs: the first 8 hex digits of its bytes.
std::string key_fingerprint(std::string_view public_key);

// -- implementation of the template ------------------------------------------------

namespace detail {
zap_decision zap_reply(const std::vector<std::string>& frames, const char* code,
                       std::string text, std::string user_id);
std::string hex_of(std::string_view bytes);
} // namespace detail

template <class IsLive>
zap_decision decide_zap(const std::vector<std::string>& frames, const key_registry& keys,
                        zap_stats& stats, IsLive&& is_live) {
  // version, request_id, domain, address, routing_id, mechanism, client key
  if (frames.size() < 7 || frames[0] != "1.0") {
    ++stats.refused_malformed;
    zap_decision d;
    if (frames.size() >= 2 && frames[0] == "1.0")
      d = detail::zap_reply(frames, "400", "malformed request", "");
    d.why = "malformed ZAP request";
    return d;
  }
  const auto& domain = frames[2];
  const auto& mechanism = frames[5];
  const auto& key = frames[6];
  if (mechanism != "CURVE" || key.size() != 32) {
    ++stats.refused_malformed;
    auto d = detail::zap_reply(frames, "400", "CURVE required", "");
    d.why = "mechanism " + mechanism.substr(0, 16) + " is not CURVE";
    return d;
  }
  if (domain == zap_domain::enroll) {
    ++stats.admitted;
    auto d = detail::zap_reply(frames, "200", "OK", "enroll:" + detail::hex_of(key));
    d.admitted = true;
    return d;
  }
  auto who = keys.find(key);
  if (!who) {
    ++stats.refused_unknown;
    auto d = detail::zap_reply(frames, "400", "key not enrolled", "");
    d.why = "key " + key_fingerprint(key) + " is not enrolled";
    return d;
  }
  bool agent_socket = domain == zap_domain::agents;
  bool wants_agent = who->kind == key_identity::kind_t::agent;
  if ((agent_socket && !wants_agent) ||
      (!agent_socket && (domain != zap_domain::integrators || wants_agent))) {
    ++stats.refused_domain;
    auto d = detail::zap_reply(frames, "400", "key not valid here", "");
    d.why =
        "key of " + who->user_id() + " used on the " + domain.substr(0, 32) + " socket";
    d.who = who;
    return d;
  }
  if (wants_agent && is_live(who->name)) {
    ++stats.refused_live;
    auto d = detail::zap_reply(frames, "400", "device already connected", "");
    d.why = "second connection for " + who->name + " while one is live";
    d.who = who;
    return d;
  }
  ++stats.admitted;
  auto d = detail::zap_reply(frames, "200", "OK", who->user_id());
  d.admitted = true;
  d.who = who;
  return d;
}

} // namespace parry::bus
