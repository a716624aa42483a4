# shellcheck shell=bash
# The rig's vocabulary, sourced by parry-rig and by every scenario (rig/scenarios/*.sh).
# Topology and names: see the drawing at the top of rig/parry-rig and docs/rig.md.
#
# A rig is identified by the PID of the parry-rig that made it (RIG_ID). Everything it
# owns carries that number: namespaces `prs-ID`, `psw-ID`, `pepN-ID`, `ppeer-ID`, and
# the directory /tmp/parry-rig-ID/ (RIG_TMP), which also holds `env`, the variables a
# scenario (or a person) needs to use the rig:
#
#   source /tmp/parry-rig-ID/env; source rig/lib.sh; ctl devices
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
ip4_ep() { echo "10.77.0.$((10 + $1))"; }
ip6_ep() { echo "fd77::$((10 + $1))"; }
ip4_peer() { echo 10.77.0.100; }
ip6_peer() { echo fd77::100; }
ep_dir() { echo "$RIG_TMP/ep$1"; }
ep_files() { echo "$RIG_TMP/ep$1/files"; }   # the endpoint's private tmpfs
ep_state() { echo "$RIG_TMP/ep$1/state"; }
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

# ep_exec N CMD...: runs CMD inside endpoint N (its network, mount, PID and UTS
# namespaces), as a child of the holder's PID namespace.
ep_exec() {
  local n=$1; shift
  nsenter --target "$(holder_pid "$n")" --net --mount --pid --uts -- "$@"
}

# ep_spawn N LOG CMD...: starts CMD in the background inside endpoint N, output to
# LOG; prints the host pid of the nsenter that waits for it.
ep_spawn() {
  local n=$1 log=$2; shift 2
  nsenter --target "$(holder_pid "$n")" --net --mount --pid --uts -- "$@" \
    >>"$log" 2>&1 </dev/null &
  echo $!
  disown $! # killing it later is expected: no "Killed" notice
}

# ep_sh N SCRIPT: a shell script inside endpoint N.
ep_sh() { local n=$1; shift; ep_exec "$n" /bin/sh -c "$1"; }

# The endpoint's view of its own processes (its PID namespace, its /proc).
ep_proc_alive() { ep_exec "$1" test -e "/proc/$2"; }
ep_proc_gone() { ! ep_exec "$1" test -e "/proc/$2"; }
ep_file_exists() { ep_exec "$1" test -e "$2"; }
ep_file_gone() { ! ep_exec "$1" test -e "$2"; }
ep_sha256() { ep_exec "$1" sha256sum "$2" | awk '{print $1}'; }

