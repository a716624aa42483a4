#define BOOST_TEST_MODULE store
#include "tests/caf_boost.hpp"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include <caf/event_based_actor.hpp>
#include <nlohmann/json.hpp>

#include "actors/checkpointer.hpp"
#include "actors/error.hpp"
#include "actors/store.hpp"
#include "bus/codec.hpp"
#include "server/backup.hpp"
#include "server/metrics.hpp"
#include "server/server.hpp"

namespace parry {
std::ostream& operator<<(std::ostream& os, ec x) {
  return os << to_string(x);
}
} // namespace parry

using namespace parry;

namespace {

/// The code of `err`, ec::none for no error (code_of wants a real error).
ec code(const caf::error& err) {
  return err ? code_of(err) : ec::none;
}

/// What came back for one request: nothing yet, a value or an error.
template <class T> struct outcome {
  bool answered = false;
  std::optional<T> value;
  caf::error err;
};

/// A second connection to the store's database, as a backup or a sqlite3 shell
/// would hold one.
struct other_connection {
  sqlite3* db = nullptr;
  explicit other_connection(const std::string& path) {
    BOOST_REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  }
  ~other_connection() { sqlite3_close(db); }
  void exec(const char* sql) {
    char* err = nullptr;
    auto rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
    BOOST_REQUIRE_MESSAGE(rc == SQLITE_OK, (err ? err : "?") << " in " << sql);
  }
  int64_t count(const char* sql) {
    sqlite3_stmt* s = nullptr;
    BOOST_REQUIRE(sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK);
    int64_t n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    return n;
  }
  std::string blob(const char* sql) {
    sqlite3_stmt* s = nullptr;
    BOOST_REQUIRE(sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK);
    std::string out;
    if (sqlite3_step(s) == SQLITE_ROW)
      out.assign(static_cast<const char*>(sqlite3_column_blob(s, 0)),
                 static_cast<std::size_t>(sqlite3_column_bytes(s, 0)));
    sqlite3_finalize(s);
    return out;
  }
};

struct fixture : test_coordinator_fixture<caf::actor_system_config> {
  std::string db_path;
  store_actor st;

  store_options opts;

  fixture() {
    db_path = (std::filesystem::temp_directory_path() /
               ("parry-store-test-" + std::to_string(::getpid()) + ".db"))
                  .string();
    remove_files();
    opts.busy_timeout = std::chrono::milliseconds{50};
    st = sys.spawn(store_with, db_path, opts);
    sched.run();
  }

  ~fixture() override {
    caf::anon_send_exit(st, caf::exit_reason::kill);
    sched.run();
    remove_files();
  }

  /// Ends the store and opens the same file again, as a restart would.
  void restart() {
    caf::anon_send_exit(st, caf::exit_reason::kill);
    sched.run();
    st = sys.spawn(store_with, db_path, opts);
    sched.run();
  }

  /// Reads a list page by page; answers every page's JSON.
  template <class What> std::vector<nlohmann::json> pages(What what, int64_t limit) {
    std::vector<nlohmann::json> out;
    page_request p;
    p.limit = limit;
    for (int i = 0; i < 100; ++i) {
      auto r = request<std::string>(atom::query_v, what, p);
      BOOST_REQUIRE(r->answered);
      BOOST_REQUIRE_MESSAGE(!r->err, (r->err ? message_of(r->err) : ""));
      out.push_back(nlohmann::json::parse(*r->value));
      auto& next = out.back()["next_cursor"];
      if (next.is_null()) return out;
      p.cursor = next.get<std::string>();
    }
    BOOST_FAIL("the pages never end");
    return out;
  }

  /// The store's counts (GET /stats without the live figures).
  nlohmann::json stats() {
    auto r = request<std::string>(atom::query_v, atom::stats_v);
    BOOST_REQUIRE(r->answered && r->value);
    return nlohmann::json::parse(*r->value);
  }

  device_record device(const std::string& id, bool online) {
    device_record d;
    d.device_id = id;
    d.hostname = "host-" + id;
    d.online = online;
    d.first_seen = d.last_seen = 1;
    return d;
  }

  void remove_files() {
    for (auto suffix : {"", "-wal", "-shm"})
      std::filesystem::remove(db_path + suffix);
  }

  /// Sends a request from an event-based actor and records whatever comes back,
  /// so a request that is never answered shows as `answered == false` instead of
  /// blocking the test.
  template <class T, class... Ts> std::shared_ptr<outcome<T>> request(Ts... xs) {
    auto out = std::make_shared<outcome<T>>();
    auto dest = st;
    // `dest` goes in as a spawn argument: CAF 0.17.6 dereferences a null tuple
    // pointer when a function-based actor is spawned without arguments (UBSan).
    sys.spawn(
        [=](caf::event_based_actor* a, decltype(dest) d) {
          a->request(d, caf::infinite, xs...)
              .then(
                  [out](T& x) {
                    out->answered = true;
                    out->value = std::move(x);
                  },
                  [out](caf::error& e) {
                    out->answered = true;
                    out->err = std::move(e);
                  });
        },
        dest);
    sched.run();
    return out;
  }

  user_record user(const std::string& name) {
    return user_record{name, user_role::operator_, std::string(32, '0'),
                       1,    std::string(64, '0'), 1};
  }

  /// Moves the stored action `id` to state `s` at `time` (µs), with its transition;
  /// answers how the store replied.
  std::shared_ptr<outcome<atom::ok>> move(const std::string& id, action_state s,
                                          int64_t time) {
    auto a = action(id);
    a.state = s;
    return request<atom::ok>(atom::update_v, a, transition{id, s, time, ""});
  }

