#!/usr/bin/env bash
# Installs the Debian packages that building, testing, the demo and the benchmark need.
# Idempotent: does nothing when every package is present, otherwise runs `apt-get update`
# once and installs only what is missing.
set -euo pipefail

PACKAGES=(etcd-server etcd-client protobuf-compiler containernetworking-plugins iproute2 iputils-ping)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y "${missing[@]}"
