#define BOOST_TEST_MODULE real_files
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "agent-real/file_ops.hpp"
#include "common/crypto.hpp"

namespace fs = std::filesystem;
using parry::real::file_actions;
using parry::real::file_config;
using parry::real::file_sha256;

namespace {

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool exists_nofollow(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

/// A scratch tree: `<tmp>/root` is the file root, `<tmp>/q` the store, `<tmp>/outside`
/// lies beyond the root. Removed at the end.
struct fixture {
  std::string tmp, root, qdir, outside;

  explicit fixture(const std::string& base = "/tmp") {
    std::string tmpl = base + "/parry-files-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed in " + base);
    tmp = tmpl;
    root = tmp + "/root";
    qdir = tmp + "/q";
    outside = tmp + "/outside";
    fs::create_directories(root + "/sub");
    fs::create_directories(outside);
  }
  ~fixture() {
    std::error_code ec;
    fs::remove_all(tmp, ec);
  }

  file_config config() const {
    file_config c;
    c.roots = {root};
    c.quarantine_dir = qdir;
    return c;
  }

  /// A file under the root holding `data`; returns its path.
  std::string make(const std::string& rel, const std::string& data) const {
    std::string p = root + "/" + rel;
    write_file(p, data);
    return p;
  }
};

const std::string marker = "PARRY-PLAINTEXT-MARKER";

/// Content spanning several 64 KiB chunks, with the marker at both ends.
std::string big_content() {
  std::string s = marker;
  for (int i = 0; s.size() < 200 * 1024; ++i)
    s += "line " + std::to_string(i) + "\n";
  return s + marker;
}

/// Runs `f`, which must throw std::runtime_error with every one of `parts` in what().
template <class F> void check_throws(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    BOOST_ERROR("no exception");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    for (const auto& p : parts)
      BOOST_TEST(what.find(p) != std::string::npos,
                 "'" << what << "' lacks '" << p << "'");
  }
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(real_files, fixture)

BOOST_AUTO_TEST_CASE(quarantine_then_restore_round_trips) {
  file_actions fa(config());
  const std::string data = big_content();
  const std::string path = make("sub/evil.bin", data);
  ::chmod(path.c_str(), 0640);
  const timespec times[2] = {{1600000000, 123456789}, {1500000000, 987654321}};
  BOOST_REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
  const std::string sha = parry::sha256_hex(data);
  BOOST_TEST(file_sha256(path) == sha);

  auto q = fa.quarantine({path, sha});
  BOOST_TEST_REQUIRE(q.ok, q.error);
  const std::string id = q.effect["quarantine_id"];
  BOOST_TEST(id.size() == 18u);
  BOOST_TEST(id.rfind("q-", 0) == 0u);
  BOOST_TEST(q.effect["path"] == path);
  BOOST_TEST(q.effect["sha256"] == sha);
  BOOST_TEST(!exists_nofollow(path));
  BOOST_TEST(fa.entries() == std::vector<std::string>{id});

  const std::string sealed = read_file(qdir + "/" + id + ".q");
  BOOST_TEST(sealed.size() > data.size());
  BOOST_TEST(sealed.find(marker) == std::string::npos);
  BOOST_TEST(sealed.find("evil.bin") == std::string::npos); // metadata is sealed too
  struct stat est {};
  BOOST_REQUIRE(::stat((qdir + "/" + id + ".q").c_str(), &est) == 0);
  BOOST_TEST((est.st_mode & 07777) == 0600u);

  auto r = fa.restore({id, path, sha});
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(r.effect["path"] == path);
  BOOST_TEST(r.effect["sha256"] == sha);
  BOOST_TEST(read_file(path) == data);
  BOOST_TEST(file_sha256(path) == sha);
  struct stat st {};
  BOOST_REQUIRE(::stat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 07777) == 0640u);
  BOOST_TEST(st.st_mtim.tv_sec == times[1].tv_sec);
  BOOST_TEST(st.st_mtim.tv_nsec == times[1].tv_nsec);
  BOOST_TEST(st.st_uid == ::geteuid());
  BOOST_TEST(fa.entries().empty());
  // No temp left beside the file.
  BOOST_TEST(std::distance(fs::directory_iterator(root + "/sub"), {}) == 1);
}

