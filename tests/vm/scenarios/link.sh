# Scenario "link": the two VMs reach each other over the qemu link.
#
# Each VM pings the other, then each sends the payload to the other over
# TCP with busybox nc (both directions at once) and checks what it
# received byte for byte (MD5 and cmp against the shared payload). No
# tapnet involved: this proves the underlay that the overlay scenarios
# run on, and that TCP transfers complete under software emulation.
. "$SHARE/scenarios/lib.sh"

PORT=5001

step "listen on $MY_IP:$PORT"
nc_listen "$PORT" /tmp/rx

step "ping $PEER_IP"
ping_until "$PEER_IP" || fail "no ping reply from $PEER_IP within ${STEP_TIMEOUT}s"

step "send the payload to $PEER_IP:$PORT"
t0=$(uptime_s)
nc_send "$PEER_IP" "$PORT" "$PAYLOAD" || fail "TCP transfer to $PEER_IP:$PORT failed"
log "sent $(wc -c <"$PAYLOAD") bytes to $PEER_IP in $(since "$t0") s"

step "receive the payload from $PEER_IP"
wait "$LISTENER" || fail "listener on port $PORT failed or timed out (status $?)"
check_payload /tmp/rx "received from $PEER_IP"

pass "ping $PEER_IP ok; TCP $(wc -c <"$PAYLOAD") bytes each way, MD5 $PAYLOAD_MD5 ok"
