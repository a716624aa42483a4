// The simulated machine's tables and the simulated effect of each action (see
// sim_executor.hpp), plus the output of a few well-known programs.

#include "agent-sim/sim_executor.hpp"

#include <algorithm>
#include <string_view>

#include "common/crypto.hpp"

namespace parry::sim {

namespace {

// Binaries every endpoint of a family has installed, so start_process finds them
// even though the file table only keeps what incidents touched.
constexpr const char* linux_system_binaries[] = {
    "/bin/sh",    "/usr/bin/sh",    "/bin/bash",     "/usr/bin/bash",
    "/bin/dash",  "/usr/bin/dash",  "/usr/bin/id",   "/usr/bin/whoami",
    "/bin/uname", "/usr/bin/uname", "/bin/hostname", "/usr/bin/hostname",
    "/bin/ls",    "/usr/bin/ls",    "/bin/echo",     "/usr/bin/echo",
    "/bin/pwd",   "/usr/bin/pwd",   "/bin/true",     "/usr/bin/true",
    "/bin/false", "/usr/bin/false"};
constexpr const char* windows_system_binaries[] = {
    R"(C:\Windows\System32\cmd.exe)", R"(C:\Windows\System32\whoami.exe)",
    R"(C:\Windows\System32\ipconfig.exe)", R"(C:\Windows\System32\HOSTNAME.EXE)",
    R"(C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe)"};
// Where the agent itself runs; processes it starts are its children.
constexpr const char* windows_agent_image = R"(C:\Program Files\Parry\parry-agent.exe)";
constexpr const char* linux_agent_image = "/opt/parry/bin/parry-agent";

// Nesting of `sh -c` / `cmd /c` that program_output follows.
constexpr int max_shell_depth = 4;

std::string lower(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Windows paths compare without case, as NTFS does by default.
bool same_path(const std::string& a, const std::string& b, bool windows) {
  return windows ? lower(a) == lower(b) : a == b;
}

// The canonical spelling of a known system binary, or null.
const char* system_binary(const std::string& path, bool windows) {
  if (windows) {
    std::string want = lower(path);
    for (const char* b : windows_system_binaries)
      if (lower(b) == want) return b;
  } else {
    for (const char* b : linux_system_binaries)
      if (path == b) return b;
  }
  return nullptr;
}

// argv as one command line that splits back into the same argv by the endpoint's
// rules (parry::split_arguments): CommandLineToArgvW quoting on Windows, double
// quotes with `\"` and `\\` escaped elsewhere. Plain words stay unquoted.
std::string join_argv(const std::vector<std::string>& argv, bool windows) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() &&
                 a.find_first_of(windows ? " \t\"" : " \t\"'\\") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '"';
    if (windows) {
      // Backslashes double only where a quote follows them (ours, or one in `a`).
      std::size_t backslashes = 0;
      for (char c : a) {
        if (c == '\\') {
          ++backslashes;
          continue;
        }
        if (c == '"') backslashes = backslashes * 2 + 1;
        out.append(backslashes, '\\');
        backslashes = 0;
        out += c;
      }
      out.append(backslashes * 2, '\\');
    } else {
      for (char c : a) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
      }
    }
    out += '"';
  }
  return out;
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while ((pos = s.find_first_not_of(" \t", pos)) != std::string::npos) {
    std::size_t end = s.find_first_of(" \t", pos);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

std::string cut(std::string s, std::size_t max) {
  if (s.size() > max) s.resize(max);
  return s;
}

} // namespace

std::string base_name(const std::string& path) {
  std::size_t slash = path.find_last_of("/\\");
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

sim_executor::sim_executor(sim_machine machine, sim_rng action_rng)
    : machine_(std::move(machine)), windows_(machine_.os_family == "windows"),
      action_rng_(action_rng), next_pid_(machine_.first_pid) {}

// -- tables -------------------------------------------------------------------------

// `draw` decides the step, so the generator is consumed the same way whatever the
// table holds; taken pids are skipped deterministically.
uint32_t sim_executor::allocate_pid(uint64_t draw) {
  bool windows = windows_;
  uint32_t step = windows ? 4 * static_cast<uint32_t>(span(draw, 1, 64))
                          : static_cast<uint32_t>(span(draw, 1, 40));
  uint32_t lowest = windows ? 1000 : 300, highest = windows ? 65000 : 4'000'000;
  next_pid_ += step;
  for (;;) {
    if (next_pid_ > highest) next_pid_ = lowest;
    if (!processes_.count(next_pid_)) return next_pid_;
    next_pid_ += windows ? 4 : 1;
  }
}

void sim_executor::put_file(const bus::file_info& f) {
  auto [it, inserted] = files_.insert_or_assign(f.path, f);
  if (inserted) file_order_.push_back(f.path);
  removed_system_.erase(f.path);
  while (files_.size() > max_files) {
    files_.erase(file_order_.front());
    file_order_.pop_front();
  }
}

void sim_executor::remove_file(const std::string& path) {
  if (files_.erase(path) == 0) return;
  file_order_.erase(std::find(file_order_.begin(), file_order_.end(), path));
  // A removed system binary stays gone until something puts it back.
  const char* sys = system_binary(path, windows_);
  if (sys && path == sys) removed_system_.insert(path);
}

// The file at `path`; a known system binary not in the table yet is materialised,
// unless it was removed.
const bus::file_info* sim_executor::find_file(const std::string& path) {
  auto it = files_.find(path);
  if (it != files_.end()) return &it->second;
  const char* sys = system_binary(path, windows_);
  if (!sys || removed_system_.count(sys)) return nullptr;
  image_file(sys, {});
  return &files_.find(sys)->second;
}

bool sim_executor::has_file(const std::string& path) const {
  if (files_.count(path)) return true;
  const char* sys = system_binary(path, windows_);
  return sys && !removed_system_.count(sys);
}

bool sim_executor::has_process(uint32_t pid, int64_t start_time) const {
  auto it = processes_.find(pid);
  return it != processes_.end() && it->second.start_time == start_time;
}

const launch_info* sim_executor::launched(uint32_t pid) const {
  auto it = launched_.find(pid);
  return it == launched_.end() ? nullptr : &it->second;
}

void sim_executor::remove_process(uint32_t pid) {
  processes_.erase(pid);
  launched_.erase(pid);
}

// System binaries and anything else an incident runs without having written it:
// the same path has the same hash and size on every endpoint, like a real install.
bus::file_info sim_executor::image_file(const std::string& path,
                                        const std::string& sha256) {
  auto it = files_.find(path);
  if (it != files_.end() && (sha256.empty() || it->second.sha256 == sha256))
    return it->second;
  bus::file_info f;
  f.path = path;
  f.sha256 = sha256.empty() ? sha256_hex("parry-sim image " + path) : sha256;
  f.size = 32 * 1024 + std::stoull(f.sha256.substr(0, 8), nullptr, 16) % (4 << 20);
  put_file(f);
  return f;
}

void sim_executor::add_process(const bus::process_info& p) {
  processes_[p.pid] = p;
  incident_pids_.emplace_back(p.pid, p.start_time);
  while (incident_pids_.size() > max_incident_processes) {
    auto [pid, start] = incident_pids_.front();
    if (has_process(pid, start)) remove_process(pid); // the oldest process exits
    incident_pids_.pop_front();
  }
}

// A process that was already running when the chain began (explorer, w3wp, ...).
// One that was terminated is started again by its service manager shortly before
// `at`, unless its hash is prevented: then there is none (null).
const bus::process_info* sim_executor::running(const std::string& image,
                                               const std::string& user, int64_t at) {
  auto found = base_processes_.find(image);
  bool restart = found != base_processes_.end();
  if (restart) {
    auto it = processes_.find(found->second);
    // The pid may have been reused after a terminate: check it is the same image.
    if (it != processes_.end() && it->second.image == image) return &it->second;
  }
  bus::file_info file = image_file(image, {});
  if (prevented_.count(file.sha256)) {
    ++blocked_starts_;
    return nullptr;
  }
  // Derived from the image, not drawn, so the generator stays untouched.
  uint64_t draw =
      mix(std::stoull(file.sha256.substr(0, 15), nullptr, 16) + machine_.index);
  bus::process_info p;
  p.pid = allocate_pid(draw);
  p.start_time =
      restart ? at - static_cast<int64_t>(span(draw, 1, 30)) * second_us
              : machine_.boot_time + static_cast<int64_t>(span(draw, 5, 600)) * second_us;
  p.image = image;
  p.sha256 = file.sha256;
  p.cmdline = windows_ ? "\"" + image + "\"" : image;
  p.user = user;
  p.parent_pid = windows_ ? 4 : 1;
  base_processes_[image] = p.pid;
  return &(processes_[p.pid] = p);
}

// -- actions ------------------------------------------------------------------------

execution sim_executor::isolate() {
  execution e;
  e.ok = true;
  if (isolated_) {
    e.effect["note"] = "already isolated";
  } else {
    isolated_ = true;
    e.effect["rules"] =
        "all traffic dropped except the management channel to " + machine_.server;
    e.effect["previous"] = "not isolated";
  }
  return e;
}

execution sim_executor::release_isolation() {
  execution e;
  e.ok = true;
  if (isolated_) {
    isolated_ = false;
    e.effect["rules"] = "removed";
  } else {
    e.effect["note"] = "not isolated";
  }
  return e;
}

execution sim_executor::prevent_run(const hash_args& p) {
  execution e;
  if (prevented_.count(p.sha256)) {
    e.ok = true;
    e.effect["sha256"] = p.sha256;
    e.effect["note"] = "already prevented";
    return e;
  }
  if (prevented_.size() >= max_prevented)
    return execution::failed("prevention list is full (" + std::to_string(max_prevented) +
                             " hashes)");
  // Running instances keep running, as with an EDR's execution prevention: only new
  // starts are refused.
  prevented_.insert(p.sha256);
  e.ok = true;
  e.effect["sha256"] = p.sha256;
  return e;
}

execution sim_executor::allow_run(const hash_args& p) {
  execution e;
  e.ok = true;
  e.effect["sha256"] = p.sha256;
  if (prevented_.erase(p.sha256) == 0) e.effect["note"] = "not prevented";
  return e;
}

execution sim_executor::quarantine(const file_args& p) {
  const bus::file_info* f = find_file(p.path);
  if (!f) return execution::failed("no file at " + printable(p.path));
  if (f->sha256 != p.sha256) return execution::failed("file changed since detection");
  bus::file_info kept = *f;
  std::string id;
  do
    id = "q-" + hex(action_rng_.next(), 16);
  while (quarantine_.count(id));
  remove_file(kept.path);
  quarantine_.emplace(id, kept);
  quarantine_order_.push_back(id);
  while (quarantine_.size() > max_quarantine) {
    quarantine_.erase(quarantine_order_.front());
    quarantine_order_.pop_front();
  }
  execution e;
  e.ok = true;
  e.effect["quarantine_id"] = id;
  e.effect["path"] = kept.path;
  return e;
}

execution sim_executor::restore_from_quarantine(const restore_args& p) {
  const std::string& qid = p.quarantine_id;
  auto entry = quarantine_.find(qid);
  if (entry == quarantine_.end())
    return execution::failed("no quarantine entry " + printable(qid, 80));
  const bus::file_info f = entry->second;
  // The server repeats the quarantined file's path and hash: they must agree.
  if (!p.path.empty() && !same_path(p.path, f.path, windows_))
    return execution::failed("quarantine entry " + qid + " is for " + printable(f.path) +
                             ", not " + printable(p.path));
  if (!p.sha256.empty() && p.sha256 != f.sha256)
    return execution::failed("quarantine entry " + qid +
                             " holds a file with another sha256");
  const bus::file_info* there = find_file(f.path);
  if (there && there->sha256 != f.sha256)
    return execution::failed("a different file now sits at " + printable(f.path));
  put_file(f);
  quarantine_.erase(entry);
  quarantine_order_.erase(
      std::find(quarantine_order_.begin(), quarantine_order_.end(), qid));
  execution e;
  e.ok = true;
  e.effect["path"] = f.path;
  return e;
}

execution sim_executor::delete_file(const file_args& p) {
  const bus::file_info* f = find_file(p.path);
  if (!f) return execution::failed("no file at " + printable(p.path));
  if (f->sha256 != p.sha256) return execution::failed("file changed since detection");
  std::string gone = f->path;
  remove_file(gone);
  execution e;
  e.ok = true;
  e.effect["path"] = gone;
  return e;
}

execution sim_executor::terminate_process(const terminate_args& p) {
  auto it = processes_.find(p.pid);
  std::string who = "process " + std::to_string(p.pid);
  if (it == processes_.end()) return execution::failed("no " + who);
  if (it->second.start_time != p.start_time)
    return execution::failed(who + " is not the detected one (start time differs)");
  if (!p.image.empty() && !same_path(p.image, it->second.image, windows_))
    return execution::failed(who + " is not the detected one (image differs)");
  // Like SIGKILL: only this process; its children live on as orphans.
  remove_process(p.pid);
  execution e;
  e.ok = true;
  e.effect["pid"] = std::to_string(p.pid);
  return e;
}

execution sim_executor::start_process(const start_args& sp, int64_t now) {
  bool windows = windows_;
  std::string cwd = !sp.working_directory.empty() ? sp.working_directory
                    : windows                     ? R"(C:\Windows\System32)"
                                                  : "/";
  const std::vector<std::string>& args = sp.args;
  const bus::file_info* exe = find_file(sp.path);
  if (!exe) return execution::failed("no executable at " + printable(sp.path));
  if (prevented_.count(exe->sha256)) {
    ++blocked_starts_;
    return execution::failed("execution prevented by policy");
  }
  bus::file_info image = *exe;

  bus::process_info p;
  std::string user = windows ? R"(NT AUTHORITY\SYSTEM)" : "root";
  const bus::process_info* agent =
      running(windows ? windows_agent_image : linux_agent_image, user, now);
  p.pid = allocate_pid(action_rng_.next());
  p.start_time = now;
  p.image = image.path;
  p.sha256 = image.sha256;
  p.user = user;
  p.parent_pid = agent ? agent->pid : (windows ? 4 : 1);
  launch_info li;
  li.working_directory = cwd;
  li.argv.push_back(image.path);
  li.argv.insert(li.argv.end(), args.begin(), args.end());
  p.cmdline = join_argv(li.argv, windows);
  run_output run = program_output(image.path, args, cwd, 0);
  add_process(p);
  launched_[p.pid] = std::move(li);

  execution e;
  e.ok = true;
  e.effect["pid"] = std::to_string(p.pid);
  e.effect["exit_code"] = std::to_string(run.exit_code);
  e.effect["stdout"] = cut(std::move(run.out), max_output);
  e.effect["stderr"] = cut(std::move(run.err), max_output);
  return e;
}

// What a few well-known programs print on this endpoint; others print nothing.
// Started processes run as the agent's user, SYSTEM or root.
sim_executor::run_output
sim_executor::program_output(const std::string& image,
                             const std::vector<std::string>& args, const std::string& cwd,
                             int depth) const {
  bool windows = windows_;
  std::string name = base_name(image);
  if (windows) {
    name = lower(name);
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".exe") == 0)
      name.resize(name.size() - 4);
  }
  const char* nl = windows ? "\r\n" : "\n";
  run_output run;