BOOST_AUTO_TEST_CASE(entries_survive_a_restart_and_empty_files_work) {
  std::string id;
  const std::string path = make("empty", "");
  const std::string sha = parry::sha256_hex("");
  {
    file_actions fa(config());
    auto q = fa.quarantine({path, sha});
    BOOST_TEST_REQUIRE(q.ok, q.error);
    id = q.effect["quarantine_id"];
  }
  file_actions again(config()); // same key from quarantine.key
  BOOST_TEST(again.entries() == std::vector<std::string>{id});
  auto r = again.restore({id, "", ""});
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(read_file(path).empty());
}

BOOST_AUTO_TEST_CASE(hash_mismatch_leaves_the_file) {
  file_actions fa(config());
  const std::string path = make("a", "current content");
  auto q = fa.quarantine({path, parry::sha256_hex("detected content")});
  BOOST_TEST(!q.ok);
  BOOST_TEST(q.error == "file changed since detection");
  BOOST_TEST(read_file(path) == "current content");
  BOOST_TEST(fa.entries().empty());
}

BOOST_AUTO_TEST_CASE(missing_file) {
  file_actions fa(config());
  const std::string sha = parry::sha256_hex("x");
  auto q = fa.quarantine({root + "/nope", sha});
  BOOST_TEST(q.error == "no file at " + root + "/nope");
  auto d = fa.remove({root + "/gone/nope", sha});
  BOOST_TEST(d.error == "no file at " + root + "/gone/nope");
}

BOOST_AUTO_TEST_CASE(paths_outside_the_roots) {
  file_actions fa(config());
  const std::string sha = parry::sha256_hex("x");
  // Same string prefix, other directory.
  fs::create_directories(tmp + "/root2");
  write_file(tmp + "/root2/f", "x");
  auto q = fa.quarantine({tmp + "/root2/f", sha});
  BOOST_TEST(q.error == tmp + "/root2/f is outside the agent's file roots");
  BOOST_TEST(exists_nofollow(tmp + "/root2/f"));
  write_file(outside + "/f", "x");
  BOOST_TEST(fa.remove({outside + "/f", sha}).error ==
             outside + "/f is outside the agent's file roots");
  BOOST_TEST(exists_nofollow(outside + "/f"));
  // The root itself is not a file in it.
  BOOST_TEST(!fa.remove({root, sha}).ok);
  // No roots: nothing allowed.
  file_config none = config();
  none.roots.clear();
  file_actions nothing(none);
  const std::string path = make("a", "x");
  BOOST_TEST(nothing.remove({path, sha}).error ==
             path + " is outside the agent's file roots");
  BOOST_TEST(exists_nofollow(path));
}

BOOST_AUTO_TEST_CASE(symlink_as_the_file_is_refused) {
  file_actions fa(config());
  const std::string target = make("real", "payload");
  const std::string link = root + "/link";
  BOOST_REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);
  const std::string sha = parry::sha256_hex("payload");
  BOOST_TEST(fa.quarantine({link, sha}).error == link + " is a symbolic link");
  BOOST_TEST(fa.remove({link, sha}).error == link + " is a symbolic link");
  BOOST_TEST(exists_nofollow(link));
  BOOST_TEST(read_file(target) == "payload");
  BOOST_TEST(file_sha256(link).empty());
  BOOST_TEST(file_sha256(target) == sha);
}

BOOST_AUTO_TEST_CASE(symlink_as_a_directory_is_refused) {
  file_actions fa(config());
  write_file(outside + "/victim", "precious");
  const std::string sha = parry::sha256_hex("precious");
  BOOST_REQUIRE(::symlink(outside.c_str(), (root + "/out").c_str()) == 0);
  auto q = fa.quarantine({root + "/out/victim", sha});
  BOOST_TEST(!q.ok);
  BOOST_TEST(q.error ==
             "a directory on the way to " + root + "/out/victim" + " is a symbolic link");
  BOOST_TEST(!fa.remove({root + "/out/victim", sha}).ok);
  BOOST_TEST(read_file(outside + "/victim") == "precious");
  // A link that stays inside the root is refused all the same.
  make("sub/inner", "precious");
  BOOST_REQUIRE(::symlink((root + "/sub").c_str(), (root + "/alias").c_str()) == 0);
  BOOST_TEST(!fa.remove({root + "/alias/inner", sha}).ok);
  BOOST_TEST(exists_nofollow(root + "/sub/inner"));
  BOOST_TEST(fa.entries().empty());
}

