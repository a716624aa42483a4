// parryctl audit and audit verify: the audit trail page by page, and a check of its
// hash chain end to end.

#include "ctl/cli.hpp"

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

namespace parry::ctl {

namespace {

int cmd_audit(session& s, long long after, int limit) {
  auto q = parry::ctl::query_string({{"after", after > 0 ? std::to_string(after) : ""},
                                     {"limit", limit > 0 ? std::to_string(limit) : ""}});
  auto r = s.call("GET", "/api/v1/audit" + q);
  if (s.opts().json) return print_json(r), 0;
  using parry::ctl::cell;
  std::vector<std::vector<std::string>> rows;
  long long last = after;
  for (const auto& rec : sub(r.body, "records")) {
    rows.push_back({cell(rec, "seq"), cell(rec, "time"), cell(rec, "actor"),
                    cell(rec, "kind"), cell(rec, "target"), cell(rec, "detail")});
    if (rec.contains("seq") && rec["seq"].is_number_integer())
      last = std::max(last, rec["seq"].get<long long>());
  }
  if (rows.empty())
    std::cout << "no audit records"
              << (after > 0 ? " after " + std::to_string(after) : "") << '\n';
  else
    std::cout << parry::ctl::format_table(
        {"SEQ", "TIME", "ACTOR", "KIND", "TARGET", "DETAIL"}, rows);
  const auto& head = sub(r.body, "head");
  if (!rows.empty() && head.contains("seq") && head["seq"].is_number_integer() &&
      head["seq"].get<long long>() > last)
    std::cout << "more: parryctl audit --after " << last << '\n';
  return 0;
}

/// Fetches the whole trail page by page and checks the hash chain as it comes, so a
/// long trail needs no more memory than one page.
int cmd_audit_verify(session& s) {
  auto verdict = parry::ctl::verify_audit_pages([&](std::int64_t after) {
    return s
        .call("GET", "/api/v1/audit" +
                         parry::ctl::query_string(
                             {{"after", std::to_string(after)}, {"limit", "1000"}}))
        .body;
  });
  if (s.opts().json) {
    json out{{"intact", verdict.intact},
             {"records", verdict.records},
             {"head", {{"seq", verdict.head_seq}, {"hash", verdict.head_hash}}},
             {"problem", verdict.problem}};
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << '\n';
  } else {
    std::cout << parry::ctl::audit_summary(verdict) << '\n';
  }
  return parry::ctl::exit_code(verdict.intact ? outcome::ok : outcome::server_error);
}

} // namespace

command_group add_audit_commands(CLI::App& app) {
  struct options {
    long long after = 0;
    int limit = 0;
  };
  auto o = std::make_shared<options>();
  auto* audit = app.add_subcommand("audit", "show the audit trail (administrator)");
  audit->add_option("--after", o->after, "records after this sequence number")
      ->check(CLI::NonNegativeNumber);
  audit->add_option("--limit", o->limit, "at most this many (server default 1000)")
      ->check(positive);
  auto* audit_verify =
      audit->add_subcommand("verify", "check the audit trail's hash chain end to end");
  return [=](session& s) -> std::optional<int> {
    if (audit_verify->parsed()) return cmd_audit_verify(s);
    if (audit->parsed()) return cmd_audit(s, o->after, o->limit);
    return std::nullopt;
  };
}

} // namespace parry::ctl
