#!/usr/bin/env bash
# Builds Parry and runs the main job: parryd with its embedded SQLite store in
# ./parry-data, and 20 simulated endpoints connected to it. Ctrl-C stops both.
#
# The bus is CURVE: the endpoints enroll with a token this script makes as the first
# administrator (on later starts their keys are in $data_dir/agent-state already).
#
# Environment: PARRY_ADMIN_PASSWORD (first start only; otherwise one is generated and
# printed once), PARRY_HTTP_PORT (default 8443), PARRY_BUS_ENDPOINT (default
# tcp://127.0.0.1:7400), PARRY_ENROLL_ENDPOINT (default tcp://127.0.0.1:7401),
# PARRY_SIM_ENDPOINTS (default 20), PARRY_ENROLL_TOKEN (a token to enroll new
# endpoints with, when the administrator's password is not at hand).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh

data_dir=${PARRY_DATA_DIR:-$PWD/parry-data}
bus=${PARRY_BUS_ENDPOINT:-tcp://127.0.0.1:7400}
enroll=${PARRY_ENROLL_ENDPOINT:-tcp://127.0.0.1:7401}
port=${PARRY_HTTP_PORT:-8443}
endpoints=${PARRY_SIM_ENDPOINTS:-20}
mkdir -p "$data_dir"
log=$data_dir/parryd.out

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

: >"$log"
./build/parryd --data-dir "$data_dir" --bus "$bus" --bus-enroll-endpoint "$enroll" \
  --http-port "$port" >>"$log" 2>&1 &
pids+=($!)
# Wait (bounded) for the server to say it is ready.
for _ in $(seq 1 300); do
  grep -q '^parryd ready' "$log" && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$log"; echo "parryd failed to start" >&2; exit 1; }
  sleep 0.1
done
grep -q '^parryd ready' "$log" || { cat "$log"; echo "parryd did not become ready" >&2; exit 1; }

# An enrollment token for endpoints without a key, made with the administrator's
# password when it is known (given, or printed by this first start).
password=${PARRY_ADMIN_PASSWORD:-$(sed -n 's|^  first administrator: admin / \([^ ]*\).*|\1|p' "$log")}
if [ -z "${PARRY_ENROLL_TOKEN:-}" ] && [ -n "$password" ]; then
  creds=$(mktemp)
  export PARRY_SERVER=https://127.0.0.1:$port PARRY_CACERT=$data_dir/tls/cert.pem
  if PARRY_CONFIG=$creds PARRY_PASSWORD=$password ./build/parryctl login --user admin \
    >/dev/null 2>&1; then
    PARRY_ENROLL_TOKEN=$(PARRY_CONFIG=$creds ./build/parryctl enroll create --ttl 10m \
      --uses "$endpoints" 2>/dev/null) || true
    PARRY_CONFIG=$creds ./build/parryctl logout >/dev/null 2>&1 || true
  fi
  rm -f "$creds"
fi
PARRY_ENROLL_TOKEN=${PARRY_ENROLL_TOKEN:-} ./build/parry-agent --sim "$endpoints" \
  --server "$bus" --enroll-server "$enroll" --state-dir "$data_dir/agent-state" \
  --scenarios config/scenarios --incident-interval-ms 20000 >"$data_dir/agent.out" 2>&1 &
pids+=($!)

sed -n '/^parryd ready/,$p' "$log" | grep -v '^\[' || true
cat <<MSG

$endpoints simulated endpoints are connecting; their incidents arrive within seconds.

Open the console in a browser: https://127.0.0.1:$port/  (user admin; the certificate
is self-signed: accept it, or import $data_dir/tls/cert.pem as a trusted CA).

Or from the command line (the CA file makes TLS verification work):

  export PARRY_SERVER=https://127.0.0.1:$port PARRY_CACERT=$data_dir/tls/cert.pem
  ./build/parryctl login --user admin        # password: printed above on first start,
                                             # or \$PARRY_ADMIN_PASSWORD
  ./build/parryctl devices
  ./build/parryctl incidents
  ./build/parryctl incident INCIDENT_ID
  ./build/parryctl isolate --incident INCIDENT_ID --wait
  ./build/parryctl release --incident INCIDENT_ID --wait

Logs: $log, $data_dir/agent.out. Ctrl-C stops the server and the endpoints.
MSG
wait -n "${pids[@]}"
