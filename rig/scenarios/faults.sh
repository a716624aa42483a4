#!/usr/bin/env bash
# faults: actions survive a bad network between parryd and ep1, made in the server's
# namespace: (a) 20 % packet loss both ways (nftables numgen), (b) 300 ms latency each
# way (rig/relay.py; the agent is restarted with `server` pointing at the relay), (c) a
# 30 s partition with actions triggered in it, one before the server notices the device
# is gone and one after. Each action runs /bin/sh appending its own label to a file in
# ep1's tmpfs. After healing: every action is final and completed, every label is in
# the file exactly once (no effect lost, none repeated), and the agent reconnected by
# itself.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

srv=$(ns_server)
ledger=$(ep_files 1)/work/faults.txt
path=$(ioc_drop 1 faults-ioc)
read -r inc _ _ < <(wait_event 1 file_created "$path")
step "incident $inc"
ep_exec 1 mkdir -p "$(dirname "$ledger")"
ep_exec 1 rm -f "$ledger"

# append LABEL [--wait]: a start_process action appending LABEL to the ledger; prints
# its id.
append() {
  local out
  out=$(ctl start-process --incident "$inc" --path /bin/sh \
    --args="-c 'echo $1 >> $ledger'" --yes --json "${@:2}" 2>"$RIG_TMP/act.err") ||
    { cat "$RIG_TMP/act.err" >&2; fail "start-process $1: $out"; }
  json_action_id <<<"$out"
}
count() { ep_exec 1 grep -cx "$1" "$ledger" 2>/dev/null || true; }
nft_server() { ip netns exec "$srv" nft "$@"; }
fault() { # fault RULE: drops matching traffic to and from ep1 in the server namespace
  nft_server -f - <<NFT
table inet rig_fault {
  chain in { type filter hook input priority -50; policy accept;
    ip saddr $(ip4_ep 1) $1; ip6 saddr $(ip6_ep 1) $1; }
  chain out { type filter hook output priority -50; policy accept;
    ip daddr $(ip4_ep 1) $1; ip6 daddr $(ip6_ep 1) $1; }
}
NFT
}
heal() { nft_server delete table inet rig_fault; }
ids=()

# (a) loss
step "(a) 20 % loss between parryd and ep1"
fault "numgen random mod 100 < 20 drop"
for k in 1 2 3; do
  ids+=("$(append "loss-$k" --wait --timeout 60)") || fail "loss-$k did not complete"
done
heal
check "(a) loss-1..3 each appended exactly once" \
  test "$(count loss-1)$(count loss-2)$(count loss-3)" = 111

# (b) latency
step "(b) 300 ms each way through rig/relay.py"
ip netns exec "$srv" "$RIG_PY" "$RIG_ROOT/relay.py" "$(ip4_server)" "$RIG_RELAY_PORT" \
  "$(ip4_server)" "$RIG_BUS_PORT" 300 "$RIG_TMP/relay.ready" \
  >"$RIG_TMP/relay.log" 2>&1 </dev/null &
relay=$!
disown "$relay"
wait_for 10 test -s "$RIG_TMP/relay.ready" || fail "relay not ready"
agent_stop 1
lines=$(agent_log_lines 1)
agent_start 1 "$(agent_config 1 "tcp://$(ip4_server):$RIG_RELAY_PORT")"
eventually 30 "(b) agent connected through the relay" agent_connected_since 1 "$lines"
through_relay() {
  ip netns exec "$srv" ss -Htn state established "( sport = :$RIG_RELAY_PORT )" |
    grep -q "$(ip4_ep 1)"
}
check "(b) ep1's bus connection goes through the relay" through_relay
eventually 10 "(b) ep1 online" device_online 1
id=$(append latency-1 --wait --timeout 60) || fail "latency-1 did not complete"
ids+=("$id")
ack_ms=$(ctl action "$id" --json | jq '[.action.transitions[] | {(.state): .time_us}] | add |
  ((.acknowledged - .sent) / 1000 | floor)')
step "(b) sent -> acknowledged took ${ack_ms} ms"
check "(b) the relay's latency was in the path (ack >= 500 ms after sent)" \
  test "$ack_ms" -ge 500
check "(b) latency-1 appended exactly once" test "$(count latency-1)" = 1
agent_stop 1
kill "$relay"
lines=$(agent_log_lines 1)
agent_start 1
eventually 30 "(b) agent back on parryd directly" agent_connected_since 1 "$lines"
eventually 10 "(b) ep1 online" device_online 1

# (c) partition
step "(c) 30 s partition between parryd and ep1"
lines=$(agent_log_lines 1)
fault drop
t0=$(now_ms)
ids+=("$(append partition-1)")
eventually 10 "(c) the server sees ep1 go offline" device_offline 1
ids+=("$(append partition-2)")
not_through() {
  [ "$(count partition-1)$(count partition-2)" = 00 ] &&
    ! action_final "${ids[-1]}" && ! action_final "${ids[-2]}"
}
left=$((30 - ($(now_ms) - t0) / 1000))
check "(c) for the rest of the 30 s nothing gets through (no effect, no final state)" \
  stays_for "$left" not_through
step "(c) states while partitioned: $(action_state "${ids[-2]}"), $(action_state "${ids[-1]}")"
heal
t_heal=$(now_ms)
eventually 60 "(c) the agent reconnected by itself" agent_connected_since 1 "$lines"
eventually 10 "(c) ep1 online again" device_online 1
step "(c) reconnected $(($(now_ms) - t_heal)) ms after healing"
all_final() { local i; for i in "${ids[@]}"; do action_final "$i" || return 1; done; }
eventually 60 "(c) every action reached a final state" all_final
for i in "${ids[@]}"; do
  check "action $i completed" test "$(action_state "$i")" = completed
done
for label in loss-1 loss-2 loss-3 latency-1 partition-1 partition-2; do
  check "$label appended exactly once" test "$(count "$label")" = 1
done
check "nothing else in the ledger" test "$(ep_exec 1 cat "$ledger" | wc -l)" = 6
