# Helpers for the two-VM scenarios; each scenario sources this file.
# Runs in the guest under busybox ash.
#
# The guest's /init exports:
#   ROLE          a or b
#   MY_IP         this VM's underlay address on eth0 (the qemu link)
#   PEER_IP       the other VM's underlay address
#   PREFIX        the underlay's prefix length
#   PEER_ROLE     the other VM's role
#   SHARE         the read-only 9p share (/share): bin/, lib/, scenarios/
#   PAYLOAD       a file of random bytes, the same in both VMs
#   PAYLOAD_MD5   its MD5, computed on the host
#   STEP_TIMEOUT  bound in seconds for one waiting step (peer up, transfer)
#   RESULT        where the one-line result message goes
# A scenario exits 0 (PASS), 77 (SKIP) or anything else (FAIL); the last line
# written to $RESULT becomes the verdict's message.

STEP="start"
# busybox's nc (the guests have no other); elsewhere NC="busybox nc", as
# other netcats differ in options and in what they do at end of input.
NC=${NC:-nc}

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# Progress on the console, streamed by run.sh.
log() { echo "tapnet-vm[$ROLE] $(uptime_s) $SCENARIO: $*"; }

step() {
    STEP="$*"
    echo "step: $STEP" >>"$RESULT"
    log "$STEP"
}

pass() {
    echo "$*" >>"$RESULT"
    log "PASS: $*"
    exit 0
}

fail() {
    echo "$* (step: $STEP)" >>"$RESULT"
    log "FAIL: $*"
    exit 1
}

skip() {
    echo "$*" >>"$RESULT"
    log "SKIP: $*"
    exit 77
}

# retry TRIES DELAY CMD...: run CMD until it succeeds, at most TRIES times.
retry() {
    _tries=$1
    _delay=$2
    shift 2
    _n=0
    while [ "$_n" -lt "$_tries" ]; do
        "$@" && return 0
        _n=$((_n + 1))
        sleep "$_delay"
    done
    return 1
}

# ping_until ADDR [PREFIX...]: one-packet pings, one per second, until one
# is answered or STEP_TIMEOUT seconds have passed; then 3 pings 0.2 s apart,
# whose summary is logged. PREFIX runs the ping elsewhere, e.g.
# "tapnet exec c1 --".
ping_until() {
    _addr=$1
    shift
    _t0=$(date +%s)
    while ! timeout 5 "$@" ping -c 1 -W 1 "$_addr" >/dev/null 2>&1; do
        [ $(($(date +%s) - _t0)) -lt "$STEP_TIMEOUT" ] || return 1
        sleep 1
    done
    _out=$(timeout 15 "$@" ping -c 3 -i 0.2 -W 2 "$_addr" 2>&1) || {
        log "$_out"
        return 1
    }
    log "$(echo "$_out" | grep -E 'transmitted|min/avg' | tr '\n' ' ')"
}

# A busybox nc listener exits when its client closes the connection. Its
# stdin must never reach EOF, or it half-closes at once and the client stops
# sending. A FIFO opened read-write gives it such a stdin.
HOLD=/tmp/tapnet-vm.hold
[ -p "$HOLD" ] || mkfifo "$HOLD"
exec 9<>"$HOLD"

# nc_listen PORT OUTFILE [PREFIX...]: start a one-shot listener in the
# background, bounded by STEP_TIMEOUT; sets LISTENER to its pid.
nc_listen() {
    _port=$1
    _out=$2
    shift 2
    # shellcheck disable=SC2086 # NC may be two words
    timeout "$STEP_TIMEOUT" "$@" $NC -l -p "$_port" <&9 >"$_out" &
    LISTENER=$!
}

# nc_send ADDR PORT FILE [PREFIX...]: send FILE until the receiver has read
# all of it and closed (busybox nc half-closes on EOF of its stdin and waits
# for the peer), retrying while the listener is not up yet. Bounded by
# STEP_TIMEOUT.
nc_send() {
    _addr=$1
    _port=$2
    _file=$3
    shift 3
    _t0=$(date +%s)
    while :; do
        # shellcheck disable=SC2086 # NC may be two words
        if timeout "$STEP_TIMEOUT" "$@" $NC -w 5 "$_addr" "$_port" <"$_file" >/dev/null 2>/tmp/nc.err; then
            return 0
        fi
        [ $(($(date +%s) - _t0)) -lt "$STEP_TIMEOUT" ] || {
            log "nc to $_addr:$_port: $(cat /tmp/nc.err)"
            return 1
        }
        sleep 1
    done
}

# check_payload FILE WHAT: FILE must be exactly the payload.
check_payload() {
    _got=$(md5sum <"$1" | cut -d' ' -f1)
    _size=$(wc -c <"$1")
    if [ "$_got" != "$PAYLOAD_MD5" ] || ! cmp -s "$1" "$PAYLOAD"; then
        fail "$2: received $_size bytes with MD5 $_got, expected $(wc -c <"$PAYLOAD") bytes with MD5 $PAYLOAD_MD5"
    fi
    log "$2: $_size bytes, MD5 $_got matches"
}

# Seconds (with hundredths) since START (a value of uptime_s).
since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }'; }

# run CMD...: bounded by STEP_TIMEOUT; its output goes to the console,
# indented; fail with the end of its output when it fails.
run() {
    _out=$(timeout "$STEP_TIMEOUT" "$@" 2>&1) || fail "$* failed: $(echo "$_out" | tail -n 3 | tr '\n' ' ')"
    [ -z "$_out" ] || echo "$_out" | sed "s/^/tapnet-vm[$ROLE]   /"
}

