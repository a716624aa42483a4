#!/usr/bin/env bash
# curve: the agent enrolled and speaks CURVE on the bus, as the wire shows it. The
# agent's keys are on the endpoint's own disk (mode 600) and parryd recorded the
# enrollment; then the agent is restarted while the rig captures its traffic on the
# endpoint's switch port: the ZMTP greeting names the CURVE mechanism (not NULL or
# PLAIN), and what the agent says about itself in its hello (its version, its kernel)
# never crosses the wire in clear. The capture is the kernel's, not the agent's word.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach

keys=$(ep_state "$EP")/agent-keys
check "the agent's keys are on $DEV's disk" ep_file_exists "$EP" "$keys"
check "readable by root only" test "$(ep_exec "$EP" stat -c %a "$keys")" = 600
check "parryd recorded the enrollment of $DEV" \
  grep -q "\[device=$DEV\] bus: enrolled" "$(server_dir)/parryd.log"

cap=$RIG_TMP/curve-$DEV.bin
rm -f "$cap".*
ip netns exec "$(ns_switch)" "$RIG_PY" "$RIG_ROOT/net.py" sniff "$(ep_port "$EP")" \
  "$RIG_BUS_PORT" "$cap.ready" "$cap" >"$RIG_TMP/curve-sniff.log" 2>&1 </dev/null &
sniffer=$!
disown "$sniffer"
trap 'kill "$sniffer" 2>/dev/null || true' EXIT
wait_for 10 test -s "$cap.ready" || fail "the capture did not start"

step "restarting the agent while capturing on $(ep_port "$EP")"
lines=$(agent_log_lines "$EP")
agent_stop "$EP"
eventually 15 "$DEV offline" device_offline "$EP"
agent_start "$EP"
eventually 30 "the agent connected again" agent_connected_since "$EP" "$lines"
eventually 15 "$DEV online" device_online "$EP"
check "the hello's facts reached parryd (version $(device_field "$EP" agent_version))" \
  test -n "$(device_field "$EP" agent_version)"
kill "$sniffer"

step "captured: $(stat -c %s "$cap.up") bytes to parryd, $(stat -c %s "$cap.down") from it"
# ZMTP 3 greeting: signature (0xFF, 8 bytes, 0x7F), version (3, minor), mechanism (20
# bytes, NUL-padded): one at the start of each direction of each connection.
mechanisms() {
  "$RIG_PY" - "$1" <<'PY'
import re, sys
data = open(sys.argv[1], "rb").read()
for m in re.finditer(rb"\xff[\x00-\xff]{8}\x7f\x03[\x00-\x01]([A-Z]{1,20})\x00", data):
    print(m.group(1).decode())
PY
}
up=$(mechanisms "$cap.up")
down=$(mechanisms "$cap.down")
check "the agent's greeting was captured" test -n "$up"
check "parryd's greeting was captured" test -n "$down"
check "every greeting names CURVE (agent: $(echo $up), parryd: $(echo $down))" \
  test -z "$(printf '%s\n%s\n' "$up" "$down" | grep -vx CURVE)"
version=$(device_field "$EP" agent_version)
os=$(device_field "$EP" os)
check_not "the agent's version ($version) is not on the wire" grep -qaF "$version" "$cap.up"
check_not "its kernel ($os) is not on the wire" grep -qaF "$os" "$cap.up"
