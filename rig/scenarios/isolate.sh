#!/usr/bin/env bash
# isolate: network isolation is real. Before: the peer and $DEV reach each other (ICMP
# and TCP, IPv4 and IPv6). Isolated: neither reaches the other, while the management
# channel still works ($DEV opens TCP connections to parryd's bus port, the agent stays
# online) and $DEV's kernel holds exactly the rules of isolation.nft, nothing else.
# Released: reachability is back and the rule set is empty again. Every check is made
# with the kernel, never the agent.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop "$EP" isolate-ioc)
ep_spawn "$EP" "$RIG_TMP/isolate-ioc.log" "$path" 600 >/dev/null
read -r inc _ _ < <(wait_event "$EP" process_started "$path")
step "incident $inc"

check "before: peer reaches $DEV" peer_reaches_ep "$EP"
check "before: $DEV reaches peer" ep_reaches_peer "$EP"
check_not "before: no isolation table" isolation_table_present "$EP"
check "before: $DEV's kernel has no nftables rules at all" no_rules "$EP"

step "isolate"
out=$(act isolate --incident "$inc") || fail "isolate did not complete: $out"
iso=$(json_action_id <<<"$out")
step "action $iso completed"

check "isolated: nftables table inet parry_isolation in $DEV" isolation_table_present "$EP"
# What isolation must add, written down here (not read from the agent), against the
# kernel's whole rule set as nft lists it (indentation and blank lines aside).
want=$(sed -e "s/@SERVER@/$(ip4_server)/g" -e "s/@BUS_PORT@/$RIG_BUS_PORT/g" \
  -e "s/@ENROLL_PORT@/$RIG_ENROLL_PORT/g" "$(dirname "$0")/isolation.nft")
got=$(ep_exec "$EP" nft list ruleset) || fail "nft list ruleset failed in $DEV"
got=$(sed -e 's/^[[:space:]]*//' -e '/^$/d' <<<"$got")
[ "$got" = "$want" ] || diff <(echo "$want") <(echo "$got") | sed 's/^/    /' >&2 || true
check "isolated: $DEV's whole rule set is exactly isolation.nft" test "$got" = "$want"
check "isolated: peer and $DEV are cut off from each other" peer_cut_off_from_ep "$EP"
check "isolated: $DEV still opens TCP connections to the server's bus port" ep_reaches_bus "$EP"
check "isolated: agent still online" device_online "$EP"
eventually 10 "isolated: server shows $DEV isolated" \
  test "$(device_field "$EP" isolated)" = true

step "release"
out=$(act release --incident "$inc") || fail "release did not complete: $out"
check_not "released: table gone" isolation_table_present "$EP"
check "released: $DEV's kernel has no nftables rules at all" no_rules "$EP"
eventually 5 "released: peer reaches $DEV" peer_reaches_ep "$EP"
eventually 5 "released: $DEV reaches peer" ep_reaches_peer "$EP"
check "released: agent online" device_online "$EP"
