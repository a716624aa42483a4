#pragma once

// Backups of parryd's database (docs/operations.md, "Backup and restore"): a
// consistent copy of the live database made with SQLite's online backup API while
// the server runs, and a restore that checks the copy (integrity, schema and the
// whole audit hash chain) before it replaces anything.

#include <cstdint>
#include <string>

namespace parry {

/// What a check of a database file found.
struct backup_check {
  bool ok = false;
  std::string problem;       ///< Why it is not usable ("" when ok).
  int64_t audit_records = 0; ///< Records in the audit chain.
  std::string audit_head;    ///< Hash of the last record (64 zeros when none).
  int64_t bytes = 0;         ///< Size of the file.
};

/// Copies the database at `db` (which a running parryd may be writing) to `out`,
/// a new file (an existing one is refused), in one read transaction: the copy is
/// the database as of one commit. The copy is a single file (no WAL), mode 0600,
/// fsynced, written under a temporary name and renamed into place, then checked.
/// Throws std::runtime_error naming what failed.
backup_check backup_database(const std::string& db, const std::string& out);

/// Opens `file` read-only and checks it: SQLite's integrity_check, a Parry schema
/// this build knows, and the audit chain from its first record to its last (each
/// record's number follows the one before, names the previous hash and hashes to
/// its own). Never throws: problems come back in the result.
backup_check check_database(const std::string& file);

/// Replaces the database of `data_dir` with the checked copy `file`. Refused while
/// a parryd holds the data directory (its lock file), or when the check fails. The
/// database it replaces is kept beside it as parry.db.before-restore-<UTC time>.
/// Returns the check of the restored copy; throws std::runtime_error.
backup_check restore_database(const std::string& file, const std::string& data_dir);

/// Takes the data directory's lock (data_dir/parryd.lock, flock), held while the
/// returned descriptor is open; -1 when another process holds it. Throws
/// std::runtime_error when the file cannot be opened.
int lock_data_dir(const std::string& data_dir);

} // namespace parry
