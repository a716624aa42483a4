#pragma once

// TCP sockets that several processes bind to one port (SO_REUSEPORT): parryd
// reserves the port, each gateway process listens on it (docs/operations.md, "More
// agents than one process's descriptors").

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace parry::bus {

/// The parts of a `tcp://host:port` endpoint, as written (an IPv6 host keeps its
/// brackets; the port may be "*").
struct tcp_endpoint {
  std::string host;
  std::string port;
};

/// Nothing when `endpoint` is not tcp://host:port.
std::optional<tcp_endpoint> parse_tcp_endpoint(std::string_view endpoint);

/// A TCP socket (close-on-exec) with SO_REUSEADDR and SO_REUSEPORT bound to `e`
/// ("*" as host: every IPv4 address; "*" or "0" as port: a free one), listening with
/// `backlog` when it is above 0 and only bound otherwise. Returns the descriptor and
/// sets `bound_port`; throws std::runtime_error.
int reuse_port_socket(const tcp_endpoint& e, int backlog, uint16_t* bound_port = nullptr);

} // namespace parry::bus