# daemon_start [ARGS...]: `tapnet daemon ARGS` in the background (DAEMON is
# its pid, /tmp/tapnet-daemon.log its output), once it answers the API.
daemon_start() {
    step "start tapnet daemon${*:+ $*}"
    tapnet daemon "$@" >/tmp/tapnet-daemon.log 2>&1 &
    DAEMON=$!
    _t0=$(date +%s)
    until tapnet network ls >/dev/null 2>&1; do
        kill -0 "$DAEMON" 2>/dev/null || fail "tapnet daemon exited: $(tail -n 3 /tmp/tapnet-daemon.log | tr '\n' ' ')"
        [ $(($(date +%s) - _t0)) -lt "$STEP_TIMEOUT" ] || fail "tapnet daemon did not answer within ${STEP_TIMEOUT}s"
        sleep 0.2
    done
    log "daemon answers (pid $DAEMON)"
}

# daemon_stop: SIGTERM, which must remove every container, TAP and network:
# no namespace and no interface but lo and eth0 may be left.
daemon_stop() {
    step "stop the daemon (SIGTERM)"
    kill -TERM "$DAEMON"
    _t0=$(date +%s)
    while kill -0 "$DAEMON" 2>/dev/null; do
        [ $(($(date +%s) - _t0)) -lt "$STEP_TIMEOUT" ] || fail "tapnet daemon still running ${STEP_TIMEOUT}s after SIGTERM"
        sleep 0.2
    done
    wait "$DAEMON" || fail "tapnet daemon exited with status $? after SIGTERM: $(tail -n 3 /tmp/tapnet-daemon.log | tr '\n' ' ')"
    _left=$(ls /run/netns)
    [ -z "$_left" ] || fail "namespaces left behind: $_left"
    _left=$(cd /sys/class/net && for i in *; do [ "$i" = lo ] || [ "$i" = eth0 ] || printf '%s ' "$i"; done)
    [ -z "$_left" ] || fail "interfaces left behind: $_left"
    log "daemon gone, nothing left behind"
}

# first_host CIDR: the first host address of an IPv4 /24 (or larger)
# range, where tapnet's IPAM starts: 10.42.1.0/24 -> 10.42.1.1.
first_host() {
    _net=${1%/*}
    echo "${_net%.*}.$((${_net##*.} + 1))"
}

# container_addr C: the IPv4 address of container C's eth0.
container_addr() {
    timeout "$STEP_TIMEOUT" tapnet exec "$1" -- ip -4 -o addr show dev eth0 |
        sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p'
}

# overlay_exchange NET C MY_CIP PEER_CIP MTU PORT: what both overlay
# scenarios do once this VM's share of overlay NET and its container C
# exist. C must have MY_CIP and the overlay's MTU; then a listener in C,
# a ping from C to PEER_CIP (the container on the other VM; retried until
# that VM is up), `tapnet overlay check NET` (the peer's dataplane answers
# probes through the tunnel), the payload from C to PEER_CIP:PORT, and
# the payload the other VM sent, checked, and `tapnet stats`; DROPS is set
# to the drop reasons the dataplane counted ("none", or e.g.
# "oversize=124"). Each VM finishes only after it has received the other's
# payload, which the other sends after its own ping and check: neither
# tears the overlay down while its peer needs it.
overlay_exchange() {
    _net=$1 _c=$2 _me=$3 _peer=$4 _mtu=$5 _port=$6

    step "address and MTU of $_c"
    _got=$(container_addr "$_c")
    [ "$_got" = "$_me" ] || fail "$_c has address '${_got:-none}', expected $_me (the first of this VM's --ip-range)"
    _got=$(timeout "$STEP_TIMEOUT" tapnet exec "$_c" -- cat /sys/class/net/eth0/mtu)
    [ "$_got" = "$_mtu" ] || fail "$_c's eth0 has MTU '$_got', expected $_mtu (the underlay's 1500 less the encapsulation)"
    log "$_c has $_me, MTU $_mtu"

    step "listen in $_c on $_me:$_port"
    nc_listen "$_port" /tmp/rx tapnet exec "$_c" --

    step "tapnet exec $_c -- ping $_peer (the container on VM $PEER_ROLE)"
    ping_until "$_peer" tapnet exec "$_c" -- ||
        fail "$_c cannot ping $_peer on VM $PEER_ROLE over the overlay within ${STEP_TIMEOUT}s"

    step "tapnet overlay check $_net"
    run tapnet overlay check "$_net"

    step "TCP transfer $_c -> $_peer:$_port"
    _t1=$(uptime_s)
    nc_send "$_peer" "$_port" "$PAYLOAD" tapnet exec "$_c" -- ||
        fail "TCP transfer from $_c to $_peer:$_port over the overlay failed"
    log "sent $(wc -c <"$PAYLOAD") bytes to $_peer in $(since "$_t1") s"

    step "receive the payload from $_peer"
    wait "$LISTENER" || fail "listener in $_c failed or timed out (status $?)"
    check_payload /tmp/rx "$_c received from $_peer"

    step "tapnet stats"
    run tapnet stats
    DROPS=$(timeout "$STEP_TIMEOUT" tapnet --json stats | tr -d ' \n' | grep -o '"drops":{[^}]*}' |
        sed 's/^"drops":{//; s/}$//' | tr ',' '\n' | grep -v ':0$' | tr -d '"' | tr ':' '=' | tr '\n' ' ')
    DROPS=${DROPS% }
    DROPS=${DROPS:-none}
    log "dataplane drops: $DROPS"
}
