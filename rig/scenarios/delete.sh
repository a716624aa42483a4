#!/usr/bin/env bash
# delete: delete_file removes the detected file; a file changed after its detection is
# not deleted (the action fails) and stays: the agent checks the SHA-256 it was given
# against the file on disk, so it never deletes something other than what was seen.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop "$EP" del-ioc)
read -r inc ev _ < <(wait_event "$EP" file_created "$path")
step "incident $inc, event $ev"
act delete-file --incident "$inc" --event "$ev" >/dev/null || fail "delete did not complete"
check "the file is gone from $DEV" ep_file_gone "$EP" "$path"

path=$(ioc_drop "$EP" del-changed)
read -r inc ev _ < <(wait_event "$EP" file_created "$path")
step "incident $inc, event $ev; changing the file"
ep_sh "$EP" "echo changed-after-detection >> '$path'"
sha=$(ep_sha256 "$EP" "$path")
status=0
out=$(act delete-file --incident "$inc" --event "$ev") || status=$?
check "delete of a changed file does not complete" test "$status" != 0
id=$(json_action_id <<<"$out")
state=$(action_state "$id")
step "action $id: $state: $(ctl action "$id" --json | jq -r .action.result.error)"
check "action $id failed" test "$state" = failed
check "the changed file is still there, unchanged" test "$(ep_sha256 "$EP" "$path")" = "$sha"
