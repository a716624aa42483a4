#include "agent-real/nft_isolation.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <optional>
#include <utility>

#include <nftables/libnftables.h>

namespace parry::real {

namespace {

/// An address or prefix, parsed and rendered back in canonical form.
struct parsed_address {
  bool v6 = false;
  std::string text; ///< `10.0.0.0/8`, `fd00::1`: host bits cleared, no `/32` or `/128`.
};

/// Parses a literal address with an optional `/len`; nullopt when it is anything
/// else. Only this function's output, never the input, reaches the script.
std::optional<parsed_address> parse_address(const std::string& s, bool allow_prefix) {
  std::string addr = s;
  int len = -1;
  if (auto slash = s.find('/'); slash != std::string::npos) {
    if (!allow_prefix) return std::nullopt;
    std::string digits = s.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    len = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      len = len * 10 + (c - '0');
    }
    addr = s.substr(0, slash);
  }
  unsigned char bytes[sizeof(in6_addr)] = {};
  parsed_address out;
  int bits = 32;
  if (inet_pton(AF_INET, addr.c_str(), bytes) == 1) {
    out.v6 = false;
  } else if (inet_pton(AF_INET6, addr.c_str(), bytes) == 1) {
    out.v6 = true;
    bits = 128;
  } else {
    return std::nullopt;
  }
  if (len > bits) return std::nullopt;
  if (len < 0) len = bits;
  // nft would clear host bits silently; doing it here makes the summary and the
  // listing agree with the script.
  for (int i = 0; i < bits / 8; ++i) {
    int keep = len - i * 8;
    if (keep <= 0)
      bytes[i] = 0;
    else if (keep < 8)
      bytes[i] &= static_cast<unsigned char>(0xff << (8 - keep));
  }
  char buf[INET6_ADDRSTRLEN] = {};
  if (!inet_ntop(out.v6 ? AF_INET6 : AF_INET, bytes, buf, sizeof buf))
    return std::nullopt;
  out.text = buf;
  if (len != bits) out.text += "/" + std::to_string(len);
  return out;
}

bool valid_table_name(const std::string& t) {
  if (t.empty() || t.size() > 32 || t[0] < 'a' || t[0] > 'z') return false;
  for (char c : t)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

/// The server's ports as an nft set body: `7400` or `{ 7400, 7401 }`.
std::string server_ports(const isolation_config& cfg) {
  if (cfg.enroll_port == 0 || cfg.enroll_port == cfg.server_port)
    return std::to_string(cfg.server_port);
  return "{ " + std::to_string(cfg.server_port) + ", " + std::to_string(cfg.enroll_port) +
         " }";
}

/// The first non-empty line of nft's error output, trimmed and bounded.
std::string first_line(const char* text) {
  std::string s = text ? text : "";
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find('\n', pos);
    if (end == std::string::npos) end = s.size();
    std::string line = s.substr(pos, end - pos);
    size_t b = line.find_first_not_of(" \t\r");
    if (b != std::string::npos) {
      size_t e = line.find_last_not_of(" \t\r");
      line = line.substr(b, e - b + 1);
      if (line.size() > 300) line.resize(300);
      return line;
    }
    pos = end + 1;
  }
  return "nft failed without a message";
}

struct nft_result {
  bool ok = false;
  std::string output;
  std::string error;
};

/// Runs one nft command buffer. Reading both buffers after every run empties them, so
/// one command's text never shows up in the next one's.
nft_result run_nft(nft_ctx* ctx, const std::string& cmd) {
  nft_result r;
  if (!ctx) {
    r.error = "no nftables context (out of memory at start)";
    return r;
  }
  r.ok = nft_run_cmd_from_buffer(ctx, cmd.c_str()) == 0;
  const char* out = nft_ctx_get_output_buffer(ctx);
  const char* err = nft_ctx_get_error_buffer(ctx);
  r.output = out ? out : "";
  r.error = err ? err : "";
  return r;
}

/// Appends an exception's rules to the input and output chains' bodies. The side that
/// starts the flow matches statelessly; the replies need conntrack's "established".
void add_exception_rules(const parsed_address& a, const isolation_exception& e,
                         std::string& in, std::string& out) {
  const std::string fam = a.v6 ? "ip6" : "ip";
  const std::string from = "    " + fam + " saddr " + a.text;
  const std::string to = "    " + fam + " daddr " + a.text;
  const std::string l4 = " meta l4proto { tcp, udp } th ";
  const std::string port = std::to_string(e.port);
  if (e.direction == "both" && e.port == 0) {
    // Either side may start anything: the stateful reply rules would add nothing.
    in += from + " accept\n";
    out += to + " accept\n";
    return;
  }
  if (e.direction == "out" || e.direction == "both") {
    if (e.port == 0) {
      out += to + " accept\n";
      in += from + " ct state established,related accept\n";
    } else {
      out += to + l4 + "dport " + port + " accept\n";
      in += from + l4 + "sport " + port + " ct state established accept\n";
    }
  }
  if (e.direction == "in" || e.direction == "both") {
    if (e.port == 0) {
      in += from + " accept\n";
      out += to + " ct state established,related accept\n";
    } else {
      in += from + l4 + "dport " + port + " accept\n";
      out += to + l4 + "sport " + port + " ct state established accept\n";
    }
  }
}

/// Whether table `t` is in the kernel: true or false, or nullopt with `why` when nft
/// could not tell (no permission, no nf_tables).
std::optional<bool> table_present(nft_ctx* ctx, const std::string& t, std::string& why) {
  auto r = run_nft(ctx, "list table inet " + t + "\n");
  if (r.ok) return true;
  if (r.error.find("No such file or directory") != std::string::npos) return false;
  why = first_line(r.error.c_str());
  return std::nullopt;
}

std::string summary(const isolation_config& cfg, const parsed_address& server) {
  std::string s = "drop all in/out/forward except loopback, IPv6 neighbour discovery, "
                  "server " +
                  server.text + " tcp/" + std::to_string(cfg.server_port);
  if (cfg.enroll_port != 0 && cfg.enroll_port != cfg.server_port)
    s += "," + std::to_string(cfg.enroll_port);
  size_t n = cfg.exceptions.size();
  s += ", " + (n == 0 ? std::string("no") : std::to_string(n)) +
       (n == 1 ? " exception" : " exceptions");
  return s;
}

} // namespace

