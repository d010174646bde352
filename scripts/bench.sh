#!/usr/bin/env bash
# make bench: ADD/DEL latency of the release plugins against a local etcd, next to the
# reference ptp + host-local pair, plus the etcd requests of one ADD and one DEL and a burst of
# parallel ADDs. N=200 make bench for more cycles, P=50 for a larger burst.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

N=${N:-50}
P=${P:-20}

"$ROOT/scripts/install-deps.sh"
require_root
require_cargo
(cd "$ROOT" && cargo build --release --locked -p calico -p calico-ipam)

WORK=$(mktemp -d /tmp/calico-bench.XXXXXX)
NETNS_PREFIX=calico-bench-$$
ETCD_PID=
cleanup() {
    for ns in $(ip netns list | awk '{print $1}' | grep "^$NETNS_PREFIX" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
    stop_etcd
    rm -rf "$WORK"
}
trap cleanup EXIT

start_etcd "$WORK"
BIN="$TARGET_DIR/release"
CNI_PATH_DIRS="$BIN:/usr/lib/cni"
"$BIN/calico-ipam" --etcd-endpoints "$ETCD_ENDPOINT" pool add 10.30.0.0/16 >/dev/null

# The three setups compared: name, then the config.
write_configs() {
    cat >"$WORK/calico-ipam.conf" <<EOF
{"cniVersion":"1.0.0","name":"bench-calico-ipam","type":"calico","etcd_endpoints":"$ETCD_ENDPOINT",
 "ipam":{"type":"calico-ipam","block_hint_dir":"$WORK/hints"}}
EOF
    cat >"$WORK/calico-host-local.conf" <<EOF
{"cniVersion":"1.0.0","name":"bench-calico-host-local","type":"calico","etcd_endpoints":"$ETCD_ENDPOINT",
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.31.0.0/16"}]],"dataDir":"$WORK/host-local"}}
EOF
    cat >"$WORK/ptp-host-local.conf" <<EOF
{"cniVersion":"1.0.0","name":"bench-ptp","type":"ptp","ipMasq":false,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.32.0.0/16"}]],"dataDir":"$WORK/host-local"}}
EOF
}
write_configs

# cni COMMAND PLUGIN-PATH CONF CONTAINER NETNS: one plugin run, output discarded.
cni() {
    env -i PATH="$PATH" CNI_COMMAND="$1" CNI_CONTAINERID="$4" CNI_NETNS="/run/netns/$5" \
        CNI_IFNAME=eth0 CNI_PATH="$CNI_PATH_DIRS" ${REQUEST_LOG:+CALICO_ETCD_REQUEST_LOG=$REQUEST_LOG} \
        "$2" <"$3" >/dev/null 2>"$WORK/stderr" || { cat "$WORK/stderr" >&2; die "$1 with $3 failed"; }
}
now_ns() { date +%s%N; }

# stats FILE: mean, p50, p95 and max of the microsecond figures in FILE, in ms.
stats() {
    sort -n "$1" | awk '{v[NR]=$1; s+=$1} END {
        p50=v[int((NR+1)*0.50)]; p95=v[int((NR)*0.95) > 0 ? int(NR*0.95) : 1];
        printf "mean %6.2f ms  p50 %6.2f ms  p95 %6.2f ms  max %6.2f ms\n", s/NR/1000, p50/1000, p95/1000, v[NR]/1000 }'
}

# cycles PLUGIN CONF LABEL: N sequential ADD/DEL cycles, each in a fresh netns.
cycles() {
    local plugin=$1 conf=$2 label=$3 i ns cid t0 t1 t2
    : >"$WORK/add.us"
    : >"$WORK/del.us"
    for i in $(seq 1 "$N"); do
        ns=$NETNS_PREFIX-$i
        cid=bench$(printf '%06d' "$i")$$
        ip netns add "$ns"
        t0=$(now_ns)
        cni ADD "$plugin" "$conf" "$cid" "$ns"
        t1=$(now_ns)
        cni DEL "$plugin" "$conf" "$cid" "$ns"
        t2=$(now_ns)
        ip netns del "$ns"
        echo $(((t1 - t0) / 1000)) >>"$WORK/add.us"
        echo $(((t2 - t1) / 1000)) >>"$WORK/del.us"
    done
    printf "%-26s ADD  %s\n" "$label" "$(stats "$WORK/add.us")"
    printf "%-26s DEL  %s\n" "" "$(stats "$WORK/del.us")"
}

# requests CONF: the etcd requests of one ADD and one DEL, both plugins together.
requests() {
    local ns=$NETNS_PREFIX-req cid=benchreq$$
    ip netns add "$ns"
    REQUEST_LOG="$WORK/requests.add" cni ADD "$BIN/calico" "$1" "$cid" "$ns"
    REQUEST_LOG="$WORK/requests.del" cni DEL "$BIN/calico" "$1" "$cid" "$ns"
    ip netns del "$ns"
    echo "etcd requests, $(basename "$1" .conf): ADD $(wc -l <"$WORK/requests.add"), DEL $(wc -l <"$WORK/requests.del")"
    sed 's/^/    ADD: /' "$WORK/requests.add"
    sed 's/^/    DEL: /' "$WORK/requests.del"
}

# burst CONF: P ADDs started at once (separate processes, separate netns), then P DELs.
burst() {
    local i t0 t1 t2 pids
    for i in $(seq 1 "$P"); do ip netns add "$NETNS_PREFIX-b$i"; done
    # Wait for these jobs only: a plain `wait` would also wait for etcd.
    pids=()
    t0=$(now_ns)
    for i in $(seq 1 "$P"); do cni ADD "$BIN/calico" "$1" "burst$i$$" "$NETNS_PREFIX-b$i" & pids+=($!); done
    wait "${pids[@]}"
    t1=$(now_ns)
    pids=()
    for i in $(seq 1 "$P"); do cni DEL "$BIN/calico" "$1" "burst$i$$" "$NETNS_PREFIX-b$i" & pids+=($!); done
    wait "${pids[@]}"
    t2=$(now_ns)
    for i in $(seq 1 "$P"); do ip netns del "$NETNS_PREFIX-b$i"; done
    printf '%d parallel ADDs (%s): %d ms in all; %d parallel DELs: %d ms\n' "$P" "$(basename "$1" .conf)" \
        $(((t1 - t0) / 1000000)) "$P" $(((t2 - t1) / 1000000))
}

echo "$N sequential ADD/DEL cycles, release build, local etcd, $(nproc) cores"
# One warm-up cycle per setup so the page cache holds the binaries.
N_SAVED=$N; N=1
cycles "$BIN/calico" "$WORK/calico-ipam.conf" warmup >/dev/null
cycles "$BIN/calico" "$WORK/calico-host-local.conf" warmup >/dev/null
cycles /usr/lib/cni/ptp "$WORK/ptp-host-local.conf" warmup >/dev/null
N=$N_SAVED
cycles "$BIN/calico" "$WORK/calico-ipam.conf" "calico + calico-ipam"
cycles "$BIN/calico" "$WORK/calico-host-local.conf" "calico + host-local"
cycles /usr/lib/cni/ptp "$WORK/ptp-host-local.conf" "reference ptp + host-local"
echo
requests "$WORK/calico-ipam.conf"
echo
burst "$WORK/calico-ipam.conf"
