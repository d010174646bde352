#!/usr/bin/env bash
# make fuzz: runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS each (default 60).
#
#   FUZZ_SECONDS=300 make fuzz              longer runs
#   FUZZ_TARGETS="netconf cni_args" make fuzz   some targets only
#   FUZZ_SANITIZER=address make fuzz        with AddressSanitizer (default none: common has no
#                                           unsafe code, and uninstrumented runs are faster)
#
# cargo-fuzz needs a nightly toolchain; both are installed when missing. The corpus grows in
# fuzz/corpus/<target> (not committed), seeded from fuzz/seeds/<target> and, for the config
# parser, the example and test configs. A crash stops the run and leaves the input in
# fuzz/artifacts/<target>/; `cargo +nightly fuzz run <target> <file>` replays it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_cargo
command -v rustup >/dev/null || die "rustup not found: cargo-fuzz needs a nightly toolchain"
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

SECONDS_EACH=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-none}
cd "$ROOT/fuzz"
TARGETS=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
# Sixteen codegen units: the instrumented build of common's dependencies (kube, etcd-client)
# takes minutes with one.
BUILD=(-s "$SANITIZER" --codegen-units 16)
cargo +nightly fuzz build "${BUILD[@]}"
for target in $TARGETS; do
    seeds=("seeds/$target")
    if [ "$target" = netconf ]; then
        seeds+=("$ROOT/conf-examples" "$ROOT/tests/fixtures")
    fi
    mkdir -p "corpus/$target"
    echo "== $target: ${SECONDS_EACH}s"
    cargo +nightly fuzz run "${BUILD[@]}" "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1
done
