#!/usr/bin/env bash
# quarantine: the detected file leaves its place, is kept in the agent's quarantine
# store but not as plaintext (the file's unique marker bytes appear in no stored file),
# and restore (the reverse action) puts the very same bytes back (same SHA-256).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop "$EP" quar-ioc)
sha=$(ioc_sha256 quar-ioc)
marker=$(ioc_marker quar-ioc)
read -r inc ev _ < <(wait_event "$EP" file_created "$path")
step "incident $inc, event $ev"
qdir=$(ep_state "$EP")/quarantine

out=$(act quarantine --incident "$inc" --event "$ev") || fail "quarantine did not complete"
id=$(json_action_id <<<"$out")
step "action $id completed: $(jq -c .action.result.effect <<<"$out")"
check "the file is gone from $DEV" ep_file_gone "$EP" "$path"
check "the quarantine store holds a file" \
  test -n "$(ep_sh "$EP" "find '$qdir' -type f 2>/dev/null | head -n1")"
check_not "no stored file holds the plaintext (marker bytes)" \
  ep_exec "$EP" grep -rqF "$marker" "$qdir"
stored_plain() {
  local sums
  sums=$(ep_sh "$EP" "find '$qdir' -type f -exec sha256sum {} +") ||
    fail "cannot hash the quarantine store"
  grep -q "^$sha " <<<"$sums"
}
check_not "no stored file has the file's SHA-256" stored_plain

out=$(ctl reverse "$id" --yes --wait --timeout 60 --json 2>"$RIG_TMP/act.err") ||
  { cat "$RIG_TMP/act.err" >&2; fail "restore did not complete"; }
step "restore $(json_action_id <<<"$out") completed"
check "the file is back" ep_file_exists "$EP" "$path"
check "with the same SHA-256" test "$(ep_sha256 "$EP" "$path")" = "$sha"
check "the quarantine action is now reverted" test "$(action_state "$id")" = reverted