BOOST_AUTO_TEST_CASE(non_regular_files_are_refused) {
  file_actions fa(config());
  const std::string sha = parry::sha256_hex("x");
  const std::string fifo = root + "/fifo";
  BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  BOOST_TEST(fa.quarantine({fifo, sha}).error == fifo + " is not a regular file");
  BOOST_TEST(fa.remove({fifo, sha}).error == fifo + " is not a regular file");
  BOOST_TEST(exists_nofollow(fifo));
  BOOST_TEST(fa.quarantine({root + "/sub", sha}).error ==
             root + "/sub is not a regular file");
  BOOST_TEST(fs::is_directory(root + "/sub"));
  BOOST_TEST(file_sha256(fifo).empty());
  BOOST_TEST(file_sha256(root + "/sub").empty());
}

BOOST_AUTO_TEST_CASE(too_large_is_refused) {
  file_config c = config();
  c.max_file_size = 4;
  file_actions fa(c);
  const std::string path = make("big", "12345");
  auto q = fa.quarantine({path, parry::sha256_hex("12345")});
  BOOST_TEST(!q.ok);
  BOOST_TEST(q.error.find("larger than the quarantine limit") != std::string::npos);
  BOOST_TEST(exists_nofollow(path));
}

BOOST_AUTO_TEST_CASE(the_store_is_never_a_target) {
  file_config c = config();
  c.roots.push_back(tmp); // holds the store too
  file_actions fa(c);
  const std::string key = qdir + "/quarantine.key";
  auto d = fa.remove({key, file_sha256(key)});
  BOOST_TEST(d.error == key + " is in the quarantine store");
  BOOST_TEST(exists_nofollow(key));
}

BOOST_AUTO_TEST_CASE(restore_refuses_an_occupied_path) {
  file_actions fa(config());
  const std::string path = make("a", "quarantined");
  const std::string sha = parry::sha256_hex("quarantined");
  auto q = fa.quarantine({path, sha});
  BOOST_TEST_REQUIRE(q.ok, q.error);
  const std::string id = q.effect["quarantine_id"];
  write_file(path, "newcomer");
  auto r = fa.restore({id, path, sha});
  BOOST_TEST(r.error == "a file already exists at " + path);
  BOOST_TEST(read_file(path) == "newcomer");
  BOOST_TEST(fa.entries() == std::vector<std::string>{id});
  // A symlink counts as occupying the path too.
  fs::remove(path);
  BOOST_REQUIRE(::symlink((outside + "/x").c_str(), path.c_str()) == 0);
  BOOST_TEST(fa.restore({id, path, sha}).error == "a file already exists at " + path);
  BOOST_TEST(!exists_nofollow(outside + "/x"));
  fs::remove(path);
  BOOST_TEST(fa.restore({id, path, sha}).ok);
  BOOST_TEST(read_file(path) == "quarantined");
}

BOOST_AUTO_TEST_CASE(restore_checks_the_given_path_and_hash) {
  file_actions fa(config());
  const std::string path = make("a", "quarantined");
  const std::string sha = parry::sha256_hex("quarantined");
  auto q = fa.quarantine({path, sha});
  BOOST_TEST_REQUIRE(q.ok, q.error);
  const std::string id = q.effect["quarantine_id"];
  BOOST_TEST(fa.restore({id, root + "/b", ""}).error ==
             "quarantine entry " + id + " is for " + path + ", not " + root + "/b");
  BOOST_TEST(fa.restore({id, path, parry::sha256_hex("other")}).error ==
             "quarantine entry " + id + " holds a file with another sha256");
  BOOST_TEST(!exists_nofollow(path));
  BOOST_TEST(fa.entries().size() == 1u);
}

