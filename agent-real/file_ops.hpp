#pragma once

// Files on the real endpoint: the checks every file action shares (inside a
// configured root, no symlink anywhere on the path, SHA-256 right before acting), the
// encrypted quarantine store, and delete. Each root is opened once, at construction,
// without following symlinks; every path is then opened directory by directory with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
// RESOLVE_NO_XDEV) from the root's descriptor, so a symlink swapped in between check
// and act is refused by the kernel, not by a racy lstat. A file is read only up to the
// size it had when opened: one that grows meanwhile is "changed since detection".

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent-sim/action_params.hpp"
#include "agent-sim/executor.hpp"

namespace parry::real {

/// Settings of the file actions.
struct file_config {
  /// Absolute directories file actions may touch; a path outside all of them is
  /// refused (`<path> is outside the agent's file roots`). Empty: none allowed.
  /// Each is opened once, when the actions are made, and must be reachable from `/`
  /// through real directories only (no component a symlink) of which every one above
  /// the root is owned by root or this user and writable by group or others only with
  /// the sticky bit (as /tmp): else someone could have put another directory in its
  /// place. The root itself may belong to anyone (its content is what is acted on).
  /// A root missing then is not an error; it is opened by the same rules per action.
  std::vector<std::string> roots;
  /// Absolute directories no action touches anything in, e.g. the agent's state_dir
  /// (`<path> is in the agent's state directory`); compared by path and, when they
  /// exist at construction, by identity on every directory from the root down. A root
  /// inside one of them is refused at construction.
  std::vector<std::string> protected_dirs;
  /// Directory of the quarantine store (created 0700 if missing); outside the roots.
  std::string quarantine_dir;
  /// Largest file quarantined (bytes); larger ones are refused.
  uint64_t max_file_size = 256ull << 20;
};

/// The quarantine store: each entry is `<dir>/<id>.q`, holding a JSON metadata line
/// (path, sha256, size, mode, uid, gid, atime/mtime in ns) and the file's bytes, both
/// sealed with AES-256-GCM under a key kept in `<dir>/quarantine.key` (32 random
/// bytes, 0600, made on first use); the entry id is the AAD, so entries cannot be
/// swapped. Ids are `q-` + 16 hex digits.
class file_actions {
public:
  /// Throws std::runtime_error when a root or protected directory is not absolute, a
  /// root breaks the rules above (the message names it), or the quarantine directory
  /// or key cannot be made or is unsafe: the directory must be owned by this user and
  /// writable by no one else, the key a regular 0600 file of 32 bytes owned by this
  /// user (an empty one, left by an older agent's interrupted start, is reported as
  /// such). A new key is written to a temp, fsynced and linked into place, so it is
  /// whole or absent. Removes temps left by an interrupted quarantine or key write.
  explicit file_actions(file_config cfg);
  ~file_actions();

  /// quarantine: refuses outside the roots, symlinks, non-regular files, a hash other
  /// than `p.sha256` or a file that grew past its size while read (`file changed
  /// since detection`), missing file (`no file at <path>`), files in the store itself
  /// or a protected directory, files above `max_file_size`. Writes the sealed entry
  /// (fsynced), then unlinks the file only if its name still refers to the inode
  /// hashed. Effect: `quarantine_id`, `path`, `sha256`; `note` when other
  /// hard links keep the content reachable.
  sim::execution quarantine(const sim::file_args& p);

  /// restore_from_quarantine: opens and authenticates the entry, checks `p.path` and
  /// `p.sha256` when given, refuses when something already sits at the path (`a file
  /// already exists at <path>`), writes the file with its mode, owner and times as an
  /// unnamed O_TMPFILE in the target's directory, checks the written hash, links it
  /// in (no replace), then removes the entry. Where the filesystem has no O_TMPFILE a
  /// hidden temp name is renamed (no replace) instead, and the result must be the file
  /// written (`restore was tampered with`, the entry kept). Effect: `path`, `sha256`.
  sim::execution restore(const sim::restore_args& p);

  /// delete_file: as quarantine's checks (but no size limit), then unlinks. Effect:
  /// `path`; `note` as quarantine.
  sim::execution remove(const sim::file_args& p);

  /// Ids of the entries in the store, sorted.
  std::vector<std::string> entries() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// SHA-256 of the regular file at `path` (lower-case hex), opened without following
/// symlinks; "" when it cannot be read. For detection and tests.
std::string file_sha256(const std::string& path);

} // namespace parry::real