  action_record action(const std::string& id) {
    action_record a;
    a.action_id = id;
    a.type = action_type::isolate;
    a.device_id = "dev-1";
    a.incident_id = "inc-1";
    a.requested_by = "alice";
    a.state = action_state::registered;
    a.created_at = a.updated_at = 1;
    return a;
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(store_errors, fixture)

// Before the fix the second put made a promise and then returned the error, which
// CAF dropped: the caller waited forever.
BOOST_AUTO_TEST_CASE(duplicate_user_is_answered_with_conflict) {
  auto first = request<atom::ok>(atom::put_v, user("bob"));
  BOOST_REQUIRE(first->answered);
  BOOST_TEST(!first->err);
  auto second = request<atom::ok>(atom::put_v, user("bob"));
  BOOST_REQUIRE_MESSAGE(second->answered, "a failed write must be answered");
  BOOST_TEST(code(second->err) == ec::conflict);
}

// A second connection holding the write lock (a backup, a sqlite3 shell): the write
// is answered with an error, and once the lock is gone the store writes again
// without the failed write showing up.
BOOST_AUTO_TEST_CASE(external_write_lock_is_answered_with_an_error) {
  other_connection other{db_path};
  other.exec("BEGIN IMMEDIATE");
  auto blocked = request<atom::ok>(atom::put_v, action("a-1"),
                                   transition{"a-1", action_state::registered, 1, ""});
  BOOST_REQUIRE_MESSAGE(blocked->answered, "a failed write must be answered");
  BOOST_TEST(code(blocked->err) == ec::storage);
  other.exec("COMMIT");
  auto next = request<atom::ok>(atom::put_v, action("a-2"),
                                transition{"a-2", action_state::registered, 1, ""});
  BOOST_REQUIRE(next->answered);
  BOOST_TEST(!next->err);
  BOOST_TEST(other.count("SELECT count(*) FROM actions WHERE action_id = 'a-1'") == 0);
  BOOST_TEST(other.count("SELECT count(*) FROM transitions WHERE action_id = 'a-1'") ==
             0);
  BOOST_TEST(other.count("SELECT count(*) FROM actions WHERE action_id = 'a-2'") == 1);
  BOOST_TEST(other.count("SELECT count(*) FROM transitions WHERE action_id = 'a-2'") ==
             1);
}

// A write that fails half-way (here: its transition is refused) leaves nothing
// behind, even though the next flush commits the writes around it.
BOOST_AUTO_TEST_CASE(failed_write_is_not_half_committed) {
  {
    other_connection other{db_path};
    other.exec("CREATE TRIGGER refuse_bad BEFORE INSERT ON transitions "
               "WHEN new.action_id = 'a-bad' BEGIN SELECT RAISE(ABORT, 'refused'); END");
  }
  auto good = request<atom::ok>(atom::put_v, action("a-good"),
                                transition{"a-good", action_state::registered, 1, ""});
  auto bad = request<atom::ok>(atom::put_v, action("a-bad"),
                               transition{"a-bad", action_state::registered, 1, ""});
  BOOST_REQUIRE(good->answered);
  BOOST_TEST(!good->err);
  BOOST_REQUIRE_MESSAGE(bad->answered, "a failed write must be answered");
  BOOST_TEST(bool{bad->err});
  other_connection other{db_path};
  BOOST_TEST(other.count("SELECT count(*) FROM actions WHERE action_id = 'a-bad'") == 0);
  BOOST_TEST(other.count("SELECT count(*) FROM actions WHERE action_id = 'a-good'") == 1);
  BOOST_TEST(other.count("SELECT count(*) FROM audit WHERE target = 'a-bad'") == 0);
  // The audit chain goes on from the last record that was committed.
  auto after = request<atom::ok>(atom::audit_v, audit_entry{"alice", "test", "x", "y"});
  BOOST_REQUIRE(after->answered);
  BOOST_TEST(!after->err);
  BOOST_TEST(other.count("SELECT count(*) FROM audit a JOIN audit b ON b.seq = a.seq + 1 "
                         "WHERE b.prev_hash <> a.hash") == 0);
  BOOST_TEST(other.count("SELECT max(seq) - count(*) FROM audit") == 0);
}

// POST /actions/bulk: many actions in one write, each in a savepoint of its own; one
// that is refused leaves the others stored, each with its trigger before its
// transitions in the audit chain, and a group that fills up mid-way loses nothing.
// Written under one savepoint while none fails; one by one once one does.
BOOST_AUTO_TEST_CASE(registrations_in_one_write_are_refused_one_by_one) {
  std::vector<std::string> published;
  opts.publish = [&](const char* family, std::string kind, std::string) {
    published.push_back(std::string{family} + "." + kind);
  };
  // Groups of 2 (the five below span three) and of 500 (all five in one run).
  for (std::size_t group : {2u, 500u}) {
    BOOST_TEST_CONTEXT("groups of " << group) {
      opts.max_batch_writes = group;
      restart();
      published.clear();
      auto p = "g" + std::to_string(group) + "-";
      request<atom::ok>(atom::put_v, action(p + "a-old"),
                        transition{p + "a-old", action_state::registered, 1, ""});
      std::vector<action_registration> regs;
      for (auto id : {"a-1", "a-old", "a-2", "a-1", "a-3"})
        regs.push_back(
            {audit_entry{"alice", "trigger", p + id, "isolate on dev-1"},
             action(p + id),
             transition{p + id, action_state::registered, 1, "requested by alice"},
             {}});
      auto out = request<std::vector<caf::error>>(atom::put_v, regs);
      BOOST_REQUIRE(out->answered);
      BOOST_REQUIRE(!out->err);
      BOOST_REQUIRE(out->value->size() == 5u);
      auto& errs = *out->value;
      BOOST_TEST(!errs[0]);
      BOOST_TEST(code(errs[1]) == ec::conflict); // stored before
      BOOST_TEST(!errs[2]);
      BOOST_TEST(code(errs[3]) == ec::conflict); // twice in the same write
      BOOST_TEST(!errs[4]);
      other_connection other{db_path};
      auto count = [&](std::string sql) {
        return other.count(sql.replace(sql.find("PFX"), 3, p).c_str());
      };
      BOOST_TEST(count("SELECT count(*) FROM actions WHERE action_id LIKE 'PFX%'") == 4);
      // One trigger per stored action, none for a refused one, each before its
      // action's first transition; the chain unbroken.
      BOOST_TEST(count("SELECT count(*) FROM audit WHERE kind = 'trigger' AND target "
                       "LIKE 'PFX%'") == 3);
      BOOST_TEST(count("SELECT count(*) FROM audit t JOIN audit r ON r.target = "
                       "t.target AND r.kind = 'transition' WHERE t.kind = 'trigger' "
                       "AND r.seq = t.seq + 1 AND t.target LIKE 'PFX%'") == 3);
      BOOST_TEST(other.count("SELECT count(*) FROM audit a JOIN audit b ON b.seq = "
                             "a.seq + 1 WHERE b.prev_hash <> a.hash") == 0);
      BOOST_TEST(other.count("SELECT max(seq) - count(*) FROM audit") == 0);
      BOOST_TEST(published.size() == 4u); // a-old, then the three stored
      // None refused: written in runs under one savepoint each (two runs in groups
      // of 2, one in groups of 500).
      regs.clear();
      for (auto id : {"b-1", "b-2", "b-3"})
        regs.push_back(
            {audit_entry{"alice", "trigger", p + id, "isolate on dev-1"},
             action(p + id),
             transition{p + id, action_state::registered, 1, "requested by alice"},
             {}});
      out = request<std::vector<caf::error>>(atom::put_v, regs);
      BOOST_REQUIRE(out->answered && out->value);
      BOOST_REQUIRE(out->value->size() == 3u);
      for (auto& e : *out->value)
        BOOST_TEST(!e);
      BOOST_TEST(count("SELECT count(*) FROM actions WHERE action_id LIKE 'PFX%'") == 7);
      BOOST_TEST(count("SELECT count(*) FROM audit t JOIN audit r ON r.target = "
                       "t.target AND r.kind = 'transition' WHERE t.kind = 'trigger' "
                       "AND r.seq = t.seq + 1 AND t.target LIKE 'PFX%'") == 6);
      BOOST_TEST(other.count("SELECT count(*) FROM audit a JOIN audit b ON b.seq = "
                             "a.seq + 1 WHERE b.prev_hash <> a.hash") == 0);
      BOOST_TEST(other.count("SELECT max(seq) - count(*) FROM audit") == 0);
      BOOST_TEST(published.size() == 7u);
    }
  }
}

// A bulk registration whose device took the command at once stores `sent` with it:
// the row is sent, both transitions and their audit records are there, and each is
// an event, as when the action writes `sent` itself.
BOOST_AUTO_TEST_CASE(a_registration_stores_sent_with_it_when_the_device_took_it) {
  std::vector<std::string> published;
  opts.publish = [&](const char* family, std::string kind, std::string) {
    published.push_back(std::string{family} + "." + kind);
  };
  restart();
  auto rec = action("s-1");
  rec.state = action_state::sent;
  action_registration r{audit_entry{"alice", "trigger", "s-1", "isolate on dev-1"},
                        rec,
                        transition{"s-1", action_state::registered, 5, "requested"},
                        {transition{"s-1", action_state::sent, 5, "delivered"}}};
  auto out =
      request<std::vector<caf::error>>(atom::put_v, std::vector<action_registration>{r});
  BOOST_REQUIRE(out->answered && out->value);
  BOOST_REQUIRE(out->value->size() == 1u);
  BOOST_TEST(!(*out->value)[0]);
  other_connection other{db_path};
  BOOST_TEST(other.count("SELECT count(*) FROM actions WHERE action_id = 's-1' AND "
                         "state = 'sent'") == 1);
  BOOST_TEST(other.blob("SELECT group_concat(state, ',') FROM (SELECT state FROM "
                        "transitions WHERE action_id = 's-1' ORDER BY seq)") ==
             "registered,sent");
  BOOST_TEST(other.blob("SELECT group_concat(kind || ' ' || detail, ',') FROM (SELECT "
                        "kind, detail FROM audit WHERE target = 's-1' ORDER BY seq)") ==
             "trigger isolate on dev-1,transition registered: requested,"
             "transition sent: delivered");
  BOOST_TEST(other.count("SELECT n FROM counts WHERE name = 'actions_open'") == 1);
  BOOST_TEST((published == std::vector<std::string>{"action.registered", "action.sent"}));
}

BOOST_AUTO_TEST_CASE(update_of_a_missing_action_is_not_found) {
  auto out = request<atom::ok>(atom::update_v, action("nope"),
                               transition{"nope", action_state::sent, 2, ""});
  BOOST_REQUIRE(out->answered);
  BOOST_TEST(code(out->err) == ec::not_found);
  other_connection other{db_path};
  BOOST_TEST(other.count("SELECT count(*) FROM transitions WHERE action_id = 'nope'") ==
             0);
}

BOOST_AUTO_TEST_CASE(link_and_revert_of_a_missing_action_are_not_found) {
  auto link = request<atom::ok>(atom::link_v, std::string{"nope"}, std::string{"r-1"});
  BOOST_REQUIRE(link->answered);
  BOOST_TEST(code(link->err) == ec::not_found);
  auto revert =
      request<atom::ok>(atom::revert_v, std::string{"nope"}, std::string{"r-1"});
  BOOST_REQUIRE(revert->answered);
  BOOST_TEST(code(revert->err) == ec::not_found);
  // An action that exists but is not completed cannot be reverted.
  request<atom::ok>(atom::put_v, action("a-1"),
                    transition{"a-1", action_state::registered, 1, ""});
  auto early = request<atom::ok>(atom::revert_v, std::string{"a-1"}, std::string{"r-1"});
  BOOST_REQUIRE(early->answered);
  BOOST_TEST(code(early->err) == ec::conflict);
}

// Regression: a reverted action published nothing, so the console and integrators
// never saw an isolate become `reverted`.
BOOST_AUTO_TEST_CASE(every_committed_state_is_published_reverted_too) {
  std::vector<std::string> published;
  opts.publish = [&](const char* family, std::string kind, std::string) {
    published.push_back(std::string{family} + "." + kind);
  };
  restart();
  request<atom::ok>(atom::put_v, action("a-1"),
                    transition{"a-1", action_state::registered, 1, ""});
  auto done = action("a-1");
  done.state = action_state::completed;
  request<atom::ok>(atom::update_v, done,
                    transition{"a-1", action_state::completed, 2, ""});
  request<atom::ok>(atom::revert_v, std::string{"a-1"}, std::string{"r-1"});
  // Settled again by a resumed reverse: nothing new to tell.
  request<atom::ok>(atom::revert_v, std::string{"a-1"}, std::string{"r-1"});
  BOOST_TEST(published ==
                 (std::vector<std::string>{"action.registered", "action.completed",
                                           "action.reverted"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(metrics_count_what_commits) {
  opts.metrics = std::make_shared<server_metrics>();
  restart();
  request<atom::ok>(atom::put_v, action("a-1"),
                    transition{"a-1", action_state::registered, 1, ""});
  move("a-1", action_state::sent, 1000);
  move("a-1", action_state::acknowledged, 3001000);
  move("a-1", action_state::completed, 4000001);
  // An update of a missing action rolls back: nothing of it is counted.
  BOOST_TEST(code(move("ghost", action_state::completed, 9)->err) == ec::not_found);
  auto text = opts.metrics->scrape();
  BOOST_TEST_INFO(text);
  auto has = [&](const std::string& line) {
    return text.find(line) != std::string::npos;
  };
  BOOST_TEST(
      has(R"(parry_action_transitions_total{state="registered",type="isolate"} 1)"));
  BOOST_TEST(
      has(R"(parry_action_transitions_total{state="completed",type="isolate"} 1)"));
  // sent (1 ms) -> acknowledged (3.001 s): 3 s, in the 5 s bucket and not the 2.5 s.
  BOOST_TEST(has(
      R"(parry_action_latency_seconds_bucket{phase="sent_to_acknowledged",type="isolate",le="2.5"} 0)"));
  BOOST_TEST(has(
      R"(parry_action_latency_seconds_bucket{phase="sent_to_acknowledged",type="isolate",le="5"} 1)"));
  // created at 1 µs, completed at 4.000001 s.
  BOOST_TEST(has(
      R"(parry_action_latency_seconds_sum{phase="registered_to_final",state="completed",type="isolate"} 4)"));
  BOOST_TEST(has(R"(parry_audit_records_total{kind="transition"} 4)"));
  BOOST_TEST(!has("ghost"));
  BOOST_TEST(has("parry_store_commit_duration_seconds_count"));
}

// An incident from the bus is not answered: the store keeps it, or logs and counts
// one it cannot keep; either way its bytes leave the ingest gauge.
BOOST_AUTO_TEST_CASE(an_unanswered_incident_is_stored_or_counted_as_failed) {
  opts.metrics = std::make_shared<server_metrics>();
  opts.ingest = std::make_shared<ingest_gauge>();
  restart();
  request<atom::ok>(atom::put_v, device("dev-1", true));
  other_connection(db_path).exec(
      // Fails the report 'rep-bad' after its row went in and its events were
      // counted (the last step of counting an incident).
      "CREATE TRIGGER refuse_bad AFTER UPDATE ON counts WHEN NEW.name = 'events' AND "
      "EXISTS (SELECT 1 FROM incidents WHERE report_id = 'rep-bad') "
      "BEGIN SELECT RAISE(ABORT, 'refused'); END;");
  for (auto id : {"rep-ok", "rep-bad", "rep-ok"}) {
    incident_record rec;
    rec.incident_id = std::string{"inc-"} + id;
    rec.device_id = "dev-1";
    rec.created_at = 1;
    rec.report.report_id = id;
    rec.report.events.resize(2);
    rec.wire_bytes = 100;
    opts.ingest->add(rec.wire_bytes);
    caf::anon_send(st, atom::put_v, atom::incident_v, rec);
  }
  sched.run();
  auto stats = request<std::string>(atom::query_v, atom::stats_v);
  BOOST_REQUIRE(stats->answered && stats->value);
  // The refused one was counted by its trigger before it failed (no savepoint
  // around it): the statement's rollback took the count back with the row.
  auto counted = nlohmann::json::parse(*stats->value);
  BOOST_TEST(counted["incidents"] == 1);
  BOOST_TEST(counted["events"] == 2);
  BOOST_TEST(other_connection(db_path).count("SELECT count(*) FROM incidents") == 1);
  auto text = opts.metrics->scrape();
  BOOST_TEST_INFO(text);
  BOOST_TEST(text.find("parry_incidents_stored_total 1") != std::string::npos);
  BOOST_TEST(text.find("parry_incidents_failed_total 1") != std::string::npos);
  BOOST_TEST(opts.ingest->reports.load() == 0u);
  BOOST_TEST(opts.ingest->bytes.load() == 0u);
}

// Before the cap a burst went into one transaction: its flush queued behind every
// write of the burst, so nothing was committed (or answered) until all were written.
BOOST_AUTO_TEST_CASE(a_burst_commits_in_groups_of_at_most_max_batch_writes) {
  opts.metrics = std::make_shared<server_metrics>();
  opts.max_batch_writes = 2;
  auto published = std::make_shared<std::vector<std::string>>();
  opts.publish = [published](const char* family, std::string kind, std::string) {
    published->push_back(std::string{family} + "." + kind);
  };
  restart();
  auto answered = std::make_shared<int>(0);
  for (int i = 0; i < 5; ++i)
    sys.spawn(
        [answered](caf::event_based_actor* a, store_actor st, device_record d) {
          a->request(st, caf::infinite, atom::put_v, d)
              .then([answered](atom::ok) { ++*answered; }, [](caf::error&) {});
        },
        st, device("dev-" + std::to_string(i), true));
  sched.run();
  BOOST_TEST(*answered == 5);
  auto text = opts.metrics->scrape();
  BOOST_TEST_INFO(text);
  // 2 + 2 + 1 writes: three commits, the last of one write.
  BOOST_TEST(text.find("parry_store_commit_duration_seconds_count 3") !=
             std::string::npos);
  BOOST_TEST(text.find("parry_store_writes_total 5") != std::string::npos);
  BOOST_TEST(text.find("parry_store_last_batch_writes 1") != std::string::npos);
  // Every committed write is published, the ones that began a new group too.
  BOOST_TEST(published->size() == 5u);
}

BOOST_AUTO_TEST_CASE(stats_are_counted_by_triggers_and_match_the_tables) {
  request<atom::ok>(atom::put_v, device("dev-1", true));
  request<atom::ok>(atom::put_v, device("dev-2", false));
  request<atom::ok>(atom::put_v, device("dev-1", false)); // an update, not a device
  for (int i = 0; i < 3; ++i) {
    incident_record rec;
    rec.incident_id = "inc-" + std::to_string(i);
    rec.device_id = "dev-1";
    rec.created_at = 1;
    rec.report.report_id = "rep-" + std::to_string(i);
    rec.report.events.resize(static_cast<std::size_t>(i + 1));
    request<std::string>(atom::put_v, rec);
  }
  // The same report again is the same incident: nothing more to count.
  incident_record again;
  again.incident_id = "inc-x";
  again.device_id = "dev-1";
  again.report.report_id = "rep-0";
  request<std::string>(atom::put_v, again);
  for (auto id : {"a-1", "a-2"})
    request<atom::ok>(atom::put_v, action(id),
                      transition{id, action_state::registered, 1, ""});
  move("a-1", action_state::completed, 2);
  // A write that rolls back leaves the counts as they were.
  BOOST_TEST(code(move("ghost", action_state::completed, 3)->err) == ec::not_found);
  auto expected =
      nlohmann::json{{"devices", 2}, {"devices_online", 0}, {"incidents", 3},
                     {"events", 6},  {"actions", 2},        {"actions_open", 1}};
  BOOST_TEST(stats() == expected, stats().dump());
  // An action whose row went in (and was counted) before its transition failed is
  // rolled back with its count.
  other_connection(db_path).exec(
      "CREATE TRIGGER refuse_a3 BEFORE INSERT ON transitions WHEN NEW.action_id = 'a-3' "
      "BEGIN SELECT RAISE(ABORT, 'refused'); END;");
  auto refused = request<atom::ok>(atom::put_v, action("a-3"),
                                   transition{"a-3", action_state::registered, 4, ""});
  BOOST_TEST(bool(refused->err));
  BOOST_TEST(stats() == expected, stats().dump());
  other_connection(db_path).exec("DROP TRIGGER refuse_a3");
  // A database from before the counts (no table, no triggers) is counted once at
  // open, from its tables.
  caf::anon_send_exit(st, caf::exit_reason::kill);
  sched.run();
  {
    other_connection old{db_path};
    old.exec("DROP TRIGGER counts_device_in; DROP TRIGGER counts_device_online; "
             "DROP TRIGGER counts_device_out; DROP TRIGGER counts_incident_in; "
             "DROP TRIGGER counts_incident_events; DROP TRIGGER counts_incident_out; "
             "DROP TRIGGER counts_action_in; DROP TRIGGER counts_action_state; "
             "DROP TRIGGER counts_action_out; DROP TABLE counts;");
    old.exec("UPDATE devices SET online = 1 WHERE device_id = 'dev-2'");
  }
  st = sys.spawn(store_with, db_path, opts);
  sched.run();
  // Every device is offline after a start; the rest comes from the tables.
  BOOST_TEST(stats() == expected, stats().dump());
  request<atom::ok>(atom::put_v, device("dev-3", true));
  expected["devices"] = 3;
  expected["devices_online"] = 1;
  BOOST_TEST(stats() == expected, stats().dump());
}

BOOST_AUTO_TEST_CASE(a_backup_is_the_live_database_checked_and_restores) {
  for (int i = 0; i < 20; ++i)
    request<atom::ok>(atom::audit_v, audit_entry{"alice", "login", "alice", "ok"});
  auto dir = std::filesystem::path{db_path}.parent_path() /
             ("parry-backup-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto copy = (dir / "copy.db").string();
  // The store keeps its connection open and writing (WAL) while the copy is made.
  auto made = backup_database(db_path, copy);
  BOOST_TEST(made.ok);
  BOOST_TEST(made.audit_records == 20);
  request<atom::ok>(atom::audit_v, audit_entry{"bob", "login", "bob", "after"});
  BOOST_TEST(check_database(copy).audit_records == 20);
  BOOST_TEST(
      ((std::filesystem::status(copy).permissions() & std::filesystem::perms::all) ==
       (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write)));
  BOOST_TEST(!std::filesystem::exists(copy + "-wal"));
  BOOST_CHECK_THROW(backup_database(db_path, copy), std::runtime_error); // no overwrite

  // One altered audit record makes the copy unusable, and restore refuses it.
  auto bad = (dir / "altered.db").string();
  std::filesystem::copy_file(copy, bad);
  {
    other_connection c{bad};
    c.exec("DROP TRIGGER audit_no_update");
    c.exec("UPDATE audit SET detail = 'nothing happened' WHERE seq = 7");
  }
  auto check = check_database(bad);
  BOOST_TEST(!check.ok);
  BOOST_TEST(check.problem == "audit chain: record 7 was altered");
  auto data = dir / "data";
  BOOST_CHECK_THROW(restore_database(bad, data.string()), std::runtime_error);
  BOOST_TEST(!std::filesystem::exists(data / "parry.db"));
  BOOST_TEST(!check_database((dir / "missing.db").string()).ok);

  // Not while a server holds the data directory.
  std::filesystem::create_directories(data);
  int lock = lock_data_dir(data.string());
  BOOST_REQUIRE(lock >= 0);
  BOOST_TEST(lock_data_dir(data.string()) == -1);
  BOOST_CHECK_THROW(restore_database(copy, data.string()), std::runtime_error);
  ::close(lock);
  { std::ofstream{data / "parry.db"} << "the old database"; }
  auto restored = restore_database(copy, data.string());
  BOOST_TEST(restored.audit_records == 20);
  BOOST_TEST(check_database((data / "parry.db").string()).ok);
  int kept = 0;
  for (auto& e : std::filesystem::directory_iterator(data))
    kept += e.path().filename().string().rfind("parry.db.before-restore-", 0) == 0;
  BOOST_TEST(kept == 1);
  std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(store_reads, fixture)

BOOST_AUTO_TEST_CASE(lists_are_paged_with_a_cursor) {
  for (auto id : {"d-1", "d-2", "d-3", "d-4", "d-5"})
    request<atom::ok>(atom::put_v, device(id, false));
  auto got = pages(atom::devices_v, 2);
  BOOST_REQUIRE_EQUAL(got.size(), 3u);
  std::vector<std::string> ids;
  for (auto& page : got)
    for (auto& d : page["devices"])
      ids.push_back(d["device_id"].get<std::string>());
  BOOST_TEST(ids == (std::vector<std::string>{"d-1", "d-2", "d-3", "d-4", "d-5"}));
  // Actions come newest first, and their pages join up the same way.
  for (auto id : {"a-1", "a-2", "a-3"})
    request<atom::ok>(atom::put_v, action(id),
                      transition{id, action_state::registered, 1, ""});
  ids.clear();
  for (auto& page : pages(atom::actions_v, 2))
    for (auto& a : page["actions"])
      ids.push_back(a["action_id"].get<std::string>());
  BOOST_TEST(ids == (std::vector<std::string>{"a-3", "a-2", "a-1"}));
  // Audit records (one per transition) oldest first, with the head on every page.
  auto audit =
      request<std::string>(atom::query_v, atom::audit_v, page_request{2, "", {}});
  BOOST_REQUIRE(audit->value);
  auto j = nlohmann::json::parse(*audit->value);
  BOOST_TEST(j["records"].size() == 2u);
  BOOST_TEST(j["head"]["seq"] == 3);
  BOOST_TEST(j["next_cursor"].is_string());
}

BOOST_AUTO_TEST_CASE(a_page_stops_at_its_byte_bound) {
  opts.max_page_bytes = 300;
  restart();
  for (auto id : {"d-1", "d-2", "d-3"})
    request<atom::ok>(atom::put_v, device(id, false));
  auto got = pages(atom::devices_v, 100);
  BOOST_TEST(got.size() == 3u);
  for (auto& page : got)
    BOOST_TEST(page["devices"].size() == 1u);
}

BOOST_AUTO_TEST_CASE(bad_paging_parameters_are_bad_requests) {
  auto big = parse_page({{"limit", "99999999999999999999"}});
  BOOST_REQUIRE(!big);
  BOOST_TEST(code(big.error()) == ec::bad_request);
  BOOST_TEST(message_of(big.error()).find("limit") != std::string::npos);
  BOOST_TEST(!parse_page({{"limit", "0"}}));
  BOOST_TEST(!parse_page({{"limit", "12x"}}));
  auto ok = parse_page({{"limit", "7"}, {"cursor", "ab"}, {"state", "sent"}});
  BOOST_REQUIRE(ok);
  BOOST_TEST(ok->limit == 7);
  BOOST_TEST(ok->filters.at("state") == "sent");
  auto bad =
      request<std::string>(atom::query_v, atom::devices_v, page_request{0, "zz", {}});
  BOOST_REQUIRE(bad->answered);
  BOOST_TEST(code(bad->err) == ec::bad_request);
  auto after =
      request<std::string>(atom::query_v, atom::audit_v,
                           page_request{0, "", {{"after", "99999999999999999999"}}});
  BOOST_REQUIRE(after->answered);
  BOOST_TEST(code(after->err) == ec::bad_request);
}

// A row this build cannot read (a type, target kind or role that a newer server or a
// hand edit wrote) is a storage error for the read that needs it, never a crash and
// never a record with a made-up type; a listing still answers, with that row marked,
// and resuming open actions skips it.
BOOST_AUTO_TEST_CASE(unknown_words_in_a_stored_row_are_an_error_for_that_row) {
  for (std::string id : {"a-good", "a-type", "a-kind"}) {
    auto put = request<atom::ok>(atom::put_v, action(id),
                                 transition{id, action_state::registered, 1, ""});
    BOOST_REQUIRE(put->answered && !put->err);
  }
  auto put = request<atom::ok>(atom::put_v, user("olga"));
  BOOST_REQUIRE(put->answered && !put->err);
  {
    other_connection other{db_path};
    other.exec("UPDATE actions SET type = 'nuke' WHERE action_id = 'a-type'");
    other.exec("UPDATE actions SET target_kind = 'galaxy' WHERE action_id = 'a-kind'");
    other.exec("UPDATE users SET role = 'root' WHERE username = 'olga'");
  }
  auto good = request<action_record>(atom::get_v, atom::action_v, std::string{"a-good"});
  BOOST_REQUIRE(good->answered);
  BOOST_TEST(!good->err);
  for (std::string id : {"a-type", "a-kind"}) {
    auto bad = request<action_record>(atom::get_v, atom::action_v, id);
    BOOST_REQUIRE_MESSAGE(bad->answered, "an unreadable row must be answered");
    BOOST_TEST(code(bad->err) == ec::storage);
    BOOST_TEST(message_of(bad->err).find(id) != std::string::npos);
    auto shown = request<std::string>(atom::query_v, atom::action_v, id);
    BOOST_REQUIRE(shown->answered);
    BOOST_TEST(code(shown->err) == ec::storage);
  }
  auto bad = request<action_record>(atom::get_v, atom::action_v, std::string{"a-type"});
  BOOST_TEST(message_of(bad->err).find("unknown stored type 'nuke'") !=
             std::string::npos);
  // The listing answers every row; the unreadable ones with their stored words.
  auto list = pages(atom::actions_v, 100);
  BOOST_REQUIRE(list.size() == 1u);
  std::map<std::string, nlohmann::json> rows;
  for (auto& r : list[0]["actions"])
    rows[r["action_id"].get<std::string>()] = r;
  BOOST_REQUIRE(rows.size() == 3u);
  BOOST_TEST(!rows["a-good"].contains("unreadable"));
  BOOST_TEST(rows["a-type"]["type"] == "nuke");
  BOOST_TEST(rows["a-type"]["unreadable"] == "unknown stored type 'nuke'");
  BOOST_TEST(rows["a-kind"]["target"]["kind"] == "galaxy");
  BOOST_TEST(rows["a-kind"]["unreadable"] == "unknown stored target kind 'galaxy'");
  // Resuming skips them; the readable open action resumes.
  auto open = request<std::vector<action_record>>(atom::open_v);
  BOOST_REQUIRE(open->answered);
  BOOST_REQUIRE(!open->err);
  BOOST_REQUIRE(open->value->size() == 1u);
  BOOST_TEST(open->value->front().action_id == "a-good");
  // A user whose role this build does not know cannot be read (nor log in).
  auto u = request<user_record>(atom::user_v, std::string{"olga"});
  BOOST_REQUIRE(u->answered);
  BOOST_TEST(code(u->err) == ec::storage);
}

// The agent's share of a round trip (result.agent_us) is kept with the action and
// shown; a database written before it was kept gains the column, read as 0.
BOOST_AUTO_TEST_CASE(the_agents_share_is_kept_and_old_databases_gain_it) {
  for (std::string id : {"a-1", "a-2"}) {
    auto put = request<atom::ok>(atom::put_v, action(id),
                                 transition{id, action_state::registered, 1, ""});
    BOOST_REQUIRE(put->answered && !put->err);
  }
  auto done = action("a-1");
  done.state = action_state::completed;
  done.result_ok = true;
  done.result_agent_us = 1234;
  auto up = request<atom::ok>(atom::update_v, done,
                              transition{"a-1", action_state::completed, 2, ""});
  BOOST_REQUIRE(up->answered && !up->err);
  auto a = request<action_record>(atom::get_v, atom::action_v, std::string{"a-1"});
  BOOST_REQUIRE(a->answered && a->value);
  BOOST_TEST(a->value->result_agent_us == 1234);
  auto shown = request<std::string>(atom::query_v, atom::action_v, std::string{"a-1"});
  BOOST_REQUIRE(shown->answered && shown->value);
  BOOST_TEST(nlohmann::json::parse(*shown->value)["action"]["result"]["agent_us"] ==
             1234);
  // One row per page: the cursor (the column after the record's) still pages.
  auto list = pages(atom::actions_v, 1);
  BOOST_REQUIRE(list.size() == 2u); // newest first: a-2, then a-1
  BOOST_TEST(list[1]["actions"][0]["result"]["agent_us"] == 1234);

  {
    other_connection other{db_path};
    other.exec("ALTER TABLE actions DROP COLUMN result_agent_us");
  }
  restart();
  a = request<action_record>(atom::get_v, atom::action_v, std::string{"a-1"});
  BOOST_REQUIRE(a->answered && a->value);
  BOOST_TEST(a->value->result_agent_us == 0);
  done.result_agent_us = 99;
  up = request<atom::ok>(atom::update_v, done,
                         transition{"a-1", action_state::completed, 3, ""});
  BOOST_REQUIRE(up->answered && !up->err);
  a = request<action_record>(atom::get_v, atom::action_v, std::string{"a-1"});
  BOOST_TEST(a->value->result_agent_us == 99);
}

BOOST_AUTO_TEST_CASE(an_unknown_stored_state_is_shown_failed_with_the_stored_word) {
  auto put = request<atom::ok>(atom::put_v, action("a-new"),
                               transition{"a-new", action_state::registered, 1, ""});
  BOOST_REQUIRE(put->answered && !put->err);
  {
    other_connection other{db_path};
    other.exec("UPDATE actions SET state = 'teleported', result_error = 'old' WHERE "
               "action_id = 'a-new'");
  }
  auto a = request<action_record>(atom::get_v, atom::action_v, std::string{"a-new"});
  BOOST_REQUIRE(a->answered && a->value);
  BOOST_TEST((a->value->state == action_state::failed));
  BOOST_TEST(a->value->result_error == "unknown stored state 'teleported'");
  auto open = request<std::vector<action_record>>(atom::open_v);
  BOOST_REQUIRE(open->answered && open->value);
  BOOST_TEST(open->value->empty()); // never resumed
}

BOOST_AUTO_TEST_CASE(bus_keys_one_per_device_and_enrollment_tokens_used_once) {
  auto key = [](char c, const char* dev) {
    return bus_key_record{std::string(40, c), false, dev, "", 1, "admin"};
  };
  enrollment_token_record once{"t1", "admin", 1, 1000, 1};
  auto put = request<atom::ok>(atom::put_v, std::string{"hash-1"}, once);
  BOOST_REQUIRE(put->answered && !put->err);
  // The token admits one key; the second use is refused, as is an unknown token.
  auto first = request<std::string>(atom::enroll_v, std::string{"hash-1"}, int64_t{10},
                                    key('a', "dev-1"));
  BOOST_REQUIRE(first->answered && first->value);
  BOOST_TEST(first->value->empty()); // nothing replaced
  auto again = request<std::string>(atom::enroll_v, std::string{"hash-1"}, int64_t{11},
                                    key('b', "dev-2"));
  BOOST_REQUIRE(again->answered);
  BOOST_TEST(code(again->err) == ec::not_found);
  // An expired token is refused and admits nothing.
  enrollment_token_record old{"t2", "admin", 1, 100, 5};
  request<atom::ok>(atom::put_v, std::string{"hash-2"}, old);
  auto late = request<std::string>(atom::enroll_v, std::string{"hash-2"}, int64_t{100},
                                   key('c', "dev-3"));
  BOOST_TEST(code(late->err) == ec::conflict);
  // A token never takes a device over from its key; the same key again is answered
  // without using the token; a multi-use token counts down.
  enrollment_token_record many{"t3", "admin", 1, 1000, 2};
  request<atom::ok>(atom::put_v, std::string{"hash-3"}, many);
  auto take = request<std::string>(atom::enroll_v, std::string{"hash-3"}, int64_t{20},
                                   key('d', "dev-1"));
  BOOST_TEST(code(take->err) == ec::forbidden);
  auto same = request<std::string>(atom::enroll_v, std::string{"hash-3"}, int64_t{20},
                                   key('a', "dev-1"));
  BOOST_REQUIRE(same->value);
  BOOST_TEST(same->value->empty());
  auto list = request<std::vector<bus_key_record>>(atom::list_v, atom::key_v);
  BOOST_REQUIRE(list->value);
  BOOST_REQUIRE(list->value->size() == 1u);
  BOOST_TEST(list->value->front().public_z85 == std::string(40, 'a'));
  // Revoking answers the key; a second revoke finds none.
  auto rev =
      request<std::string>(atom::revoke_v, atom::key_v, false, std::string{"dev-1"});
  BOOST_REQUIRE(rev->value);
  BOOST_TEST(*rev->value == std::string(40, 'a'));
  auto rev2 =
      request<std::string>(atom::revoke_v, atom::key_v, false, std::string{"dev-1"});
  BOOST_TEST(code(rev2->err) == ec::not_found);
  // Integrators keep their own names apart from devices.
  auto soar =
      request<std::string>(atom::put_v, bus_key_record{std::string(40, 'e'), true,
                                                       "dev-1", "operator", 1, "admin"});
  BOOST_REQUIRE(soar->value);
  restart();
  auto after = request<std::vector<bus_key_record>>(atom::list_v, atom::key_v);
  BOOST_REQUIRE(after->value && after->value->size() == 1u);
  BOOST_TEST(after->value->front().integrator);
  BOOST_TEST(after->value->front().role == "operator");
  auto last = request<std::string>(atom::enroll_v, std::string{"hash-3"}, int64_t{30},
                                   key('f', "dev-9"));
  BOOST_REQUIRE(last->value); // the first use of the two-use token
  auto second = request<std::string>(atom::enroll_v, std::string{"hash-3"}, int64_t{31},
                                     key('h', "dev-7"));
  BOOST_REQUIRE(second->value);
  auto none = request<std::string>(atom::enroll_v, std::string{"hash-3"}, int64_t{32},
                                   key('g', "dev-8"));
  BOOST_TEST(code(none->err) == ec::not_found);
}

BOOST_AUTO_TEST_CASE(devices_stored_online_are_offline_after_a_restart) {
  request<atom::ok>(atom::put_v, device("d-1", true));
  restart();
  auto d = request<device_record>(atom::get_v, std::string{"d-1"});
  BOOST_REQUIRE(d->value);
  BOOST_TEST(!d->value->online);
}

BOOST_AUTO_TEST_CASE(database_files_are_private) {
  auto old = ::umask(022);
  restart();
  request<atom::ok>(atom::put_v, device("d-1", false));
  ::umask(old);
  for (auto suffix : {"", "-wal", "-shm"}) {
    struct stat sb;
    BOOST_REQUIRE(::stat((db_path + suffix).c_str(), &sb) == 0);
    BOOST_TEST((sb.st_mode & 0777) == 0600u,
               suffix << " is " << std::oct << (sb.st_mode & 0777));
  }
}

BOOST_AUTO_TEST_CASE(a_report_is_stored_as_it_came_and_read_back_normalized) {
  bus::incident_report rep;
  rep.report_id = "rep-wire";
  rep.events.resize(1);
  rep.events[0].id = "e1";
  rep.events[0].file.sha256 = std::string(64, 'A');
  incident_record rec;
  rec.incident_id = "inc-wire";
  rec.device_id = "dev-1";
  rec.created_at = 1;
  rec.report = rep;
  // The agent's bytes (as gateway_bridge keeps them): not what encode() makes of
  // the normalized report.
  rec.report.wire = bus::encode(rep);
  rec.report.events[0].file.sha256 = std::string(64, 'a');
  BOOST_REQUIRE(rec.report.wire != bus::encode(rec.report));
  auto put = request<std::string>(atom::put_v, rec);
  BOOST_REQUIRE(put->answered && put->value);
  BOOST_TEST(other_connection(db_path).blob("SELECT report FROM incidents WHERE "
                                            "incident_id = 'inc-wire'") ==
             rec.report.wire);
  auto got =
      request<incident_record>(atom::get_v, atom::incident_v, std::string{"inc-wire"});
  BOOST_REQUIRE(got->answered && got->value);
  BOOST_TEST(got->value->report.events.at(0).file.sha256 == std::string(64, 'a'));
  BOOST_TEST(got->value->report.wire.empty());
}

/// An incident of about ten pages in the log (a 10,000-byte name, its indexes).
incident_record big_incident(int i) {
  incident_record rec;
  rec.incident_id = "inc-" + std::to_string(i);
  rec.device_id = "dev-1";
  rec.report.report_id = "rep-" + std::to_string(i);
  rec.report.det.name = std::string(10000, 'x');
  return rec;
}

BOOST_AUTO_TEST_CASE(commits_leave_checkpoints_to_the_checkpointer) {
  auto checkpoint = [&](const checkpointer_actor& c) {
    auto out = std::make_shared<std::optional<std::pair<int64_t, int64_t>>>();
    sys.spawn(
        [out](caf::event_based_actor* a, checkpointer_actor c) {
          a->request(c, caf::infinite, atom::flush_v)
              .then(
                  [out](int64_t log, int64_t done) { *out = std::make_pair(log, done); },
                  [](caf::error&) {});
        },
        c);
    sched.run();
    BOOST_REQUIRE(out->has_value());
    return **out;
  };
  // 400 commits of three pages or more each: SQLite's default would have made one
  // of these commits copy the log into the file (and reset it) at 1,000 pages.
  for (int i = 0; i < 400; ++i)
    BOOST_REQUIRE(request<std::string>(atom::put_v, big_incident(i))->value);
  checkpointer_options copts;
  copts.every = std::chrono::milliseconds{0};
  auto c = sys.spawn(checkpointer, db_path, copts);
  sched.run();
  auto [log, done] = checkpoint(c);
  BOOST_TEST(log > 1200, "the log held " << log << " pages");
  BOOST_TEST(done == log);
  // Once copied, the next commit writes the log from its start.
  request<atom::ok>(atom::put_v, device("dev-9", true));
  BOOST_TEST(checkpoint(c).first < 10);
  caf::anon_send_exit(c, caf::exit_reason::kill);
  // A reader holding a snapshot of the old log: a RESTART cannot finish; the
  // checkpoint gives up after its short wait and answers, and writes go on.
  copts.restart_pages = 1;
  auto r = sys.spawn(checkpointer, db_path, copts);
  sched.run();
  request<atom::ok>(atom::put_v, device("dev-10", true));
  other_connection reader{db_path};
  reader.exec("BEGIN; SELECT count(*) FROM devices;");
  auto [log2, done2] = checkpoint(r); // answered, not an error: "next round"
  BOOST_TEST(done2 == log2);
  BOOST_TEST(!request<atom::ok>(atom::put_v, device("dev-11", true))->err);
  reader.exec("COMMIT;");
  caf::anon_send_exit(r, caf::exit_reason::kill);
  sched.run();
}

BOOST_AUTO_TEST_CASE(a_log_past_its_bound_starts_over_under_a_writer_that_never_pauses) {
  // No checkpointer runs, and every commit adds pages to the log: without the
  // bound the log would hold every page written (400 commits of three or more).
  opts.wal_restart_pages = 200;
  restart();
  std::uintmax_t largest = 0;
  for (int i = 0; i < 400; ++i) {
    BOOST_REQUIRE(request<std::string>(atom::put_v, big_incident(i))->value);
    largest = std::max(largest, std::filesystem::file_size(db_path + "-wal"));
  }
  // The bound and one commit's pages past it (a frame is a page and 24 bytes).
  BOOST_TEST(largest < (200 + 20) * (4096 + 24) + 32, "the log reached " << largest);
  BOOST_TEST(stats()["incidents"] == 400);
  restart(); // and all of it is in the file
  BOOST_TEST(stats()["incidents"] == 400);
}

/// What a fake checkpointer answers (pages in the log, pages copied) and how often it
/// was asked.
struct fake_checkpoints {
  int64_t log = 0;
  int64_t done = 0;
  int woken = 0;
};

checkpointer_actor::behavior_type fake_checkpointer(std::shared_ptr<fake_checkpoints> f) {
  return {
      [f](atom::flush) -> caf::result<int64_t, int64_t> {
        ++f->woken;
        return {f->log, f->done};
      },
      [](atom::check) {},
  };
}

BOOST_AUTO_TEST_CASE(a_growing_log_wakes_the_checkpointer_each_quarter_of_its_bound) {
  opts.wal_restart_pages = 200;
  restart();
  auto f = std::make_shared<fake_checkpoints>(); // copies nothing, never behind
  auto fake = sys.spawn(fake_checkpointer, f);
  caf::anon_send(st, atom::link_v, fake);
  sched.run();
  // 100 commits of three pages or more: the log starts over at 200 pages (the
  // store's own checkpoint, since this checkpointer copies nothing), twice or more.
  for (int i = 0; i < 100; ++i)
    BOOST_REQUIRE(request<std::string>(atom::put_v, big_incident(i))->value);
  // Three wakes a round (at 50, 100 and 150 pages), not one a commit.
  BOOST_TEST(f->woken >= 6);
  BOOST_TEST(f->woken <= 100 / 3);
  caf::anon_send_exit(fake, caf::exit_reason::kill);
}

BOOST_AUTO_TEST_CASE(a_checkpointer_far_behind_keeps_the_copy_off_the_writer) {
  opts.wal_restart_pages = 200;
  restart();
  // A checkpointer that says it is far behind (as when a backup pins the log): the
  // store leaves the copy to it rather than stall its writes doing it.
  auto f = std::make_shared<fake_checkpoints>();
  f->log = 100000;
  auto fake = sys.spawn(fake_checkpointer, f);
  caf::anon_send(st, atom::link_v, fake);
  sched.run();
  for (int i = 0; i < 120; ++i)
    BOOST_REQUIRE(request<std::string>(atom::put_v, big_incident(i))->value);
  auto frames = [&] { // frames in the log file (its length never shrinks here)
    return (std::filesystem::file_size(db_path + "-wal") - 32) / (4096 + 24);
  };
  // Past the bound, but not past four times it, where the store copies anyway.
  BOOST_TEST(frames() > 2 * 200u, "the log held " << frames() << " pages");
  BOOST_TEST(frames() < 4 * 200u + 20, "the log held " << frames() << " pages");
  // Caught up: the store copies the rest itself again, and the log starts over.
  f->log = 0;
  for (int i = 120; i < 180; ++i)
    BOOST_REQUIRE(request<std::string>(atom::put_v, big_incident(i))->value);
  other_connection probe{db_path};
  int log = -1;
  int done = -1;
  BOOST_REQUIRE(sqlite3_wal_checkpoint_v2(probe.db, nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                          &log, &done) == SQLITE_OK);
  BOOST_TEST(log < 200 + 20, "the log holds " << log << " pages");
  BOOST_TEST(stats()["incidents"] == 180);
  caf::anon_send_exit(fake, caf::exit_reason::kill);
}

BOOST_AUTO_TEST_CASE(data_dir_is_private) {
  namespace fs = std::filesystem;
  auto dir = fs::temp_directory_path() / ("parry-dir-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto old = ::umask(022);
  fs::create_directories(dir / "tls");
  { std::ofstream{dir / "tls" / "cert.pem"} << "x"; }
  { std::ofstream{dir / "parry.db"} << "x"; }
  ::umask(old);
  make_private_dir(dir.string());
  auto mode = [](const fs::path& p) {
    struct stat sb;
    BOOST_REQUIRE(::stat(p.c_str(), &sb) == 0);
    return sb.st_mode & 0777;
  };
  BOOST_TEST(mode(dir) == 0700u);
  BOOST_TEST(mode(dir / "tls") == 0700u);
  BOOST_TEST(mode(dir / "tls" / "cert.pem") == 0600u);
  BOOST_TEST(mode(dir / "parry.db") == 0600u);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
