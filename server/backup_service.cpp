#include "server/backup_service.hpp"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <system_error>

#include <spdlog/spdlog.h>

#include "actors/error.hpp"
#include "common/time.hpp"
#include "server/backup.hpp"

namespace parry {

namespace {

namespace fs = std::filesystem;

/// Removes copies in `dir` last written before `cutoff`; the names it made only.
void sweep(const std::string& dir, fs::file_time_type cutoff) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    auto name = it->path().filename().string();
    if (name.rfind("backup-", 0) != 0) continue;
    std::error_code ignored;
    auto when = fs::last_write_time(it->path(), ignored);
    if (!ignored && when < cutoff) {
      fs::remove(it->path(), ignored);
      spdlog::warn("backup: removed {}, a copy nobody fetched", name);
    }
  }
}

} // namespace

std::string outgoing_dir(const std::string& data_dir) {
  return data_dir + "/outgoing";
}

backup_actor::behavior_type backup_service(backup_actor::pointer self, std::string db,
                                           std::string dir) {
  return {
      [db, dir](atom::backup) -> caf::result<std::string, int64_t, int64_t, std::string> {
        static std::atomic<uint64_t> serial{0};
        try {
          fs::create_directories(dir);
          fs::permissions(dir, fs::perms::owner_all);
          sweep(dir, fs::file_time_type::clock::now() - backup_timeout);
          auto path = dir + "/backup-" + std::to_string(now_us()) + "-" +
                      std::to_string(++serial) + ".db";
          auto check = backup_database(db, path);
          return {path, check.bytes, check.audit_records, check.audit_head};
        } catch (const std::exception& e) {
          spdlog::error("backup: {}", e.what());
          return make_error(ec::storage, e.what());
        }
      },
  };
}

} // namespace parry
