#!/usr/bin/env bash
# Installs the built parry-server and parry-agent packages into a throwaway root,
# checks what their maintainer scripts did, runs parryd from the installed tree with
# the packaged /etc/parry/parryd.toml, then removes and purges them and checks that
# the data directories and the parry user are gone.
#
#   bash tests/package/test_package.sh BUILD_DIR     # as root; ctest -L package
#
# BUILD_DIR holds the .deb files of `cmake --build BUILD_DIR --target package`.
#
#   host (never written)                 namespaces of this test: mount, pid, net
#   --------------------                 --------------------------------------------
#   /  ─────────── lower layer ────────► $root = overlay(/ + upper on a tmpfs)
#   BUILD_DIR/*.deb ── copied ─────────► $root/tmp ─► chroot $root dpkg -i/-r/--purge
#                                        $root/proc (this pid ns), /dev, /sys bound,
#                                        /run and /tmp empty tmpfs (no systemd here)
#                                        lo only: parryd (user parry) on 127.0.0.1
#   curl --cacert $root/var/lib/parry/tls/cert.pem ──► https://127.0.0.1:$http_port
#
# Why an overlay of the host's own root: dpkg and the maintainer scripts (adduser,
# deb-systemd-helper, chown) run for real, as root, in a root of their own, and the
# packages' Depends (computed by dpkg-shlibdeps) must be met by Debian packages
# installed there, which the host that built them has. Nothing is downloaded or
# unpacked to make the root (debootstrap would need the network and minutes), and
# every write (dpkg database, /etc/passwd, /var/lib/parry) goes to the tmpfs, which
# is gone with the mount namespace. The pid namespace ends parryd with the test;
# the network namespace has a loopback nobody else uses, so fixed ports are free.
# shellcheck disable=SC2016 # dpkg-query's ${Field} formats are meant literally
set -euo pipefail

usage() {
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
}
fail() {
  echo "test_package: FAIL: $*" >&2
  exit 1
}

# -- outside: find the packages, then enter the namespaces -------------------------

