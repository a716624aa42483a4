#pragma once

// Network isolation with nftables (libnftables): one table of our own, `inet
// parry_isolation`, holding everything isolation adds. Isolating creates it; releasing
// deletes exactly that table and nothing else. IPv4 and IPv6 alike.
//
// The table has three base chains, `input`, `forward` and `output`, each at priority
// `filter - 10` with policy drop, so that a drop here holds whatever other tables
// accept (in nftables a packet must pass every base chain on its hook). They accept:
//
// - loopback: `iif lo` in, `oif lo` out;
// - the management channel, stateless so that a connection made before isolation
//   keeps working whatever conntrack knows of it: out `ip daddr S tcp dport {server,
//   enroll}`, in `ip saddr S tcp sport {server, enroll}`; plus, in, `ct state related`
//   for flows whose original destination is S (ICMP errors such as "packet too big",
//   without which path MTU discovery to the server breaks);
// - IPv6 neighbour discovery with hop limit 255 (solicit and advert in both
//   directions, router advert in, router solicit out), without which IPv6 to the
//   server stops once the neighbour cache expires;
// - the exceptions. "out" means this host starts the flow, "in" that the peer does;
//   the starting side is matched statelessly, the replies only when conntrack has them
//   as established, so an "out" peer cannot open connections to us:
//     out A port P: out `daddr A` l4 `{tcp, udp}` `dport P`; in `saddr A` `sport P`
//                   established (DNS to 10.0.0.53:53 sends to dport 53, hears from
//                   sport 53);
//     in A port P:  in `saddr A` `dport P`; out `daddr A` `sport P` established (an
//                   admin host reaching our sshd on 22);
//     port 0:       any protocol and port; the reply side accepts established and
//                   related;
//     both:         both of the above (port 0: `saddr A` in and `daddr A` out).
// Nothing else: connections to other hosts that were open before isolation stop too,
// and so does everything forwarded (containers, VMs behind this host).
//
// Everything that goes into the script is checked and re-rendered from its parsed
// form (addresses through inet_pton/inet_ntop, the table name against
// `^[a-z][a-z0-9_]{0,31}$`), so no configuration can add nft syntax.

#include <cstdint>
#include <string>
#include <vector>

#include "agent-sim/executor.hpp"

// libnftables' context. Declared here, at global scope: `struct nft_ctx*` inside our
// namespace would declare a different, never-defined parry::real::nft_ctx.
struct nft_ctx;

namespace parry::real {

/// Traffic kept while isolated besides loopback and the server.
struct isolation_exception {
  std::string address;   ///< IPv4 or IPv6 address or prefix (`10.0.0.0/8`, `fd00::1`).
  uint16_t port = 0;     ///< TCP/UDP port; 0 means every port.
  std::string direction; ///< `in`, `out` or `both`.
};

/// What isolation keeps open.
struct isolation_config {
  std::string table = "parry_isolation"; ///< Name of our table (family inet).
  std::string server_address;            ///< The management channel: parryd's address,
  uint16_t server_port = 0;              ///< and its bus port (and enrollment port:
  uint16_t enroll_port = 0;              ///< 0 when not needed).
  std::vector<isolation_exception> exceptions;
};

/// Checks an exception: a literal address or prefix (host names are not resolved
/// here: the agent resolves them before), port, direction. "" when fine, else what is
/// wrong (for the agent's config validation).
std::string check_exception(const isolation_exception& e);

/// Checks a whole configuration: the table name, the server address (a literal IPv4
/// or IPv6 address, no prefix, no host name), a server port other than 0, and every
/// exception. "" when fine, else what is wrong, naming the field.
std::string check_config(const isolation_config& cfg);

/// The nftables script that isolation applies (for the effect, tests and docs); ""
/// when `check_config(cfg)` finds something wrong.
std::string isolation_ruleset(const isolation_config& cfg);

/// Applies and releases isolation through one libnftables context, created with the
/// object. Not thread-safe: the context buffers output and errors per command, so one
/// thread at a time (the executor's) may call it.
class nft_isolation {
public:
  explicit nft_isolation(isolation_config cfg);
  ~nft_isolation();
  nft_isolation(const nft_isolation&) = delete;
  nft_isolation& operator=(const nft_isolation&) = delete;

  /// Applies the table atomically (one nft transaction; an existing table of ours is
  /// replaced). Effect: `rules` (a one-line summary of what is blocked and kept) and
  /// `previous` (whether our table was there before). Fails, touching nothing, on an
  /// invalid configuration; fails with nft's first error line when the kernel refuses.
  sim::execution apply();
  /// Deletes our table; fine when it is not there. Effect: `rules: removed`, or
  /// `note: not isolated` when there was nothing to remove.
  sim::execution release();
  /// Whether our table is in the kernel now (asks nftables, not a flag).
  bool active() const;

private:
  isolation_config cfg_;
  ::nft_ctx* ctx_ = nullptr;
};

} // namespace parry::real
