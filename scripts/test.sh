#!/usr/bin/env bash
# make test: every test of the workspace, the root-only integration tests included.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

"$ROOT/scripts/install-deps.sh"
require_root
require_cargo
cd "$ROOT"
# The integration tests run the built binaries: build them first, with the crash points the
# crash-safety tests need (release builds never have them). The same features go to cargo test
# so that it does not rebuild the binaries without them.
FEATURES=calico/crash-points
# The plugins' lock files go to a directory of this run's own (tests/src/plugin.rs passes it on
# to every plugin run), so that the node IPAM locks and ADD slots the tests' many node names
# leave (kept by design) do not pile up in the host's /run/calico/cni.
CALICO_CNI_LOCK_DIR="$(mktemp -d /tmp/calico-test-locks.XXXXXX)"
export CALICO_CNI_LOCK_DIR
trap 'rm -rf "$CALICO_CNI_LOCK_DIR"' EXIT
# The tests run the plugins linked as the release ones are (lib.sh, use_static_target), in
# target/<host triple>/debug, which tests/src/plugin.rs finds through CARGO_BUILD_TARGET.
use_static_target
cargo build --workspace --locked --features "$FEATURES"
# --no-fail-fast: report the failures of every test binary, not only the first one.
cargo test --workspace --locked --no-fail-fast --features "$FEATURES" -- --include-ignored
# The same integration tests with calico executing calico-ipam instead of running Calico IPAM
# in its own process: both paths must keep every behaviour (tests/src/plugin.rs passes the
# variable on to every plugin run).
CALICO_IPAM_EXEC=1 cargo test -p tests --locked --no-fail-fast -- --include-ignored
