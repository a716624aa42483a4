#!/usr/bin/env bash
# restart: isolation survives the agent. Isolate, kill -9 the agent, start it again in
# the same namespaces: $DEV stays isolated (the kernel's table and the peer's probes say
# so) after the new agent has connected and for a while after, and release then works.
# An agent that reset the network on start, or forgot its state, fails here.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop "$EP" restart-ioc)
read -r inc _ _ < <(wait_event "$EP" file_created "$path")
step "incident $inc"
act isolate --incident "$inc" >/dev/null || fail "isolate did not complete"
check "isolated: peer and $DEV are cut off" peer_cut_off_from_ep "$EP"

step "kill -9 the agent"
agent_stop "$EP" KILL
check "agent dead: still isolated (table present)" isolation_table_present "$EP"

lines=$(agent_log_lines "$EP")
agent_start "$EP"
eventually 30 "the new agent connected to parryd" agent_connected_since "$EP" "$lines"
eventually 10 "$DEV online" device_online "$EP"
check "after restart: table present" isolation_table_present "$EP"
check "after restart: peer and $DEV are cut off" peer_cut_off_from_ep "$EP"
check "it stays so (table present and agent running for 5 s)" \
  stays_for 5 eval 'isolation_table_present "$EP" && agent_running "$EP"'
check "still cut off" peer_cut_off_from_ep "$EP"
check "the server shows $DEV isolated" test "$(device_field "$EP" isolated)" = true

act release --incident "$inc" >/dev/null || fail "release did not complete"
check_not "released: table gone" isolation_table_present "$EP"
eventually 5 "released: peer reaches $DEV" peer_reaches_ep "$EP"
eventually 5 "released: $DEV reaches peer" ep_reaches_peer "$EP"
