#define BOOST_TEST_MODULE real_isolation
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <nftables/libnftables.h>

#include "agent-real/nft_isolation.hpp"

using namespace parry::real;

// Tests that load rules run in a network namespace of their own, made once for the
// whole (single-threaded) binary, so the host's ruleset is never touched. Inside it:
// lo up, and a veth pair v0 (10.9.9.1/24, fd00:9::1/64) / v1 so that packets to
// 10.9.9.x other than .1 leave through v0, past the output hook, instead of lo.
namespace {

std::string netns_skip; // why kernel tests skip; "" when they run

bool set_up(const char* ifname) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  bool ok = ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags |= IFF_UP;
  ok = ok && ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
  close(fd);
  return ok;
}

struct own_netns {
  own_netns() {
    if (geteuid() != 0) {
      netns_skip = "nftables in a network namespace of our own needs root";
      return;
    }
    if (unshare(CLONE_NEWNET) != 0) {
      netns_skip = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
      return;
    }
    if (!set_up("lo")) {
      netns_skip = "could not bring lo up";
      return;
    }
    // `ip` only sets up the namespace; the code under test uses libnftables alone.
    int rc = std::system("ip link add v0 type veth peer name v1 &&"
                         " ip addr add 10.9.9.1/24 dev v0 &&"
                         " ip -6 addr add fd00:9::1/64 dev v0 nodad &&"
                         " ip link set v0 up && ip link set v1 up");
    if (rc != 0) netns_skip = "could not create the veth pair (ip link add ... veth)";
  }
};
BOOST_TEST_GLOBAL_FIXTURE(own_netns);

bool skip_kernel() {
  if (netns_skip.empty()) return false;
  BOOST_TEST_MESSAGE("skipped: " << netns_skip);
  return true;
}

/// Runs an nft command with a context of the test's own; returns its output, or
/// "ERROR: ..." when nft fails.
std::string nft(const std::string& cmd) {
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  int rc = nft_run_cmd_from_buffer(ctx, cmd.c_str());
  std::string out = rc == 0 ? std::string(nft_ctx_get_output_buffer(ctx))
                            : "ERROR: " + std::string(nft_ctx_get_error_buffer(ctx));
  nft_ctx_free(ctx);
  return out;
}

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1))
    ++n;
  return n;
}

isolation_config sample_config() {
  isolation_config cfg;
  cfg.server_address = "10.9.9.254";
  cfg.server_port = 7400;
  cfg.enroll_port = 7401;
  cfg.exceptions = {
      {"10.9.9.53", 53, "out"}, {"192.0.2.77/24", 22, "in"}, {"fd00:9::53", 0, "both"}};
  return cfg;
}

/// errno of a one-byte UDP datagram to addr:port, 0 when it was sent. A packet that
/// the output hook drops fails sendto with EPERM.
int udp_send(const std::string& addr, uint16_t port) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, addr.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, addr.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof *v6;
  } else {
    return EINVAL;
  }
  int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int err = sendto(fd, "x", 1, 0, reinterpret_cast<sockaddr*>(&ss), len) == 1 ? 0 : errno;
  close(fd);
  return err;
}

