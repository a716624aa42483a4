#!/usr/bin/env bash
# reboot (VM endpoints only): a hard reset of the endpoint's machine, as a power cut
# would be, and what the server and the agent make of it once the VM has booted again.
#
# 1. In the middle of an action: a start_process whose process is running (the agent
#    has journaled the action as in flight and waits for it to end) when the VM is
#    reset. After the boot the action is final, failed, saying the agent stopped while
#    executing it (its effect is unknown), and the process is not started again.
# 2. While isolated: the new kernel starts with no rules, and the agent applies
#    isolation again from the journal on its disk: the peer is cut off, release works.
# 3. A command sent while the VM is down: an isolate registered right after the reset
#    reaches the agent once it is back, and completes; the VM's kernel is isolated.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"
rig_attach
is_vm "$EP" || die "reboot needs a VM endpoint (parry-rig run --vm reboot)"
k=${EP#vm}
boot_id=$(ep_exec "$EP" cat /proc/sys/kernel/random/boot_id) || fail "no boot id from $DEV"
check "$DEV runs a kernel of its own (its boot id is not the host's)" \
  test -n "$boot_id" -a "$boot_id" != "$(cat /proc/sys/kernel/random/boot_id)"

# reset_vm: resets the VM, remembering the boot it ends; booted_again: the console
# answers from a new boot (the kernel's boot id differs).
reset_vm() {
  boot_id=$(ep_exec "$EP" cat /proc/sys/kernel/random/boot_id) || fail "no boot id"
  [ -n "$boot_id" ] || fail "an empty boot id"
  vm_reset "$k"
}
new_boot() {
  local id
  vm_console_answers "$k" || return 1
  id=$(ep_exec "$EP" cat /proc/sys/kernel/random/boot_id) || return 1
  [ -n "$id" ] && [ "$id" != "$boot_id" ]
}
booted_again() { eventually 90 "vm$k booted again (a new boot id)" new_boot; }

path=$(ioc_drop "$EP" reboot-ioc)
read -r inc _ _ < <(wait_event "$EP" file_created "$path")
step "incident $inc"

step "1. reset in the middle of a start_process"
work=$(ep_files "$EP")/work
ep_exec "$EP" rm -f "$work/running"
out=$(ctl start-process --incident "$inc" --path /bin/sh --cwd "$work" \
  --args="-c 'echo \$\$ > running; exec sleep 30'" --yes --json 2>"$RIG_TMP/act.err") ||
  { cat "$RIG_TMP/act.err" >&2; fail "start-process was not registered"; }
id=$(json_action_id <<<"$out")
[ -n "$id" ] || fail "no action id in: $out"
eventually 20 "the started process runs in $DEV" ep_file_exists "$EP" "$work/running"
check_not "its action is not final yet" action_final "$id"
reset_vm
booted_again
eventually 60 "$DEV online again" device_online "$EP"
eventually 30 "action $id is final" action_final "$id"
step "action $id: $(action_state "$id"): $(ctl action "$id" --json | jq -r .action.result.error)"
check "action $id failed" test "$(action_state "$id")" = failed
check "its error says the agent stopped while executing it" \
  grep -q "stopped while executing" <<<"$(ctl action "$id" --json | jq -r .action.result.error)"
check_not "the process was not started again" ep_file_exists "$EP" "$work/running"

step "2. reset while isolated"
act isolate --incident "$inc" >/dev/null || fail "isolate did not complete"
check "isolated: peer and $DEV are cut off" peer_cut_off_from_ep "$EP"
reset_vm
booted_again
eventually 60 "$DEV online again" device_online "$EP"
eventually 10 "the agent applied isolation again: table present" isolation_table_present "$EP"
check "after the reboot: peer and $DEV are cut off" peer_cut_off_from_ep "$EP"
check "the server shows $DEV isolated" test "$(device_field "$EP" isolated)" = true
act release --incident "$inc" >/dev/null || fail "release did not complete"
check_not "released: table gone" isolation_table_present "$EP"
eventually 5 "released: peer reaches $DEV" peer_reaches_ep "$EP"

step "3. an isolate sent while the VM is down"
reset_vm
out=$(ctl isolate --incident "$inc" --yes --json 2>"$RIG_TMP/act.err") ||
  { cat "$RIG_TMP/act.err" >&2; fail "isolate was not registered"; }
id=$(json_action_id <<<"$out")
step "action $id registered during the reset"
booted_again
eventually 60 "$DEV online again" device_online "$EP"
eventually 60 "action $id is final" action_final "$id"
check "action $id completed" test "$(action_state "$id")" = completed
check "the VM's kernel holds the isolation table" isolation_table_present "$EP"
check "peer and $DEV are cut off" peer_cut_off_from_ep "$EP"
act release --incident "$inc" >/dev/null || fail "release did not complete"
eventually 5 "released: peer reaches $DEV" peer_reaches_ep "$EP"
