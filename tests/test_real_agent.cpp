#define BOOST_TEST_MODULE real_agent
#include <boost/test/unit_test.hpp>

// The real agent's own parts: its configuration, detection's chains from /proc, the
// journal that survives a restart, and the executor's desired state with the lease
// and the dead-man switch (the last in a network namespace of its own, root only).

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-real/detection.hpp"
#include "agent-real/real_agent.hpp"
#include "agent-real/real_config.hpp"
#include "agent-real/real_executor.hpp"
#include "agent-sim/agent_session.hpp"
#include "common/time.hpp"

using namespace parry;
using namespace parry::real;

namespace {

struct temp_dir {
  std::string path;
  temp_dir() {
    char t[] = "/tmp/parry-real-agent-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(t));
    path = t;
  }
  ~temp_dir() { (void)!std::system(("rm -rf '" + path + "'").c_str()); }
  std::string write(const std::string& name, const std::string& text) const {
    std::string p = path + "/" + name;
    std::ofstream(p) << text;
    return p;
  }
};

std::string config_error_of(const std::string& toml) {
  temp_dir d;
  try {
    load_config(d.write("agent.toml", toml));
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

const std::string ioc(64, 'a');

} // namespace

BOOST_AUTO_TEST_CASE(config_reads_every_key) {
  temp_dir d;
  auto c = load_config(d.write("agent.toml", R"(
device_id = "ep1"
server = "tcp://10.77.0.1:7400"
enroll_server = "tcp://[fd77::1]:7401"
state_dir = "/var/lib/x/"
file_roots = ["/srv/a", "/srv/b"]
guard_mounts = ["/srv/a"]
iocs = [")" + std::string(64, 'A') + R"("]
start_timeout_ms = 5000
heartbeat_ms = 1000
[isolation]
lease_seconds = 60
dead_man = false
dead_man_seconds = 30
exceptions = [{ address = "10.0.0.53", port = 53, direction = "out" }]
)"));
  BOOST_TEST(c.device_id == "ep1");
  BOOST_TEST(c.state_dir == "/var/lib/x");
  BOOST_TEST(c.file_roots.size() == 2u);
  BOOST_TEST(c.iocs.count(ioc) == 1u); // lower-cased
  BOOST_TEST(c.start_timeout_ms == 5000u);
  BOOST_TEST(c.lease_seconds == 60u);
  BOOST_TEST(!c.dead_man);
  BOOST_TEST(c.dead_man_seconds == 30u);
  BOOST_TEST(c.exceptions.size() == 1u);
  BOOST_TEST(c.exceptions[0].port == 53);
  auto [addr, port] = endpoint_address(c.enroll_server, "enroll_server");
  BOOST_TEST(addr == "fd77::1");
  BOOST_TEST(port == 7401);
}

BOOST_AUTO_TEST_CASE(config_errors_name_the_key) {
  BOOST_TEST(config_error_of("sever = \"x\"\n").find("sever: unknown key") !=
             std::string::npos);
  BOOST_TEST(config_error_of("server = \"tcp://parry.example:7400\"\n")
                 .find("IP address literal") != std::string::npos);
  BOOST_TEST(config_error_of("server = \"tcp://10.0.0.1:99999\"\n").find("port") !=
             std::string::npos);
  BOOST_TEST(config_error_of("iocs = [\"abc\"]\n").find("iocs") != std::string::npos);
  BOOST_TEST(config_error_of("file_roots = [\"relative\"]\n").find("absolute") !=
             std::string::npos);
  BOOST_TEST(config_error_of("file_roots = [\"/a/../b\"]\n").find("..") !=
             std::string::npos);
  BOOST_TEST(config_error_of("start_timeout_ms = 600000\n").find("start_timeout_ms") !=
             std::string::npos);
  BOOST_TEST(config_error_of("[isolation]\nexceptions = [{ address = \"1.2.3.4; flush "
                             "ruleset\", direction = \"in\" }]\n")
                 .find("isolation.exceptions") != std::string::npos);
  BOOST_TEST(config_error_of("[isolation]\nlease = 5\n").find("isolation.lease") !=
             std::string::npos);
  BOOST_TEST(config_error_of("device_id = \"a b\"\n").find("device_id") !=
             std::string::npos);
  BOOST_TEST(config_error_of("plain = true\n").find("plain: unknown key") !=
             std::string::npos);
  // A misspelt key in an exception would widen isolation: refused, with the entry.
  BOOST_TEST(config_error_of("[isolation]\nexceptions = [{ address = \"10.0.0.1\", "
                             "prot = 53 }]\n")
                 .find("isolation.exceptions[0].prot: unknown key") != std::string::npos);
  BOOST_TEST(config_error_of("heartbeat_ms = 50\n").find("heartbeat_ms") !=
             std::string::npos);
  BOOST_TEST(config_error_of("").empty());
}

BOOST_AUTO_TEST_CASE(detection_builds_the_chain_from_proc) {
  detection d("t1");
  int64_t now = now_us();
  std::string self = "/proc/self/exe";
  char buf[4096] = {};
  BOOST_REQUIRE(::readlink(self.c_str(), buf, sizeof buf - 1) > 0);
  std::string image = buf;
  d.push({"written", image, ioc, 10, static_cast<uint32_t>(getpid()), now});
  d.push({"executed", image, ioc, 10, static_cast<uint32_t>(getpid()), now + 1});
  // Nothing is reported before the first welcome, nor before the hit settles.
  BOOST_TEST(d.next_report_due() == std::numeric_limits<int64_t>::max());
  d.start_reporting(now);
  BOOST_TEST(d.next_report_due() == now + detection::settle_us);
  BOOST_TEST(!d.take_report(now));

  auto written = d.take_report(now + detection::settle_us);
  BOOST_REQUIRE(written);
  BOOST_TEST(written->report_id == "ioc-t1-1");
  const auto& key = written->events.back();
  BOOST_TEST(written->key_event_id == key.id);
  BOOST_TEST(key.type == "file_created");
  BOOST_TEST(key.file.sha256 == ioc);
  BOOST_TEST(key.process.pid == static_cast<uint32_t>(getpid()));
  // The writer is in the ancestry: the file event hangs below its process.
  BOOST_TEST(key.parent_id != "");

  auto ran = d.take_report(now + 1 + detection::settle_us);
  BOOST_REQUIRE(ran);
  BOOST_TEST(ran->key_event_id == ran->events.back().id);
  const auto& proc = ran->events.back();
  BOOST_TEST(proc.type == "process_started");
  BOOST_TEST(proc.process.pid == static_cast<uint32_t>(getpid()));
  BOOST_TEST(proc.process.parent_pid == static_cast<uint32_t>(getppid()));
  BOOST_TEST(proc.process.sha256 == ioc);
  BOOST_TEST(proc.process.start_time > 0);
  // The chain holds our parent's process_started and the write seen before.
  bool parent_seen = false, write_seen = false;
  for (const auto& e : ran->events) {
    if (e.type == "process_started" && e.process.pid == static_cast<uint32_t>(getppid()))
      parent_seen = true;
    if (e.type == "file_created" && e.file.path == image) write_seen = true;
  }
  BOOST_TEST(parent_seen);
  BOOST_TEST(write_seen);
  BOOST_TEST(!d.take_report(now + 10 * detection::settle_us));
}

BOOST_AUTO_TEST_CASE(detection_queue_is_bounded) {
  detection d("t2");
  for (std::size_t i = 0; i < detection::max_pending + 5; ++i)
    d.push({"written", "/x", ioc, 1, 1, 1});
  BOOST_TEST(d.dropped() == 5u);
}

namespace {

// Counts executions, so a second run of one action id shows.
struct counting_executor final : sim::executor {
  int runs = 0;
  sim::execution ok() {
    ++runs;
    sim::execution e;
    e.ok = true;
    e.effect["n"] = std::to_string(runs);
    return e;
  }
  sim::execution isolate() override { return ok(); }
  sim::execution release_isolation() override { return ok(); }
  sim::execution terminate_process(const sim::terminate_args&) override { return ok(); }
  sim::execution start_process(const sim::start_args&, int64_t) override { return ok(); }
  sim::execution quarantine(const sim::file_args&) override { return ok(); }
  sim::execution restore_from_quarantine(const sim::restore_args&) override {
    return ok();
  }
  sim::execution delete_file(const sim::file_args&) override { return ok(); }
  sim::execution prevent_run(const sim::hash_args&) override { return ok(); }
  sim::execution allow_run(const sim::hash_args&) override { return ok(); }
  void cancelled_before_start(const std::string&) override {}
  bool isolated() const override { return false; }
};

} // namespace

BOOST_AUTO_TEST_CASE(journal_restored_after_a_restart_never_runs_an_action_twice) {
  sim::session_config sc;
  sc.device_id = "ep1";
  bus::command cmd;
  cmd.action_id = "a-1";
  cmd.type = "isolate";
  cmd.issued_at = now_us();
  cmd.expires_at = cmd.issued_at + 60'000'000;
  cmd.device_id = "ep1";

  counting_executor first;
  sim::agent_session before(sc, first, nullptr);
  uint64_t v0 = before.journal_version();
  BOOST_TEST(before.handle_command(cmd, cmd.issued_at).executed);
  BOOST_TEST(before.journal_version() != v0);
  auto records = before.journal_records();
  BOOST_REQUIRE(records.size() == 1u);
  BOOST_TEST(!records[0].result_acked);

  counting_executor second;
  sim::agent_session after(sc, second, nullptr);
  after.restore_journal(records, 0);
  auto again = after.handle_command(cmd, cmd.issued_at + 1);
  BOOST_TEST(!again.executed);
  BOOST_TEST(second.runs == 0);
  BOOST_TEST(again.result.effect.at("n") == "1"); // the stored result, sent again
  // Its result was never acknowledged: it is still owed to the server.
  BOOST_TEST(after.unacked_results() == std::vector<std::string>{"a-1"});
}

namespace {

std::string netns_skip;

struct own_netns {
  own_netns() {
    if (geteuid() != 0) {
      netns_skip = "nftables in a network namespace of our own needs root";
      return;
    }
    if (::unshare(CLONE_NEWNET) != 0)
      netns_skip = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
  }
};

real_config executor_config(const temp_dir& d) {
  real_config c;
  c.device_id = "ep1";
  c.server = "tcp://10.9.0.1:7400";
  c.enroll_server = "tcp://10.9.0.1:7401";
  c.state_dir = d.path + "/state";
  ::mkdir(c.state_dir.c_str(), 0700);
  c.file_roots = {d.path + "/files"};
  c.lease_seconds = 0;
  c.dead_man = true;
  c.dead_man_seconds = 30;
  return c;
}

bool table_present() {
  return std::system("nft list table inet parry_isolation >/dev/null 2>&1") == 0;
}

} // namespace

BOOST_TEST_GLOBAL_FIXTURE(own_netns);

BOOST_AUTO_TEST_CASE(desired_state_survives_a_restart) {
  if (!netns_skip.empty()) {
    BOOST_TEST_MESSAGE("skipped: " << netns_skip);
    return;
  }
  temp_dir d;
  int64_t t = now_us();
  {
    real_executor e(executor_config(d), nullptr, t);
    BOOST_TEST(!e.isolated());
    auto r = e.isolate();
    BOOST_TEST(r.ok, r.error);
    BOOST_TEST(table_present());
    // No guard mounts: prevention cannot be enforced, so it is refused, not faked.
    auto p = e.prevent_run({ioc});
    BOOST_TEST(!p.ok);
    BOOST_TEST(p.error.find("guard_mounts") != std::string::npos);
  }
  // A reboot loses the kernel's rules; the journaled desired state brings them back.
  BOOST_REQUIRE(std::system("nft delete table inet parry_isolation") == 0);
  BOOST_TEST(!table_present());
  real_executor again(executor_config(d), nullptr, t + 1);
  BOOST_TEST(again.isolated());
  BOOST_TEST(table_present());
  struct stat st {};
  BOOST_REQUIRE(::stat((d.path + "/state/desired-state.json").c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  auto r = again.release_isolation();
  BOOST_TEST(r.ok, r.error);
  BOOST_TEST(!table_present());
  real_executor released(executor_config(d), nullptr, t + 2);
  BOOST_TEST(!released.isolated());
}

BOOST_AUTO_TEST_CASE(dead_man_switch_releases_only_after_the_server_stayed_away) {
  if (!netns_skip.empty()) {
    BOOST_TEST_MESSAGE("skipped: " << netns_skip);
    return;
  }
  temp_dir d;
  int64_t t = now_us();
  real_executor e(executor_config(d), nullptr, t);
  BOOST_REQUIRE(e.isolate().ok);
  const int64_t s = 1'000'000;
  e.tick(t + 20 * s, true); // contact at +20 s
  e.tick(t + 45 * s, false);
  BOOST_TEST(e.isolated()); // only 25 s since the last contact
  BOOST_TEST(table_present());
  e.tick(t + 51 * s, false);
  BOOST_TEST(!e.isolated());
  BOOST_TEST(!table_present());
}

BOOST_AUTO_TEST_CASE(lease_releases_and_a_removed_table_is_put_back) {
  if (!netns_skip.empty()) {
    BOOST_TEST_MESSAGE("skipped: " << netns_skip);
    return;
  }
  temp_dir d;
  auto c = executor_config(d);
  c.lease_seconds = 10;
  int64_t t = now_us();
  real_executor e(c, nullptr, t);
  e.tick(t, true);
  BOOST_REQUIRE(e.isolate().ok);
  // Someone flushes the table: the next enforcement round applies it again.
  BOOST_REQUIRE(std::system("nft delete table inet parry_isolation") == 0);
  e.tick(t + real_executor::enforce_interval_us + 1, true);
  BOOST_TEST(table_present());
  e.tick(t + 11'000'000, true);
  BOOST_TEST(!e.isolated());
  BOOST_TEST(!table_present());
}

BOOST_AUTO_TEST_CASE(an_action_interrupted_by_a_crash_is_reported_not_run_again) {
  temp_dir d;
  std::string path = d.path + "/journal.json";
  sim::session_config sc;
  sc.device_id = "ep1";
  bus::command cmd;
  cmd.action_id = "a-1";
  cmd.type = "isolate";
  cmd.issued_at = now_us();
  cmd.expires_at = cmd.issued_at + 60'000'000;
  cmd.device_id = "ep1";
  counting_executor first;
  sim::agent_session before(sc, first, nullptr);
  BOOST_TEST(before.handle_command(cmd, cmd.issued_at).executed);
  // The agent dies after recording that a-2 starts, before its result is journaled.
  save_journal(path, before, "a-2");
  struct stat st {};
  BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);

  counting_executor second;
  sim::agent_session after(sc, second, nullptr);
  load_journal(path, after);
  BOOST_TEST(!after.handle_command(cmd, cmd.issued_at + 1).executed);
  cmd.action_id = "a-2";
  auto interrupted = after.handle_command(cmd, cmd.issued_at + 2);
  BOOST_TEST(!interrupted.executed);
  BOOST_TEST(!interrupted.result.ok);
  BOOST_TEST(interrupted.result.error.find("stopped while executing") !=
             std::string::npos);
  BOOST_TEST(second.runs == 0);

  // The hook runs before the effect, with the action's id.
  std::vector<std::string> seen;
  std::string refusal;
  sc.before_execute = [&](const std::string& id) {
    seen.push_back(id + ":" + std::to_string(second.runs));
    return refusal;
  };
  sim::agent_session hooked(sc, second, nullptr);
  cmd.action_id = "a-3";
  BOOST_TEST(hooked.handle_command(cmd, cmd.issued_at).executed);
  BOOST_TEST(seen == std::vector<std::string>{"a-3:0"});
  BOOST_TEST(second.runs == 1);
  // A journal that cannot be written: the action fails without running.
  refusal = "disk full";
  cmd.action_id = "a-4";
  auto unrecorded = hooked.handle_command(cmd, cmd.issued_at);
  BOOST_TEST(!unrecorded.result.ok);
  BOOST_TEST(unrecorded.result.error.find("disk full") != std::string::npos);
  BOOST_TEST(second.runs == 1);
}

BOOST_AUTO_TEST_CASE(a_damaged_journal_is_refused) {
  temp_dir d;
  std::string path = d.path + "/journal.json";
  { std::ofstream(path) << "{\"entries\": ["; }
  ::chmod(path.c_str(), 0600);
  sim::session_config sc;
  sc.device_id = "ep1";
  counting_executor ex;
  sim::agent_session s(sc, ex, nullptr);
  BOOST_CHECK_THROW(load_journal(path, s), std::exception);
}

BOOST_AUTO_TEST_CASE(detection_leaves_out_a_pid_reused_after_the_hit) {
  detection d("t3");
  int64_t now = now_us();
  // Our process started long before: a hit dated before our start can only be a
  // pid that belonged to an earlier process.
  d.push({"executed", "/x/ioc", ioc, 1, static_cast<uint32_t>(getpid()), 1'000'000});
  d.start_reporting(now);
  auto r = d.take_report(now + 10 * detection::settle_us);
  BOOST_REQUIRE(r);
  BOOST_REQUIRE(r->events.size() == 1u); // only the exec, no ancestry
  BOOST_TEST(r->events[0].process.pid == static_cast<uint32_t>(getpid()));
  BOOST_TEST(r->events[0].process.start_time == 0); // not read from the new owner
  BOOST_TEST(r->events[0].process.cmdline == "");
}
