#!/usr/bin/env bash
# Capture the real traffic the fuzz corpora are made from (run as root).
#
# Two private topologies of network namespaces, with the addresses and MACs
# of the fuzz targets' configuration (dataplane/fuzz/src/topology.rs), so
# that the frames reach the deep paths (gateway, DNS, NAT) unchanged:
#
#   container side (container.pcap, captured on the container's interface):
#     C  10.88.0.2  02:42:0a:58:00:02  --veth--  G  10.88.0.1  02:42:0a:58:00:01
#     G stands for the gateway; it also holds 203.0.113.5 (a remote server)
#     and routes 198.51.100.0/25 into a 1280-byte link, 198.51.100.128/25
#     nowhere. G's kernel and a small Python DNS server answer, so real
#     replies are captured too.
#
#   uplink side (uplink.pcap, captured on the uplink interface):
#     U  192.168.1.10  02:00:c0:a8:01:0a  --veth--  R  192.168.1.1  02:00:c0:a8:01:01
#     U stands for the dataplane's uplink address (masqueraded flows leave
#     from it, published ports 8080/tcp and 5353/udp are served on it); R is
#     the LAN router, holding 203.0.113.5, and forwarding 198.51.100.0/24
#     as G does (so TTL 1, oversized DF packets and packets to
#     198.51.100.200 get real ICMP errors).
#
#   overlay (overlay.pcap): VXLAN (VNI 42, port 4789) between C and G,
#     carrying ARP and ping. The machine has no GRE module: the GRE seeds
#     are captured frames wrapped by make_corpus.py.
#
# Flows use fixed ports and ICMP identifiers on both sides (40000/tcp,
# 40001/udp, 40002/udp DNS, echo id 4660), so a container's frame followed
# by the uplink's reply makes one coherent masqueraded flow.
#
# Usage: seeds/capture.sh [OUT_DIR]   (default: the directory of this script)
set -euo pipefail
out=$(realpath "${1:-$(dirname "$0")}")
tag="tfz$$"
C="$tag-c" G="$tag-g" U="$tag-u" R="$tag-r"
pids=() dumps=()
# The interpreter itself, not a wrapper script (pyenv's shim would leave the
# servers running when killed).
py=$(python3 -c 'import sys; print(sys.executable)')

