# Shared by demo.sh, bench.sh, release.sh and test.sh (sourced, not run).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# rustup installs cargo into ~/.cargo/bin, which is not on PATH under sudo or in CI.
export PATH="$PATH:${HOME:-/root}/.cargo/bin:/root/.cargo/bin"

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

require_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, veths, routes)"
}

require_cargo() {
    command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
}

# The plugins are linked statically (glibc's static-pie): a run then opens no shared library
# and the dynamic loader relocates and binds nothing, 0.6-0.8 ms of every ADD, CHECK and DEL on
# the 2-core machine (README "Install"). cargo passes a target's rustflags to that target's
# artifacts only when the target is named, so the proc macros and build scripts the host loads
# and runs are built as usual. use_static_target sets that up for the cargo commands that
# follow; they put what they build in $TARGET_DIR/<host triple>/<profile>.
use_static_target() {
    local triple
    triple=$(host_triple)
    export CARGO_BUILD_TARGET="$triple"
    export "CARGO_TARGET_$(echo "$triple" | tr 'a-z.-' 'A-Z__')_RUSTFLAGS=-C target-feature=+crt-static"
}

host_triple() {
    local triple
    triple=$(rustc -vV | sed -n 's/^host: //p')
    [ -n "$triple" ] || die "rustc -vV names no host target"
    echo "$triple"
}

# build_release_plugins PACKAGE...: the release binaries of these packages, linked statically,
# in $RELEASE_DIR (which it sets).
build_release_plugins() {
    local args=() package
    for package in "$@"; do
        args+=(-p "$package")
    done
    (
        cd "$ROOT"
        use_static_target
        cargo build --release --locked "${args[@]}"
    )
    RELEASE_DIR="$TARGET_DIR/$(host_triple)/release"
}

# A loopback TCP port nobody listens on, away from etcd's default 2379/2380.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 20000))
        if ! ss -Hltn "sport = :$port" | grep -q .; then
            echo "$port"
            return
        fi
    done
}

# start_etcd DIR: runs etcd with its data in DIR on free loopback ports and waits until it
# is healthy. Sets ETCD_PID and ETCD_ENDPOINT.
start_etcd() {
    local dir=$1 client peer i
    client=$(free_port)
    peer=$(free_port)
    ETCD_ENDPOINT="http://127.0.0.1:$client"
    etcd --name demo --data-dir "$dir/etcd" \
        --listen-client-urls "$ETCD_ENDPOINT" --advertise-client-urls "$ETCD_ENDPOINT" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "demo=http://127.0.0.1:$peer" \
        --heartbeat-interval=10 --election-timeout=100 --logger=zap --log-level=error \
        >"$dir/etcd.log" 2>&1 &
    ETCD_PID=$!
    for i in $(seq 1 500); do
        if ETCDCTL_API=3 etcdctl --endpoints="$ETCD_ENDPOINT" endpoint health >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$ETCD_PID" 2>/dev/null || break
        sleep 0.02
    done
    cat "$dir/etcd.log" >&2
    die "etcd did not become healthy"
}

# stop_etcd: stops the etcd start_etcd started, if any.
stop_etcd() {
    if [ -n "${ETCD_PID:-}" ]; then
        kill "$ETCD_PID" 2>/dev/null || true
        wait "$ETCD_PID" 2>/dev/null || true
    fi
}

# example_conf FILE ETCD_ENDPOINT DATA_DIR: a conf example pointed at a throwaway etcd and
# host-local data dir, on stdout.
example_conf() {
    sed -e "s#http://127.0.0.1:2379#$2#" -e "s#\"/var/lib/cni/networks\"#\"$3\"#" "$1"
}
