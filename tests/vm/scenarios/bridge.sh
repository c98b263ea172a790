# Scenario "bridge": tapnet inside each VM, on its own.
#
# In each VM: `tapnet daemon` in the background, a network n
# (10.77.0.0/24), two containers c1 and c2 on it, `tapnet exec c1 -- ping`
# of c2 (by address, then by name through the hosts file tapnet writes),
# TCP transfers of the payload from c1 to c2 and back with busybox nc,
# checked byte for byte, the dataplane's counters, and a full teardown (containers,
# network, then SIGTERM to the daemon, which must leave no namespace
# behind). This proves that tapnet runs in the guest: its namespaces, its
# multi-queue TAP devices and its dataplane threads. The two VMs run it
# independently; the link between them is not used.
. "$SHARE/scenarios/lib.sh"

NET=n
SUBNET=10.77.0.0/24
PORT=5000

daemon_start

step "tapnet network create $NET --subnet $SUBNET"
run tapnet network create "$NET" --subnet "$SUBNET"
for c in c1 c2; do
    step "tapnet container create $c --network $NET"
    run tapnet container create "$c" --network "$NET"
done
run tapnet container ls

step "address of c2"
C2_IP=$(timeout "$STEP_TIMEOUT" tapnet exec c2 -- ip -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p')
[ -n "$C2_IP" ] || fail "no IPv4 address on c2's eth0"
log "c2 has $C2_IP"

step "tapnet exec c1 -- ping $C2_IP"
ping_until "$C2_IP" tapnet exec c1 -- || fail "c1 cannot ping c2 ($C2_IP)"

step "tapnet exec c1 -- ping c2 (by name)"
out=$(timeout 15 tapnet exec c1 -- ping -c 1 -W 2 c2 2>&1) || fail "c1 cannot ping c2 by name: $out"

step "address of c1"
C1_IP=$(timeout "$STEP_TIMEOUT" tapnet exec c1 -- ip -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p')
[ -n "$C1_IP" ] || fail "no IPv4 address on c1's eth0"

for dir in "c1 c2 $C2_IP" "c2 c1 $C1_IP"; do
    set -- $dir
    step "TCP transfer $1 -> $2 ($3:$PORT)"
    nc_listen "$PORT" "/tmp/rx.$2" tapnet exec "$2" --
    t1=$(uptime_s)
    nc_send "$3" "$PORT" "$PAYLOAD" tapnet exec "$1" -- || fail "TCP transfer from $1 to $3:$PORT failed"
    wait "$LISTENER" || fail "listener in $2 failed or timed out (status $?)"
    log "sent $(wc -c <"$PAYLOAD") bytes from $1 to $2 in $(since "$t1") s"
    check_payload "/tmp/rx.$2" "$2 received from $1"
done

step "tapnet stats"
run tapnet stats

step "teardown"
run tapnet container rm c1
run tapnet container rm c2
run tapnet network rm "$NET"
daemon_stop

pass "tapnet in the guest: c1 pinged c2 ($C2_IP, and by name), TCP $(wc -c <"$PAYLOAD") bytes c1 -> c2 and back, MD5 ok, clean teardown"
