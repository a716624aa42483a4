#include "bus/reuse_port.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace parry::bus {

std::optional<tcp_endpoint> parse_tcp_endpoint(std::string_view endpoint) {
  auto colon = endpoint.rfind(':');
  if (endpoint.substr(0, 6) != "tcp://" || colon == std::string_view::npos ||
      colon <= 6 || colon + 1 == endpoint.size())
    return std::nullopt;
  return tcp_endpoint{std::string{endpoint.substr(6, colon - 6)},
                      std::string{endpoint.substr(colon + 1)}};
}

int reuse_port_socket(const tcp_endpoint& e, int backlog, uint16_t* bound_port) {
  std::string host = e.host;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "*") host = "0.0.0.0";
  std::string port = e.port == "*" ? "0" : e.port;
  auto where = e.host + ":" + e.port;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
    throw std::runtime_error("cannot resolve " + where + ": " + ::gai_strerror(rc));
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  int one = 1;
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  bool ok = fd >= 0 &&
            ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0 &&
            ::bind(fd, res->ai_addr, res->ai_addrlen) == 0 &&
            (backlog <= 0 || ::listen(fd, backlog) == 0) &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  int err = errno;
  ::freeaddrinfo(res);
  if (!ok) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot " + std::string{backlog > 0 ? "listen" : "bind"} +
                             " on " + where + ": " + std::strerror(err));
  }
  if (bound_port != nullptr)
    *bound_port =
        ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&a)->sin6_port
                                      : reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  return fd;
}

} // namespace parry::bus
