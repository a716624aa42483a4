#!/usr/bin/env bash
# quarantine: the detected file leaves its place, is kept in the agent's quarantine
# store but not as plaintext (the file's unique marker bytes appear in no stored file),
# and restore (the reverse action) puts the very same bytes back (same SHA-256).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop 1 quar-ioc)
sha=$(ioc_sha256 quar-ioc)
marker=$(ioc_marker quar-ioc)
read -r inc ev _ < <(wait_event 1 file_created "$path")
step "incident $inc, event $ev"
qdir=$(ep_state 1)/quarantine

out=$(act quarantine --incident "$inc" --event "$ev") || fail "quarantine did not complete"
id=$(json_action_id <<<"$out")
step "action $id completed: $(jq -c .action.result.effect <<<"$out")"
check "the file is gone from ep1" ep_file_gone 1 "$path"
check "the quarantine store holds a file" \
  test -n "$(find "$qdir" -type f 2>/dev/null | head -n1)"
check_not "no stored file holds the plaintext (marker bytes)" grep -rqF "$marker" "$qdir"
stored_plain() { find "$qdir" -type f -exec sha256sum {} + | grep -q "^$sha "; }
check_not "no stored file has the file's SHA-256" stored_plain

out=$(ctl reverse "$id" --yes --wait --timeout 60 --json 2>"$RIG_TMP/act.err") ||
  { cat "$RIG_TMP/act.err" >&2; fail "restore did not complete"; }
step "restore $(json_action_id <<<"$out") completed"
check "the file is back" ep_file_exists 1 "$path"
check "with the same SHA-256" test "$(ep_sha256 1 "$path")" = "$sha"
check "the quarantine action is now reverted" test "$(action_state "$id")" = reverted
