#!/usr/bin/env bash
# make demo: one ADD and one DEL of a container with a conf example, against a throwaway etcd
# and network namespace; shows what the plugin did, then removes everything it made.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

CONF_EXAMPLE=${CONF_EXAMPLE:-$ROOT/conf-examples/10-calico-rkt.conf}
# The pool calico-ipam allocates from when the example uses it.
DEMO_POOL=${DEMO_POOL:-10.22.0.0/16}

"$ROOT/scripts/install-deps.sh"
require_root
require_cargo
build_release_plugins calico calico-ipam calico-k8s

WORK=$(mktemp -d /tmp/calico-demo.XXXXXX)
NETNS=calico-demo-$$
CONTAINER_ID=demo$(printf '%08x' $$)$(date +%s)
ETCD_PID=
cleanup() {
    ip netns del "$NETNS" 2>/dev/null || true
    stop_etcd
    rm -rf "$WORK"
}
trap cleanup EXIT

start_etcd "$WORK"
ip netns add "$NETNS"
# calico-ipam keeps its block hint in the demo's temp dir rather than /var/lib/cni.
example_conf "$CONF_EXAMPLE" "$ETCD_ENDPOINT" "$WORK/ipam" |
    sed "s#\"type\": \"calico-ipam\"#\"type\": \"calico-ipam\", \"block_hint_dir\": \"$WORK/hints\"#" >"$WORK/net.conf"

# The node's IPAM lock and ADD slot files are kept between runs by design; the demo's go to its
# work dir, so that it leaves nothing in /run/calico/cni.
cni() {
    env -i PATH="$PATH" CALICO_CNI_LOCK_DIR="$WORK/locks" CNI_COMMAND="$1" CNI_CONTAINERID="$CONTAINER_ID" \
        CNI_NETNS="/run/netns/$NETNS" CNI_IFNAME=eth0 CNI_PATH="$RELEASE_DIR:/usr/lib/cni" \
        "$RELEASE_DIR/calico" <"$WORK/net.conf"
}
section() { printf '\n=== %s\n' "$*"; }

section "config ($CONF_EXAMPLE, etcd at $ETCD_ENDPOINT)"
cat "$WORK/net.conf"
if grep -q '"calico-ipam"' "$WORK/net.conf"; then
    section "calico-ipam pool add $DEMO_POOL"
    "$RELEASE_DIR/calico-ipam" --config "$WORK/net.conf" pool add "$DEMO_POOL"
    "$RELEASE_DIR/calico-ipam" --config "$WORK/net.conf" pool list
fi
section "ADD container $CONTAINER_ID in netns $NETNS"
cni ADD
section "ip -n $NETNS addr"
ip -n "$NETNS" addr show
section "ip -n $NETNS route"
ip -n "$NETNS" route show
section "host veth and route"
ip -br link show dev "cali${CONTAINER_ID:0:11}"
ip route show | grep -w "cali${CONTAINER_ID:0:11}"
section "etcdctl get --prefix /calico"
ETCDCTL_API=3 etcdctl --endpoints="$ETCD_ENDPOINT" get --prefix /calico
section "DEL"
cni DEL
section "etcdctl get --prefix /calico --keys-only (after DEL: profile, pool and the node's block remain)"
ETCDCTL_API=3 etcdctl --endpoints="$ETCD_ENDPOINT" get --prefix /calico --keys-only
echo "DEL done; cleaning up"
