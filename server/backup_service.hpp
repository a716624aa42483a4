#pragma once

// POST /api/v1/backup: the backup actor that copies the live database into the
// outgoing directory, where the HTTP front end picks the copy up and streams it.

#include <string>

#include <caf/typed_event_based_actor.hpp>

#include "actors/actors.hpp"

namespace parry {

/// Where backups for POST /backup are made: data_dir/outgoing.
std::string outgoing_dir(const std::string& data_dir);

/// Copies of `db` into `dir` (created 0700 if missing), one at a time. Spawn it
/// detached: a copy reads the whole database. Copies that the HTTP front end never
/// picked up (it gave up waiting) are removed at the next request once they are
/// older than backup_timeout, so the directory holds at most a few.
backup_actor::behavior_type backup_service(backup_actor::pointer self, std::string db,
                                           std::string dir);

} // namespace parry