BOOST_AUTO_TEST_CASE(tampered_entry_is_damaged_and_writes_nothing) {
  file_actions fa(config());
  const std::string data = big_content();
  const std::string path = make("sub/t", data);
  const std::string sha = parry::sha256_hex(data);
  auto q = fa.quarantine({path, sha});
  BOOST_TEST_REQUIRE(q.ok, q.error);
  const std::string id = q.effect["quarantine_id"];
  const std::string entry = qdir + "/" + id + ".q";
  const std::string good = read_file(entry);
  for (std::size_t at : {good.size() / 2, good.size() - 1, std::size_t{30}}) {
    std::string bad = good;
    bad[at] ^= 0x01;
    write_file(entry, bad);
    auto r = fa.restore({id, path, sha});
    BOOST_TEST(r.error == "quarantine entry " + id + " is damaged");
    BOOST_TEST(!exists_nofollow(path));
    BOOST_TEST(fs::is_empty(root + "/sub"));
  }
  // Truncated, and moved under another id (the id is authenticated).
  write_file(entry, good.substr(0, 20));
  BOOST_TEST(fa.restore({id, "", ""}).error == "quarantine entry " + id + " is damaged");
  const std::string other = "q-0123456789abcdef";
  write_file(qdir + "/" + other + ".q", good);
  BOOST_TEST(fa.restore({other, "", ""}).error ==
             "quarantine entry " + other + " is damaged");
  BOOST_TEST(fs::is_empty(root + "/sub"));
  write_file(entry, good);
  BOOST_TEST(fa.restore({id, "", ""}).ok);
  BOOST_TEST(read_file(path) == data);
}

BOOST_AUTO_TEST_CASE(unknown_and_malformed_ids) {
  file_actions fa(config());
  BOOST_TEST(fa.restore({"q-0000000000000000", "", ""}).error ==
             "no quarantine entry q-0000000000000000");
  BOOST_TEST(fa.restore({"q-XYZ", "", ""}).error == "no quarantine entry q-XYZ");
  BOOST_TEST(fa.restore({"../q/quarantine", "", ""}).error ==
             "no quarantine entry ../q/quarantine");
  BOOST_TEST(fa.restore({"q-0000000000000000.q", "", ""}).error ==
             "no quarantine entry q-0000000000000000.q");
  BOOST_TEST(fa.restore({"q-ABCDEF0000000000", "", ""}).error ==
             "no quarantine entry q-ABCDEF0000000000");
}

BOOST_AUTO_TEST_CASE(delete_removes_and_checks) {
  file_actions fa(config());
  const std::string path = make("sub/d", "bad");
  auto d = fa.remove({path, parry::sha256_hex("bad")});
  BOOST_TEST_REQUIRE(d.ok, d.error);
  BOOST_TEST(d.effect["path"] == path);
  BOOST_TEST(!exists_nofollow(path));
  BOOST_TEST(fa.entries().empty());

  const std::string changed = make("sub/e", "changed");
  auto e = fa.remove({changed, parry::sha256_hex("original")});
  BOOST_TEST(e.error == "file changed since detection");
  BOOST_TEST(read_file(changed) == "changed");
}

BOOST_AUTO_TEST_CASE(key_file_is_checked) {
  { file_actions fa(config()); }
  const std::string key = qdir + "/quarantine.key";
  struct stat st {};
  BOOST_REQUIRE(::stat(key.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 07777) == 0600u);
  BOOST_TEST(st.st_size == 32);
  struct stat dst {};
  BOOST_REQUIRE(::stat(qdir.c_str(), &dst) == 0);
  BOOST_TEST((dst.st_mode & 07777) == 0700u);

  ::chmod(key.c_str(), 0644);
  BOOST_CHECK_THROW(file_actions{config()}, std::runtime_error);
  ::chmod(key.c_str(), 0600);
  BOOST_CHECK_NO_THROW(file_actions{config()});
  write_file(key, "short");
  BOOST_CHECK_THROW(file_actions{config()}, std::runtime_error);
  fs::remove(key);
  BOOST_REQUIRE(::symlink((outside + "/k").c_str(), key.c_str()) == 0);
  BOOST_CHECK_THROW(file_actions{config()}, std::runtime_error);

  file_config relative = config();
  relative.quarantine_dir = "q";
  BOOST_CHECK_THROW(file_actions{relative}, std::runtime_error);
}

