#!/usr/bin/env bash
# The web console's browser tests (CTest: browser_console). Starts parryd on free
# loopback ports with the console from web/, three users (one per role) and four
# simulated endpoints whose scenarios include hostile names, then runs the tests in
# this directory with node's test runner, driving Debian's Chromium through
# playwright-core (installed here by scripts/test.sh: `npm ci`).
#
# Usage: run.sh BIN_DIR   (the directory of parryd and parry-agent)
# PARRY_SCREENSHOTS=DIR also writes the console's main views as PNG files to DIR.
set -euo pipefail
bin=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

if [ ! -x /usr/bin/chromium ] || [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "browser tests need /usr/bin/chromium and $here/node_modules (scripts/test.sh installs both)" >&2
  exit 1
fi

work=$(mktemp -d /tmp/parry-browser.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export PARRY_ADMIN_PASSWORD="admin-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PARRY_ADMIN_PASSWORD=$PARRY_ADMIN_PASSWORD "$bin/parryd" --data-dir "$work/data" \
  --http-port 0 --metrics-port 0 --bus 'tcp://127.0.0.1:*' --bus-curve false \
  --web-dir "$src/web" \
  >"$work/parryd.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  grep -q '^parryd ready' "$work/parryd.out" && break
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q '^parryd ready' "$work/parryd.out"; then
  cat "$work/parryd.out" >&2
  echo "parryd did not become ready" >&2
  exit 1
fi
url=$(sed -n 's|^  REST   \(https://.*\)/api/v1$|\1|p' "$work/parryd.out")
bus=$(sed -n 's|^  bus    ||p' "$work/parryd.out")
ca=$work/data/tls/cert.pem

# One user per role besides the administrator, made over the REST API.
jar=$work/cookies
csrf=$(curl -sS --cacert "$ca" -c "$jar" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PARRY_ADMIN_PASSWORD\"}" \
  "$url/api/v1/login" | jq -r .csrf_token)
export PARRY_OFFICER_PASSWORD="officer-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export PARRY_OPERATOR_PASSWORD="operator-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
for u in "sofia security_officer $PARRY_OFFICER_PASSWORD" "olga operator $PARRY_OPERATOR_PASSWORD"; do
  set -- $u
  curl -sS --fail --cacert "$ca" -b "$jar" -H 'Content-Type: application/json' \
    -H "X-CSRF-Token: $csrf" -d "{\"username\":\"$1\",\"role\":\"$2\",\"password\":\"$3\"}" \
    "$url/api/v1/users" >/dev/null
done

mkdir "$work/scenarios"
cp "$src"/config/scenarios/*.toml "$here"/scenarios/*.toml "$work/scenarios/"
"$bin/parry-agent" --sim 4 --plain --server "$bus" --scenarios "$work/scenarios" \
  --seed 7 --incident-interval-ms 1500 --incidents 8 --state-dir "$work/agents" \
  >"$work/agent.out" 2>&1 &
pids+=($!)

export PARRY_URL=$url
status=0
node --test --test-reporter=spec --test-concurrency=1 "$here"/*.test.mjs || status=$?
if [ $status -ne 0 ]; then
  echo "--- parryd log (last 40 lines)" >&2
  tail -n 40 "$work/parryd.out" >&2
fi
exit $status
