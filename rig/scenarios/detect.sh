#!/usr/bin/env bash
# detect: real detection. An IOC file dropped into $DEV and run there gives incidents
# whose chains are the kernel's facts, read from outside the agent: the
# process_started event has the pid that really runs the file, its start time is the
# one /proc gives that pid, its parent event is the real parent process (the shell
# that started it), and the file's SHA-256 is the file's. Terminate and quarantine
# from that incident then succeed, and each effect is checked on the kernel. An agent
# that made up its chains, or reported without watching exec, fails here.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach
# It reads the host's clock and uptime against the endpoint's /proc: the host's kernel.
is_vm "$EP" && die "detect needs a namespace endpoint (it compares against the host's uptime)"

path=$(ioc_drop "$EP" detect-ioc)
sha=$(ioc_sha256 detect-ioc)
# Started by a shell that stays, so the parent is a process we can name from outside.
# After the IOC process ends, the shell sleeps on: it must still be there after the
# terminate, which may kill the detected process only.
shell_pid=$(ep_sh "$EP" "sh -c '$path 600 </dev/null >/dev/null 2>&1; sleep 600' >/dev/null 2>&1 &
  echo \$!")
step "shell $shell_pid in $DEV runs $path"
read -r inc ev pid < <(wait_event "$EP" process_started "$path")
step "incident $inc, key event $ev, pid $pid"
json=$(ctl incident "$inc" --json)
event() { jq -c --arg id "$1" '.incident.events[] | select(.id == $id)' <<<"$json"; }
key=$(event "$ev")

check "the detection is this event" \
  test "$(jq -r .incident.key_event_id <<<"$json")" = "$ev"
check "pid $pid really runs the IOC file in $DEV" \
  test "$(ep_exec "$EP" readlink "/proc/$pid/exe")" = "$path"
check "the event's sha256 is the file's" \
  test "$(jq -r .process.sha256 <<<"$key")" = "$sha"
ppid=$(ep_exec "$EP" awk "{print \$4}" "/proc/$pid/stat")
check "the event's parent pid is the real parent ($ppid)" \
  test "$(jq -r .process.parent_pid <<<"$key")" = "$ppid"
check "the real parent is the shell that started it" test "$ppid" = "$shell_pid"
parent=$(event "$(jq -r .parent_id <<<"$key")")
check "the parent event is that shell's process_started" \
  test "$(jq -r '"\(.type) \(.process.pid)"' <<<"$parent")" = "process_started $ppid"
check "whose image is the shell /proc shows" \
  test "$(jq -r .process.image <<<"$parent")" = "$(ep_exec "$EP" readlink "/proc/$ppid/exe")"
# Start times: /proc/<pid>/stat field 22 (clock ticks since boot) against the event's
# microseconds since the epoch, both turned into time since boot.
ticks=$(ep_exec "$EP" awk "{print \$22}" "/proc/$pid/stat")
hz=$(getconf CLK_TCK)
boot_us=$(awk '{printf "%.0f", $1 * 1000000}' /proc/uptime) # %d caps at 2^31 in mawk
now_us=$(($(date +%s%N) / 1000))
# The REST API gives times as RFC 3339 text (docs/rest-api.md).
reported=$(($(date -d "$(jq -r .process.start_time <<<"$key")" +%s%N) / 1000))
diff_us=$(((reported - (now_us - boot_us)) - ticks * 1000000 / hz))
check "the event's start time is the process's (off by ${diff_us} µs)" \
  test "${diff_us#-}" -lt 100000
check "the chain holds the file_created event of the same file" \
  test "$(jq -r --arg p "$path" '[.incident.events[] | select(.type == "file_created"
    and .file.path == $p)] | length' <<<"$json")" -ge 1

act terminate --incident "$inc" --event "$ev" >/dev/null ||
  fail "terminate did not complete"
eventually 5 "pid $pid is gone from $DEV's PID namespace" ep_proc_gone "$EP" "$pid"
check "the parent shell lives on" ep_proc_alive "$EP" "$shell_pid"
act quarantine --incident "$inc" --event "$ev" >/dev/null ||
  fail "quarantine did not complete"
check "the IOC file is gone from $DEV" ep_file_gone "$EP" "$path"
ep_exec "$EP" pkill -KILL -P "$shell_pid" || true
ep_exec "$EP" kill -KILL "$shell_pid" || true
