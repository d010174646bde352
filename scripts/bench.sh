#!/usr/bin/env bash
# make bench: the release plugins next to Debian's ptp + host-local, run by the driver in
# bench/ (its own crate and lock file, so `make test` never builds it). Writes
# bench/results.md and bench/latency.png and prints `ratio add_p50=.. del_p50=..
# burst_add_p50=..` last. N=200 make bench for more single cycles, P=50 for a larger burst;
# BURST_ROUNDS, SCALE_ADDS and SCALE_WORKERS size the other runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

"$ROOT/scripts/install-deps.sh"
require_root
require_cargo
build_release_plugins calico calico-ipam
(cd "$ROOT/bench" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked)

# The driver cleans up after itself, on Ctrl-C too: exec, so the signal reaches it directly.
exec "$TARGET_DIR/release/calico-bench" --bin "$RELEASE_DIR" --out "$ROOT/bench"
