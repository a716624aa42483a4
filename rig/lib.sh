# shellcheck shell=bash
# The rig's vocabulary, sourced by parry-rig and by every scenario (rig/scenarios/*.sh).
# Topology and names: see the drawing at the top of rig/parry-rig and docs/rig.md.
#
# A rig is identified by the PID of the parry-rig that made it (RIG_ID). Everything it
# owns carries that number: namespaces `prs-ID`, `psw-ID`, `pepN-ID`, `ppeer-ID`, VM
# tap devices `pvmK-ID`, and the directory /tmp/parry-rig-ID/ (RIG_TMP), which also
# holds `env`, the variables a scenario (or a person) needs to use the rig:
#
#   source /tmp/parry-rig-ID/env; source rig/lib.sh; ctl devices
#
# An endpoint is named N (the namespace endpoint epN) or vmK (VM endpoint K, its own
# kernel under qemu). The endpoint functions below take either; a scenario acts on
# RIG_EP (default 1), so the same scenario runs on a namespace endpoint or on a VM.
#
# Every wait is a bounded poll for a condition (wait_for), never a bare sleep.

RIG_ROOT=${RIG_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
RIG_REPO=${RIG_REPO:-$(cd "$RIG_ROOT/.." && pwd)}
RIG_PY=/usr/bin/python3 # Debian's interpreter; a pyenv shim may be first on PATH
RIG_HTTP_PORT=8443
RIG_BUS_PORT=7400
RIG_ENROLL_PORT=7401
# shellcheck disable=SC2034 # used by scenarios
RIG_RELAY_PORT=7410   # the latency relay in the server namespace (faults scenario)
RIG_LISTEN_PORT=8080  # a TCP listener in every endpoint and in the peer
RIG_DEAD_MAN_SECONDS=10

# -- messages -------------------------------------------------------------------------

say() { printf 'rig: %s\n' "$*" >&2; }
die() { printf 'rig: error: %s\n' "$*" >&2; exit 1; }
step() { printf '  - %s\n' "$*" >&2; }
pass() { printf '  ok: %s\n' "$*" >&2; }
fail() { printf '  FAIL: %s\n' "$*" >&2; exit 1; }

# check DESCRIPTION CMD...: CMD must succeed now.
check() {
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what (command: $*)"; fi
}
# check_not DESCRIPTION CMD...: CMD must fail now.
check_not() {
  local what=$1; shift
  if "$@"; then fail "$what (succeeded: $*)"; else pass "$what"; fi
}
# eventually TIMEOUT DESCRIPTION CMD...: CMD must succeed within TIMEOUT seconds.
eventually() {
  local t=$1 what=$2; shift 2
  if wait_for "$t" "$@"; then pass "$what"; else fail "$what (not within ${t}s: $*)"; fi
}

# wait_for TIMEOUT CMD...: polls CMD every 100 ms until it succeeds (0) or TIMEOUT
# seconds (integer) have passed (1, with a message naming the condition).
wait_for() {
  local timeout=$1; shift
  local deadline=$((${EPOCHREALTIME/./} + timeout * 1000000))
  while :; do
    if "$@"; then return 0; fi
    if ((${EPOCHREALTIME/./} >= deadline)); then
      say "timed out after ${timeout}s waiting for: $*"
      return 1
    fi
    sleep 0.1
  done
}

# stays_for SECONDS CMD...: CMD holds at every poll (100 ms) for SECONDS; fails, naming
# the condition, the first time it does not. A fault's duration is spent checking.
stays_for() {
  local secs=$1; shift
  local end=$((${EPOCHREALTIME/./} + secs * 1000000))
  while ((${EPOCHREALTIME/./} < end)); do
    "$@" || { say "stopped holding: $*"; return 1; }
    sleep 0.1
  done
}

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# -- names and addresses ------------------------------------------------------------

ns_server() { echo "prs-$RIG_ID"; }
ns_switch() { echo "psw-$RIG_ID"; }
ns_peer() { echo "ppeer-$RIG_ID"; }
ns_ep() { echo "pep$1-$RIG_ID"; }
ip4_server() { echo 10.77.0.1; }
ip6_server() { echo fd77::1; }
is_vm() { [[ $1 == vm* ]]; }
ep_device() { if is_vm "$1"; then echo "$1"; else echo "ep$1"; fi; } # its device id
# epN: .10+N (N <= 89); vmK: .200+K (K <= 9); the peer is .100.
ep_host_no() { if is_vm "$1"; then echo $((200 + ${1#vm})); else echo $((10 + $1)); fi; }
ip4_ep() { echo "10.77.0.$(ep_host_no "$1")"; }
ip6_ep() { echo "fd77::$(ep_host_no "$1")"; }
ip4_peer() { echo 10.77.0.100; }
ip6_peer() { echo fd77::100; }
ep_dir() { echo "$RIG_TMP/$(ep_device "$1")"; } # on the host: logs, the VM's files
# The endpoint's port on the switch (psw-ID): a veth end, or a VM's tap device.
ep_port() { if is_vm "$1"; then vm_tap "${1#vm}"; else echo "vep$1"; fi; }
# The endpoint's files directory (a private tmpfs) and the agent's state directory, as
# paths inside the endpoint.
ep_files() { if is_vm "$1"; then echo /srv/files; else echo "$RIG_TMP/ep$1/files"; fi; }
ep_state() {
  if is_vm "$1"; then echo /var/lib/parry/state; else echo "$RIG_TMP/ep$1/state"; fi
}
server_dir() { echo "$RIG_TMP/server"; }

# Every namespace of rig $1 (default: this one), switch last.
rig_namespaces() {
  local id=${1:-$RIG_ID}
  ip netns list 2>/dev/null | awk '{print $1}' |
    grep -E "^(prs|ppeer|pep[0-9]+|psw)-$id\$" | sort -t- -k1,1r || true
}

# rig_attach: for scenarios: the rig named by the environment must be up.
rig_attach() {
  if [ -z "${RIG_ID:-}" ] || [ -z "${RIG_TMP:-}" ]; then
    die "no rig: start one with 'parry-rig up' and 'source /tmp/parry-rig-PID/env'"
  fi
  [ -d "$RIG_TMP" ] || die "no rig directory $RIG_TMP"
  ip netns list | grep -q "^$(ns_server) " || ip netns list | grep -qx "$(ns_server)" ||
    die "rig $RIG_ID is not up (no namespace $(ns_server))"
  EP=${RIG_EP:-1}             # the endpoint the scenario acts on: N or vmK
  DEV=$(ep_device "$EP")      # its device id
}

# -- processes ------------------------------------------------------------------------

# child_of PID: the (first) child of PID, once it has one.
child_of() { awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null; }
has_child() { [ -n "$(child_of "$1")" ]; }
# A zombie (killed, not yet reaped by its parent) counts as gone.
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st%% *}" != Z ]
}
gone() { ! alive "$1"; }

# -- the server -----------------------------------------------------------------------

# ctl ARGS...: parryctl inside the server's namespace, logged in as the administrator
# (credentials file in the rig directory; the password for actions that ask for it).
ctl() {
  ip netns exec "$(ns_server)" env \
    PARRY_SERVER="https://127.0.0.1:$RIG_HTTP_PORT" \
    PARRY_CACERT="$(server_dir)/data/tls/cert.pem" \
    PARRY_CONFIG="$RIG_TMP/parryctl.json" \
    PARRY_PASSWORD="$(cat "$RIG_TMP/admin-password")" \
    "$RIG_BIN/parryctl" "$@" </dev/null
}

server_pid() { cat "$(server_dir)/parryd.pid" 2>/dev/null; }
server_running() { local p; p=$(server_pid) && alive "$p"; }

# server_start: parryd in the server namespace; returns once it says it is ready.
server_start() {
  local d log lines pid
  d=$(server_dir)
  log=$d/parryd.log
  mkdir -p "$d/data"
  touch "$log"
  lines=$(wc -l <"$log")
  ip netns exec "$(ns_server)" env PARRY_ADMIN_PASSWORD="$(cat "$RIG_TMP/admin-password")" \
    "$RIG_BIN/parryd" --data-dir "$d/data" \
    --bus "tcp://$(ip4_server):$RIG_BUS_PORT" \
    --bus-enroll-endpoint "tcp://$(ip4_server):$RIG_ENROLL_PORT" \
    --http-address 127.0.0.1 --http-port "$RIG_HTTP_PORT" \
    --heartbeat-interval-ms 1000 --missed-heartbeats 3 \
    --pbkdf2-iterations 1000 --workers 2 \
    >>"$log" 2>&1 </dev/null &
  pid=$!
  disown "$pid" # killed on purpose by some scenarios: no "Killed" notice
  echo "$pid" >"$d/parryd.pid"
  # shellcheck disable=SC2317 # called through wait_for
  server_ready() {
    tail -n +"$((lines + 1))" "$log" | grep -q '^parryd ready' && return 0
    alive "$pid" || { tail -n 20 "$log" >&2; die "parryd exited at start"; }
    return 1
  }
  wait_for 30 server_ready || { tail -n 20 "$log" >&2; die "parryd did not become ready"; }
}

# server_stop [SIGNAL]: stops parryd (default TERM) and waits until it is gone.
server_stop() {
  local pid
  pid=$(server_pid) || return 0
  kill "-${1:-TERM}" "$pid" 2>/dev/null || true
  wait_for 15 gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  wait_for 5 gone "$pid"
}

# -- endpoints ------------------------------------------------------------------------

holder_pid() { cat "$(ep_dir "$1")/holder.pid"; }

# sh_quote ARGS...: ARGS as one POSIX shell command line (each word single-quoted).
sh_quote() {
  local a out=""
  for a in "$@"; do out+="'${a//\'/\'\\\'\'}' "; done
  printf '%s' "${out% }"
}

# ep_exec N CMD...: runs CMD inside endpoint N: for epN in its network, mount, PID and
# UTS namespaces, as a child of the holder's PID namespace; for vmK in the VM, through
# its console channel (output and status come back; stdin is empty).
ep_exec() {
  local n=$1; shift
  if is_vm "$n"; then vm_run "${n#vm}" "$(sh_quote "$@")"; return; fi
  nsenter --target "$(holder_pid "$n")" --net --mount --pid --uts -- "$@"
}

# ep_spawn N LOG CMD...: starts CMD in the background inside endpoint N, output to
# LOG; prints the host pid of the nsenter that waits for it. In a VM, LOG is a file of
# the same name in the VM's /tmp, and the pid printed is the VM's.
ep_spawn() {
  local n=$1 log=$2; shift 2
  if is_vm "$n"; then
    vm_run "${n#vm}" "setsid $(sh_quote "$@") >>$(sh_quote "/tmp/${log##*/}") 2>&1 \
      </dev/null & echo \$!"
    return
  fi
  nsenter --target "$(holder_pid "$n")" --net --mount --pid --uts -- "$@" \
    >>"$log" 2>&1 </dev/null &
  echo $!
  disown $! # killing it later is expected: no "Killed" notice
}

# ep_sh N SCRIPT: a shell script inside endpoint N.
ep_sh() {
  local n=$1; shift
  if is_vm "$n"; then vm_run "${n#vm}" "$1"; else ep_exec "$n" /bin/sh -c "$1"; fi
}

# The endpoint's view of its own processes (its PID namespace, its /proc).
ep_proc_alive() { ep_exec "$1" test -e "/proc/$2"; }
ep_proc_gone() { ! ep_exec "$1" test -e "/proc/$2"; }
ep_file_exists() { ep_exec "$1" test -e "$2"; }
ep_file_gone() { ! ep_exec "$1" test -e "$2"; }
ep_sha256() { ep_exec "$1" sha256sum "$2" | awk '{print $1}'; }

# agent_toml DEVICE SERVER_ENDPOINT STATE_DIR FILES_DIR: an agent configuration on
# stdout, for a namespace endpoint or a VM (their paths differ, the rest is the rig's).
agent_toml() {
  local iocs
  iocs=$(awk '{printf "%s\"%s\"", (NR > 1 ? ", " : ""), $1}' "$RIG_TMP/iocs/sha256")
  cat <<TOML
# parry-rig: endpoint $1 (rig $RIG_ID)
device_id = "$1"
server = "$2"
enroll_server = "tcp://$(ip4_server):$RIG_ENROLL_PORT"
state_dir = "$3"
file_roots = ["$4"]
guard_mounts = ["$4"]
iocs = [$iocs]
start_timeout_ms = 5000

[isolation]
lease_seconds = 0
dead_man = true
dead_man_seconds = $RIG_DEAD_MAN_SECONDS
exceptions = []
TOML
}

# agent_config N [SERVER_ENDPOINT]: writes namespace endpoint N's agent configuration;
# prints its path. With a server endpoint other than parryd's (the relay), a second
# file.
agent_config() {
  local n=$1 server=${2:-tcp://$(ip4_server):$RIG_BUS_PORT} file
  file=$(ep_dir "$n")/agent.toml
  [ "$server" = "tcp://$(ip4_server):$RIG_BUS_PORT" ] || file=$(ep_dir "$n")/agent-alt.toml
  agent_toml "ep$n" "$server" "$(ep_state "$n")" "$(ep_files "$n")" >"$file"
  echo "$file"
}

agent_pid() {
  if is_vm "$1"; then vm_run "${1#vm}" 'cat /run/parry-agent.pid'
  else cat "$(ep_dir "$1")/agent.pid" 2>/dev/null; fi
}
agent_running() { # a namespace endpoint's agent.pid is the host's pid, a VM's its own
  local p
  p=$(agent_pid "$1") || return 1
  if is_vm "$1"; then ep_proc_alive "$1" "$p"; else alive "$p"; fi
}

# agent_start N [CONFIG]: parry-agent --real inside endpoint N (not as its PID 1, so
# it can be killed and started again in the same namespaces); enrolls with the rig's
# token the first time. Returns once the agent process runs (see device_online). A VM
# starts its agent at boot with the configuration the rig gave it (rig/vm/rootfs).
agent_start() {
  local n=$1 cfg=${2:-} d waiter pid
  if is_vm "$n"; then
    vm_run "${n#vm}" /usr/bin/parry-agent-start
    wait_for 10 agent_running "$n" || die "agent in $n did not start"
    return
  fi
  d=$(ep_dir "$n")
  [ -n "$cfg" ] || cfg=$(agent_config "$n")
  printf '\n--- agent start %s (%s)\n' "$(date -u +%FT%T.%3NZ)" "$cfg" >>"$d/agent.log"
  waiter=$(PARRY_ENROLL_TOKEN=$(cat "$RIG_TMP/enroll-token") \
    ep_spawn "$n" "$d/agent.log" "$RIG_BIN/parry-agent" --real --config "$cfg")
  wait_for 10 has_child "$waiter" || die "agent in ep$n did not start"
  pid=$(child_of "$waiter")
  echo "$pid" >"$d/agent.pid"
  echo "$waiter" >"$d/agent-waiter.pid"
}

# agent_stop N [SIGNAL]: stops endpoint N's agent (default TERM) and waits for it.
agent_stop() {
  local n=$1 pid
  pid=$(agent_pid "$n") || return 0
  if is_vm "$n"; then
    ep_exec "$n" kill "-${2:-TERM}" "$pid" || true
    wait_for 15 ep_proc_gone "$n" "$pid" ||
      { ep_exec "$n" kill -KILL "$pid" || true; wait_for 5 ep_proc_gone "$n" "$pid"; }
    return
  fi
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  wait_for 15 gone "$pid" || { kill -KILL "$pid" 2>/dev/null || true; wait_for 5 gone "$pid"; }
}

# agent_log N [TIMEOUT]: endpoint N's agent log (a VM keeps it on its state disk; its
# console gets TIMEOUT seconds, default 30).
agent_log() {
  if is_vm "$1"; then vm_run "${1#vm}" 'cat /var/lib/parry/agent.log' "${2:-30}"
  else cat "$(ep_dir "$1")/agent.log"; fi
}
# agent_connected_since N LINE: the agent's log shows a bus connection after LINE
# (a line count taken before agent_start).
agent_log_lines() { agent_log "$1" | wc -l; }
agent_connected_since() { agent_log "$1" | tail -n +"$(($2 + 1))" | grep -q 'connected to'; }

device_field() { ctl device "$(ep_device "$1")" --json 2>/dev/null | jq -r ".device.$2"; }
device_online() { [ "$(device_field "$1" online)" = true ]; }
device_offline() { [ "$(device_field "$1" online)" = false ]; }

# -- reachability (verified from outside the agent) ----------------------------------

# can_ping NS ADDR / can_connect NS ADDR PORT: one probe from namespace NS, 1 s.
can_ping() { ip netns exec "$1" "$RIG_PY" "$RIG_ROOT/net.py" ping "$2" 1; }
can_connect() { ip netns exec "$1" "$RIG_PY" "$RIG_ROOT/net.py" connect "$2" "$3" 1; }

# vm_probes K ALL|NONE PROBE...: the probes (each "ping ADDR" or "connect ADDR PORT", 1 s)
# run at once inside VM K with busybox; succeeds if all (ALL) or none (NONE) got through.
vm_probes() {
  local k=$1 want=$2 script="ok=0; n=0; pids=''" p; shift 2
  for p in "$@"; do
    set -- $p
    case $1 in
      ping) script+="; (ping -c 1 -W 1 $2 >/dev/null 2>&1) & pids=\"\$pids \$!\"" ;;
      connect) script+="; (nc -w 1 $2 $3 </dev/null >/dev/null 2>&1) & pids=\"\$pids \$!\"" ;;
    esac
  done
  script+="; for p in \$pids; do n=\$((n + 1)); wait \$p && ok=\$((ok + 1)); done"
  if [ "$want" = ALL ]; then script+='; [ "$ok" = "$n" ]'; else script+='; [ "$ok" = 0 ]'; fi
  vm_run "$k" "$script"
}

# Both ways between the peer and endpoint N, IPv4 and IPv6, ICMP and TCP.
peer_reaches_ep() {
  local n=$1 p
  p=$(ns_peer)
  can_ping "$p" "$(ip4_ep "$n")" && can_ping "$p" "$(ip6_ep "$n")" &&
    can_connect "$p" "$(ip4_ep "$n")" $RIG_LISTEN_PORT &&
    can_connect "$p" "$(ip6_ep "$n")" $RIG_LISTEN_PORT
}
ep_reaches_peer() {
  local e
  if is_vm "$1"; then
    vm_probes "${1#vm}" ALL "ping $(ip4_peer)" "ping $(ip6_peer)" \
      "connect $(ip4_peer) $RIG_LISTEN_PORT" "connect $(ip6_peer) $RIG_LISTEN_PORT"
    return
  fi
  e=$(ns_ep "$1")
  can_ping "$e" "$(ip4_peer)" && can_ping "$e" "$(ip6_peer)" &&
    can_connect "$e" "$(ip4_peer)" $RIG_LISTEN_PORT &&
    can_connect "$e" "$(ip6_peer)" $RIG_LISTEN_PORT
}
# Cut off: no probe gets through in either direction, on any address or protocol.
# The eight probes run at once (each waits 1 s for an answer that never comes).
peer_cut_off_from_ep() {
  local n=$1 p e pids=() q reached=0
  p=$(ns_peer)
  can_ping "$p" "$(ip4_ep "$n")" & pids+=($!)
  can_ping "$p" "$(ip6_ep "$n")" & pids+=($!)
  can_connect "$p" "$(ip4_ep "$n")" $RIG_LISTEN_PORT & pids+=($!)
  can_connect "$p" "$(ip6_ep "$n")" $RIG_LISTEN_PORT & pids+=($!)
  if is_vm "$n"; then
    vm_probes "${n#vm}" NONE "ping $(ip4_peer)" "ping $(ip6_peer)" \
      "connect $(ip4_peer) $RIG_LISTEN_PORT" "connect $(ip6_peer) $RIG_LISTEN_PORT" ||
      reached=1
  else
    e=$(ns_ep "$n")
    can_ping "$e" "$(ip4_peer)" & pids+=($!)
    can_ping "$e" "$(ip6_peer)" & pids+=($!)
    can_connect "$e" "$(ip4_peer)" $RIG_LISTEN_PORT & pids+=($!)
    can_connect "$e" "$(ip6_peer)" $RIG_LISTEN_PORT & pids+=($!)
  fi
  for q in "${pids[@]}"; do wait "$q" && reached=1; done
  [ "$reached" = 0 ]
}
ep_reaches_bus() {
  if is_vm "$1"; then
    vm_probes "${1#vm}" ALL "connect $(ip4_server) $RIG_BUS_PORT"
  else
    can_connect "$(ns_ep "$1")" "$(ip4_server)" $RIG_BUS_PORT
  fi
}
# no_rules N: endpoint N's kernel has no nftables rules at all (fails, too, when the
# rule set cannot be listed).
no_rules() {
  local r
  r=$(ep_exec "$1" nft list ruleset) || return 1
  [ -z "$r" ]
}
isolation_table_present() {
  ep_exec "$1" nft list table inet parry_isolation >/dev/null 2>&1
}

# -- IOC files and incidents ----------------------------------------------------------

# ioc_drop N NAME: copies the next unused IOC file (a copy of /bin/sleep with unique
# bytes appended; its SHA-256 is on every agent's IOC list) into endpoint N's tmpfs as
# NAME; prints its path there. $RIG_TMP/iocs/NAME.src names the source. A VM holds
# the rig's IOC files in /opt/iocs (its per-VM boot archive).
ioc_drop() {
  local n=$1 name=$2 idx src dst
  idx=$(($(cat "$RIG_TMP/iocs/next") + 1))
  src=$(printf '%s/iocs/ioc-%02d' "$RIG_TMP" "$idx")
  [ -f "$src" ] || die "no IOC file left ($src)"
  echo "$idx" >"$RIG_TMP/iocs/next"
  echo "$src" >"$RIG_TMP/iocs/$name.src"
  dst=$(ep_files "$n")/$name
  if is_vm "$n"; then
    ep_exec "$n" cp "/opt/iocs/${src##*/}" "$dst"
  else
    ep_exec "$n" cp "$src" "$dst"
  fi
  ep_exec "$n" chmod 755 "$dst"
  echo "$dst"
}
ioc_marker() { cat "$(cat "$RIG_TMP/iocs/$1.src").marker"; }
ioc_sha256() { sha256sum "$(cat "$RIG_TMP/iocs/$1.src")" | awk '{print $1}'; }

# find_event N TYPE PATH: the first incident of endpoint N's device holding an event of TYPE
# whose file path or process image is PATH; prints "INCIDENT EVENT PID" (PID empty for
# events without a process). Fails when there is none (yet).
find_event() {
  local n=$1 type=$2 path=$3 inc found
  for inc in $(ctl incidents --device "$(ep_device "$n")" --limit 100 --json 2>/dev/null |
    jq -r '.incidents[].incident_id'); do
    found=$(ctl incident "$inc" --json 2>/dev/null | jq -r --arg t "$type" --arg p "$path" '
      [.incident.events[] | select(.type == $t and
        ((.file.path // "") == $p or (.process.image // "") == $p))][0] //
      empty | "\(.id) \(.process.pid // "")"') || continue
    if [ -n "$found" ]; then
      echo "$inc $found"
      return 0
    fi
  done
  return 1
}

# wait_event N TYPE PATH [TIMEOUT]: find_event, polled.
wait_event() {
  wait_for "${4:-20}" find_event "$1" "$2" "$3" >/dev/null ||
    fail "no incident with a $2 event for $3 on $(ep_device "$1")"
  find_event "$1" "$2" "$3"
}

# -- actions --------------------------------------------------------------------------

# act CMD ARGS...: a parryctl action command, confirmed and followed to its end;
# prints the final action JSON ({"action": ...}); the status is parryctl's.
# parryctl's own record of what it did (stderr) is shown only when it fails.
act() {
  local status=0
  ctl "$@" --yes --wait --timeout 60 --json 2>"$RIG_TMP/act.err" || status=$?
  if [ "$status" != 0 ]; then sed 's/^/    parryctl: /' "$RIG_TMP/act.err" >&2; fi
  return "$status"
}
action_state() { ctl action "$1" --json | jq -r .action.state; }
action_final() { [ "$(ctl action "$1" --json | jq -r .action.final)" = true ]; }
json_action_id() { jq -r '.action.action_id // .action_id // empty'; }

# -- VM endpoints (docs/rig.md, "VM endpoints") ---------------------------------------

vm_dir() { ep_dir "vm$1"; }
vm_tap() { echo "pvm$1-$RIG_ID"; }
vm_pid() { cat "$(vm_dir "$1")/qemu.pid" 2>/dev/null; }

# vm_run K SCRIPT [TIMEOUT]: runs SCRIPT (sh) in VM K through its console channel
# (ttyS1, rig/vm/console.py), never through the agent or the network; prints its output
# and returns its status. A console that does not answer ends the scenario (console.py
# writes to stderr only then, so no exit status of the script is mistaken for it). In
# $(...) that ends only the subshell: check the status there (x=$(vm_run ...) || fail).
vm_run() {
  local status=0 err why
  err=$(mktemp "$RIG_TMP/console-err.XXXXXX")
  "$RIG_PY" "$RIG_ROOT/vm/console.py" "$(vm_dir "$1")/console.sock" run \
    --timeout "${3:-30}" "$2" 2>"$err" || status=$?
  why=$(cat "$err")
  rm -f "$err"
  [ -z "$why" ] || die "vm$1: $why (console log: $(vm_dir "$1")/console.log)"
  return "$status"
}

# vm_console_answers K: the VM has booted (its console answers within 2 s).
vm_console_answers() { (vm_run "$1" true 2) >/dev/null 2>&1; }

# vm_boot_files: builds (or finds in the cache) the VMs' kernel and initramfs; prints
# their directory.
vm_boot_files() {
  bash "$RIG_ROOT/vm/build.sh" "$RIG_BIN" "${PARRY_VM_CACHE:-$RIG_BIN/vm-cache}"
}

# vm_up K BOOT_DIR: VM endpoint K: its own boot archive (configuration, enrollment
# token, IOC files), a state disk, a tap device on the rig's bridge, and qemu (TCG) in
# the switch namespace, so everything goes when the rig's namespaces do. Returns once
# qemu runs; vm_console_answers tells when it has booted.
vm_up() {
  local k=$1 boot=$2 d x sw tap
  d=$(vm_dir "$k")
  x=$d/archive
  mkdir -p "$x/etc/parry" "$x/opt/iocs"
  cat >"$x/etc/parry/vm.env" <<ENV
VM_HOST=vm$k
VM_IP4=$(ip4_ep "vm$k")
VM_IP6=$(ip6_ep "vm$k")
ENV
  agent_toml "vm$k" "tcp://$(ip4_server):$RIG_BUS_PORT" "$(ep_state "vm$k")" \
    "$(ep_files "vm$k")" >"$x/etc/parry/agent.toml"
  install -m 600 "$RIG_TMP/enroll-token" "$x/etc/parry/enroll-token"
  cp "$RIG_TMP"/iocs/ioc-?? "$x/opt/iocs/"
  chmod 755 "$x"/opt/iocs/*
  # The kernel unpacks concatenated cpio archives in order: ours after the base one.
  cp "$boot/initrd.img" "$d/initrd.img"
  (cd "$x" && find . | LC_ALL=C sort | cpio --create --format=newc --quiet \
    --owner=0:0) >>"$d/initrd.img"
  truncate -s 64M "$d/disk.img"
  mkfs.ext4 -q -F -L parry-state "$d/disk.img"
  sw=$(ns_switch)
  tap=$(vm_tap "$k")
  ip -n "$sw" tuntap add dev "$tap" mode tap
  ip -n "$sw" link set "$tap" master br0 up
  ip netns exec "$sw" qemu-system-x86_64 -name "parry-rig-$RIG_ID-vm$k" \
    -accel tcg -cpu max -m 384 -smp 1 -nodefaults -no-user-config -display none \
    -kernel "$boot/vmlinuz" -initrd "$d/initrd.img" \
    -append "console=ttyS0 panic=-1 quiet" \
    -serial "file:$d/console.log" \
    -chardev "socket,id=ctl,path=$d/console.sock,server=on,wait=off" -serial chardev:ctl \
    -monitor "unix:$d/monitor.sock,server=on,wait=off" \
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:$(printf %02x "$k")" \
    -drive "file=$d/disk.img,format=raw,if=virtio" \
    -device virtio-rng-pci \
    >"$d/qemu.log" 2>&1 </dev/null &
  echo $! >"$d/qemu.pid"
  disown $!
}

# vm_reset K: a hard reset of VM K (qemu's monitor), as a power cut and power on would
# do: its memory is gone, its disk stays. Returns at once; the VM boots again.
vm_reset() {
  "$RIG_PY" "$RIG_ROOT/vm/console.py" "$(vm_dir "$1")/monitor.sock" reset ||
    die "vm$1: qemu's monitor did not take the reset"
}
