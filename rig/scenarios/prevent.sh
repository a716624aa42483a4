#!/usr/bin/env bash
# prevent: prevent_run makes the kernel refuse to execute the file (EPERM from the
# fanotify permission check on $DEV's tmpfs); allow_run (the reverse) lets it run again.
# Exec is attempted from outside the agent, inside $DEV.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop "$EP" prev-ioc)
read -r inc ev _ < <(wait_event "$EP" file_created "$path")
step "incident $inc, event $ev"
check "before: it runs" ep_exec "$EP" "$path" 0

out=$(act prevent-run --incident "$inc" --event "$ev") || fail "prevent-run did not complete"
id=$(json_action_id <<<"$out")
step "action $id completed"
# execve's errno, seen by the process that tries.
exec_errno() {
  ep_exec "$EP" "$RIG_PY" -c 'import os, sys
try:
    os.execv(sys.argv[1], [sys.argv[1], "0"])
except OSError as e:
    print(e.errno)' "$path"
}
# A VM has no Python: there the shell's message below (strerror(EPERM)) is the check.
is_vm "$EP" || check "prevented: execve fails with EPERM" test "$(exec_errno)" = 1
err=$(ep_exec "$EP" "$path" 0 2>&1) && fail "prevented: it ran"
check "prevented: the shell sees 'Operation not permitted'" \
  grep -q "Operation not permitted" <<<"$err"
check "the file itself is untouched" ep_file_exists "$EP" "$path"

out=$(ctl reverse "$id" --yes --wait --timeout 60 --json 2>"$RIG_TMP/act.err") ||
  { cat "$RIG_TMP/act.err" >&2; fail "allow-run did not complete"; }
step "allow_run $(json_action_id <<<"$out") completed"
check "allowed: it runs again" ep_exec "$EP" "$path" 0
check "the prevent action is now reverted" test "$(action_state "$id")" = reverted
