#define BOOST_TEST_MODULE store
#include "tests/caf_boost.hpp"

#include <sqlite3.h>

#include <filesystem>
#include <memory>
#include <optional>

#include <caf/event_based_actor.hpp>

#include "actors/error.hpp"
#include "actors/store.hpp"

namespace parry {
std::ostream& operator<<(std::ostream& os, ec x) {
  return os << to_string(x);
}
} // namespace parry

using namespace parry;

namespace {

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
};

struct fixture : test_coordinator_fixture<caf::actor_system_config> {
  std::string db_path;
  store_actor st;

  fixture() {
    db_path = (std::filesystem::temp_directory_path() /
               ("parry-store-test-" + std::to_string(::getpid()) + ".db"))
                  .string();
    remove_files();
    store_options opts;
    opts.busy_timeout = std::chrono::milliseconds{50};
    st = sys.spawn(store_with, db_path, opts);
    sched.run();
  }

  ~fixture() override {
    caf::anon_send_exit(st, caf::exit_reason::kill);
    sched.run();
    remove_files();
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
    sys.spawn([=](caf::event_based_actor* a) {
      a->request(dest, caf::infinite, xs...)
          .then(
              [out](T& x) {
                out->answered = true;
                out->value = std::move(x);
              },
              [out](caf::error& e) {
                out->answered = true;
                out->err = std::move(e);
              });
    });
    sched.run();
    return out;
  }

  user_record user(const std::string& name) {
    return user_record{name, "operator",           std::string(32, '0'),
                       1,    std::string(64, '0'), 1};
  }

  action_record action(const std::string& id) {
    action_record a;
    a.action_id = id;
    a.type = "isolate";
    a.device_id = "dev-1";
    a.incident_id = "inc-1";
    a.requested_by = "alice";
    a.state = "registered";
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
  BOOST_TEST(code_of(second->err) == ec::conflict);
}

// A second connection holding the write lock (a backup, a sqlite3 shell): the write
// is answered with an error, and once the lock is gone the store writes again
// without the failed write showing up.
BOOST_AUTO_TEST_CASE(external_write_lock_is_answered_with_an_error) {
  other_connection other{db_path};
  other.exec("BEGIN IMMEDIATE");
  auto blocked = request<atom::ok>(atom::put_v, action("a-1"),
                                   transition{"a-1", "registered", 1, ""});
  BOOST_REQUIRE_MESSAGE(blocked->answered, "a failed write must be answered");
  BOOST_TEST(code_of(blocked->err) == ec::storage);
  other.exec("COMMIT");
  auto next = request<atom::ok>(atom::put_v, action("a-2"),
                                transition{"a-2", "registered", 1, ""});
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
                                transition{"a-good", "registered", 1, ""});
  auto bad = request<atom::ok>(atom::put_v, action("a-bad"),
                               transition{"a-bad", "registered", 1, ""});
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

BOOST_AUTO_TEST_CASE(update_of_a_missing_action_is_not_found) {
  auto out = request<atom::ok>(atom::update_v, action("nope"),
                               transition{"nope", "sent", 2, ""});
  BOOST_REQUIRE(out->answered);
  BOOST_TEST(code_of(out->err) == ec::not_found);
  other_connection other{db_path};
  BOOST_TEST(other.count("SELECT count(*) FROM transitions WHERE action_id = 'nope'") ==
             0);
}

BOOST_AUTO_TEST_CASE(link_and_revert_of_a_missing_action_are_not_found) {
  auto link = request<atom::ok>(atom::link_v, std::string{"nope"}, std::string{"r-1"});
  BOOST_REQUIRE(link->answered);
  BOOST_TEST(code_of(link->err) == ec::not_found);
  auto revert =
      request<atom::ok>(atom::revert_v, std::string{"nope"}, std::string{"r-1"});
  BOOST_REQUIRE(revert->answered);
  BOOST_TEST(code_of(revert->err) == ec::not_found);
  // An action that exists but is not completed cannot be reverted.
  request<atom::ok>(atom::put_v, action("a-1"), transition{"a-1", "registered", 1, ""});
  auto early = request<atom::ok>(atom::revert_v, std::string{"a-1"}, std::string{"r-1"});
  BOOST_REQUIRE(early->answered);
  BOOST_TEST(code_of(early->err) == ec::conflict);
}

BOOST_AUTO_TEST_SUITE_END()