if [ "${1:-}" != --inside ]; then
  [ $# -eq 1 ] || usage
  build=$(cd "$1" && pwd)
  if [ "$(id -u)" -ne 0 ]; then
    echo "test_package: skipped: needs root (namespaces, chroot, dpkg)" >&2
    exit 77
  fi
  version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' \
    "$build/CPackConfig.cmake" 2>/dev/null || true)
  [ -n "$version" ] || fail "no CPackConfig.cmake in $build: configure it with CMake"
  arch=$(dpkg --print-architecture)
  server_deb=$build/parry-server_${version}_${arch}.deb
  agent_deb=$build/parry-agent_${version}_${arch}.deb
  for deb in "$server_deb" "$agent_deb"; do
    [ -f "$deb" ] || fail "$deb is missing: run cmake --build $build --target package"
  done
  # A package older than the programs would test yesterday's build.
  for prog in parryd parryctl parry-agent; do
    for deb in "$server_deb" "$agent_deb"; do
      [ ! "$build/$prog" -nt "$deb" ] ||
        fail "$deb is older than $build/$prog: run cmake --build $build --target package"
    done
  done
  for tool in unshare chroot mount ip curl lintian; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
  done
  # Lintian clean: no error and no warning beyond the overrides the packages carry
  # (packaging/lintian-overrides, each with its reason).
  lintian --fail-on error,warning --no-tag-display-limit "$server_deb" "$agent_deb" >&2 ||
    fail "lintian reports errors or warnings (above)"
  work=$(mktemp -d /tmp/parry-pkg.XXXXXX)
  trap 'rmdir "$work" 2>/dev/null || true' EXIT
  status=0
  unshare --mount --pid --net --fork --kill-child \
    bash "$0" --inside "$work" "$server_deb" "$agent_deb" || status=$?
  exit $status
fi

# -- inside the namespaces ----------------------------------------------------------

work=$2
server_deb=$3
agent_deb=$4
started=$SECONDS
trap 'echo "test_package: FAIL: command failed at line $LINENO" >&2' ERR

# Everything below lives on this tmpfs, in this mount namespace only.
mount -t tmpfs -o mode=0700 parry-pkg "$work"
mkdir "$work/upper" "$work/overlay-work" "$work/root"
root=$work/root
mount -t overlay parry-pkg-root \
  -o "lowerdir=/,upperdir=$work/upper,workdir=$work/overlay-work" "$root" ||
  fail "cannot mount an overlay of / (overlayfs needed)"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount -t tmpfs -o mode=0755 run "$root/run"
mount -t tmpfs -o mode=1777 tmp "$root/tmp"
ip link set lo up

# Commands in the root, with the clean environment dpkg has under apt.
in_root() {
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"
}
# check "what" "expected" "actual"
check() {
  [ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
  echo "ok: $1: $3"
}
stat_of() { in_root stat -c '%a %U %G' "$1"; }
absent() { [ ! -e "$1" ] && [ ! -L "$1" ]; }
installed() { in_root dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true; }

# The root starts as the host is: a host with Parry installed, or a parry user, would
# hide what the maintainer scripts do. Remove them here (in the overlay only).
for pkg in parry-agent parry-server; do
  st=$(installed "$pkg")
  if [ -n "$st" ] && [ "$st" != "unknown ok not-installed" ]; then
    echo "note: the host has $pkg; purging it in the test root only"
    in_root dpkg --purge "$pkg" >/dev/null
  fi
done
if in_root getent passwd parry >/dev/null; then
  echo "note: the host has a user parry; removing it in the test root only"
  in_root userdel parry
fi
if in_root getent group parry >/dev/null; then in_root groupdel parry; fi
rm -rf "$root/var/lib/parry" "$root/var/lib/parry-agent" "$root/etc/parry"
[ ! -e "$root/run/systemd/system" ] || fail "/run/systemd/system in the test root"

# -- install --------------------------------------------------------------------------

cp "$server_deb" "$agent_deb" "$root/tmp/"
in_root dpkg -i "/tmp/${server_deb##*/}" "/tmp/${agent_deb##*/}" ||
  fail "dpkg -i failed (missing dependencies? the packages' Depends must be installed)"
check "parry-server status" "install ok installed" "$(installed parry-server)"
check "parry-agent status" "install ok installed" "$(installed parry-agent)"

# The user and group the postinst made.
IFS=: read -r _ _ uid gid _ home shell < <(in_root getent passwd parry) ||
  fail "postinst made no user parry"
[ "$uid" -lt 1000 ] || fail "user parry has uid $uid: not a system user"
check "user parry's home" /var/lib/parry "$home"
check "user parry's shell" /usr/sbin/nologin "$shell"
check "user parry's group" parry "$(in_root getent group "$gid" | cut -d: -f1)"

# Files, modes and owners.
check "data dir /var/lib/parry" "700 parry parry" "$(stat_of /var/lib/parry)"
check "agent state dir /var/lib/parry-agent" "700 root root" \
  "$(stat_of /var/lib/parry-agent)"
check "/etc/parry/parryd.toml" "640 root parry" "$(stat_of /etc/parry/parryd.toml)"
check "/etc/parry/agent.toml" "644 root root" "$(stat_of /etc/parry/agent.toml)"
for f in /usr/sbin/parryd /usr/bin/parryctl /usr/sbin/parry-agent; do
  check "$f" "755 root root" "$(stat_of "$f")"
done
for f in /usr/share/parry/web/index.html /lib/systemd/system/parryd.service \
  /lib/systemd/system/parry-agent.service /usr/share/doc/parry-server/copyright \
  /usr/share/doc/parry-agent/copyright; do
  [ -f "$root$f" ] || fail "$f is not installed"
done

# Both configuration files are conffiles, as shipped (md5sum unchanged).
for pair in parry-server:/etc/parry/parryd.toml parry-agent:/etc/parry/agent.toml; do
  pkg=${pair%%:*}
  file=${pair#*:}
  conffiles=$(in_root dpkg-query -W -f='${Conffiles}' "$pkg")
  sum=$(in_root md5sum "$file" | cut -d' ' -f1)
  grep -qx " $file $sum" <<<"$conffiles" ||
    fail "$pkg does not register $file ($sum) as a conffile: '$conffiles'"
  echo "ok: $file is a conffile of $pkg"
done

# The packaged paths are set in the file, not left to the build's defaults.
grep -qx 'data_dir = "/var/lib/parry"' "$root/etc/parry/parryd.toml" ||
  fail "parryd.toml does not set data_dir = \"/var/lib/parry\""
grep -qx 'web_dir = "/usr/share/parry/web"' "$root/etc/parry/parryd.toml" ||
  fail "parryd.toml does not set web_dir = \"/usr/share/parry/web\""

# deb-systemd-helper enabled parryd (a link, though systemd does not run here) and
# left the agent disabled until it is configured and enrolled.
wants=$root/etc/systemd/system/multi-user.target.wants
check "parryd.service enabled" /lib/systemd/system/parryd.service \
  "$(readlink "$wants/parryd.service" || true)"
absent "$wants/parry-agent.service" || fail "parry-agent.service was enabled at installation"
in_root parry-agent --help >/dev/null || fail "the installed parry-agent does not run"
in_root parryctl --help >/dev/null || fail "the installed parryctl does not run"

# -- parryd from the installed tree ----------------------------------------------------

# As the unit runs it: user parry, the packaged configuration; only the listening
# ports are overridden, each through its PARRY_* variable: http_port, metrics_port
# (when parryd has it) and the port of every tcp:// endpoint the configuration
# names, each on its own address (all loopback by default). The ports are below
# 32768, the kernel's ephemeral range, on a loopback nobody else uses.
http_port=18443
overrides=("PARRY_HTTP_PORT=$http_port")
effective=$(in_root parryd --config /etc/parry/parryd.toml --print-config)
if grep -q '^metrics_port = ' <<<"$effective"; then
  overrides+=(PARRY_METRICS_PORT=18444)
fi
port=17400
while read -r key address; do
  overrides+=("PARRY_${key^^}=tcp://$address:$port")
  port=$((port + 1))
done < <(sed -n 's/^\([a-z_]*endpoint\) = "tcp:\/\/\(.*\):[0-9*]*".*/\1 \2/p' \
  <<<"$effective")
echo "parryd's ports: ${overrides[*]}"
chroot --userspec=parry:parry "$root" /usr/bin/env -i \
  PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/parry "${overrides[@]}" \
  /usr/sbin/parryd --config /etc/parry/parryd.toml \
  >"$work/parryd.out" 2>"$work/parryd.err" &
parryd=$!
show_parryd() {
  echo "--- parryd stdout:" >&2
  cat "$work/parryd.out" >&2 || true
  echo "--- parryd stderr (last 30 lines):" >&2
  tail -n 30 "$work/parryd.err" >&2 || true
}
for _ in $(seq 600); do # at most 60 s
  grep -q '^parryd ready$' "$work/parryd.out" && break
  kill -0 "$parryd" 2>/dev/null || {
    show_parryd
    fail "parryd exited before it was ready"
  }
  sleep 0.1
done
grep -q '^parryd ready$' "$work/parryd.out" || {
  show_parryd
  fail "parryd not ready within 60 s"
}
echo "ok: parryd ready as user parry with /etc/parry/parryd.toml"
grep -q "^  console https://127.0.0.1:$http_port/$" "$work/parryd.out" || {
  show_parryd
  fail "parryd serves no console from /usr/share/parry/web"
}

cert=$root/var/lib/parry/tls/cert.pem
code=$(curl -sS --max-time 10 --cacert "$cert" -o "$work/health.json" \
  -w '%{http_code}' "https://127.0.0.1:$http_port/api/v1/health") || {
  show_parryd
  fail "GET /api/v1/health failed"
}
check "GET https://127.0.0.1:$http_port/api/v1/health" 200 "$code"
code=$(curl -sS --max-time 10 --cacert "$cert" -o "$work/index.html" \
  -w '%{http_code}' "https://127.0.0.1:$http_port/")
check "GET / (the packaged console)" 200 "$code"
cmp -s "$work/index.html" "$root/usr/share/parry/web/index.html" ||
  fail "GET / is not /usr/share/parry/web/index.html"
check "TLS key made by parryd" "600 parry parry" \
  "$(stat_of /var/lib/parry/tls/key.pem)"
check "database made by parryd" "600 parry parry" "$(stat_of /var/lib/parry/parry.db)"

kill -TERM "$parryd"
for _ in $(seq 300); do # at most 30 s
  kill -0 "$parryd" 2>/dev/null || break
  sleep 0.1
done
! kill -0 "$parryd" 2>/dev/null || fail "parryd still runs 30 s after SIGTERM"
status=0
wait "$parryd" || status=$?
check "parryd's exit status after SIGTERM" 0 "$status"

# -- remove, then purge ---------------------------------------------------------------

in_root dpkg --remove parry-server parry-agent >/dev/null
in_root getent passwd parry >/dev/null || fail "remove (not purge) deleted user parry"
[ -f "$root/var/lib/parry/parry.db" ] || fail "remove (not purge) deleted the database"
[ -f "$root/etc/parry/parryd.toml" ] || fail "remove (not purge) deleted the conffile"
[ ! -e "$root/usr/sbin/parryd" ] || fail "remove left /usr/sbin/parryd"
echo "ok: remove keeps the user, the data and the configuration"

in_root dpkg --purge parry-server parry-agent >/dev/null
! in_root getent passwd parry >/dev/null || fail "purge left user parry"
! in_root getent group parry >/dev/null || fail "purge left group parry"
for path in /var/lib/parry /var/lib/parry-agent /etc/parry \
  /etc/systemd/system/multi-user.target.wants/parryd.service \
  /etc/systemd/system/parryd.service /etc/systemd/system/parry-agent.service; do
  absent "$root$path" || fail "purge left $path"
done
for pkg in parry-server parry-agent; do
  case $(installed "$pkg") in
  "" | "unknown ok not-installed") ;;
  *) fail "$pkg after purge: $(installed "$pkg")" ;;
  esac
done
echo "ok: purge removed the user, the group, /var/lib/parry, /var/lib/parry-agent" \
  "and /etc/parry"
echo "test_package: passed in $((SECONDS - started)) s"
