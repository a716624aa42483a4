#include "agent-real/file_ops.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/crypto.hpp"
#include "common/keys.hpp"

namespace parry::real {

namespace {

using sim::execution;
using sim::printable;

constexpr std::size_t chunk = 64 * 1024;
constexpr char magic[4] = {'P', 'R', 'Q', '1'};
constexpr std::size_t iv_len = 12;
constexpr std::size_t tag_len = 16;
constexpr std::size_t header_len = sizeof magic + iv_len;
/// Metadata is a few hundred bytes; a larger length field means a damaged entry.
constexpr uint32_t max_meta_len = 64 * 1024;
constexpr const char* key_name = "quarantine.key";

/// Owns one file descriptor.
class unique_fd {
public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

private:
  int fd_ = -1;
};

std::string err_text(int e) {
  return std::strerror(e);
}

/// Components of an absolute path; empty and "." components say nothing and go.
std::vector<std::string> components(std::string_view p) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i <= p.size()) {
    std::size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view c = p.substr(i, j - i);
    if (!c.empty() && c != ".") out.emplace_back(c);
    i = j + 1;
  }
  return out;
}

bool read_full(int fd, void* buf, std::size_t n, off_t off) {
  auto* p = static_cast<unsigned char*>(buf);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
    off += r;
  }
  return true;
}

