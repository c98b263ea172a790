# Scenario "vxlan": a container on VM a talks to a container on VM b over a
# VXLAN overlay that tapnet's own dataplane encapsulates: the issue's "test
# cluster across two VMs", set up the way a user would, with one cluster
# file for both VMs.
#
# In each VM:
#   1. `tapnet daemon` in the background;
#   2. the cluster file /tmp/cluster.toml (the same in both VMs, written
#      from the underlay addresses and printed on the console): hosts a and
#      b with their underlay addresses (the VMs' eth0 on the qemu link),
#      network ov (--driver vxlan, VNI 42, subnet 10.42.0.0/16, a hands out
#      10.42.1.0/24 and b 10.42.2.0/24) and containers c-a on a, c-b on b;
#   3. `tapnet up -f /tmp/cluster.toml --host ROLE` makes this VM's share:
#      the network with --underlay MY_IP --peer PEER_IP, and its container,
#      which gets the first address of its range (10.42.1.1 on a, 10.42.2.1
#      on b) and MTU 1450; run again, it changes nothing;
#   4. the container pings the other VM's container (retrying until the
#      peer is up, bounded by STEP_TIMEOUT), `tapnet overlay check ov`;
#   5. a TCP transfer of the payload between the two containers in each
#      direction with busybox nc, checked byte for byte (MD5 and cmp);
#   6. `tapnet stats`, then teardown: container, network, SIGTERM to the
#      daemon, nothing left behind.
# The overlay's MTU is tapnet's business: a 1500-byte underlay leaves 1450
# bytes for the overlay, and the TCP transfer fails if tapnet gets it wrong.
#
# Settings (TAPNET_VM_ENV="KEY=VALUE ..." on the host): OV_VNI (42),
# OV_SUBNET (10.42.0.0/16), OV_RANGE_A/OV_RANGE_B (/24s).
. "$SHARE/scenarios/lib.sh"

if ! tapnet up --help >/dev/null 2>&1; then
    skip "overlay not available (tapnet has no up command)"
fi

VNI=${OV_VNI:-42}
SUBNET=${OV_SUBNET:-10.42.0.0/16}
RANGE_A=${OV_RANGE_A:-10.42.1.0/24}
RANGE_B=${OV_RANGE_B:-10.42.2.0/24}
PORT=5002
NET=ov
if [ "$ROLE" = a ]; then
    MY_CIP=$(first_host "$RANGE_A") PEER_CIP=$(first_host "$RANGE_B")
else
    MY_CIP=$(first_host "$RANGE_B") PEER_CIP=$(first_host "$RANGE_A")
fi
C=c-$ROLE
CLUSTER=/tmp/cluster.toml

cat >"$CLUSTER" <<TOML
# The test cluster: two hosts, one VXLAN network, a container on each.
[[host]]
name = "a"
underlay = "$IP_A"

[[host]]
name = "b"
underlay = "$IP_B"

[[network]]
name = "$NET"
driver = "vxlan"
vni = $VNI
subnet = "$SUBNET"
[network.ip_range]
a = "$RANGE_A"
b = "$RANGE_B"

[[container]]
name = "c-a"
host = "a"
network = "$NET"

[[container]]
name = "c-b"
host = "b"
network = "$NET"
TOML
sed "s/^/tapnet-vm[$ROLE]   /" "$CLUSTER"

daemon_start

step "tapnet up -f $CLUSTER --host $ROLE"
run tapnet up -f "$CLUSTER" --host "$ROLE"
step "tapnet up -f $CLUSTER --host $ROLE, again"
out=$(timeout "$STEP_TIMEOUT" tapnet up -f "$CLUSTER" --host "$ROLE" 2>&1) || fail "tapnet up again failed: $out"
case $out in
    *"network $NET: unchanged"*"container $C: unchanged"*) log "again: nothing changed" ;;
    *) fail "tapnet up run again changed something: $(echo "$out" | tr '\n' ' ')" ;;
esac

overlay_exchange "$NET" "$C" "$MY_CIP" "$PEER_CIP" 1450 "$PORT"

step "teardown"
run tapnet container rm "$C"
run tapnet network rm "$NET"
daemon_stop

pass "tapnet up, VXLAN VNI $VNI: $C ($MY_CIP) pinged $PEER_CIP on VM $PEER_ROLE; TCP $(wc -c <"$PAYLOAD") bytes each way, MD5 ok; dataplane drops: $DROPS"