// -- reading stops at the size checked -----------------------------------------------

BOOST_AUTO_TEST_CASE(reading_stops_at_the_size_checked) {
  // A file that grows while read cannot be timed from here; /proc files can stand in:
  // st_size is 0, yet reading yields bytes. Reading to EOF would hash them; reading to
  // the size and probing one byte further calls the file changed.
  const std::string self = "/proc/" + std::to_string(::getpid());
  const std::string status = self + "/status";
  struct stat st {};
  BOOST_REQUIRE(::stat(status.c_str(), &st) == 0);
  BOOST_REQUIRE(st.st_size == 0);
  BOOST_TEST(!read_file(status).empty());
  BOOST_TEST(file_sha256(status).empty());

  file_config c = config();
  c.roots = {self};
  file_actions fa(c);
  const std::string empty = parry::sha256_hex("");
  BOOST_TEST(fa.quarantine({status, empty}).error == "file changed since detection");
  BOOST_TEST(fa.remove({status, empty}).error == "file changed since detection");
  BOOST_TEST(fa.entries().empty());
  // A file of the size it claims reads as before.
  const std::string path = make("same", "twelve bytes");
  BOOST_TEST(file_sha256(path) == parry::sha256_hex("twelve bytes"));
}

// -- the key ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(an_empty_key_left_by_a_crash_is_reported) {
  // What the old in-place write left when it died between O_CREAT and write.
  BOOST_REQUIRE(::mkdir(qdir.c_str(), 0700) == 0);
  const std::string key = qdir + "/quarantine.key";
  write_file(key, "");
  ::chmod(key.c_str(), 0600);
  check_throws([&] { file_actions fa(config()); }, {key, "is empty", "remove it"});
  BOOST_TEST(fs::file_size(key) == 0u); // reported, not silently replaced
  fs::remove(key);
  BOOST_CHECK_NO_THROW(file_actions{config()});
  BOOST_TEST(fs::file_size(key) == 32u);
}

BOOST_AUTO_TEST_CASE(a_fresh_start_makes_the_key_whole_and_leaves_no_temp) {
  BOOST_REQUIRE(::mkdir(qdir.c_str(), 0700) == 0);
  // A temp left by a key write that was interrupted.
  const std::string stale = qdir + "/quarantine.key.tmp.0123456789abcdef";
  write_file(stale, "");
  ::umask(0); // The key must still come out 0600.
  { file_actions fa(config()); }
  ::umask(022);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(qdir))
    names.push_back(e.path().filename().string());
  BOOST_TEST(names == std::vector<std::string>{"quarantine.key"});
  struct stat st {};
  BOOST_REQUIRE(::lstat((qdir + "/quarantine.key").c_str(), &st) == 0);
  BOOST_TEST(S_ISREG(st.st_mode));
  BOOST_TEST((st.st_mode & 07777) == 0600u);
  BOOST_TEST(st.st_size == 32);
  BOOST_TEST(st.st_nlink == 1u); // the temp's name is gone
  // And it is the key used: a second start opens what the first sealed.
  const std::string path = make("k", "keyed");
  std::string id;
  {
    file_actions fa(config());
    auto q = fa.quarantine({path, parry::sha256_hex("keyed")});
    BOOST_TEST_REQUIRE(q.ok, q.error);
    id = q.effect["quarantine_id"];
  }
  file_actions again(config());
  BOOST_TEST(again.restore({id, path, ""}).ok);
}