bool write_all(int fd, const void* buf, std::size_t n) {
  auto* p = static_cast<const unsigned char*>(buf);
  while (n > 0) {
    ssize_t r = ::write(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

/// How reading a file's bytes ended.
enum class read_status {
  ok,       ///< Exactly the size expected, and nothing after it.
  io_error, ///< A read failed (errno set).
  changed,  ///< The file ended early or holds more: someone is writing to it.
};

/// Reads exactly `size` bytes of `fd` from offset 0, handing each chunk to `sink`,
/// then probes one byte further. Stopping at the size checked bounds the work: a file
/// its owner keeps growing (or truncates up to a terabyte) is refused, not read on.
template <class Sink> read_status read_exact(int fd, uint64_t size, Sink&& sink) {
  std::vector<unsigned char> buf(chunk);
  off_t off = 0;
  uint64_t left = size;
  while (left > 0) {
    const auto want = static_cast<std::size_t>(std::min<uint64_t>(left, buf.size()));
    ssize_t r = ::pread(fd, buf.data(), want, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return read_status::io_error;
    if (r == 0) return read_status::changed;
    if (!sink(buf.data(), static_cast<std::size_t>(r))) return read_status::io_error;
    off += r;
    left -= static_cast<uint64_t>(r);
  }
  for (;;) {
    ssize_t r = ::pread(fd, buf.data(), 1, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return read_status::io_error;
    return r == 0 ? read_status::ok : read_status::changed;
  }
}

/// SHA-256 of the first `size` bytes of `fd`, which must be all it holds.
read_status hash_fd(int fd, uint64_t size, std::string& hex) {
  sha256_stream h;
  auto st = read_exact(fd, size, [&](const unsigned char* p, std::size_t n) {
    h.update(p, n);
    return true;
  });
  if (st == read_status::ok) hex = h.hex();
  return st;
}

using cipher_ctx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

cipher_ctx new_cipher() {
  cipher_ctx c(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  if (!c) throw std::runtime_error("EVP_CIPHER_CTX_new failed");
  return c;
}

int64_t to_ns(const timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

timespec from_ns(int64_t ns) {
  timespec t{};
  t.tv_sec = static_cast<time_t>(ns / 1000000000);
  t.tv_nsec = static_cast<long>(ns % 1000000000);
  if (t.tv_nsec < 0) {
    t.tv_nsec += 1000000000;
    t.tv_sec -= 1;
  }
  return t;
}

bool valid_id(std::string_view id) {
  if (id.size() != 18 || id.substr(0, 2) != "q-") return false;
  return std::all_of(id.begin() + 2, id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

/// Names in the directory `dirfd`.
std::vector<std::string> list_dir(int dirfd) {
  std::vector<std::string> names;
  // A fresh open file description: a dup would share (and move) the offset of `dirfd`.
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return names;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return names;
  }
  while (dirent* de = ::readdir(d))
    names.emplace_back(de->d_name);
  ::closedir(d);
  return names;
}

/// What an entry says about the file it holds.
struct entry_meta {
  std::string path;
  std::string sha256;
  uint64_t size = 0;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t atime_ns = 0;
  int64_t mtime_ns = 0;
};

std::string meta_json(const entry_meta& m) {
  nlohmann::json j = {{"path", m.path},         {"sha256", m.sha256},    {"size", m.size},
                      {"mode", m.mode},         {"uid", m.uid},          {"gid", m.gid},
                      {"atime_ns", m.atime_ns}, {"mtime_ns", m.mtime_ns}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool parse_meta(const std::string& text, entry_meta& m) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  try {
    m.path = j.at("path").get<std::string>();
    m.sha256 = j.at("sha256").get<std::string>();
    m.size = j.at("size").get<uint64_t>();
    m.mode = j.at("mode").get<uint32_t>();
    m.uid = j.at("uid").get<uint32_t>();
    m.gid = j.at("gid").get<uint32_t>();
    m.atime_ns = j.at("atime_ns").get<int64_t>();
    m.mtime_ns = j.at("mtime_ns").get<int64_t>();
  } catch (const nlohmann::json::exception&) {
    return false;
  }
  return !m.path.empty() && m.path[0] == '/' && m.sha256.size() == 64;
}

/// Splits an entry's plaintext ([length][metadata][file bytes]) as it is decrypted.
class plain_splitter {
public:
  explicit plain_splitter(std::function<bool(const unsigned char*, std::size_t)> body)
      : body_(std::move(body)) {}

  bool feed(const unsigned char* p, std::size_t n) {
    while (n > 0 && len_got_ < 4) {
      len_ = len_ << 8 | *p++;
      --n;
      if (++len_got_ == 4 && len_ > max_meta_len) return false;
    }
    if (len_got_ < 4) return true;
    std::size_t take = std::min<std::size_t>(n, len_ - meta_.size());
    meta_.append(reinterpret_cast<const char*>(p), take);
    p += take;
    n -= take;
    if (n == 0) return true;
    return body_(p, n);
  }
  bool complete() const { return len_got_ == 4 && meta_.size() == len_; }
  const std::string& meta() const { return meta_; }

private:
  std::function<bool(const unsigned char*, std::size_t)> body_;
  uint32_t len_ = 0;
  int len_got_ = 0;
  std::string meta_;
};

/// A regular file opened for an action, with the directory that holds it.
struct target {
  unique_fd dir;
  std::string name;
  unique_fd file;
  struct stat st {};
};

/// "/" followed by `parts` joined with "/".
std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts)
    out += "/" + p;
  return out.empty() ? "/" : out;
}

/// True when the path `parts` lies inside (or is) the directory `dir`.
bool inside(const std::vector<std::string>& parts, const std::vector<std::string>& dir) {
  return parts.size() >= dir.size() && std::equal(dir.begin(), dir.end(), parts.begin());
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/// Opens the directory `parts` from "/" one component at a time, never following a
/// symlink, into `out` (O_PATH). Returns "" on success; sets `missing` when a
/// component does not exist; else says why the root cannot be trusted: a component is
/// a symlink or not a directory, or a directory above it could be changed by someone
/// other than root and this user (owned by another user, or writable by group or
/// others without the sticky bit), who could then put something else in its place.
/// `seen` gets the stat of every directory opened, the root last.
std::string open_root_dir(const std::vector<std::string>& parts, unique_fd& out,
                          bool& missing, std::vector<struct stat>& seen) {
  missing = false;
  seen.clear();
  unique_fd cur(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  struct stat st {};
  if (!cur || ::fstat(cur.get(), &st) != 0) return "cannot open /: " + err_text(errno);
  seen.push_back(st);
  std::vector<std::string> at;
  for (const auto& part : parts) {
    const std::string here = printable(join(at));
    if (st.st_uid != 0 && st.st_uid != ::geteuid())
      return here + " is owned by uid " + std::to_string(st.st_uid) +
             " (only root or this user may own the directories above a file root)";
    if ((st.st_mode & 022) != 0 && (st.st_mode & S_ISVTX) == 0)
      return here + " is writable by group or others and not sticky";
    at.push_back(part);
    unique_fd next(::openat(cur.get(), part.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!next) {
      if (errno == ENOENT) missing = true;
      return "cannot open " + printable(join(at)) + ": " + err_text(errno);
    }
    if (::fstat(next.get(), &st) != 0)
      return "cannot stat " + printable(join(at)) + ": " + err_text(errno);
    if (S_ISLNK(st.st_mode)) return printable(join(at)) + " is a symbolic link";
    if (!S_ISDIR(st.st_mode)) return printable(join(at)) + " is not a directory";
    seen.push_back(st);
    cur = std::move(next);
  }
  out = std::move(cur);
  return "";
}

} // namespace

struct file_actions::impl {
  /// A file root, opened once when the actions are made.
  struct root_dir {
    std::vector<std::string> parts; ///< Its path, split in components.
    unique_fd fd; ///< O_PATH; closed when it did not exist then (opened per action).
  };
  /// A directory no action may touch anything in.
  struct protected_dir {
    std::vector<std::string> parts; ///< Its path, split in components.
    bool opened = false;            ///< It existed at construction: `st` is set.
    struct stat st {};
  };

  file_config cfg;
  std::vector<root_dir> roots;
  std::vector<protected_dir> protected_dirs;
  unique_fd qdir;
  struct stat qdir_st {};
  std::array<unsigned char, 32> key{};

  ~impl() { OPENSSL_cleanse(key.data(), key.size()); }

  void open_store();
  void load_key();
  void open_protected();
  void open_roots();

  // Each returns "" on success, else the reason the action fails.
  std::string open_parent(const std::string& path, target& t, bool restoring) const;
  std::string open_regular(const std::string& path, target& t) const;
  std::string check_hash(const std::string& path, const target& t,
                         const std::string& want) const;
  std::string seal(const std::string& id, const entry_meta& m, const target& t) const;
  std::string unseal(int efd, const std::string& id, plain_splitter& out) const;
  execution unlink_checked(const std::string& path, target& t) const;
};

void file_actions::impl::open_store() {
  const std::string& dir = cfg.quarantine_dir;
  if (dir.empty() || dir[0] != '/')
    throw std::runtime_error("quarantine directory must be an absolute path: '" +
                             printable(dir) + "'");
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw std::runtime_error("cannot create quarantine directory " + printable(dir) +
                             ": " + err_text(errno));
  // The directory itself is configuration: following a link to it is the admin's call.
  qdir = unique_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!qdir)
    throw std::runtime_error("cannot open quarantine directory " + printable(dir) + ": " +
                             err_text(errno));
  if (::fstat(qdir.get(), &qdir_st) != 0)
    throw std::runtime_error("cannot stat quarantine directory " + printable(dir));
  // Anyone else who can write here could remove entries or plant a key.
  if (qdir_st.st_uid != ::geteuid() || (qdir_st.st_mode & 022) != 0)
    throw std::runtime_error("quarantine directory " + printable(dir) +
                             " must be owned by this user and writable by no one else");
}

void file_actions::impl::load_key() {
  const std::string path = cfg.quarantine_dir + "/" + key_name;
  const std::string where = printable(path);
  unique_fd fd(::openat(qdir.get(), key_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd && errno == ENOENT) {
    // Made whole or not at all (a temp, fsynced, then linked in): a crash leaves no
    // empty key behind, and of two agents starting at once the second reads the
    // first's key.
    if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1)
      throw std::runtime_error("RAND_bytes failed");
    try {
      write_private_file(
          path, std::string_view(reinterpret_cast<const char*>(key.data()), key.size()),
          file_write::create_new);
    } catch (const key_error& e) {
      if (e.code() != key_errc::exists)
        throw std::runtime_error("cannot make " + where + ": " + e.what());
    }
    fd = unique_fd(::openat(qdir.get(), key_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  }
  if (!fd) {
    if (errno == ELOOP) throw std::runtime_error(where + " is a symbolic link");
    throw std::runtime_error("cannot open " + where + ": " + err_text(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    throw std::runtime_error(where + " is not a regular file");
  if ((st.st_mode & 07777) != 0600 || st.st_uid != ::geteuid())
    throw std::runtime_error(where + " must be mode 0600 and owned by this user");
  // Only an agent from before keys were written atomically could leave this.
  if (st.st_size == 0)
    throw std::runtime_error(where +
                             " is empty (left by a start interrupted while making it): "
                             "remove it to have a new key made");
  if (st.st_size != static_cast<off_t>(key.size()))
    throw std::runtime_error(where + " must hold exactly 32 bytes");
  if (!read_full(fd.get(), key.data(), key.size(), 0))
    throw std::runtime_error("cannot read " + where);
}

void file_actions::impl::open_protected() {
  for (const auto& d : cfg.protected_dirs) {
    if (d.empty() || d[0] != '/')
      throw std::runtime_error("protected directory must be an absolute path: '" +
                               printable(d) + "'");
    protected_dir p;
    p.parts = components(d);
    // Configuration, like the store: followed through links, and compared by identity
    // as well as by name.
    unique_fd fd(::open(d.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (fd) {
      if (::fstat(fd.get(), &p.st) != 0)
        throw std::runtime_error("cannot stat protected directory " + printable(d));
      p.opened = true;
    } else if (errno != ENOENT) {
      throw std::runtime_error("cannot open protected directory " + printable(d) + ": " +
                               err_text(errno));
    }
    protected_dirs.push_back(std::move(p));
  }
}

void file_actions::impl::open_roots() {
  for (const auto& r : cfg.roots) {
    root_dir root;
    root.parts = components(r);
    const std::string shown = printable(r);
    if (std::find(root.parts.begin(), root.parts.end(), "..") != root.parts.end())
      throw std::runtime_error("file root " + shown + " must not hold '..'");
    for (const auto& p : protected_dirs)
      if (inside(root.parts, p.parts))
        throw std::runtime_error("file root " + shown +
                                 " is in the agent's state directory " +
                                 printable(join(p.parts)));
    bool missing = false;
    std::vector<struct stat> seen;
    std::string why = open_root_dir(root.parts, root.fd, missing, seen);
    // A root this host lacks is not an error: actions under it find no file, and it is
    // opened (by the same rules) once it exists.
    if (!why.empty() && !missing)
      throw std::runtime_error("file root " + shown + ": " + why);
    for (const auto& st : seen)
      for (const auto& p : protected_dirs)
        if (p.opened && same_file(st, p.st))
          throw std::runtime_error("file root " + shown +
                                   " is in the agent's state directory " +
                                   printable(join(p.parts)));
    roots.push_back(std::move(root));
  }
}

std::string file_actions::impl::open_parent(const std::string& path, target& t,
                                            bool restoring) const {
  const std::string shown = printable(path);
  auto parts = components(path);
  if (std::find(parts.begin(), parts.end(), "..") != parts.end())
    return shown + " has a '..' component";
  // The most specific root that holds the path; comparing components keeps /srv/ep
  // from holding /srv/ep2.
  int best = -1;
  for (std::size_t i = 0; i < roots.size(); ++i) {
    const auto& r = roots[i].parts;
    if (parts.size() > r.size() && inside(parts, r) &&
        (best < 0 || r.size() > roots[static_cast<std::size_t>(best)].parts.size()))
      best = static_cast<int>(i);
  }
  if (best < 0) return shown + " is outside the agent's file roots";
  for (const auto& p : protected_dirs)
    if (inside(parts, p.parts)) return shown + " is in the agent's state directory";
  const root_dir& root = roots[static_cast<std::size_t>(best)];
  const std::string gone =
      restoring ? "the directory of " + shown + " is gone" : "no file at " + shown;

  // Roots are opened once, so a root (or a directory above it) swapped for a link
  // later changes nothing. One that was missing then is opened now, by the same rules.
  unique_fd late;
  int rootfd = root.fd.get();
  if (!root.fd) {
    bool missing = false;
    std::vector<struct stat> seen;
    std::string why = open_root_dir(root.parts, late, missing, seen);
    if (missing) return gone;
    if (!why.empty()) return "file root " + printable(join(root.parts)) + ": " + why;
    rootfd = late.get();
  }

  // Down from the root one directory at a time, each opened with
  // openat2(RESOLVE_NO_SYMLINKS...) and checked against the store and the protected
  // directories by identity (a name can be an alias).
  bool in_store = false;
  bool in_state = false;
  auto check = [&](int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return false;
    in_store = in_store || same_file(st, qdir_st);
    for (const auto& p : protected_dirs)
      in_state = in_state || (p.opened && same_file(st, p.st));
    return true;
  };
  if (!check(rootfd))
    return "cannot stat file root " + printable(join(root.parts)) + ": " +
           err_text(errno);
  std::vector<std::string> steps(parts.begin() + static_cast<long>(root.parts.size()),
                                 parts.end() - 1);
  if (steps.empty()) steps.emplace_back(".");
  unique_fd cur;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    open_how how{};
    // The last one is kept for fstatat, unlinkat, fsync...: a real descriptor.
    how.flags = (i + 1 == steps.size() ? O_RDONLY : O_PATH) | O_DIRECTORY | O_CLOEXEC;
    how.resolve =
        RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    const int from = cur ? cur.get() : rootfd;
    long fd = -1;
    // EAGAIN: a concurrent rename somewhere made the kernel unsure; try again.
    for (int tries = 0; tries < 8; ++tries) {
      fd = ::syscall(SYS_openat2, from, steps[i].c_str(), &how, sizeof how);
      if (fd >= 0 || (errno != EAGAIN && errno != EINTR)) break;
    }
    if (fd < 0) {
      switch (errno) {
      case ELOOP:
        return "a directory on the way to " + shown + " is a symbolic link";
      case EXDEV:
        return "the way to " + shown + " crosses a mount point";
      case ENOENT:
      case ENOTDIR:
        return gone;
      case ENOSYS:
        return "openat2 is not available (Linux 5.6 or later is needed)";
      default:
        return "cannot open the directory of " + shown + ": " + err_text(errno);
      }
    }
    cur = unique_fd(static_cast<int>(fd));
    if (!check(cur.get()))
      return "cannot stat the directory of " + shown + ": " + err_text(errno);
  }
  // The store's own files (the key, other entries) are never a target; nor is
  // anything of the agent's own state.
  if (in_store) return shown + " is in the quarantine store";
  if (in_state) return shown + " is in the agent's state directory";
  t.dir = std::move(cur);
  t.name = parts.back();
  return "";
}

std::string file_actions::impl::open_regular(const std::string& path, target& t) const {
  if (auto why = open_parent(path, t, false); !why.empty()) return why;
  const std::string shown = printable(path);
  // Look before opening, so a device or fifo is never opened (that can have effects).
  struct stat pre {};
  if (::fstatat(t.dir.get(), t.name.c_str(), &pre, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return "no file at " + shown;
    return "cannot stat " + shown + ": " + err_text(errno);
  }
  if (S_ISLNK(pre.st_mode)) return shown + " is a symbolic link";
  if (!S_ISREG(pre.st_mode)) return shown + " is not a regular file";
  t.file = unique_fd(::openat(t.dir.get(), t.name.c_str(),
                              O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!t.file) {
    if (errno == ENOENT) return "no file at " + shown;
    if (errno == ELOOP) return shown + " is a symbolic link";
    return "cannot open " + shown + ": " + err_text(errno);
  }
  if (::fstat(t.file.get(), &t.st) != 0)
    return "cannot stat " + shown + ": " + err_text(errno);
  if (!S_ISREG(t.st.st_mode)) return shown + " is not a regular file";
  return "";
}

std::string file_actions::impl::check_hash(const std::string& path, const target& t,
                                           const std::string& want) const {
  std::string got;
  switch (hash_fd(t.file.get(), static_cast<uint64_t>(t.st.st_size), got)) {
  case read_status::ok:
    break;
  case read_status::io_error:
    return "cannot read " + printable(path) + ": " + err_text(errno);
  case read_status::changed:
    return "file changed since detection";
  }
  if (got != want) return "file changed since detection";
  return "";
}

std::string file_actions::impl::seal(const std::string& id, const entry_meta& m,
                                     const target& t) const {
  const std::string tmp = id + ".q.tmp";
  unique_fd out(::openat(qdir.get(), tmp.c_str(),
                         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) return "cannot create quarantine entry: " + err_text(errno);
  auto fail = [&](std::string why) {
    out.reset();
    ::unlinkat(qdir.get(), tmp.c_str(), 0);
    return why;
  };

  unsigned char iv[iv_len];
  if (RAND_bytes(iv, sizeof iv) != 1) return fail("RAND_bytes failed");
  auto ctx = new_cipher();
  int n = 0;
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, iv_len, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), iv) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n,
                        reinterpret_cast<const unsigned char*>(id.data()),
                        static_cast<int>(id.size())) != 1)
    return fail("encryption setup failed");

  std::vector<unsigned char> cbuf(chunk + 32);
  auto encrypt = [&](const unsigned char* p, std::size_t len) {
    int outl = 0;
    return EVP_EncryptUpdate(ctx.get(), cbuf.data(), &outl, p, static_cast<int>(len)) ==
               1 &&
           write_all(out.get(), cbuf.data(), static_cast<std::size_t>(outl));
  };

  if (!write_all(out.get(), magic, sizeof magic) || !write_all(out.get(), iv, sizeof iv))
    return fail("cannot write quarantine entry: " + err_text(errno));
  const std::string meta = meta_json(m);
  const auto mlen = static_cast<uint32_t>(meta.size());
  const unsigned char len_be[4] = {
      static_cast<unsigned char>(mlen >> 24), static_cast<unsigned char>(mlen >> 16),
      static_cast<unsigned char>(mlen >> 8), static_cast<unsigned char>(mlen)};
  if (!encrypt(len_be, 4) ||
      !encrypt(reinterpret_cast<const unsigned char*>(meta.data()), meta.size()))
    return fail("cannot write quarantine entry: " + err_text(errno));

  // The bytes sealed are hashed again as they go: a writer between the check and this
  // pass would otherwise put other content under the detected hash.
  sha256_stream h;
  int write_errno = 0;
  const read_status st =
      read_exact(t.file.get(), m.size, [&](const unsigned char* p, std::size_t len) {
        h.update(p, len);
        errno = 0;
        if (encrypt(p, len)) return true;
        write_errno = errno ? errno : EIO;
        return false;
      });
  if (write_errno != 0)
    return fail("cannot write quarantine entry: " + err_text(write_errno));
  if (st == read_status::io_error)
    return fail("cannot read " + printable(m.path) + ": " + err_text(errno));
  if (st == read_status::changed || h.hex() != m.sha256)
    return fail("file changed since detection");

  unsigned char tag[tag_len];
  int outl = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), cbuf.data(), &outl) != 1 ||
      !write_all(out.get(), cbuf.data(), static_cast<std::size_t>(outl)) ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, tag_len, tag) != 1 ||
      !write_all(out.get(), tag, sizeof tag))
    return fail("cannot write quarantine entry: " + err_text(errno));
  if (::fsync(out.get()) != 0)
    return fail("cannot sync quarantine entry: " + err_text(errno));
  out.reset();
  const std::string final_name = id + ".q";
  if (::renameat(qdir.get(), tmp.c_str(), qdir.get(), final_name.c_str()) != 0)
    return fail("cannot store quarantine entry: " + err_text(errno));
  if (::fsync(qdir.get()) != 0) {
    int e = errno;
    ::unlinkat(qdir.get(), final_name.c_str(), 0);
    return "cannot sync the quarantine directory: " + err_text(e);
  }
  return "";
}

std::string file_actions::impl::unseal(int efd, const std::string& id,
                                       plain_splitter& out) const {
  const std::string damaged = "quarantine entry " + id + " is damaged";
  struct stat st {};
  if (::fstat(efd, &st) != 0 || !S_ISREG(st.st_mode)) return damaged;
  const auto total = static_cast<uint64_t>(st.st_size);
  if (total < header_len + 4 + tag_len) return damaged;
  unsigned char head[header_len];
  unsigned char tag[tag_len];
  if (!read_full(efd, head, sizeof head, 0) ||
      !read_full(efd, tag, sizeof tag, static_cast<off_t>(total - tag_len)) ||
      std::memcmp(head, magic, sizeof magic) != 0)
    return damaged;

  auto ctx = new_cipher();
  int n = 0;
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, iv_len, nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), head + sizeof magic) !=
          1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &n,
                        reinterpret_cast<const unsigned char*>(id.data()),
                        static_cast<int>(id.size())) != 1)
    return "decryption setup failed";

  std::vector<unsigned char> in(chunk), plain(chunk + 32);
  auto off = static_cast<off_t>(header_len);
  uint64_t left = total - header_len - tag_len;
  while (left > 0) {
    std::size_t want = static_cast<std::size_t>(std::min<uint64_t>(left, chunk));
    if (!read_full(efd, in.data(), want, off)) return damaged;
    int outl = 0;
    if (EVP_DecryptUpdate(ctx.get(), plain.data(), &outl, in.data(),
                          static_cast<int>(want)) != 1)
      return damaged;
    // A sink that refuses ends it: a bad length field or a write error (errno set).
    if (!out.feed(plain.data(), static_cast<std::size_t>(outl))) return damaged;
    off += static_cast<off_t>(want);
    left -= want;
  }
  int outl = 0;
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, tag_len, tag) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), plain.data(), &outl) <= 0 || !out.complete())
    return damaged;
  return "";
}

execution file_actions::impl::unlink_checked(const std::string& path, target& t) const {
  // The name must still be the file hashed: a rename over it since then would make us
  // delete a file nobody checked. (The window left, between this and unlinkat, is as
  // narrow as the kernel lets it be.)
  struct stat now {};
  if (::fstatat(t.dir.get(), t.name.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0 ||
      now.st_dev != t.st.st_dev || now.st_ino != t.st.st_ino)
    return execution::failed("file changed since detection");
  if (::unlinkat(t.dir.get(), t.name.c_str(), 0) != 0)
    return execution::failed("cannot remove " + printable(path) + ": " + err_text(errno));
  ::fsync(t.dir.get());
  execution e;
  e.ok = true;
  e.effect["path"] = path;
  // Another name keeps the content reachable; the operator should know.
  if (t.st.st_nlink > 1)
    e.effect["note"] = std::to_string(t.st.st_nlink - 1) + " other hard link(s) remain";
  return e;
}

file_actions::file_actions(file_config cfg) : impl_(std::make_unique<impl>()) {
  impl_->cfg = std::move(cfg);
  for (const auto& r : impl_->cfg.roots)
    if (r.empty() || r[0] != '/')
      throw std::runtime_error("file root must be an absolute path: '" + printable(r) +
                               "'");
  impl_->open_store();
  impl_->load_key();
  impl_->open_protected();
  impl_->open_roots();
  // A crash between creating and renaming an entry leaves a temp behind: nothing
  // refers to it. So does one while the key was being made.
  const std::string key_tmp = std::string(key_name) + ".tmp.";
  for (const auto& name : list_dir(impl_->qdir.get()))
    if ((name.size() > 6 && name.compare(name.size() - 6, 6, ".q.tmp") == 0 &&
         valid_id(std::string_view(name).substr(0, name.size() - 6))) ||
        name.rfind(key_tmp, 0) == 0)
      ::unlinkat(impl_->qdir.get(), name.c_str(), 0);
}

file_actions::~file_actions() = default;

execution file_actions::quarantine(const sim::file_args& p) try {
  target t;
  if (auto why = impl_->open_regular(p.path, t); !why.empty())
    return execution::failed(why);
  if (static_cast<uint64_t>(t.st.st_size) > impl_->cfg.max_file_size)
    return execution::failed(printable(p.path) +
                             " is larger than the quarantine limit (" +
                             std::to_string(impl_->cfg.max_file_size) + " bytes)");
  if (auto why = impl_->check_hash(p.path, t, p.sha256); !why.empty())
    return execution::failed(why);

  entry_meta m;
  m.path = p.path;
  m.sha256 = p.sha256;
  m.size = static_cast<uint64_t>(t.st.st_size);
  m.mode = t.st.st_mode & 07777;
  m.uid = t.st.st_uid;
  m.gid = t.st.st_gid;
  m.atime_ns = to_ns(t.st.st_atim);
  m.mtime_ns = to_ns(t.st.st_mtim);

  // The store keeps the path as JSON text, which replaces invalid UTF-8: such a path
  // would come back elsewhere. (The session's checks already refuse it.)
  if (entry_meta back; !parse_meta(meta_json(m), back) || back.path != m.path)
    return execution::failed(printable(p.path) + " is not valid UTF-8");

  std::string id;
  do
    id = "q-" + random_hex(8);
  while (::faccessat(impl_->qdir.get(), (id + ".q").c_str(), F_OK, AT_SYMLINK_NOFOLLOW) ==
         0);
  if (auto why = impl_->seal(id, m, t); !why.empty()) return execution::failed(why);

  execution e = impl_->unlink_checked(p.path, t);
  if (!e.ok) {
    // The file stays where it was: so must the store, or restore would collide.
    ::unlinkat(impl_->qdir.get(), (id + ".q").c_str(), 0);
    ::fsync(impl_->qdir.get());
    return e;
  }
  e.effect["quarantine_id"] = id;
  e.effect["sha256"] = p.sha256;
  return e;
} catch (const std::exception& ex) {
  return execution::failed(std::string("quarantine failed: ") + ex.what());
}

execution file_actions::restore(const sim::restore_args& p) try {
  const std::string& qid = p.quarantine_id;
  if (!valid_id(qid))
    return execution::failed("no quarantine entry " + printable(qid, 80));
  const std::string entry_name = qid + ".q";
  unique_fd efd(
      ::openat(impl_->qdir.get(), entry_name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!efd) {
    if (errno == ENOENT) return execution::failed("no quarantine entry " + qid);
    return execution::failed("cannot open quarantine entry " + qid + ": " +
                             err_text(errno));
  }

  // GCM vouches for nothing before its tag: a first pass authenticates the whole entry,
  // so the metadata is trusted before it chooses where anything is written.
  plain_splitter first([](const unsigned char*, std::size_t) { return true; });
  if (auto why = impl_->unseal(efd.get(), qid, first); !why.empty())
    return execution::failed(why);
  entry_meta m;
  if (!parse_meta(first.meta(), m))
    return execution::failed("quarantine entry " + qid + " is damaged");

  // The server repeats the quarantined file's path and hash: they must agree.
  if (!p.path.empty() && p.path != m.path)
    return execution::failed("quarantine entry " + qid + " is for " + printable(m.path) +
                             ", not " + printable(p.path));
  if (!p.sha256.empty() && p.sha256 != m.sha256)
    return execution::failed("quarantine entry " + qid +
                             " holds a file with another sha256");

  const std::string shown = printable(m.path);
  target t;
  if (auto why = impl_->open_parent(m.path, t, true); !why.empty())
    return execution::failed(why);
  struct stat there {};
  if (::fstatat(t.dir.get(), t.name.c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0)
    return execution::failed("a file already exists at " + shown);

  // The file is written unnamed (O_TMPFILE) and linked in only once complete and
  // checked: there is no name in the user's directory for anyone to swap. Filesystems
  // without O_TMPFILE get a hidden name beside the target instead, and what ends up at
  // the path is checked to be the file written.
  std::string tmp; // Empty: O_TMPFILE.
  unique_fd out(::openat(t.dir.get(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
  if (!out && (errno == EOPNOTSUPP || errno == EISDIR)) {
    // Random so a crash's leftover never blocks a retry, and cut so it stays within
    // NAME_MAX.
    tmp = "." + t.name.substr(0, 200) + "." + random_hex(4) + ".parry-restore";
    out = unique_fd(::openat(t.dir.get(), tmp.c_str(),
                             O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  }
  if (!out)
    return execution::failed("cannot create a file beside " + shown + ": " +
                             err_text(errno));
  struct stat written_st {};
  if (::fstat(out.get(), &written_st) != 0)
    return execution::failed("cannot stat a file beside " + shown + ": " +
                             err_text(errno));
  // Removes the temp name only while it still names our file: someone may have put
  // theirs there.
  auto drop_tmp = [&] {
    struct stat now {};
    if (!tmp.empty() &&
        ::fstatat(t.dir.get(), tmp.c_str(), &now, AT_SYMLINK_NOFOLLOW) == 0 &&
        same_file(now, written_st))
      ::unlinkat(t.dir.get(), tmp.c_str(), 0);
  };
  auto fail = [&](std::string why) {
    out.reset();
    drop_tmp();
    return execution::failed(std::move(why));
  };

  sha256_stream h;
  uint64_t written = 0;
  int write_errno = 0;
  plain_splitter second([&](const unsigned char* b, std::size_t n) {
    h.update(b, n);
    written += n;
    if (write_all(out.get(), b, n)) return true;
    write_errno = errno;
    return false;
  });
  if (auto why = impl_->unseal(efd.get(), qid, second); !why.empty())
    return fail(write_errno ? "cannot write " + shown + ": " + err_text(write_errno)
                            : why);
  if (written != m.size || h.hex() != m.sha256)
    return fail("quarantine entry " + qid + " is damaged");

  // Owner before mode: chown clears set-id bits. Times last.
  const timespec times[2] = {from_ns(m.atime_ns), from_ns(m.mtime_ns)};
  if (::fchown(out.get(), m.uid, m.gid) != 0)
    return fail("cannot set the owner of " + shown + ": " + err_text(errno));
  if (::fchmod(out.get(), m.mode & 07777) != 0)
    return fail("cannot set the mode of " + shown + ": " + err_text(errno));
  if (::futimens(out.get(), times) != 0)
    return fail("cannot set the times of " + shown + ": " + err_text(errno));
  if (::fsync(out.get()) != 0)
    return fail("cannot sync " + shown + ": " + err_text(errno));

  int link_errno = 0;
  if (tmp.empty()) {
    // A link refuses an existing name: whatever appeared at the path meanwhile stays.
    const std::string self = "/proc/self/fd/" + std::to_string(out.get());
    if (::linkat(AT_FDCWD, self.c_str(), t.dir.get(), t.name.c_str(),
                 AT_SYMLINK_FOLLOW) != 0) {
      link_errno = errno;
      // No /proc: AT_EMPTY_PATH does the same, given CAP_DAC_READ_SEARCH.
      if (link_errno == ENOENT && ::access("/proc/self/fd", F_OK) != 0)
        link_errno =
            ::linkat(out.get(), "", t.dir.get(), t.name.c_str(), AT_EMPTY_PATH) == 0
                ? 0
                : errno;
    }
  } else if (::renameat2(t.dir.get(), tmp.c_str(), t.dir.get(), t.name.c_str(),
                         RENAME_NOREPLACE) != 0) {
    // No-replace, atomically, as above.
    link_errno = errno;
    if (link_errno == EINVAL || link_errno == ENOSYS) {
      // Filesystems without RENAME_NOREPLACE: a hard link also refuses an existing name.
      link_errno = ::linkat(t.dir.get(), tmp.c_str(), t.dir.get(), t.name.c_str(), 0) == 0
                       ? 0
                       : errno;
      if (link_errno == 0) drop_tmp();
    }
  }
  if (link_errno == EEXIST) return fail("a file already exists at " + shown);
  if (link_errno != 0)
    return fail("cannot restore " + shown + ": " + err_text(link_errno));
  if (!tmp.empty()) {
    // The temp had a name in a directory others may write: they could have put their
    // own file under it before the rename. The entry stays for another try.
    struct stat now {};
    if (::fstatat(t.dir.get(), t.name.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0 ||
        !same_file(now, written_st)) {
      out.reset();
      return execution::failed("restore was tampered with");
    }
  }
  out.reset();
  ::fsync(t.dir.get());

  efd.reset();
  ::unlinkat(impl_->qdir.get(), entry_name.c_str(), 0);
  ::fsync(impl_->qdir.get());
  execution e;
  e.ok = true;
  e.effect["path"] = m.path;
  e.effect["sha256"] = m.sha256;
  return e;
} catch (const std::exception& ex) {
  return execution::failed(std::string("restore failed: ") + ex.what());
}

execution file_actions::remove(const sim::file_args& p) try {
  target t;
  if (auto why = impl_->open_regular(p.path, t); !why.empty())
    return execution::failed(why);
  if (auto why = impl_->check_hash(p.path, t, p.sha256); !why.empty())
    return execution::failed(why);
  return impl_->unlink_checked(p.path, t);
} catch (const std::exception& ex) {
  return execution::failed(std::string("delete failed: ") + ex.what());
}

std::vector<std::string> file_actions::entries() const {
  std::vector<std::string> ids;
  for (const auto& name : list_dir(impl_->qdir.get()))
    if (name.size() > 2 && name.compare(name.size() - 2, 2, ".q") == 0 &&
        valid_id(std::string_view(name).substr(0, name.size() - 2)))
      ids.push_back(name.substr(0, name.size() - 2));
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string file_sha256(const std::string& path) {
  unique_fd fd(
      ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) return "";
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return "";
  std::string hex;
  try {
    if (hash_fd(fd.get(), static_cast<uint64_t>(st.st_size), hex) != read_status::ok)
      return "";
  } catch (const std::exception&) {
    return "";
  }
  return hex;
}

} // namespace parry::real