# Stop the captures (tcpdump flushes its file on SIGTERM).
stop_dumps() {
    for p in "${dumps[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${dumps[@]}"; do wait "$p" 2>/dev/null || true; done
    dumps=()
}
cleanup() {
    stop_dumps
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for n in "$C" "$G" "$U" "$R"; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# Background processes start with `ip netns exec` itself (which execs the
# command), so that $! is the process to stop.

for n in "$C" "$G" "$U" "$R"; do
    ip netns add "$n"
    nsx "$n" ip link set lo up
done

# --- container side ------------------------------------------------------
ip link add c0 netns "$C" type veth peer name g0 netns "$G"
nsx "$C" ip link set c0 address 02:42:0a:58:00:02
nsx "$G" ip link set g0 address 02:42:0a:58:00:01
nsx "$C" ip addr add 10.88.0.2/24 dev c0
nsx "$G" ip addr add 10.88.0.1/24 dev g0
nsx "$C" ip link set c0 up
nsx "$G" ip link set g0 up
nsx "$C" ip route add default via 10.88.0.1
nsx "$G" ip addr add 203.0.113.5/32 dev lo
# A 1280-byte link beyond, with one reachable host on it, and an
# unreachable route (no dummy or GRE modules are needed).
nsx "$G" ip link add x0 type veth peer name x1
nsx "$G" ip link set x0 mtu 1280 up
nsx "$G" ip link set x1 up
nsx "$G" ip route add 198.51.100.0/25 dev x0
nsx "$G" ip neigh add 198.51.100.7 lladdr 02:00:00:00:00:99 dev x0 nud permanent
nsx "$G" ip route add unreachable 198.51.100.128/25
nsx "$G" sysctl -qw net.ipv4.ip_forward=1

# --- uplink side ---------------------------------------------------------
ip link add u0 netns "$U" type veth peer name r0 netns "$R"
nsx "$U" ip link set u0 address 02:00:c0:a8:01:0a
nsx "$R" ip link set r0 address 02:00:c0:a8:01:01
nsx "$U" ip addr add 192.168.1.10/24 dev u0
nsx "$R" ip addr add 192.168.1.1/24 dev r0
nsx "$U" ip link set u0 up
nsx "$R" ip link set r0 up
nsx "$U" ip route add default via 192.168.1.1
nsx "$R" ip addr add 203.0.113.5/32 dev lo
# The same links beyond as on G.
nsx "$R" ip link add x0 type veth peer name x1
nsx "$R" ip link set x0 mtu 1280 up
nsx "$R" ip link set x1 up
nsx "$R" ip route add 198.51.100.0/25 dev x0
nsx "$R" ip neigh add 198.51.100.7 lladdr 02:00:00:00:00:99 dev x0 nud permanent
nsx "$R" ip route add unreachable 198.51.100.128/25
nsx "$R" sysctl -qw net.ipv4.ip_forward=1

# Servers: DNS (UDP and TCP) on G, a TCP responder on 203.0.113.5:80 (G and
# R), and the published ports on U.
server=$(cat <<'PY'
import socket, struct, sys, threading

def name_end(m, i):
    while m[i]:
        if m[i] & 0xc0 == 0xc0:
            return i + 2
        i += 1 + m[i]
    return i + 1

def answer(q):
    """A response with compressed names: A records for web, db and many
    (whatever the domain), NODATA with an SOA otherwise; EDNS(0) echoed."""
    qid, flags, qd, an, ns, ar = struct.unpack('!6H', q[:12])
    end = name_end(q, 12)
    qtype = struct.unpack('!H', q[end:end + 2])[0]
    question = q[12:end + 4]
    labels = []
    i = 12
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode(errors='replace').lower())
        i += 1 + q[i]
    addrs = {'web': ['10.88.0.2'], 'db': ['10.88.0.3'], 'many': ['10.88.0.%d' % n for n in range(10, 40)]}
    host = labels[0] if labels else ''
    body, anc, nsc = b'', 0, 0
    if qtype in (1, 255) and host in addrs:
        for a in addrs[host]:
            body += b'\xc0\x0c' + struct.pack('!HHIH', 1, 1, 600, 4) + socket.inet_aton(a)
            anc += 1
    else:
        # SOA for the question's last label, as a pointer into the question.
        off = 12
        while q[off] and len(labels) > 1:
            labels.pop(0)
            off += 1 + q[off]
        mname = b'\x02ns\xc0' + bytes([off])
        rname = b'\x0ahostmaster\xc0' + bytes([off])
        rdata = mname + rname + struct.pack('!5I', 1, 3600, 600, 86400, 60)
        body += bytes([0xc0, off]) + struct.pack('!HHIH', 6, 1, 60, len(rdata)) + rdata
        nsc = 1
    opt = b''
    if ar:
        opt = b'\x00' + struct.pack('!HHIH', 41, 1232, 0, 0)
    hdr = struct.pack('!6H', qid, 0x8180 | (flags & 0x0110), 1, anc, nsc, 1 if opt else 0)
    return hdr + question + body + opt

def udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        q, peer = s.recvfrom(4096)
        try:
            s.sendto(answer(q) if port == 53 else q.upper(), peer)
        except Exception:
            pass

def tcp(addr, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(8)
    while True:
        c, _ = s.accept()
        try:
            if port == 53:
                n = struct.unpack('!H', c.recv(2))[0]
                q = b''
                while len(q) < n:
                    q += c.recv(n - len(q))
                a = answer(q)
                c.sendall(struct.pack('!H', len(a)) + a)
            else:
                data = c.recv(65536)
                if data.startswith(b'x'):
                    # Bulk from the client: its kernel sends GSO super-frames.
                    while len(data) < 6000:
                        data += c.recv(65536)
                    c.sendall(b'ok')
                elif data.startswith(b'BULK'):
                    c.sendall(b'x' * 6000)
                else:
                    c.sendall(b'HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok')
        finally:
            c.close()

for spec in sys.argv[1:]:
    kind, addr, port = spec.split(':')
    f = udp if kind == 'udp' else tcp
    threading.Thread(target=f, args=(addr, int(port)), daemon=True).start()
threading.Event().wait()
PY
)
ip netns exec "$G" "$py" -c "$server" udp:0.0.0.0:53 tcp:10.88.0.1:53 tcp:203.0.113.5:80 & pids+=($!)
ip netns exec "$R" "$py" -c "$server" tcp:203.0.113.5:80 udp:203.0.113.5:53 & pids+=($!)
ip netns exec "$U" "$py" -c "$server" tcp:192.168.1.10:8080 udp:192.168.1.10:5353 & pids+=($!)

client=$(cat <<'PY'
import socket, sys
kind, src, sport, dst, dport, payload = sys.argv[1:7]
if kind == 'tcp':
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, int(sport)))
    s.settimeout(2)
    try:
        s.connect((dst, int(dport)))
        s.sendall(b'x' * 6000 if payload == 'SEND' else payload.encode())
        while s.recv(65536):
            pass
    except OSError:
        pass  # an ICMP error is a capture too
    s.close()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, int(sport)))
    s.settimeout(0.5)
    s.sendto(payload.encode(), (dst, int(dport)))
    try:
        s.recv(4096)
    except OSError:
        pass
PY
)
sleep 1