# agent_config N [SERVER_ENDPOINT]: writes endpoint N's agent configuration; prints
# its path. With a server endpoint other than parryd's (the relay), a second file.
agent_config() {
  local n=$1 server=${2:-tcp://$(ip4_server):$RIG_BUS_PORT} file d iocs
  d=$(ep_dir "$n")
  file=$d/agent.toml
  [ "$server" = "tcp://$(ip4_server):$RIG_BUS_PORT" ] || file=$d/agent-alt.toml
  iocs=$(awk '{printf "%s\"%s\"", (NR > 1 ? ", " : ""), $1}' "$RIG_TMP/iocs/sha256")
  cat >"$file" <<TOML
# parry-rig: endpoint ep$n (rig $RIG_ID)
device_id = "ep$n"
server = "$server"
enroll_server = "tcp://$(ip4_server):$RIG_ENROLL_PORT"
state_dir = "$(ep_state "$n")"
file_roots = ["$(ep_files "$n")"]
guard_mounts = ["$(ep_files "$n")"]
iocs = [$iocs]
start_timeout_ms = 5000

[isolation]
lease_seconds = 0
dead_man = true
dead_man_seconds = $RIG_DEAD_MAN_SECONDS
exceptions = []
TOML
  echo "$file"
}

agent_pid() { cat "$(ep_dir "$1")/agent.pid" 2>/dev/null; }
agent_running() { local p; p=$(agent_pid "$1") && alive "$p"; }

# agent_start N [CONFIG]: parry-agent --real inside endpoint N (not as its PID 1, so
# it can be killed and started again in the same namespaces); enrolls with the rig's
# token the first time. Returns once the agent process runs (see device_online).
agent_start() {
  local n=$1 cfg=${2:-} d waiter pid
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
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  wait_for 15 gone "$pid" || { kill -KILL "$pid" 2>/dev/null || true; wait_for 5 gone "$pid"; }
}

# agent_connected_since N LINE: the agent's log shows a bus connection after LINE
# (a line count taken before agent_start).
agent_log_lines() { wc -l <"$(ep_dir "$1")/agent.log"; }
agent_connected_since() {
  tail -n +"$(($2 + 1))" "$(ep_dir "$1")/agent.log" | grep -q 'connected to'
}

device_field() { ctl device "ep$1" --json 2>/dev/null | jq -r ".device.$2"; }
device_online() { [ "$(device_field "$1" online)" = true ]; }
device_offline() { [ "$(device_field "$1" online)" = false ]; }

# -- reachability (verified from outside the agent) ----------------------------------

# can_ping NS ADDR / can_connect NS ADDR PORT: one probe from namespace NS, 1 s.
can_ping() { ip netns exec "$1" "$RIG_PY" "$RIG_ROOT/net.py" ping "$2" 1; }
can_connect() { ip netns exec "$1" "$RIG_PY" "$RIG_ROOT/net.py" connect "$2" "$3" 1; }

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
  e=$(ns_ep "$n")
  can_ping "$p" "$(ip4_ep "$n")" & pids+=($!)
  can_ping "$p" "$(ip6_ep "$n")" & pids+=($!)
  can_connect "$p" "$(ip4_ep "$n")" $RIG_LISTEN_PORT & pids+=($!)
  can_connect "$p" "$(ip6_ep "$n")" $RIG_LISTEN_PORT & pids+=($!)
  can_ping "$e" "$(ip4_peer)" & pids+=($!)
  can_ping "$e" "$(ip6_peer)" & pids+=($!)
  can_connect "$e" "$(ip4_peer)" $RIG_LISTEN_PORT & pids+=($!)
  can_connect "$e" "$(ip6_peer)" $RIG_LISTEN_PORT & pids+=($!)
  for q in "${pids[@]}"; do wait "$q" && reached=1; done
  [ "$reached" = 0 ]
}
ep_reaches_bus() { can_connect "$(ns_ep "$1")" "$(ip4_server)" $RIG_BUS_PORT; }
isolation_table_present() {
  ip netns exec "$(ns_ep "$1")" nft list table inet parry_isolation >/dev/null 2>&1
}

# -- IOC files and incidents ----------------------------------------------------------

# ioc_drop N NAME: copies the next unused IOC file (a copy of /bin/sleep with unique
# bytes appended; its SHA-256 is on every agent's IOC list) into endpoint N's tmpfs as
# NAME; prints its path there. $RIG_TMP/iocs/NAME.src names the source.
ioc_drop() {
  local n=$1 name=$2 idx src dst
  idx=$(($(cat "$RIG_TMP/iocs/next") + 1))
  src=$(printf '%s/iocs/ioc-%02d' "$RIG_TMP" "$idx")
  [ -f "$src" ] || die "no IOC file left ($src)"
  echo "$idx" >"$RIG_TMP/iocs/next"
  echo "$src" >"$RIG_TMP/iocs/$name.src"
  dst=$(ep_files "$n")/$name
  ep_exec "$n" cp "$src" "$dst"
  ep_exec "$n" chmod 755 "$dst"
  echo "$dst"
}
ioc_marker() { cat "$(cat "$RIG_TMP/iocs/$1.src").marker"; }
ioc_sha256() { sha256sum "$(cat "$RIG_TMP/iocs/$1.src")" | awk '{print $1}'; }

# find_event N TYPE PATH: the first incident of device epN holding an event of TYPE
# whose file path or process image is PATH; prints "INCIDENT EVENT PID" (PID empty for
# events without a process). Fails when there is none (yet).
find_event() {
  local n=$1 type=$2 path=$3 inc found
  for inc in $(ctl incidents --device "ep$n" --limit 100 --json 2>/dev/null |
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
    fail "no incident with a $2 event for $3 on ep$1"
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