// -- roots -----------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(a_root_that_is_a_symlink_is_refused) {
  const std::string link = tmp + "/rootlink";
  BOOST_REQUIRE(::symlink(root.c_str(), link.c_str()) == 0);
  file_config c = config();
  c.roots = {link};
  check_throws([&] { file_actions fa(c); }, {"file root " + link, "symbolic link"});
  // A symlink above the root too.
  const std::string alias = tmp + "/alias";
  BOOST_REQUIRE(::symlink(tmp.c_str(), alias.c_str()) == 0);
  c.roots = {alias + "/root"};
  check_throws([&] { file_actions fa(c); }, {"file root " + alias + "/root", alias});
  // And a root that is a file.
  write_file(tmp + "/plain", "x");
  c.roots = {tmp + "/plain"};
  check_throws([&] { file_actions fa(c); }, {"not a directory"});
}

BOOST_AUTO_TEST_CASE(a_root_under_a_directory_others_can_change_is_refused) {
  const std::string ww = tmp + "/ww";
  fs::create_directories(ww + "/r");
  BOOST_REQUIRE(::chmod(ww.c_str(), 0777) == 0);
  file_config c = config();
  c.roots = {ww + "/r"};
  check_throws([&] { file_actions fa(c); }, {"file root " + ww + "/r", ww, "sticky"});
  BOOST_REQUIRE(::chmod(ww.c_str(), 0775) == 0); // group-writable: the same
  check_throws([&] { file_actions fa(c); }, {ww});
  BOOST_REQUIRE(::chmod(ww.c_str(), 01777) == 0); // sticky, as /tmp: fine
  BOOST_CHECK_NO_THROW(file_actions{c});
  // The root itself may be anyone's and writable by all: its content is the point.
  BOOST_REQUIRE(::chmod(root.c_str(), 0777) == 0);
  BOOST_CHECK_NO_THROW(file_actions{config()});
  if (::geteuid() == 0) {
    const std::string theirs = tmp + "/theirs";
    fs::create_directories(theirs + "/r");
    BOOST_REQUIRE(::chown(theirs.c_str(), 65534, 65534) == 0);
    c.roots = {theirs + "/r"};
    check_throws([&] { file_actions fa(c); }, {theirs, "owned by uid 65534"});
    BOOST_REQUIRE(::chown(root.c_str(), 65534, 65534) == 0);
    BOOST_CHECK_NO_THROW(file_actions{config()});
  }
}

BOOST_AUTO_TEST_CASE(a_root_is_opened_once) {
  file_actions fa(config());
  write_file(outside + "/victim", "precious");
  const std::string sha = parry::sha256_hex("precious");
  // The root swapped for a link to elsewhere after start: the agent still acts in
  // the directory it opened, where there is no such file.
  fs::rename(root, tmp + "/root.old");
  BOOST_REQUIRE(::symlink(outside.c_str(), root.c_str()) == 0);
  BOOST_TEST(fa.remove({root + "/victim", sha}).error ==
             "no file at " + root + "/victim");
  BOOST_TEST(fa.quarantine({root + "/victim", sha}).error ==
             "no file at " + root + "/victim");
  BOOST_TEST(read_file(outside + "/victim") == "precious");
  write_file(tmp + "/root.old/mine", "precious");
  BOOST_TEST(fa.remove({root + "/mine", sha}).ok); // in the directory opened
  BOOST_TEST(!exists_nofollow(tmp + "/root.old/mine"));
}

BOOST_AUTO_TEST_CASE(a_root_missing_at_start_is_opened_later_by_the_same_rules) {
  file_config c = config();
  const std::string later = tmp + "/later";
  c.roots = {later};
  file_actions fa(c);
  const std::string sha = parry::sha256_hex("x");
  BOOST_TEST(fa.remove({later + "/f", sha}).error == "no file at " + later + "/f");
  fs::create_directories(outside);
  write_file(outside + "/f", "x");
  BOOST_REQUIRE(::symlink(outside.c_str(), later.c_str()) == 0);
  auto d = fa.remove({later + "/f", sha});
  BOOST_TEST(d.error.find("file root " + later) == 0u, d.error);
  BOOST_TEST(exists_nofollow(outside + "/f"));
  fs::remove(later);
  fs::create_directories(later);
  write_file(later + "/f", "x");
  BOOST_TEST(fa.remove({later + "/f", sha}).ok);
}

