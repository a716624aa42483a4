#!/usr/bin/env bash
# isolate: network isolation is real. Before: the peer and ep1 reach each other (ICMP
# and TCP, IPv4 and IPv6). Isolated: neither reaches the other, while the management
# channel still works (ep1 opens TCP connections to parryd's bus port, the agent stays
# online) and ep1's kernel holds `table inet parry_isolation`. Released: reachability
# is back and the table is gone. Every check is made with the kernel, never the agent.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop 1 isolate-ioc)
ep_spawn 1 "$RIG_TMP/isolate-ioc.log" "$path" 600 >/dev/null
read -r inc _ _ < <(wait_event 1 process_started "$path")
step "incident $inc"

check "before: peer reaches ep1" peer_reaches_ep 1
check "before: ep1 reaches peer" ep_reaches_peer 1
check_not "before: no isolation table" isolation_table_present 1

step "isolate"
out=$(act isolate --incident "$inc") || fail "isolate did not complete: $out"
iso=$(json_action_id <<<"$out")
step "action $iso completed"

check "isolated: nftables table inet parry_isolation in ep1" isolation_table_present 1
check "isolated: peer and ep1 are cut off from each other" peer_cut_off_from_ep 1
check "isolated: ep1 still opens TCP connections to the server's bus port" ep_reaches_bus 1
check "isolated: agent still online" device_online 1
eventually 10 "isolated: server shows ep1 isolated" \
  test "$(device_field 1 isolated)" = true

step "release"
out=$(act release --incident "$inc") || fail "release did not complete: $out"
check_not "released: table gone" isolation_table_present 1
eventually 5 "released: peer reaches ep1" peer_reaches_ep 1
eventually 5 "released: ep1 reaches peer" ep_reaches_peer 1
check "released: agent online" device_online 1
