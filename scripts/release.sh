#!/usr/bin/env bash
# make release (and make install when a binary is missing or stale): the release binaries of
# calico, calico-ipam and calico-k8s, linked statically, in target/<host triple>/release.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_cargo
build_release_plugins calico calico-ipam calico-k8s
