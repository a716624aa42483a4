#!/usr/bin/env bash
# restart: isolation survives the agent. Isolate, kill -9 the agent, start it again in
# the same namespaces: ep1 stays isolated (the kernel's table and the peer's probes say
# so) after the new agent has connected and for a while after, and release then works.
# An agent that reset the network on start, or forgot its state, fails here.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

path=$(ioc_drop 1 restart-ioc)
read -r inc _ _ < <(wait_event 1 file_created "$path")
step "incident $inc"
act isolate --incident "$inc" >/dev/null || fail "isolate did not complete"
check "isolated: peer and ep1 are cut off" peer_cut_off_from_ep 1

step "kill -9 the agent"
agent_stop 1 KILL
check "agent dead: still isolated (table present)" isolation_table_present 1

lines=$(agent_log_lines 1)
agent_start 1
eventually 30 "the new agent connected to parryd" agent_connected_since 1 "$lines"
eventually 10 "ep1 online" device_online 1
check "after restart: table present" isolation_table_present 1
check "after restart: peer and ep1 are cut off" peer_cut_off_from_ep 1
check "it stays so (table present and agent running for 5 s)" \
  stays_for 5 eval 'isolation_table_present 1 && agent_running 1'
check "still cut off" peer_cut_off_from_ep 1
check "the server shows ep1 isolated" test "$(device_field 1 isolated)" = true

act release --incident "$inc" >/dev/null || fail "release did not complete"
check_not "released: table gone" isolation_table_present 1
eventually 5 "released: peer reaches ep1" peer_reaches_ep 1
eventually 5 "released: ep1 reaches peer" ep_reaches_peer 1
