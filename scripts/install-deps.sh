#!/usr/bin/env bash
# Installs the Debian 12 packages Parry needs to build, run and test. Idempotent:
# a second run installs nothing and takes a second.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libcaf-dev cppzmq-dev libzmq3-dev libmsgpack-cxx-dev
  libssl-dev libboost-dev libboost-test-dev libsqlite3-dev
  nlohmann-json3-dev libtomlplusplus-dev libspdlog-dev libcli11-dev
  libnftables-dev nftables iproute2 util-linux procps jq openssl curl
  clang-format clang-14 libclang-rt-14-dev python3
  python3-zmq python3-msgpack
  libsystemd-dev prometheus-cpp-dev # readiness under systemd; Prometheus metrics
  python3-yaml python3-jsonschema   # the OpenAPI check (tests/openapi)
  lintian file adduser              # the Debian packages: check, shlibdeps, postinst
  chromium # the web console's browser tests (tests/browser)
  # The rig's VM endpoint (rig/vm): qemu (TCG), Debian's kernel and modules, busybox
  # for its initramfs, cpio to pack it, mkfs.ext4 for its state disk.
  qemu-system-x86 linux-image-amd64 busybox-static cpio e2fsprogs kmod
)
# Node.js and npm run the browser tests; a machine that has them from elsewhere keeps
# them.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