BOOST_AUTO_TEST_CASE(protected_directories_are_never_a_target) {
  const std::string state = tmp + "/state";
  fs::create_directories(state + "/sub");
  write_file(state + "/sub/journal", "j");
  const std::string sha = parry::sha256_hex("j");
  file_config c = config();
  c.roots = {tmp};
  c.protected_dirs = {state};
  {
    file_actions fa(c);
    BOOST_TEST(fa.remove({state + "/sub/journal", sha}).error ==
               state + "/sub/journal is in the agent's state directory");
    BOOST_TEST(fa.quarantine({state + "/sub/journal", sha}).error ==
               state + "/sub/journal is in the agent's state directory");
    const std::string other = make("ok", "j");
    BOOST_TEST(fa.remove({other, sha}).ok);
  }
  // Named through a link, it is still recognised by identity.
  const std::string link = tmp + "/outside/statelink";
  BOOST_REQUIRE(::symlink(state.c_str(), link.c_str()) == 0);
  c.protected_dirs = {link};
  {
    file_actions fa(c);
    BOOST_TEST(fa.remove({state + "/sub/journal", sha}).error ==
               state + "/sub/journal is in the agent's state directory");
  }
  BOOST_TEST(exists_nofollow(state + "/sub/journal"));
  // A root inside one is a configuration error.
  c.roots = {state + "/sub"};
  check_throws([&] { file_actions fa(c); }, {"file root " + state + "/sub"});
  c.protected_dirs = {state};
  check_throws([&] { file_actions fa(c); }, {"file root " + state + "/sub"});
  c.protected_dirs = {"relative"};
  BOOST_CHECK_THROW(file_actions{c}, std::runtime_error);
}

BOOST_AUTO_TEST_CASE(dot_dot_is_refused) {
  file_actions fa(config());
  const std::string path = make("a", "x");
  const std::string sha = parry::sha256_hex("x");
  BOOST_TEST(fa.remove({root + "/sub/../a", sha}).error ==
             root + "/sub/../a has a '..' component");
  BOOST_TEST(exists_nofollow(path));
}

// -- restore through O_TMPFILE ---------------------------------------------------------

namespace {

/// Quarantines and restores a file under `fx`, checking that no name but the file's
/// own ever shows in its directory.
void round_trip(const fixture& fx) {
  file_actions fa(fx.config());
  const std::string data = big_content();
  const std::string path = fx.make("sub/r", data);
  ::chmod(path.c_str(), 0604);
  const std::string sha = parry::sha256_hex(data);
  auto q = fa.quarantine({path, sha});
  BOOST_TEST_REQUIRE(q.ok, q.error);
  auto r = fa.restore({q.effect["quarantine_id"], path, sha});
  BOOST_TEST_REQUIRE(r.ok, r.error);
  BOOST_TEST(read_file(path) == data);
  struct stat st {};
  BOOST_REQUIRE(::lstat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 07777) == 0604u);
  BOOST_TEST(st.st_nlink == 1u);
  BOOST_TEST(std::distance(fs::directory_iterator(fx.root + "/sub"), {}) == 1);
  BOOST_TEST(fa.entries().empty());
  // Linking refuses a taken name just as the rename did.
  auto q2 = fa.quarantine({path, sha});
  BOOST_TEST_REQUIRE(q2.ok, q2.error);
  write_file(path, "newcomer");
  BOOST_TEST(fa.restore({q2.effect["quarantine_id"], path, sha}).error ==
             "a file already exists at " + path);
  BOOST_TEST(read_file(path) == "newcomer");
  BOOST_TEST(std::distance(fs::directory_iterator(fx.root + "/sub"), {}) == 1);
}

} // namespace

BOOST_AUTO_TEST_CASE(restore_works_on_the_default_tmp_filesystem) {
  round_trip(*this);
}

BOOST_AUTO_TEST_CASE(restore_works_on_tmpfs) {
  struct statfs sf {};
  if (::statfs("/dev/shm", &sf) != 0 || sf.f_type != TMPFS_MAGIC) {
    BOOST_TEST_MESSAGE("/dev/shm is not a tmpfs here: skipped");
    return;
  }
  fixture shm("/dev/shm");
  round_trip(shm);
}

BOOST_AUTO_TEST_SUITE_END()
