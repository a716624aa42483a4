#pragma once

// Measurements: time between two instants, percentiles, what parryd uses (memory, CPU,
// descriptors, read from /proc), and the floors each figure is read against.

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "bench/bench.hpp"

namespace parry::bench {

double ms_between(steady::time_point a, steady::time_point b);

/// Nearest-rank percentile (p in 0..100) of `v`; NaN when empty.
double percentile(std::vector<double> v, double p);

/// VmRSS of `pid` in KiB, or -1 when it cannot be read.
long rss_kib(pid_t pid);
/// VmRSS of `pid` and its children (parryd's gateway processes), KiB; pages they
/// share (the libraries) are counted once per process.
long rss_with_children_kib(pid_t pid);

/// CPU time `pid` has used so far, in seconds (its threads together).
double cpu_secs(pid_t pid);
/// CPU seconds of `pid` and of its children now running (parry-agent --procs).
double cpu_secs_with_children(pid_t pid);

/// CPU seconds of the live threads of `pid`, summed per thread name.
std::map<std::string, double> cpu_by_thread(pid_t pid);

/// Open descriptors of `pid` (parryd holds one per accepted bus connection).
std::size_t open_fds(pid_t pid);
/// Open descriptors of `pid` and its children (parryd's gateway processes).
std::size_t open_fds_with_children(pid_t pid);

/// DEALER/ROUTER ping-pong on loopback with command-sized frames: the bus floor.
std::vector<double> ping_pong(std::size_t rounds);

/// 4 KiB overwrites, each followed by fdatasync, in `dir`: the cost of one durable
/// commit on this disk (the store runs SQLite in WAL mode with synchronous=FULL).
std::vector<double> storage_floor(const std::filesystem::path& dir, std::size_t rounds);

} // namespace parry::bench