# --- capture -------------------------------------------------------------
ip netns exec "$C" tcpdump -i c0 -U -s 0 -w "$out/container.pcap" 2>/dev/null & dumps+=($!)
ip netns exec "$U" tcpdump -i u0 -U -s 0 -w "$out/uplink.pcap" 2>/dev/null & dumps+=($!)
sleep 1

# Container: ARP, ping to the gateway and beyond, DNS at the gateway over
# UDP and TCP, masqueraded TCP/UDP/DNS/echo, a TTL 1 packet, an oversized
# DF packet, a GSO super-frame.
nsx "$C" ping -q -c 2 -i 0.2 10.88.0.1 >/dev/null
nsx "$C" ping -q -c 1 -e 4660 203.0.113.5 >/dev/null
nsx "$C" ping -q -c 1 -t 1 -e 4661 198.51.100.7 >/dev/null || true
nsx "$C" ping -q -c 1 -M do -s 1400 -e 4662 198.51.100.7 >/dev/null || true
for q in "web A" "db.front A" "web AAAA" "many A" "+noedns web A" "nowhere.example A" "+dnssec web ANY" "web TXT"; do
    # shellcheck disable=SC2086
    nsx "$C" dig +tries=1 +time=1 @10.88.0.1 $q >/dev/null || true
done
nsx "$C" dig +tcp +tries=1 +time=1 @10.88.0.1 web A >/dev/null || true
nsx "$C" dig +tcp +tries=1 +time=1 @10.88.0.1 nowhere.example A >/dev/null || true
nsx "$C" dig +tries=1 +time=1 -b 10.88.0.2#40002 @203.0.113.5 example.org A >/dev/null || true
nsx "$C" "$py" -c "$client" tcp 10.88.0.2 40000 203.0.113.5 80 "GET / HTTP/1.0"
nsx "$C" "$py" -c "$client" tcp 10.88.0.2 40003 203.0.113.5 80 "BULK"
nsx "$C" "$py" -c "$client" tcp 10.88.0.2 40006 203.0.113.5 80 "SEND"
nsx "$C" "$py" -c "$client" udp 10.88.0.2 40001 203.0.113.5 9999 "hello"
nsx "$C" "$py" -c "$client" tcp 10.88.0.2 40004 192.168.1.10 8080 "GET / HTTP/1.0"
nsx "$C" ip neigh flush dev c0
nsx "$C" ping -q -c 1 10.88.0.1 >/dev/null

# Uplink: the same flows as they come back after masquerade (replies to
# U:40000, U:40001, U:40002, echo id 4660), the published ports reached
# from outside, ICMP errors from the LAN router, and ARP both ways.
nsx "$U" ping -q -c 1 -e 4660 203.0.113.5 >/dev/null
nsx "$U" dig +tries=1 +time=1 -b 192.168.1.10#40002 @203.0.113.5 example.org A >/dev/null || true
nsx "$U" "$py" -c "$client" tcp 192.168.1.10 40000 203.0.113.5 80 "GET / HTTP/1.0"
nsx "$U" "$py" -c "$client" udp 192.168.1.10 40001 203.0.113.5 9999 "hello"
nsx "$U" "$py" -c "$client" udp 192.168.1.10 40005 198.51.100.200 9999 "unreachable" || true
nsx "$U" ping -q -c 1 -t 1 -e 4661 198.51.100.7 >/dev/null || true
nsx "$U" ping -q -c 1 -M do -s 1400 -e 4662 198.51.100.7 >/dev/null || true
nsx "$R" ping -q -c 1 -e 4663 192.168.1.10 >/dev/null
nsx "$R" "$py" -c "$client" tcp 203.0.113.5 50000 192.168.1.10 8080 "GET / HTTP/1.0"
nsx "$R" "$py" -c "$client" udp 203.0.113.5 50001 192.168.1.10 5353 "query"
nsx "$R" ip neigh flush dev r0
nsx "$R" ping -q -c 1 192.168.1.10 >/dev/null
sleep 1
stop_dumps

# --- overlay -------------------------------------------------------------
nsx "$C" ip link add vx0 type vxlan id 42 remote 10.88.0.1 local 10.88.0.2 dstport 4789 dev c0
nsx "$G" ip link add vx0 type vxlan id 42 remote 10.88.0.2 local 10.88.0.1 dstport 4789 dev g0
nsx "$C" ip addr add 172.16.0.2/24 dev vx0
nsx "$G" ip addr add 172.16.0.1/24 dev vx0
for n in "$C" "$G"; do nsx "$n" ip link set vx0 up; done
ip netns exec "$C" tcpdump -i c0 -U -s 0 -w "$out/overlay.pcap" 'udp port 4789' 2>/dev/null & dumps+=($!)
sleep 1
nsx "$C" ping -q -c 1 172.16.0.1 >/dev/null
sleep 1
echo "captured into $out: $(ls "$out"/*.pcap | xargs -n1 basename | tr '\n' ' ')"
