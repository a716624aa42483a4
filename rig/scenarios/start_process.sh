#!/usr/bin/env bash
# start_process: the agent starts the requested program with the requested working
# directory and argv, inside the endpoint. The process writes its cwd, host name and
# arguments to out.txt in the endpoint's private tmpfs: read from inside ep1 (the host
# does not even see the file, so it cannot have run outside ep1's mount namespace),
# each argument kept whole ('b c' is one argument). The action's result carries the
# process's stdout and exit code.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop 1 start-ioc)
read -r inc _ _ < <(wait_event 1 file_created "$path")
step "incident $inc"
work=$(ep_files 1)/work
ep_exec 1 mkdir -p "$work"
ep_exec 1 rm -f "$work/out.txt"

args="-c 'pwd > out.txt; uname -n >> out.txt; printf \"[%s]\\n\" \"\$@\" >> out.txt; echo started-by-parry' sh a 'b c'"
out=$(act start-process --incident "$inc" --path /bin/sh --cwd "$work" --args="$args") ||
  fail "start-process did not complete: $out"
id=$(json_action_id <<<"$out")
step "action $id completed"

want=$(printf '%s\n%s\n%s\n%s' "$work" ep1 '[a]' '[b c]')
got=$(ep_exec 1 cat "$work/out.txt") || fail "no $work/out.txt in ep1"
check "out.txt holds the cwd, host name ep1 and argv [a] [b c]" test "$got" = "$want"
check_not "out.txt is not on the host (it ran in ep1's mount namespace)" \
  test -e "$work/out.txt"
check "effect stdout is the process's output" \
  test "$(jq -r .action.result.effect.stdout <<<"$out")" = started-by-parry
check "effect exit_code is 0" \
  test "$(jq -r '.action.result.effect.exit_code | tostring' <<<"$out")" = 0
check "effect pid is set" \
  test -n "$(jq -r '.action.result.effect.pid // empty' <<<"$out")"
check "argv as the server recorded it" \
  test "$(jq -c .action.argv <<<"$out")" = '["-c","pwd > out.txt; uname -n >> out.txt; printf \"[%s]\\n\" \"$@\" >> out.txt; echo started-by-parry","sh","a","b c"]'