/// Whether a TCP round trip over loopback (`127.0.0.1` or `::1`) works.
bool loopback_round_trip(bool v6) {
  int family = v6 ? AF_INET6 : AF_INET;
  sockaddr_storage ss{};
  socklen_t len = v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (v6) {
    reinterpret_cast<sockaddr_in6*>(&ss)->sin6_family = AF_INET6;
    reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr = in6addr_loopback;
  } else {
    reinterpret_cast<sockaddr_in*>(&ss)->sin_family = AF_INET;
    reinterpret_cast<sockaddr_in*>(&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  int ls = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int cs = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int as = -1;
  bool ok = false;
  // A dropped SYN would block connect() for minutes; a receive timeout bounds the rest.
  timeval tv{2, 0};
  setsockopt(cs, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  setsockopt(cs, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (ls >= 0 && cs >= 0 && bind(ls, sa, len) == 0 && listen(ls, 1) == 0 &&
      getsockname(ls, sa, &len) == 0 && connect(cs, sa, len) == 0 &&
      (as = accept(ls, nullptr, nullptr)) >= 0) {
    setsockopt(as, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c = 0;
    ok = send(cs, "p", 1, 0) == 1 && recv(as, &c, 1, 0) == 1 && c == 'p' &&
         send(as, "q", 1, 0) == 1 && recv(cs, &c, 1, 0) == 1 && c == 'q';
  }
  for (int fd : {ls, cs, as})
    if (fd >= 0) close(fd);
  return ok;
}

} // namespace

BOOST_AUTO_TEST_CASE(ruleset_keeps_the_server_and_exceptions) {
  std::string s = isolation_ruleset(sample_config());
  BOOST_TEST_MESSAGE(s);
  // One transaction that replaces our table whether it exists or not.
  BOOST_TEST(s.rfind("add table inet parry_isolation\n"
                     "delete table inet parry_isolation\n"
                     "table inet parry_isolation {\n",
                     0) == 0);
  for (const char* chain : {"input", "forward", "output"})
    BOOST_TEST(count(s, std::string("type filter hook ") + chain +
                            " priority filter - 10; policy drop;") == 1);
  BOOST_TEST(count(s, "iif lo accept") == 1);
  BOOST_TEST(count(s, "oif lo accept") == 1);
  BOOST_TEST(count(s, "ip daddr 10.9.9.254 tcp dport { 7400, 7401 } accept") == 1);
  BOOST_TEST(count(s, "ip saddr 10.9.9.254 tcp sport { 7400, 7401 } accept") == 1);
  BOOST_TEST(count(s, "ct state related ct original ip daddr 10.9.9.254 accept") == 1);
  // DNS out: queries to dport 53, answers from sport 53 on flows we started.
  BOOST_TEST(
      count(s, "ip daddr 10.9.9.53 meta l4proto { tcp, udp } th dport 53 accept") == 1);
  BOOST_TEST(count(s, "ip saddr 10.9.9.53 meta l4proto { tcp, udp } th sport 53 ct state "
                      "established accept") == 1);
  // SSH in from an admin network (host bits cleared): to our dport 22, replies sport 22.
  BOOST_TEST(count(s, "ip saddr 192.0.2.0/24 meta l4proto { tcp, udp } th dport 22 "
                      "accept") == 1);
  BOOST_TEST(count(s, "ip daddr 192.0.2.0/24 meta l4proto { tcp, udp } th sport 22 ct "
                      "state established accept") == 1);
  BOOST_TEST(s.find("192.0.2.77") == std::string::npos);
  // Any port, both ways, IPv6.
  BOOST_TEST(count(s, "ip6 daddr fd00:9::53 accept") == 1);
  BOOST_TEST(count(s, "ip6 saddr fd00:9::53 accept") == 1);
  BOOST_TEST(count(s, "fd00:9::53") == 2);
  BOOST_TEST(count(s, "nd-neighbor-solicit") == 2);
  // Established traffic is never accepted for everyone: old connections die too.
  BOOST_TEST(count(s, "    ct state established") == 0);

  isolation_config v6;
  v6.table = "iso6";
  v6.server_address = "FD00:0:0::1";
  v6.server_port = 7400;
  std::string s6 = isolation_ruleset(v6);
  BOOST_TEST(count(s6, "table inet iso6 {") == 1);
  BOOST_TEST(count(s6, "ip6 daddr fd00::1 tcp dport 7400 accept") == 1);
  BOOST_TEST(count(s6, "ip6 saddr fd00::1 tcp sport 7400 accept") == 1);
  BOOST_TEST(count(s6, "ct original ip6 daddr fd00::1") == 1);

  // Any port one way: the reply side is stateful, so the peer cannot start flows.
  isolation_config any = v6;
  any.exceptions = {{"10.1.0.0/16", 0, "out"}, {"2001:db8::/32", 0, "in"}};
  std::string sa = isolation_ruleset(any);
  BOOST_TEST(count(sa, "ip daddr 10.1.0.0/16 accept") == 1);
  BOOST_TEST(count(sa, "ip saddr 10.1.0.0/16 ct state established,related accept") == 1);
  BOOST_TEST(count(sa, "ip6 saddr 2001:db8::/32 accept") == 1);
  BOOST_TEST(count(sa, "ip6 daddr 2001:db8::/32 ct state established,related accept") ==
             1);
}

BOOST_AUTO_TEST_CASE(validation_keeps_nft_syntax_out) {
  for (const char* bad :
       {"1.2.3.4; flush ruleset", "1.2.3.4 }", "10.0.0.0/33", "fd00::/129", "10.0.0.0/",
        "10.0.0.0/-1", "10.0.0.0/8/8", "dns.example.com", "", "fe80::1%eth0",
        "1.2.3.4\nflush ruleset"})
    BOOST_TEST(!check_exception({bad, 53, "out"}).empty(), "accepted: " << bad);
  BOOST_TEST(check_exception({"1.2.3.4; flush ruleset", 0, "out"}).find("host names") !=
             std::string::npos);
  for (const char* dir : {"", "IN", "inbound", "in;"})
    BOOST_TEST(!check_exception({"10.0.0.1", 0, dir}).empty(), "accepted: " << dir);
  for (const char* good : {"10.0.0.53", "10.0.0.0/8", "0.0.0.0/0", "fd00::1", "::/0"})
    for (const char* dir : {"in", "out", "both"})
      BOOST_TEST(check_exception({good, 0, dir}).empty(), good << " " << dir);

  auto cfg = sample_config();
  BOOST_TEST(check_config(cfg).empty());
  for (const char* table : {"", "Parry", "1abc", "a-b", "t; flush ruleset",
                            "abcdefghijklmnopqrstuvwxyzabcdefg"}) {
    auto c = cfg;
    c.table = table;
    BOOST_TEST(!check_config(c).empty(), "accepted table: " << table);
    BOOST_TEST(isolation_ruleset(c).empty());
  }
  for (const char* server : {"", "parryd.example.com", "10.0.0.0/8", "1.2.3.4 accept"}) {
    auto c = cfg;
    c.server_address = server;
    BOOST_TEST(check_config(c).find("server_address") != std::string::npos, server);
    BOOST_TEST(isolation_ruleset(c).empty());
  }
  auto no_port = cfg;
  no_port.server_port = 0;
  BOOST_TEST(check_config(no_port).find("server_port") != std::string::npos);
  auto bad_ex = cfg;
  bad_ex.exceptions.push_back({"1.2.3.4; flush ruleset", 0, "out"});
  BOOST_TEST(check_config(bad_ex).find("exceptions[3]") != std::string::npos);
  BOOST_TEST(isolation_ruleset(bad_ex).empty());

  // An invalid configuration fails before nft is asked anything.
  nft_isolation iso(bad_ex);
  auto r = iso.apply();
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.error.find("exceptions[3]") != std::string::npos, r.error);
  if (netns_skip.empty()) BOOST_TEST(!iso.active());
}

BOOST_AUTO_TEST_CASE(apply_loads_the_table_and_release_removes_it) {
  if (skip_kernel()) return;
  nft_isolation iso(sample_config());
  BOOST_TEST(!iso.active());
  auto r = iso.apply();
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(r.effect["rules"] ==
             "drop all in/out/forward except loopback, IPv6 neighbour discovery, server "
             "10.9.9.254 tcp/7400,7401, 3 exceptions");
  BOOST_TEST(r.effect["previous"] == "not isolated");
  BOOST_TEST(iso.active());

  std::string listed = nft("list table inet parry_isolation");
  BOOST_TEST_MESSAGE(listed);
  BOOST_TEST(count(listed, "ip daddr 10.9.9.254 tcp dport { 7400, 7401 } accept") == 1);
  BOOST_TEST(count(listed, "ip saddr 10.9.9.254 tcp sport { 7400, 7401 } accept") == 1);
  BOOST_TEST(count(listed, "policy drop;") == 3);
  BOOST_TEST(count(listed, "192.0.2.0/24") == 2);

  auto rel = iso.release();
  BOOST_TEST(rel.ok, rel.error);
  BOOST_TEST(rel.effect["rules"] == "removed");
  BOOST_TEST(!iso.active());
  BOOST_TEST(nft("list table inet parry_isolation").rfind("ERROR:", 0) == 0);
}

BOOST_AUTO_TEST_CASE(apply_twice_replaces_the_table) {
  if (skip_kernel()) return;
  nft_isolation iso(sample_config());
  BOOST_TEST_REQUIRE(iso.apply().ok);
  auto again = iso.apply();
  BOOST_TEST(again.ok, again.error);
  BOOST_TEST(again.effect["previous"] == "isolated (rules replaced)");
  std::string all = nft("list ruleset");
  BOOST_TEST(count(all, "table inet parry_isolation") == 1);
  BOOST_TEST(count(all, "ip daddr 10.9.9.254 tcp dport") == 1);

  // A changed configuration takes over the same table: nothing stale stays.
  auto changed = sample_config();
  changed.exceptions.clear();
  nft_isolation iso2(changed);
  auto r = iso2.apply();
  BOOST_TEST(r.ok, r.error);
  BOOST_TEST(r.effect["rules"].find("no exceptions") != std::string::npos);
  BOOST_TEST(nft("list table inet parry_isolation").find("10.9.9.53") ==
             std::string::npos);
  BOOST_TEST(iso2.release().ok);
}

BOOST_AUTO_TEST_CASE(release_touches_only_our_table) {
  if (skip_kernel()) return;
  BOOST_TEST_REQUIRE(nft("add table inet other\n"
                         "add chain inet other c { type filter hook input priority 0; }\n"
                         "add rule inet other c tcp dport 9999 counter accept\n")
                         .rfind("ERROR:", 0) != 0);
  nft_isolation iso(sample_config());
  BOOST_TEST_REQUIRE(iso.apply().ok);
  BOOST_TEST(iso.release().ok);
  BOOST_TEST(!iso.active());
  BOOST_TEST(nft("list table inet other").find("tcp dport 9999") != std::string::npos);

  auto twice = iso.release();
  BOOST_TEST(twice.ok, twice.error);
  BOOST_TEST(twice.effect["note"] == "not isolated");
  BOOST_TEST(twice.effect.count("rules") == 0);
  nft("delete table inet other");
}

BOOST_AUTO_TEST_CASE(isolated_host_keeps_loopback_and_exceptions_only) {
  if (skip_kernel()) return;
  nft_isolation iso(sample_config());
  // Unisolated, every destination behind v0 is reachable.
  BOOST_TEST(udp_send("10.9.9.2", 9) == 0);
  BOOST_TEST(udp_send("fd00:9::2", 9) == 0);

  BOOST_TEST_REQUIRE(iso.apply().ok);
  BOOST_TEST(loopback_round_trip(false));
  BOOST_TEST(loopback_round_trip(true));
  BOOST_TEST(udp_send("10.9.9.2", 9) == EPERM);
  BOOST_TEST(udp_send("fd00:9::2", 9) == EPERM);
  BOOST_TEST(udp_send("10.9.9.53", 53) == 0);        // the DNS exception, its port
  BOOST_TEST(udp_send("10.9.9.53", 54) == EPERM);    // ... and no other
  BOOST_TEST(udp_send("fd00:9::53", 4242) == 0);     // any port, IPv6
  BOOST_TEST(udp_send("10.9.9.254", 7400) == EPERM); // the server: TCP only

  BOOST_TEST_REQUIRE(iso.release().ok);
  BOOST_TEST(udp_send("10.9.9.2", 9) == 0);
  BOOST_TEST(udp_send("fd00:9::2", 9) == 0);
}

BOOST_AUTO_TEST_CASE(refusals_come_back_as_one_line_errors) {
  if (skip_kernel()) return;
  // Without CAP_NET_ADMIN the kernel refuses: apply fails with nft's reason, and
  // release fails too rather than claim "not isolated" when it could not tell.
  pid_t pid = fork();
  BOOST_TEST_REQUIRE(pid >= 0);
  if (pid == 0) {
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0)
      _exit(10);
    nft_isolation iso(sample_config());
    auto a = iso.apply();
    if (a.ok) _exit(11);
    if (a.error.rfind("nft: ", 0) != 0 || a.error.find('\n') != std::string::npos ||
        a.error.find("Operation not permitted") == std::string::npos)
      _exit(12);
    auto r = iso.release();
    if (r.ok || r.error.find("Operation not permitted") == std::string::npos) _exit(13);
    if (iso.active()) _exit(14);
    _exit(0);
  }
  int status = 0;
  BOOST_TEST_REQUIRE(waitpid(pid, &status, 0) == pid);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0, "unprivileged child failed check "
                                           << WEXITSTATUS(status)
                                           << " (10 setuid, 11 apply ok, 12 apply "
                                              "error text, 13 release, 14 active)");
}
