#!/usr/bin/env bash
# Builds Parry and runs the main job: parryd with its embedded SQLite store in
# ./parry-data, and 20 simulated endpoints connected to it. Ctrl-C stops both.
#
# Environment: PARRY_ADMIN_PASSWORD (first start only; otherwise one is generated and
# printed once), PARRY_HTTP_PORT (default 8443), PARRY_BUS_ENDPOINT (default
# tcp://127.0.0.1:7400), PARRY_SIM_ENDPOINTS (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh

data_dir=${PARRY_DATA_DIR:-$PWD/parry-data}
bus=${PARRY_BUS_ENDPOINT:-tcp://127.0.0.1:7400}
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
./build/parryd --data-dir "$data_dir" --bus "$bus" --http-port "$port" >>"$log" 2>&1 &
pids+=($!)
# Wait (bounded) for the server to say it is ready.
for _ in $(seq 1 300); do
  grep -q '^parryd ready' "$log" && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$log"; echo "parryd failed to start" >&2; exit 1; }
  sleep 0.1
done
grep -q '^parryd ready' "$log" || { cat "$log"; echo "parryd did not become ready" >&2; exit 1; }

./build/parry-agent --sim "$endpoints" --server "$bus" --scenarios config/scenarios \
  --incident-interval-ms 20000 >"$data_dir/agent.out" 2>&1 &
pids+=($!)

sed -n '/^parryd ready/,$p' "$log" | grep -v '^\[' || true
cat <<MSG

$endpoints simulated endpoints are connecting; their incidents arrive within seconds.
Log in and look around (the CA file makes TLS verification work):

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
