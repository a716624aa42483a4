#!/usr/bin/env bash
# deadman: an isolated endpoint whose server disappears releases itself after
# isolation.dead_man_seconds (10 s in the rig), so a lost server cannot strand a host
# off the network for good; and not before (it is still isolated right after the kill
# and the release comes no sooner than the dead man's time). parryd is started again
# afterwards and the agent comes back to it.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop "$EP" dm-ioc)
read -r inc _ _ < <(wait_event "$EP" file_created "$path")
step "incident $inc"
act isolate --incident "$inc" >/dev/null || fail "isolate did not complete"
check "isolated: peer and $DEV are cut off" peer_cut_off_from_ep "$EP"

step "killing parryd"
server_stop KILL
t_kill=$(now_ms)
check "right after the kill: still isolated (table present)" isolation_table_present "$EP"
check_not "right after the kill: peer cannot reach $DEV" can_ping "$(ns_peer)" "$(ip4_ep "$EP")"
eventually $((RIG_DEAD_MAN_SECONDS + 15)) "dead man released $DEV: peer reaches it" \
  peer_reaches_ep "$EP"
took=$(($(now_ms) - t_kill))
step "released ${took} ms after the kill (dead_man_seconds = $RIG_DEAD_MAN_SECONDS)"
check "not before the dead man's time (less 2 s for the last heartbeat)" \
  test "$took" -ge $(((RIG_DEAD_MAN_SECONDS - 2) * 1000))
check_not "the isolation table is gone" isolation_table_present "$EP"
check "$DEV reaches the peer" ep_reaches_peer "$EP"

step "starting parryd again"
server_start
eventually 30 "$DEV back online" device_online "$EP"
eventually 10 "the server learns $DEV is no longer isolated" \
  test "$(device_field "$EP" isolated)" = false
