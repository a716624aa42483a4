#!/usr/bin/env bash
# start_process: the agent starts the requested program with the requested working
# directory and argv, inside the endpoint. The process writes its cwd, host name and
# arguments to out.txt in the endpoint's private tmpfs: read from inside $DEV (the host
# does not even see the file, so it cannot have run outside $DEV's mount namespace),
# each argument kept whole ('b c' is one argument). The action's result carries the
# process's stdout and exit code.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop "$EP" start-ioc)
read -r inc _ _ < <(wait_event "$EP" file_created "$path")
step "incident $inc"
work=$(ep_files "$EP")/work
ep_exec "$EP" mkdir -p "$work"
ep_exec "$EP" rm -f "$work/out.txt"

args="-c 'pwd > out.txt; uname -n >> out.txt; printf \"[%s]\\n\" \"\$@\" >> out.txt; echo started-by-parry' sh a 'b c'"
out=$(act start-process --incident "$inc" --path /bin/sh --cwd "$work" --args="$args") ||
  fail "start-process did not complete: $out"
id=$(json_action_id <<<"$out")
step "action $id completed"

want=$(printf '%s\n%s\n%s\n%s' "$work" "$DEV" '[a]' '[b c]')
got=$(ep_exec "$EP" cat "$work/out.txt") || fail "no $work/out.txt in $DEV"
check "out.txt holds the cwd, host name $DEV and argv [a] [b c]" test "$got" = "$want"
check_not "out.txt is not on the host (it ran in $DEV's mount namespace)" \
  test -e "$work/out.txt"
check "effect stdout is the process's output" \
  test "$(jq -r .action.result.effect.stdout <<<"$out")" = started-by-parry
check "effect exit_code is 0" \
  test "$(jq -r '.action.result.effect.exit_code | tostring' <<<"$out")" = 0
check "effect pid is set" \
  test -n "$(jq -r '.action.result.effect.pid // empty' <<<"$out")"
check "argv as the server recorded it" \
  test "$(jq -c .action.argv <<<"$out")" = '["-c","pwd > out.txt; uname -n >> out.txt; printf \"[%s]\\n\" \"$@\" >> out.txt; echo started-by-parry","sh","a","b c"]'
