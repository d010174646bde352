#!/usr/bin/env bash
# Installs the Debian packages that building, testing, the demo and the benchmark need.
# Idempotent: does nothing when every package is present, otherwise runs `apt-get update`
# once and installs only what is missing.
set -euo pipefail

# nftables: the local policy tests read the ruleset back with `nft` (the plugins never run it).
PACKAGES=(etcd-server etcd-client protobuf-compiler containernetworking-plugins iproute2 iputils-ping
    nftables
    # The text of the benchmark's plot (bench/latency.png), drawn without fontconfig.
    fonts-dejavu-core)
# The container runtimes of tests/tests/runtime_podman.rs and runtime_containerd.rs, installed
# without their recommends (buildah, slirp4netns, fuse-overlayfs, ...), which a rootful podman
# on CNI and containerd's CRI do not use.
PACKAGES_NO_RECOMMENDS=(podman containerd runc busybox-static)

is_missing() {
    ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if is_missing "$pkg"; then
        missing+=("$pkg")
    fi
done
missing_no_recommends=()
for pkg in "${PACKAGES_NO_RECOMMENDS[@]}"; do
    if is_missing "$pkg"; then
        missing_no_recommends+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ] && [ "${#missing_no_recommends[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]} ${missing_no_recommends[*]}; run as root to install them" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]} ${missing_no_recommends[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get install -y "${missing[@]}"
fi
if [ "${#missing_no_recommends[@]}" -gt 0 ]; then
    apt-get install -y --no-install-recommends "${missing_no_recommends[@]}"
fi
