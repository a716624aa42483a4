#!/usr/bin/env bash
# terminate: terminate_process kills the detected process and only that one. The
# detected IOC process is gone from $DEV's PID namespace afterwards. Then pid reuse: a
# second detected process is killed from outside, a different program (/bin/sleep) is
# made to get the same pid (ns_last_pid inside $DEV's PID namespace), and terminating
# the detected event must fail ("not the detected one") and leave the newcomer alive:
# an agent that only checked the pid would kill the wrong process.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

# 1. The detected process is terminated.
path=$(ioc_drop "$EP" term-ioc)
ep_spawn "$EP" "$RIG_TMP/term-ioc.log" "$path" 600 >/dev/null
read -r inc ev pid < <(wait_event "$EP" process_started "$path")
step "incident $inc, event $ev, pid $pid (in $DEV)"
check "before: pid $pid runs $path in $DEV" \
  test "$(ep_exec "$EP" readlink "/proc/$pid/exe")" = "$path"
out=$(act terminate --incident "$inc" --event "$ev") || fail "terminate did not complete"
check "action's effect names pid $pid" \
  test "$(jq -r '.action.result.effect.pid | tostring' <<<"$out")" = "$pid"
eventually 5 "pid $pid is gone from $DEV's PID namespace" ep_proc_gone "$EP" "$pid"

# 2. Pid reuse: the pid now belongs to another process.
path=$(ioc_drop "$EP" reuse-ioc)
ep_spawn "$EP" "$RIG_TMP/reuse-ioc.log" "$path" 600 >/dev/null
read -r inc ev pid < <(wait_event "$EP" process_started "$path")
step "incident $inc, event $ev, pid $pid (in $DEV); killing it from outside"
ep_exec "$EP" kill -KILL "$pid"
eventually 5 "pid $pid gone" ep_proc_gone "$EP" "$pid"

# The next pid $DEV's PID namespace hands out is ns_last_pid + 1.
take_pid() {
  local got
  got=$(ep_sh "$EP" "echo $((pid - 1)) > /proc/sys/kernel/ns_last_pid;
    /bin/sleep 600 </dev/null >/dev/null 2>&1 & echo \$!")
  [ "$got" = "$pid" ] && return 0
  ep_exec "$EP" kill -KILL "$got" 2>/dev/null || true # another process raced us
  return 1
}
eventually 5 "a /bin/sleep now has pid $pid in $DEV" take_pid
sleep_exe=$(ep_exec "$EP" readlink -f /bin/sleep) # a VM's is busybox
check "pid $pid runs /bin/sleep" \
  test "$(ep_exec "$EP" readlink "/proc/$pid/exe")" = "$sleep_exe"

status=0
out=$(act terminate --incident "$inc" --event "$ev") || status=$?
check "terminate of the detected (dead) process does not complete" test "$status" != 0
id=$(json_action_id <<<"$out")
[ -n "$id" ] || fail "no action in parryctl's answer: $out"
state=$(action_state "$id")
error=$(ctl action "$id" --json | jq -r .action.result.error)
step "action $id: $state: $error"
check "action $id failed" test "$state" = failed
check "its error says the process is not the detected one" \
  grep -q "not the detected one" <<<"$error"
check "the new process with pid $pid is alive" ep_proc_alive "$EP" "$pid"
check "and still /bin/sleep" \
  test "$(ep_exec "$EP" readlink "/proc/$pid/exe")" = "$sleep_exe"
ep_exec "$EP" kill -KILL "$pid"
