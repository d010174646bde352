#!/usr/bin/env bash
# make bench: times N ADD/DEL cycles of the release `calico` binary against a local etcd and
# one network namespace. N=100 make bench for more cycles.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

N=${N:-50}
CONF_EXAMPLE=${CONF_EXAMPLE:-$ROOT/conf-examples/20-calico-rkt-host-local.conf}

"$ROOT/scripts/install-deps.sh"
require_root
require_cargo
(cd "$ROOT" && cargo build --release --locked -p calico -p calico-ipam)

WORK=$(mktemp -d /tmp/calico-bench.XXXXXX)
NETNS=calico-bench-$$
ETCD_PID=
cleanup() {
    ip netns del "$NETNS" 2>/dev/null || true
    if [ -n "$ETCD_PID" ]; then
        kill "$ETCD_PID" 2>/dev/null || true
        wait "$ETCD_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

start_etcd "$WORK"
ip netns add "$NETNS"
example_conf "$CONF_EXAMPLE" "$ETCD_ENDPOINT" "$WORK/ipam" >"$WORK/net.conf"

cni() {
    env -i PATH="$PATH" CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
        CNI_NETNS="/run/netns/$NETNS" CNI_IFNAME=eth0 CNI_PATH="$TARGET_DIR/release:/usr/lib/cni" \
        "$TARGET_DIR/release/calico" <"$WORK/net.conf" >/dev/null
}
now_us() { echo $(($(date +%s%N) / 1000)); }

add_total=0
del_total=0
for i in $(seq 1 "$N"); do
    cid=bench$(printf '%06d' "$i")
    t0=$(now_us)
    cni ADD "$cid" || die "ADD $i failed"
    t1=$(now_us)
    cni DEL "$cid" || die "DEL $i failed"
    t2=$(now_us)
    add_total=$((add_total + t1 - t0))
    del_total=$((del_total + t2 - t1))
done

echo "$N ADD/DEL cycles (release build, one netns, local etcd, host-local IPAM)"
printf 'ADD mean: %d.%03d ms\n' $((add_total / N / 1000)) $((add_total / N % 1000))
printf 'DEL mean: %d.%03d ms\n' $((del_total / N / 1000)) $((del_total / N % 1000))
