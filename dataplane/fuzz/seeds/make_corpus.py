#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (corpus/<target>/) from the
frames captured by capture.sh (container.pcap, uplink.pcap, overlay.pcap).

Every seed is made of captured frames, in the input format of its target
(see each target's doc comment). A few are captured frames adapted to the
fuzz host's other roles, with their checksums recomputed: the replies of a
container behind a published port (the uplink's own replies, readdressed),
frames of the second and third networks, and GRE (the capture machine has no
GRE module, so captured frames are wrapped in RFC 2784/2890 headers here).
Nothing is random: running it twice writes the same files.

Usage: seeds/make_corpus.py   (from anywhere; rewrites corpus/ entirely)
"""

import json
import pathlib
import shutil
import struct

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE.parent / 'corpus'

# The fuzz host (src/topology.rs) and the capture (capture.sh).
C_MAC = bytes.fromhex('02420a580002')
C2_MAC = bytes.fromhex('02420a580003')
G_MAC = bytes.fromhex('02420a580001')
U_MAC = bytes.fromhex('0200c0a8010a')
R_MAC = bytes.fromhex('0200c0a80101')
BACK_MAC, BACK_GW_MAC = bytes.fromhex('02420a590002'), bytes.fromhex('02420a590001')
SEALED_MAC, SEALED_GW_MAC = bytes.fromhex('02420a5a0002'), bytes.fromhex('02420a5a0001')
C_IP, C2_IP, G_IP = '10.88.0.2', '10.88.0.3', '10.88.0.1'
U_IP, R_IP, S_IP = '192.168.1.10', '192.168.1.1', '203.0.113.5'

# A TCPv4 TSO super-frame's virtio-net header read from a TAP: NEEDS_CSUM,
# GSO_TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16.
TSO4 = bytes([0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00])
ZERO = bytes(10)


def ip4(s):
    return bytes(int(x) for x in s.split('.'))


def read_pcap(path):
    data = (HERE / path).read_bytes()
    magic = data[:4]
    endian = '<' if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1') else '>'
    linktype = struct.unpack(endian + 'I', data[20:24])[0]
    assert linktype == 1, f'{path}: not Ethernet'
    frames, at = [], 24
    while at + 16 <= len(data):
        n = struct.unpack(endian + 'I', data[at + 8:at + 12])[0]
        frames.append(data[at + 16:at + 16 + n])
        at += 16 + n
    return frames


def fold(s):
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def csum(b):
    if len(b) % 2:
        b += b'\0'
    return fold(sum(struct.unpack(f'!{len(b) // 2}H', b)))


class Frame:
    """A captured Ethernet frame and what the seeds need to know of it."""

    def __init__(self, b):
        self.b = bytes(b)

    @property
    def ethertype(self):
        return struct.unpack('!H', self.b[12:14])[0]

    @property
    def ipv4(self):
        return self.ethertype == 0x0800

    @property
    def ihl(self):
        return (self.b[14] & 15) * 4

    @property
    def proto(self):
        return self.b[23]

    @property
    def src(self):
        return '.'.join(map(str, self.b[26:30]))

    @property
    def dst(self):
        return '.'.join(map(str, self.b[30:34]))

    @property
    def l4(self):
        return 14 + self.ihl

    @property
    def ports(self):
        return struct.unpack('!HH', self.b[self.l4:self.l4 + 4])

    @property
    def icmp(self):
        """(type, identifier) of an ICMP message."""
        t = self.b[self.l4]
        return t, struct.unpack('!H', self.b[self.l4 + 4:self.l4 + 6])[0]

    @property
    def tcp_flags(self):
        return self.b[self.l4 + 13]

    def is_(self, proto, src=None, dst=None, sport=None, dport=None):
        if not self.ipv4 or self.proto != proto:
            return False
        if (src and self.src != src) or (dst and self.dst != dst):
            return False
        if proto in (6, 17):
            sp, dp = self.ports
            return (sport is None or sp == sport) and (dport is None or dp == dport)
        return True

    def partial(self):
        """A TCP/UDP checksum left partial (the pseudo-header sum), as a
        veth or TAP hands over locally generated packets."""
        if not self.ipv4 or self.proto not in (6, 17):
            return False
        off = self.l4 + (16 if self.proto == 6 else 6)
        l4len = struct.unpack('!H', self.b[16:18])[0] - self.ihl
        pseudo = fold(sum(struct.unpack('!4H', self.b[26:34])) + self.proto + l4len)
        return struct.unpack('!H', self.b[off:off + 2])[0] == pseudo

    def vnet(self):
        """The virtio-net header a TAP would hand this frame over with."""
        if len(self.b) > 1514 and self.is_(6):
            return TSO4
        if self.partial():
            return bytes([1, 0, 0, 0, 0, 0]) + struct.pack('<HH', self.l4, 16 if self.proto == 6 else 6)
        return ZERO

    def ip(self):
        """The IPv4 packet, Ethernet padding cut."""
        n = struct.unpack('!H', self.b[16:18])[0]
        return self.b[14:14 + n]


def readdress(f, eth_src, eth_dst, src=None, dst=None, sport=None, dport=None, ttl=None):
    """Frame `f` with new addresses, complete checksums recomputed."""
    b = bytearray(f.b)
    b[0:6], b[6:12] = eth_dst, eth_src
    if f.ipv4:
        if src:
            b[26:30] = ip4(src)
        if dst:
            b[30:34] = ip4(dst)
        if ttl is not None:
            b[22] = ttl
        l4 = f.l4
        if f.proto in (6, 17) and (sport is not None or dport is not None):
            sp, dp = f.ports
            b[l4:l4 + 4] = struct.pack('!HH', sp if sport is None else sport, dp if dport is None else dport)
        b[24:26] = b'\0\0'
        b[24:26] = struct.pack('!H', 0xffff ^ csum(bytes(b[14:14 + f.ihl])))
        end = 14 + struct.unpack('!H', b[16:18])[0]
        if f.proto in (6, 17):
            off = l4 + (16 if f.proto == 6 else 6)
            b[off:off + 2] = b'\0\0'
            pseudo = bytes(b[26:34]) + struct.pack('!BBH', 0, f.proto, end - l4)
            c = 0xffff ^ csum(pseudo + bytes(b[l4:end]))
            b[off:off + 2] = struct.pack('!H', c or 0xffff)
        elif f.proto == 1:
            b[l4 + 2:l4 + 4] = b'\0\0'
            b[l4 + 2:l4 + 4] = struct.pack('!H', 0xffff ^ csum(bytes(b[l4:end])))
    return Frame(b)


def gre(inner, flags):
    """`inner` behind a GRE header (RFC 2784, key and sequence RFC 2890)
    for Transparent Ethernet Bridging, in IPv4 from the container to G."""
    c, k, s = 'C' in flags, 'K' in flags, 'S' in flags
    hdr = struct.pack('!HH', (c << 15) | (k << 13) | (s << 12), 0x6558)
    opt = (b'\0\0\0\0' if c else b'') + (struct.pack('!I', 7) if k else b'') + (struct.pack('!I', 1) if s else b'')
    g = bytearray(hdr + opt + inner)
    if c:
        g[4:6] = struct.pack('!H', 0xffff ^ csum(bytes(g)))
    total = 20 + len(g)
    ip = bytearray(struct.pack('!BBHHHBBH4s4s', 0x45, 0, total, 1, 0x4000, 64, 47, 0, ip4(C_IP), ip4(G_IP)))
    ip[10:12] = struct.pack('!H', 0xffff ^ csum(bytes(ip)))
    return G_MAC + C_MAC + b'\x08\x00' + bytes(ip) + bytes(g)


def rec(tag, payload):
    return bytes([tag]) + struct.pack('!H', len(payload)) + payload


# --- the captures ----------------------------------------------------------

container = [Frame(b) for b in read_pcap('container.pcap')]
uplink = [Frame(b) for b in read_pcap('uplink.pcap')]
overlay = [Frame(b) for b in read_pcap('overlay.pcap')]

from_c = [f for f in container if f.b[6:12] == C_MAC]  # what the container's TAP delivers
to_c = [f for f in container if f.b[6:12] == G_MAC]
from_r = [f for f in uplink if f.b[6:12] == R_MAC]  # what the uplink receives
from_u = [f for f in uplink if f.b[6:12] == U_MAC]


def pick(frames, *args, **kw):
    return [f for f in frames if f.is_(*args, **kw)]


def arp(frames):
    return [f for f in frames if f.ethertype == 0x0806]


def ipv6(frames):
    return [f for f in frames if f.ethertype == 0x86dd]


def one(frames):
    assert frames, 'expected frame not captured'
    return frames[0]


# --- pipeline --------------------------------------------------------------
# Records [ctl][len][vnet | frame]; ctl = ingress | worker << 3 | step << 4,
# ingress 0/1 = ports 1/2 (front), 2 = port 3 (back), 3 = port 4 (sealed),
# 4 = uplink; steps index STEPS_MS (0 ms, 1, 10, 50, 100, 500, 1 s, ...).
P1, P2, P3, P4, UPLINK = 0, 1, 2, 3, 4
STEP_1MS, STEP_100MS, STEP_2S, STEP_120S = 1, 4, 7, 12


def frames_in(seq, step=STEP_1MS):
    """Records for `(ingress, frame)` or `(ingress, frame, ctl extra)`."""
    out = b''
    for item in seq:
        ingress, f = item[0], item[1]
        extra = item[2] if len(item) > 2 else step << 4
        out += rec(ingress | extra, f.vnet() + f.b)
    return out


def interleave(a, b):
    """Two captured halves of one flow, in capture order of each, merged by
    their position in their own capture (both ran the same exchange)."""
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and i / max(len(a), 1) <= j / max(len(b), 1)):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


pipeline = {}
pipeline['arp-ping-gateway'] = frames_in([(P1, f) for f in arp(from_c)[:1] + pick(from_c, 1, dst=G_IP)])
pipeline['dns-udp-gateway'] = frames_in([(P1, f) for f in pick(from_c, 17, dst=G_IP, dport=53)])
tcp_dns = pick(from_c, 6, dst=G_IP, dport=53)
first_port = tcp_dns[0].ports[0]
pipeline['dns-tcp-gateway'] = frames_in([(P1, f) for f in tcp_dns if f.ports[0] == first_port])


def masq(flow_c, flow_u):
    return frames_in(interleave([(P1, f) for f in flow_c], [(UPLINK, f) for f in flow_u]))


pipeline['masq-tcp'] = masq(pick(from_c, 6, sport=40000), pick(from_r, 6, dport=40000))
pipeline['masq-udp-port-unreachable'] = masq(
    pick(from_c, 17, sport=40001), [f for f in pick(from_r, 1) if f.icmp[0] == 3 and f.src == S_IP])
pipeline['masq-dns'] = masq(pick(from_c, 17, sport=40002), pick(from_r, 17, dport=40002))
pipeline['masq-echo'] = masq([f for f in pick(from_c, 1) if f.icmp == (8, 4660)],
                             [f for f in pick(from_r, 1) if f.icmp == (0, 4660)])
pipeline['ttl-exceeded-and-big'] = frames_in(
    [(P1, f) for f in pick(from_c, 1, dst='198.51.100.7')])
# The container's echo 4661 with a TTL that gets it out, its UDP 40005
# (readdressed from the uplink's), and the LAN router's errors about them.
out4661 = [readdress(f, C_MAC, G_MAC, ttl=64) for f in pick(from_c, 1, dst='198.51.100.7') if f.icmp[1] == 4661]
out4662 = [f for f in pick(from_c, 1, dst='198.51.100.7') if f.icmp[1] == 4662]
udp40005 = [readdress(f, C_MAC, G_MAC, src=C_IP) for f in pick(from_u, 17, sport=40005)]
errors = [f for f in pick(from_r, 1, src=R_IP) if f.icmp[0] in (3, 11)]
pipeline['uplink-icmp-errors'] = frames_in([(P1, f) for f in out4661 + out4662 + udp40005] +
                                           [(UPLINK, f) for f in errors])
# A published port from outside: the uplink's SYN to 8080, and the
# container's replies (the uplink host's, readdressed to 10.88.0.2:80).
pub_in = pick(from_r, 6, dport=8080)
pub_out = [readdress(f, C_MAC, G_MAC, src=C_IP, sport=80) for f in pick(from_u, 6, sport=8080)]
pipeline['published-tcp'] = frames_in(interleave([(UPLINK, f) for f in pub_in], [(P1, f) for f in pub_out]))
pub_udp_in = pick(from_r, 17, dport=5353)
pub_udp_out = [readdress(f, C2_MAC, G_MAC, src=C2_IP, sport=53) for f in pick(from_u, 17, sport=5353)]
pipeline['published-udp'] = frames_in([(UPLINK, f) for f in pub_udp_in] + [(P2, f) for f in pub_udp_out])
pipeline['uplink-arp-echo-ipv6'] = frames_in(
    [(UPLINK, f) for f in arp(from_r) + [f for f in pick(from_r, 1) if f.icmp[0] == 8] + ipv6(from_r)[:2]])
hair = one(pick(from_c, 6, sport=40004))
hair_reply = readdress(one(pick(to_c, 6, dport=40000)), C_MAC, G_MAC, src=C_IP, dst=U_IP, sport=80, dport=40004)
pipeline['hairpin'] = frames_in([(P1, hair), (P1, hair_reply)])
# Two containers on one bridge: ARP both ways, then ping.
arp_req = one(arp(from_c))
arp_reply2 = Frame(C_MAC + C2_MAC + arp_req.b[12:20] + b'\x00\x02' + C2_MAC + ip4(C2_IP) + C_MAC + ip4(C_IP))
echo = one([f for f in pick(from_c, 1, dst=G_IP) if f.icmp[0] == 8])
echo_to2 = readdress(echo, C_MAC, C2_MAC, dst=C2_IP)
echo_back = readdress(one([f for f in pick(to_c, 1, src=G_IP) if f.icmp[0] == 0]), C2_MAC, C_MAC, src=C2_IP)
pipeline['bridge-two-containers'] = frames_in([(P1, arp_req), (P2, arp_reply2), (P1, echo_to2), (P2, echo_back)])
# A GSO super-frame from the container, after its handshake.
bulk = pick(from_c, 6, sport=40006)
syn_ack = readdress(one(pick(to_c, 6, dport=40006)), R_MAC, U_MAC, dst=U_IP)
assert any(len(f.b) > 1514 for f in bulk), 'no super-frame captured'
pipeline['gso-super-frame'] = frames_in([(P1, bulk[0]), (UPLINK, syn_ack)] + [(P1, f) for f in bulk[1:4]])
# The second network (no masquerade, MTU 1280) and the third (internal).
back = [readdress(f, BACK_MAC, BACK_GW_MAC, src='10.89.0.2', dst='10.89.0.1' if f.dst == G_IP else None)
        for f in pick(from_c, 1, dst=G_IP)[:1] + pick(from_c, 6, sport=40000)[:1]]
back_reply = readdress(one(pick(from_r, 6, dport=40000)), R_MAC, U_MAC, dst='10.89.0.2')
back_big = readdress(one([f for f in to_c if len(f.b) > 1514]), R_MAC, U_MAC, src=S_IP, dst=U_IP, sport=50002,
                     dport=2222)
back_syn = readdress(one(pick(from_r, 6, dport=8080)), R_MAC, U_MAC, sport=50002, dport=2222)
pipeline['back-network'] = frames_in([(P3, f) for f in back] + [(UPLINK, back_reply), (UPLINK, back_syn),
                                                                   (UPLINK, back_big)])
sealed = [readdress(f, SEALED_MAC, SEALED_GW_MAC, src='10.90.0.2', dst='10.90.0.1' if f.dst == G_IP else None)
          for f in pick(from_c, 1, dst=G_IP)[:1] + pick(from_c, 17, dport=53)[:1] + pick(from_c, 6, sport=40000)[:1]]
pipeline['sealed-network'] = frames_in([(P4, f) for f in sealed])
# The masqueraded TCP flow read by the other worker (hand-offs), the uplink
# frames on the worker the fanout does not pick.
pipeline['masq-tcp-other-workers'] = frames_in(
    interleave([(P1, f, 1 << 3 | STEP_1MS << 4) for f in pick(from_c, 6, sport=40000)],
               [(UPLINK, f, 1 << 3 | STEP_1MS << 4) for f in pick(from_r, 6, dport=40000)]))
# A reply after the flow expired (UDP: 30 s).
pipeline['masq-udp-expired'] = frames_in([(P1, one(pick(from_c, 17, sport=40002)))] +
                                         [(UPLINK, one(pick(from_r, 17, dport=40002)), STEP_120S << 4)])
# Virtio-net headers of every kind in front of the same frame.
syn = one(pick(from_c, 6, sport=40000))
pipeline['vnet-headers'] = b''.join(rec(0, h + syn.b) for h in (ZERO, syn.vnet(), TSO4))


# --- nat -------------------------------------------------------------------
# Records [op][len][args | IPv4 packet]; op & 15 the operation, op >> 4 its
# parameter (translate: bit 0 from the uplink, bit 1 partial checksum).
def key(proto, src, sport, dst, dport):
    return bytes([{6: 0, 17: 1, 1: 2}[proto]]) + ip4(src) + struct.pack('!H', sport) + ip4(dst) + \
        struct.pack('!H', dport)


def translate(seq):
    out = b''
    for side, f in seq:
        param = (1 if side == UPLINK else 0) | (2 if f.vnet()[0] & 1 else 0)
        out += rec(param << 4 | 0, f.ip())
    return out


nat = {}
nat['masq-tcp'] = translate(interleave([(P1, f) for f in pick(from_c, 6, sport=40000)],
                                       [(UPLINK, f) for f in pick(from_r, 6, dport=40000)]))
nat['masq-udp-port-unreachable'] = translate(
    [(P1, f) for f in pick(from_c, 17, sport=40001)] +
    [(UPLINK, f) for f in pick(from_r, 1) if f.icmp[0] == 3 and f.src == S_IP])
nat['masq-dns'] = translate([(P1, one(pick(from_c, 17, sport=40002))), (UPLINK, one(pick(from_r, 17, dport=40002)))])
nat['masq-echo'] = translate([(P1, f) for f in pick(from_c, 1) if f.icmp == (8, 4660)] +
                             [(UPLINK, f) for f in pick(from_r, 1) if f.icmp == (0, 4660)])
nat['published-tcp'] = translate(interleave([(UPLINK, f) for f in pub_in], [(P1, f) for f in pub_out]))
nat['published-udp'] = translate([(UPLINK, f) for f in pub_udp_in] + [(P2, f) for f in pub_udp_out])
nat['uplink-icmp-errors'] = translate([(P1, f) for f in out4661 + out4662 + udp40005] + [(UPLINK, f) for f in errors])
nat['gso-partial'] = translate([(P1, f) for f in bulk])
# Rewrites to chosen tuples, and ICMP errors with chosen translations.
syn_ip = syn.ip()
nat['rewrite-snat'] = (rec(0x00 | 1, key(6, U_IP, 61000, S_IP, 80) + syn_ip) +
                       rec(0x10 | 1, key(6, U_IP, 40000, S_IP, 80) + bulk[3].ip()) +
                       rec(0x00 | 1, key(17, U_IP, 40001, S_IP, 9999) + one(pick(from_c, 17, sport=40001)).ip()) +
                       rec(0x00 | 1, key(1, U_IP, 7, S_IP, 7) + one([f for f in pick(from_c, 1) if f.icmp[0] == 8]).ip()))
nat['rewrite-icmp-errors'] = b''.join(
    rec(0x00 | 2, ip4(f.src) + ip4(C_IP) + key(17 if f.b[f.l4 + 8 + 9] == 17 else 1, C_IP, 40005, '198.51.100.7', 9999) +
        f.ip()) for f in errors)
nat['decrement-ttl'] = b''.join(rec(3, f.ip()) for f in [syn, one(pick(from_c, 1, dst='198.51.100.7')), echo])
nat['build-errors'] = b''.join(rec(k << 4 | 10, ip4(G_IP) + f.ip()) for k, f in enumerate(
    [syn, one(pick(from_c, 17, sport=40001)), echo, out4662[0], errors[0], bulk[3]]))
# The table on its own: inserts, lookups and updates, alloc, sweeps, dump.
k1 = key(6, C_IP, 40000, S_IP, 80)
r1 = key(6, S_IP, 80, U_IP, 40000)
k2 = key(17, C_IP, 40001, S_IP, 9999)
r2 = key(17, S_IP, 9999, U_IP, 40001)
nat['table-ops'] = (rec(0x16, k1 + r1 + b'\x02\x01') + rec(0x16, k2 + r2 + b'\x00\x02') +
                    rec(0x16, k1 + r1 + b'\x02\x01') + rec(0x17, r1 + b'\x12') + rec(0x07, k1 + b'\x10') +
                    rec(0x05, key(6, C_IP, 40000, S_IP, 80) + struct.pack('!HHHB', 40000, 32768, 60999, 1)) +
                    rec(0x35, key(1, C_IP, 4660, S_IP, 4660) + struct.pack('!HHHB', 4660, 1, 65535, 2)) +
                    rec(0x0b, b'') + rec(0x24, b'\x02') + rec(0x08, r2) + rec(0x19, b'') + rec(0x0b, b''))

# --- dns -------------------------------------------------------------------
# [ctl][arg][bytes]: ctl = function | wrap << 2 | room << 3 | tcp shape << 6.
RESPOND_UDP, REFUSE_UDP, RESPOND_TCP, REFUSE_TCP = 0, 1, 2, 3
WRAP = 4
ROOM_0, ROOM_16, ROOM_512, ROOM_1500 = 0 << 3, 2 << 3, 4 << 3, 5 << 3
dns_queries = pick(from_c, 17, dst=G_IP, dport=53)
dns_msgs = [f.b[f.l4 + 8:14 + struct.unpack('!H', f.b[16:18])[0]] for f in dns_queries]
dns_replies = pick(to_c, 17, src=G_IP, sport=53)
dns = {}
for i, f in enumerate(dns_queries):
    dns[f'udp-query-{i}'] = bytes([RESPOND_UDP | ROOM_1500, 0]) + f.b
for i, m in enumerate(dns_msgs):
    dns[f'wrapped-udp-{i}'] = bytes([RESPOND_UDP | WRAP | ROOM_1500, 0]) + m
dns['udp-refused'] = bytes([REFUSE_UDP | ROOM_1500, 0]) + dns_queries[5].b
dns['udp-no-room'] = bytes([RESPOND_UDP | ROOM_0, 0]) + dns_queries[3].b
dns['udp-response'] = bytes([RESPOND_UDP | ROOM_512, 0]) + readdress(dns_replies[0], C_MAC, G_MAC).b
dns['wrapped-udp-options'] = bytes([RESPOND_UDP | WRAP | ROOM_512, 3 << 3]) + dns_msgs[0]
for i, f in enumerate(tcp_dns[:6]):
    dns[f'tcp-segment-{i}'] = bytes([RESPOND_TCP | ROOM_1500, 0]) + f.b
tcp_msg = [f for f in tcp_dns if len(f.b) - f.l4 - ((f.b[f.l4 + 12] >> 4) * 4) > 2]
for i, f in enumerate(tcp_msg[:3]):
    data = f.b[f.l4 + (f.b[f.l4 + 12] >> 4) * 4:]
    for shape in (0, 1, 3):
        dns[f'wrapped-tcp-{i}-shape{shape}'] = bytes([RESPOND_TCP | WRAP | ROOM_1500 | shape << 6, 1 << 6]) + data[2:]
syn_opts = tcp_dns[0].b[tcp_dns[0].l4 + 20:tcp_dns[0].l4 + (tcp_dns[0].b[tcp_dns[0].l4 + 12] >> 4) * 4]
dns['wrapped-tcp-syn'] = bytes([RESPOND_TCP | WRAP | ROOM_1500 | 2 << 6, 0]) + syn_opts
dns['wrapped-tcp-refused'] = bytes([REFUSE_TCP | WRAP | ROOM_1500, 2 << 6]) + dns_msgs[5]
dns['wrapped-tcp-small-mss'] = bytes([RESPOND_TCP | WRAP | ROOM_1500, 0]) + dns_msgs[3]

# --- wire ------------------------------------------------------------------
# [view][bytes]: 0 Ethernet, 1 ARP, 2 IPv4, 3 IPv6, 4 TCP, 5 UDP, 6 ICMPv4,
# 7 VXLAN, 8 GRE, 9 virtio-net header + Ethernet, 10 DNS, 11 all at 0.


def kind(f):
    """What makes a frame different from another for the views."""
    if f.ethertype != 0x0800:
        return (f.ethertype, f.b[14 + 40:14 + 41] if f.ethertype == 0x86dd else f.b[20:22])
    if f.proto == 6:
        return (6, f.tcp_flags, len(f.b) > 1514, f.ports[1] == 53 or f.ports[0] == 53)
    if f.proto == 17:
        return (17, f.ports[1] if f.ports[1] in (53, 4789) else f.ports[0] if f.ports[0] == 53 else 0,
                f.b[14 + 20 + 8 + 3] & 0x0f if 53 in f.ports else 0)
    if f.proto == 1:
        return (1, f.b[f.l4], f.b[f.l4 + 1])
    return (f.proto,)


wire = {}
seen = set()
for f in container + uplink + overlay:
    k = kind(f)
    if k in seen:
        continue
    seen.add(k)
    wire[f'eth-{len(wire):02d}'] = bytes([0]) + f.b
gre_inner = [one(arp(from_c)).b, echo.b]
for flags in ('', 'CKS', 'K'):
    wire[f'gre-{flags or "plain"}'] = bytes([0]) + gre(gre_inner[len(flags) % 2], flags)
    wire[f'gre-{flags or "plain"}-bare'] = bytes([8]) + gre(gre_inner[len(flags) % 2], flags)[34:]
for f in (syn, bulk[3], one(pick(from_c, 17, sport=40001))):
    wire[f'vnet-{len(wire):02d}'] = bytes([9]) + f.vnet() + f.b
for i, m in enumerate(dns_msgs[:4] + [r.b[r.l4 + 8:] for r in dns_replies[:5]]):
    wire[f'dns-{i}'] = bytes([10]) + m
wire['arp'] = bytes([1]) + arp_req.b[14:]
wire['ipv4-options'] = bytes([2]) + readdress(syn, C_MAC, G_MAC).ip()
wire['ipv6'] = bytes([3]) + one(ipv6(from_c)).b[14:]
wire['tcp'] = bytes([4]) + syn.ip()[20:]
wire['udp'] = bytes([5]) + dns_queries[0].ip()[20:]
wire['icmp-error'] = bytes([6]) + errors[0].ip()[20:]
vx = one([f for f in overlay if f.is_(17, dport=4789)])
wire['vxlan'] = bytes([7]) + vx.b[vx.l4 + 8:]
wire['all-views'] = bytes([11]) + syn.b

# --- overlay ---------------------------------------------------------------
# Records [tag][len][bytes]; tag & 3: 0 decap (bit 2 GRE, bit 3 a UDP GRO
# read [seg][datagrams]), 1 egress ([mtu][vnet | frame], bit 2 fix the
# partial checksum), 2 flush, 3 push to the coalescer; tag >> 4 & 3 the port.
DECAP, EGRESS, FLUSH, GRO = 0, 1, 2, 3
DECAP_GRE, GRO_READ, FIX_PARTIAL = 4, 8, 4


def vxlan_hdr(vni):
    return struct.pack('!II', 0x08000000, vni << 8)


def gre_hdr(inner, flags, key=42):
    """GRE header (RFC 2784, key and sequence RFC 2890) and `inner`."""
    c, k, s = 'C' in flags, 'K' in flags, 'S' in flags
    hdr = struct.pack('!HH', (c << 15) | (k << 13) | (s << 12), 0x6558)
    opt = (b'\0\0\0\0' if c else b'') + (struct.pack('!I', key) if k else b'') + (struct.pack('!I', 1) if s else b'')
    g = bytearray(hdr + opt + inner)
    if c:
        g[4:6] = struct.pack('!H', 0xffff ^ csum(bytes(g)))
    return bytes(g)


def probe(kind, seq, n):
    """An overlay probe (dataplane/src/overlay/probe.rs) of `n` bytes."""
    mac = bytes.fromhex('02746e707262')
    b = bytearray(mac + mac + b'\x88\xb5' + b'TNPROBE1' + bytes([kind, 0]) + struct.pack('!IIH', 7, seq, n) + b'\0\0')
    b += bytes(((i + seq) * 7) & 0xff for i in range(n - 36))
    b[34:36] = struct.pack('!H', 0xffff ^ csum(bytes(b[14:])))
    return bytes(b)


def tcp_segments(f, mss):
    """Super-frame `f` cut as a sender's GSO cuts it: complete checksums,
    identification + 1 per segment, FIN/PSH on the last only."""
    thl = (f.b[f.l4 + 12] >> 4) * 4
    hl, end = f.l4 + thl, 14 + struct.unpack('!H', f.b[16:18])[0]
    ident, seq = struct.unpack('!H', f.b[18:20])[0], struct.unpack('!I', f.b[f.l4 + 4:f.l4 + 8])[0]
    out = []
    chunks = [f.b[i:i + mss] for i in range(hl, end, mss)]
    for i, chunk in enumerate(chunks):
        b = bytearray(f.b[:hl] + chunk)
        b[16:18] = struct.pack('!H', len(b) - 14)
        b[18:20] = struct.pack('!H', (ident + i) & 0xffff)
        b[f.l4 + 4:f.l4 + 8] = struct.pack('!I', (seq + i * mss) & 0xffffffff)
        if i + 1 < len(chunks):
            b[f.l4 + 13] &= ~0x09
        out.append(readdress(Frame(b), b[6:12], b[0:6]).b)
    return out


ov_frames = [f.b[f.l4 + 8:] for f in overlay if f.is_(17, dport=4789)]
inner = [d[8:] for d in ov_frames]
super_frame = one([f for f in bulk if len(f.b) > 1514])
segs = tcp_segments(super_frame, 1448)
segs_400 = tcp_segments(super_frame, 400)
ov = {}
ov['vxlan-capture'] = b''.join(rec(DECAP, d) for d in ov_frames) + rec(FLUSH, b'')
ov['gre-captured-inner'] = b''.join(rec(DECAP | DECAP_GRE, gre_hdr(i, fl)) for i, fl in
                                    zip(inner, ['K', 'CKS', 'KS', 'CK', '', 'K']))
ov['vxlan-gre-other-vni'] = rec(DECAP, vxlan_hdr(0xabcdef) + inner[4]) + rec(DECAP | DECAP_GRE,
                                                                             gre_hdr(inner[6], 'K', 0xdeadbeef))
ov['probe-request'] = (rec(DECAP, vxlan_hdr(42) + probe(1, 3, 1464)) +
                       rec(DECAP | DECAP_GRE, gre_hdr(probe(1, 0, 36), 'CK')))
ov['probe-reply'] = rec(DECAP, vxlan_hdr(42) + probe(2, 9, 200))
ov['gro-vxlan'] = b''.join(rec(DECAP, vxlan_hdr(42) + s) for s in segs) + rec(FLUSH, b'')
ov['gro-gre'] = b''.join(rec(DECAP | DECAP_GRE | 1 << 4, gre_hdr(s, 'CKS')) for s in segs_400)
dgrams = [vxlan_hdr(42) + s for s in segs]
ov['gro-udp-read'] = rec(DECAP | GRO_READ, struct.pack('!H', len(dgrams[0])) + b''.join(dgrams))
ov['gro-direct'] = (b''.join(rec(GRO, s) for s in segs[:2]) + rec(GRO | 1 << 4, segs[2]) +
                    b''.join(rec(GRO, s) for s in segs_400[1:]))
ov['gro-interleaved'] = b''.join(rec(GRO, a) + rec(GRO, b) for a, b in zip(segs, segs_400))
ov['egress-syn'] = rec(EGRESS | FIX_PARTIAL, struct.pack('!H', 1450) + syn.vnet() + syn.b)
ov['egress-syn-complete'] = rec(EGRESS, struct.pack('!H', 1400) + ZERO + readdress(syn, C_MAC, G_MAC).b)
ov['egress-tso'] = rec(EGRESS | FIX_PARTIAL, struct.pack('!H', 1450) + super_frame.vnet() + super_frame.b)
udp = one(pick(from_c, 17, sport=40001))
ov['egress-udp-partial'] = rec(EGRESS | FIX_PARTIAL, struct.pack('!H', 1450) + udp.vnet() + udp.b)
ov['egress-then-gro'] = (rec(EGRESS | FIX_PARTIAL, struct.pack('!H', 1450) + super_frame.vnet() + super_frame.b) +
                         b''.join(rec(GRO, s) for s in segs) + rec(FLUSH, b''))

# --- api -------------------------------------------------------------------
# One request line each, as the CLI sends it (serde's field order, absent
# options as null), and a few hand-written forms the daemon also accepts.
def net_spec(name, subnet, **kw):
    spec = dict(name=name, subnet=subnet, gateway=None, mtu=None, fdb_max=None, fdb_ageing=None, masquerade=True,
                internal=False, icc=True, driver=None, vni=None, key=None, ip_range=None, underlay=None, peers=[],
                port=None, udp_csum=None, mss_clamp=None)
    spec.update(kw)
    return dict(op='network_create', **spec)


def ctr_spec(name, network, **kw):
    spec = dict(name=name, network=network, ip=None, mac=None, publish=[])
    spec.update(kw)
    return dict(op='container_create', **spec)


requests = {
    'version': dict(op='version'),
    'network-create': net_spec('front', '10.88.0.0/24'),
    'network-create-all': net_spec('back', '10.89.0.0/24', gateway='10.89.0.254', mtu=1280, fdb_max=1024,
                                   fdb_ageing=300, masquerade=False, internal=True, icc=False, driver='bridge'),
    'network-create-vxlan': net_spec('ov', '10.42.0.0/16', driver='vxlan', vni=42, ip_range='10.42.1.0/24',
                                     underlay='192.168.1.10', peers=['192.168.1.11', '192.168.1.12'], port=4789,
                                     udp_csum=True, mss_clamp=True),
    'network-create-gre': net_spec('ovg', '10.43.0.0/16', driver='gre', key=7, underlay='192.168.1.10',
                                   peers=['192.168.1.11'], mss_clamp=False),
    'network-ls': dict(op='network_ls'),
    'network-inspect': dict(op='network_inspect', name='front'),
    'network-rm': dict(op='network_rm', name='front'),
    'network-connect': dict(op='network_connect', network='back', container='web', ip=None),
    'network-connect-ip': dict(op='network_connect', network='back', container='web', ip='10.89.0.7'),
    'network-disconnect': dict(op='network_disconnect', network='back', container='web'),
    'container-create': ctr_spec('web', 'front'),
    'container-create-all': ctr_spec('web', 'front', ip='10.88.0.2', mac='02:42:0a:58:00:02',
                                     publish=['8080:80', '127.0.0.1:5353:53/udp', '2000-2001:22-23/tcp']),
    'container-create-none': ctr_spec('lone', 'none'),
    'container-create-host': ctr_spec('hosted', 'host'),
    'container-create-shared': ctr_spec('side', 'container:web'),
    'container-ls': dict(op='container_ls'),
    'container-inspect': dict(op='container_inspect', name='web'),
    'container-rm': dict(op='container_rm', name='web'),
    'fdb': dict(op='fdb', network='front'),
    'fdb-add': dict(op='fdb_add', network='ov', mac='02:42:0a:2a:02:01', vtep='192.168.1.11'),
    'fdb-del': dict(op='fdb_del', network='ov', mac='02:42:0a:2a:02:01'),
    'overlay-check': dict(op='overlay_check', network='ov'),
    'stats': dict(op='stats'),
    'conntrack': dict(op='conntrack'),
}
api = {name: json.dumps(r, separators=(',', ':'), ensure_ascii=False).encode() for name, r in requests.items()}
api['short-form'] = b' {"network":"front","op":"container_create","name":"w\\u00e9b"} '
api['refused-unknown-field'] = b'{"op":"network_ls","verbose":true}'
api['refused-array'] = b'["container_rm","web"]'

# --- write -----------------------------------------------------------------
for name, seeds in (('pipeline', pipeline), ('nat', nat), ('dns', dns), ('wire', wire), ('overlay', ov),
                     ('api', api)):
    d = CORPUS / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for seed, data in seeds.items():
        assert data, f'{name}/{seed} is empty'
        (d / seed).write_bytes(data)
    print(f'{name}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes')