std::string check_exception(const isolation_exception& e) {
  if (!parse_address(e.address, true))
    return "address '" + e.address +
           "' is not an IPv4 or IPv6 address or prefix (a literal such as 10.0.0.53, "
           "10.0.0.0/8 or fd00::/64; host names are not resolved here)";
  if (e.direction != "in" && e.direction != "out" && e.direction != "both")
    return "direction '" + e.direction + "' is not one of in, out, both";
  return "";
}

std::string check_config(const isolation_config& cfg) {
  if (!valid_table_name(cfg.table))
    return "table '" + cfg.table +
           "' is not a valid name (a lower-case letter, then up to 31 of a-z, 0-9, _)";
  if (!parse_address(cfg.server_address, false))
    return "server_address '" + cfg.server_address +
           "' is not an IPv4 or IPv6 address (a literal, no prefix; the agent resolves "
           "host names before)";
  if (cfg.server_port == 0) return "server_port is 0: the management channel needs one";
  for (size_t i = 0; i < cfg.exceptions.size(); ++i)
    if (auto why = check_exception(cfg.exceptions[i]); !why.empty())
      return "exceptions[" + std::to_string(i) + "]: " + why;
  return "";
}

std::string isolation_ruleset(const isolation_config& cfg) {
  if (!check_config(cfg).empty()) return "";
  const parsed_address server = *parse_address(cfg.server_address, false);
  const std::string fam = server.v6 ? "ip6" : "ip";
  const std::string ports = server_ports(cfg);
  const std::string hook = " priority filter - 10; policy drop;\n";

  std::string in_ex, out_ex;
  for (const auto& e : cfg.exceptions)
    add_exception_rules(*parse_address(e.address, true), e, in_ex, out_ex);

  // Adding before deleting makes the delete succeed whether or not the table was
  // there, and the whole buffer is one transaction: the host is never half isolated.
  const std::string& t = cfg.table;
  std::string s;
  s += "add table inet " + t + "\n";
  s += "delete table inet " + t + "\n";
  s += "table inet " + t + " {\n";
  s += "  chain input {\n";
  s += "    type filter hook input" + hook;
  s += "    iif lo accept\n";
  s += "    " + fam + " saddr " + server.text + " tcp sport " + ports + " accept\n";
  s += "    ct state related ct original " + fam + " daddr " + server.text + " accept\n";
  s += "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } "
       "ip6 hoplimit 255 accept\n";
  s += in_ex;
  s += "  }\n";
  s += "  chain forward {\n";
  s += "    type filter hook forward" + hook;
  s += "  }\n";
  s += "  chain output {\n";
  s += "    type filter hook output" + hook;
  s += "    oif lo accept\n";
  s += "    " + fam + " daddr " + server.text + " tcp dport " + ports + " accept\n";
  s += "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } "
       "ip6 hoplimit 255 accept\n";
  s += out_ex;
  s += "  }\n";
  s += "}\n";
  return s;
}

nft_isolation::nft_isolation(isolation_config cfg) : cfg_(std::move(cfg)) {
  ctx_ = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx_) {
    // Without buffering, nft prints to our stdout/stderr and we could not report why
    // the kernel refused.
    nft_ctx_buffer_output(ctx_);
    nft_ctx_buffer_error(ctx_);
  }
}

nft_isolation::~nft_isolation() {
  if (ctx_) nft_ctx_free(ctx_);
}

sim::execution nft_isolation::apply() {
  if (auto why = check_config(cfg_); !why.empty())
    return sim::execution::failed("isolation config: " + why);
  const bool was = active();
  auto r = run_nft(ctx_, isolation_ruleset(cfg_));
  if (!r.ok) return sim::execution::failed("nft: " + first_line(r.error.c_str()));
  sim::execution e;
  e.ok = true;
  e.effect["rules"] = summary(cfg_, *parse_address(cfg_.server_address, false));
  e.effect["previous"] = was ? "isolated (rules replaced)" : "not isolated";
  return e;
}

sim::execution nft_isolation::release() {
  if (!valid_table_name(cfg_.table))
    return sim::execution::failed("isolation config: invalid table name");
  std::string why;
  auto present = table_present(ctx_, cfg_.table, why);
  if (!present) return sim::execution::failed("nft: " + why);
  sim::execution e;
  e.ok = true;
  if (*present) {
    auto r = run_nft(ctx_, "delete table inet " + cfg_.table + "\n");
    // ENOENT: removed by someone else since the listing; not isolated either way.
    if (!r.ok && r.error.find("No such file or directory") == std::string::npos)
      return sim::execution::failed("nft: " + first_line(r.error.c_str()));
    if (r.ok) {
      e.effect["rules"] = "removed";
      return e;
    }
  }
  e.effect["note"] = "not isolated";
  return e;
}

bool nft_isolation::active() const {
  if (!valid_table_name(cfg_.table)) return false;
  std::string why;
  return table_present(ctx_, cfg_.table, why).value_or(false);
}

} // namespace parry::real