  // A shell given a command runs its first word with the rest as arguments.
  bool unix_shell = !windows && (name == "sh" || name == "bash" || name == "dash") &&
                    args.size() >= 2 && args[0] == "-c";
  bool cmd_shell = windows && name == "cmd" && args.size() >= 2 && lower(args[0]) == "/c";
  if (unix_shell || cmd_shell) {
    if (depth >= max_shell_depth) return run;
    std::string line = args[1];
    for (std::size_t i = 2; cmd_shell && i < args.size(); ++i)
      line += " " + args[i];
    std::vector<std::string> words = split_words(line);
    if (words.empty()) return run;
    std::vector<std::string> rest(words.begin() + 1, words.end());
    return program_output(words[0], rest, cwd, depth + 1);
  }

  std::string kernel = machine_.identity.os.rfind("Ubuntu", 0) == 0 ? "5.15.0-105-generic"
                       : machine_.identity.os.rfind("Debian", 0) == 0
                           ? "6.1.0-21-amd64"
                           : "5.14.0-362.8.1.el9_3.x86_64";
  if (name == "whoami") {
    run.out = windows ? std::string("nt authority\\system") + nl : "root\n";
  } else if (name == "hostname") {
    run.out = machine_.identity.hostname + nl;
  } else if (windows && name == "ipconfig") {
    const std::string& addr = machine_.identity.addresses.front();
    run.out =
        "\r\nWindows IP Configuration\r\n\r\n\r\nEthernet adapter Ethernet0:\r\n\r\n"
        "   Connection-specific DNS Suffix  . : corp.local\r\n"
        "   IPv4 Address. . . . . . . . . . . : " +
        addr +
        "\r\n   Subnet Mask . . . . . . . . . . . : 255.255.0.0\r\n"
        "   Default Gateway . . . . . . . . . : 10.20.0.254\r\n";
  } else if (name == "echo") {
    for (std::size_t i = 0; i < args.size(); ++i)
      run.out += (i ? " " : "") + args[i];
    run.out += nl;
  } else if (windows) {
    // Everything else on Windows prints nothing here.
  } else if (name == "id") {
    run.out = "uid=0(root) gid=0(root) groups=0(root)\n";
  } else if (name == "uname") {
    std::string opt = args.empty() ? "-s" : args[0];
    if (opt == "-a")
      run.out = "Linux " + machine_.identity.hostname + " " + kernel +
                " #1 SMP PREEMPT_DYNAMIC x86_64 GNU/Linux\n";
    else if (opt == "-n")
      run.out = machine_.identity.hostname + "\n";
    else if (opt == "-r")
      run.out = kernel + "\n";
    else if (opt == "-m")
      run.out = "x86_64\n";
    else if (opt == "-s")
      run.out = "Linux\n";
    else {
      run.exit_code = 1;
      run.err = "uname: invalid option -- '" + opt + "'\n";
    }
  } else if (name == "pwd") {
    run.out = cwd + "\n";
  } else if (name == "false") {
    run.exit_code = 1;
  } else if (name == "ls") {
    // The entries one level below the directory, from the file table.
    std::string dir = cwd;
    for (const auto& a : args)
      if (!a.empty() && a[0] != '-') dir = a;
    std::string prefix = dir == "/" ? dir : dir + "/";
    std::set<std::string> names;
    auto add = [&](const std::string& path) {
      if (path.size() <= prefix.size() || path.compare(0, prefix.size(), prefix) != 0)
        return;
      names.insert(
          path.substr(prefix.size(), path.find('/', prefix.size()) - prefix.size()));
    };
    for (const auto& [path, f] : files_)
      add(path);
    for (const char* b : linux_system_binaries)
      if (!removed_system_.count(b)) add(b);
    for (const auto& n : names)
      run.out += n + "\n";
    if (names.empty() && dir != "/") {
      run.exit_code = 2;
      run.err = "ls: cannot access '" + dir + "': No such file or directory\n";
    }
  }
  return run;
}

} // namespace parry::sim
